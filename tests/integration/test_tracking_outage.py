"""The tracking server goes away mid-sweep: a short outage loses nothing, a long one fails the
affected trials with a reason — never silently."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pytest
from mlflow import MlflowClient

from conftest import ROOT, MlflowServer, write_spec
from tracking.runs import curve_steps

pytestmark = pytest.mark.integration


def _told(storage: str, name: str) -> int:
    try:
        return sum(t.state.is_finished() for t in optuna.load_study(study_name=name, storage=storage).trials)
    except KeyError:
        return 0


def _start_sweep(spec, folder, server, extra_env=None):
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    return subprocess.Popen(
        [sys.executable, "-m", "sweeps.cli", "run", str(spec), "--quiet", "--ray-address", "none",
         "--tracking-uri", server.uri, "--storage", f"sqlite:///{folder}/optuna.db"],
        cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_told(storage, name, n, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while _told(storage, name) < n and time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.2)
    assert _told(storage, name) >= n


def test_twenty_second_outage_loses_nothing(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "artifacts").start()
    spec = write_spec(tmp_path, name="outage", run_cap=8, epochs=150)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    proc = _start_sweep(spec, tmp_path, server)
    try:
        _wait_told(storage, "outage", 3, proc)
        server.stop()
        time.sleep(20)
        assert proc.poll() is None, "the sweep died while the tracking server was down"
        server.start()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        study = optuna.load_study(study_name="outage", storage=storage)
        assert [t.state.name for t in study.trials] == ["COMPLETE"] * 8
        client = MlflowClient(tracking_uri=server.uri)
        exp = client.get_experiment_by_name("outage")
        runs = client.search_runs([exp.experiment_id], "tags.`mlpsweep.kind` = 'trial'", max_results=100)
        assert sorted(int(r.data.tags["mlpsweep.trial"]) for r in runs) == list(range(8))  # none twice
        by_number = {t.number: t for t in study.trials}
        for run in runs:
            assert run.info.status == "FINISHED"
            t = by_number[int(run.data.tags["mlpsweep.trial"])]
            assert run.data.metrics["val_mse"] == pytest.approx(t.value)
            train = client.get_metric_history(run.info.run_id, "curve_train_mse")
            val = client.get_metric_history(run.info.run_id, "curve_val_mse")
            # each curve point written once: exactly the thinned epochs of the curve, no repeats
            steps = sorted(m.step for m in train)
            assert len(train) == len(val) > 0 and steps == curve_steps(steps[-1] + 1)
            assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} == {
                "checkpoint/model.pt", "checkpoint/architecture.json", "checkpoint/weights.npz"}
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()


def test_outage_past_the_retry_budget_fails_trials_with_a_reason(tmp_path):
    server = MlflowServer(f"sqlite:///{tmp_path}/server.db", tmp_path / "artifacts").start()
    spec = write_spec(tmp_path, name="longout", run_cap=8, epochs=200)
    storage = f"sqlite:///{tmp_path}/optuna.db"
    proc = _start_sweep(spec, tmp_path, server, {"MLPSWEEP_TRACKING_RETRY_S": "3",
                                                 "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"})
    try:
        _wait_told(storage, "longout", 2, proc)
        server.stop()
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err  # the sweep ran, and some of it failed
        assert "tracking" in err
        study = optuna.load_study(study_name="longout", storage=storage)
        failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
        assert failed and all("tracking failed" in t.user_attrs["fail_reason"] for t in failed)
        assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    finally:
        if proc.poll() is None:
            proc.kill()
        server.stop()
