"""The end-of-run report's process: forked by the MLflow writer, drawn on request, never a hang."""
from __future__ import annotations

import os
import signal
import time

import psutil
import pytest
from mlflow import MlflowClient

from conftest import process_ended, run_cli, write_spec
from tracking import writer as writer_module
from tracking.report import PICTURES, REPORT_DIR
from tracking.sweep import SweepTracker


@pytest.fixture
def tracker(tmp_path):
    made = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "rc", report=True)
    yield made
    made.close()
    made.report.cancel()


def test_the_writer_forks_the_report_child_and_closing_it_does_not_wait_for_the_report(tracker):
    pid = tracker.report.pid()
    assert pid is not None and pid != os.getpid()
    assert psutil.Process(pid).ppid() == tracker._writer._proc.pid  # shares the writer's imports
    start = time.monotonic()
    assert tracker.close() == []
    assert time.monotonic() - start < 10  # the child holds the writer's sentinel: join() would wait 30 s
    assert not process_ended(pid, within=0.5)  # still there, waiting to draw
    tracker.report.cancel()
    assert process_ended(pid)


def test_a_report_child_that_died_costs_the_pictures_not_a_hang(tracker, caplog):
    pid = tracker.report.pid()
    os.kill(pid, signal.SIGKILL)
    tracker.close()
    tracker.report.draw(tracker.tracking_uri, "rc", None)
    start = time.monotonic()
    assert tracker.report.wait(timeout=60) is False
    assert time.monotonic() - start < 10
    assert "without logging the report" in caplog.text


def test_a_report_never_asked_for_is_not_waited_for(tracker):
    pid = tracker.report.pid()
    tracker.close()
    start = time.monotonic()
    assert tracker.report.wait(timeout=60) is False
    assert time.monotonic() - start < 10 and process_ended(pid)


def test_without_fork_the_report_is_drawn_in_this_process_when_waited_for(tmp_path, monkeypatch):
    import tracking.report

    monkeypatch.setattr(writer_module, "FORK", False)
    drawn = []
    monkeypatch.setattr(tracking.report, "log_report_artifacts", lambda *request: drawn.append(request) or [])
    made = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "inline", report=True)
    made.close()
    made.report.draw(made.tracking_uri, "inline", "store.journal")
    assert drawn == []  # not yet: drawing here would hold up the caller
    assert made.report.wait() is True
    assert drawn == [(made.tracking_uri, "inline", "store.journal")]


@pytest.mark.integration
def test_mlpsweep_run_logs_the_report_its_writer_child_draws(tmp_path):
    spec = write_spec(tmp_path, name="drawn", run_cap=4, epochs=30)
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("drawn")
    parent = client.search_runs([experiment.experiment_id], "tags.`mlpsweep.kind` = 'sweep'")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, REPORT_DIR)}
    assert logged == {f"{REPORT_DIR}/{name}.png" for name, *_ in PICTURES} | {f"{REPORT_DIR}/report.html"}


def _settled_maps(pid: int, quiet: float = 1.0, limit: float = 60.0) -> str:
    """The child's mapped files once its CPU time has stopped growing (it waits for the request)."""
    proc, deadline = psutil.Process(pid), time.monotonic() + limit
    last = -1.0
    while time.monotonic() < deadline:
        used = sum(proc.cpu_times()[:2])
        if used == last:
            break
        last = used
        time.sleep(quiet)
    with open(f"/proc/{pid}/maps") as fh:
        return fh.read()


@pytest.mark.parametrize("importances", [False, True])
def test_the_report_child_imports_scikit_learn_only_for_importances(tracker, importances):
    """fANOVA's scikit-learn is ~1 CPU-second of a run's start: a sweep searching one parameter or
    none has no importances to compute (mlpsweep run says which with prepare). The True case shows
    the settled child's maps do show the import when it ran."""
    tracker.report.prepare(importances)
    maps = _settled_maps(tracker.report.pid())
    assert ("/sklearn/" in maps) is importances
