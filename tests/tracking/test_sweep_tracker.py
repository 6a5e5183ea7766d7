"""The trial-run writer on a real SQLite MLflow store: what one run holds, and in how few calls."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from mlflow import MlflowClient

from models.training import TrainConfig
from tracking.sweep import CURVE_POINTS, CURVES_FILE, SweepTracker, curve_steps
from workers.records import Checkpoint, DataConfig, TrialConfig, TrialResult


@pytest.mark.parametrize("n", [0, 1, 2, 199, 200, 201, 500, 2000, 4999])
def test_curve_steps_are_few_sorted_and_keep_both_ends(n):
    steps = curve_steps(n)
    assert len(steps) <= CURVE_POINTS
    assert steps == sorted(set(steps)) and all(0 <= s < n for s in steps)
    if n:
        assert steps[0] == 0 and steps[-1] == n - 1
    if n <= CURVE_POINTS:
        assert steps == list(range(n))
    else:
        assert len(steps) >= CURVE_POINTS // 2  # evenly spread, not a handful


def _trial(number: int, epochs: int) -> tuple[TrialConfig, TrialResult]:
    config = TrialConfig(number=number, params={"width": 4, "lr": 0.01},
                         train=TrainConfig(sizes=(1, 4, 1), activation="tanh", max_epochs=epochs, restarts=1),
                         data=DataConfig("seed-1d"))
    curve = tuple(1.0 / (e + 1) for e in range(epochs))
    state = {"0_weight": torch.zeros(1, 4), "0_bias": torch.zeros(4), "1_weight": torch.zeros(4, 1),
             "1_bias": torch.zeros(1)}
    result = TrialResult(number=number, state="COMPLETE", train_mse=curve[-1], val_mse=curve[-1] * 2,
                         test_mse=curve[-1] * 3, best_restart=0, restart_train_mse=(curve[-1],),
                         train_curve=curve, val_curve=tuple(math.nan if e == 3 else 2 * v for e, v in enumerate(curve)),
                         checkpoint=Checkpoint.of(state, (1, 4, 1), "tanh"), node="n1")
    return config, result


def test_long_curves_are_thinned_in_metrics_and_kept_whole_in_an_artifact(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "thin")
    tracker.open_parent("name: thin\n", "uid1", {})
    acks = []
    for number, epochs in ((0, 500), (1, 50)):
        config, result = _trial(number, epochs)
        tracker.log_trial(config, result, verified="pass", architecture="1-4-1:tanh", on_done=acks.append)
    assert tracker.close() == [] and acks == [None, None]

    client = MlflowClient(uri)
    runs = {int(r.data.tags["mlpsweep.trial"]): r for r in client.search_runs(
        [client.get_experiment_by_name("thin").experiment_id], "tags.`mlpsweep.kind` = 'trial'")}
    long_run, short_run = runs[0].info.run_id, runs[1].info.run_id
    history = client.get_metric_history(long_run, "curve_train_mse")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == curve_steps(500)
    assert all(m.value == pytest.approx(1.0 / (m.step + 1)) for m in history)
    local = client.download_artifacts(long_run, CURVES_FILE, str(tmp_path))
    whole = json.loads(open(local).read())
    assert len(whole["train_mse"]) == len(whole["val_mse"]) == 500
    assert whole["val_mse"][3] is None and whole["train_mse"][499] == pytest.approx(1 / 500)
    assert len(client.get_metric_history(short_run, "curve_val_mse")) == 49  # the NaN epoch is left out
    assert CURVES_FILE not in {a.path for a in client.list_artifacts(short_run)}
    for run_id in (long_run, short_run):
        files = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
        assert files == {"checkpoint/model.pt", "checkpoint/architecture.json", "checkpoint/weights.npz"}
        assert len(runs[0].data.tags["mlpsweep.checkpoint_sha256"]) == 64


def test_progress_points_are_all_written_once(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = SweepTracker(uri, "progress")
    parent = tracker.open_parent("name: progress\n", "uid2", {}).parent_run_id
    best = math.inf
    for number in range(57):
        value = 1.0 + ((number * 37) % 11)
        best = min(best, value)
        tracker.log_progress(number, value if number % 5 else None, best)
    assert tracker.close() == []
    client = MlflowClient(uri)
    assert sorted(m.step for m in client.get_metric_history(parent, "best_so_far")) == list(range(57))
    assert sorted(m.step for m in client.get_metric_history(parent, "trial_objective")) == \
        [n for n in range(57) if n % 5]


def test_a_dead_writer_answers_every_waiting_trial_with_an_error(tmp_path):
    import signal

    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "dead")
    tracker.open_parent("name: dead\n", "uid3", {})
    tracker.flush()
    os.kill(tracker._writer._proc.pid, signal.SIGKILL)
    acks: list = []
    config, result = _trial(0, 10)
    tracker.log_trial(config, result, verified="pass", architecture="1-4-1:tanh", on_done=acks.append)
    tracker.flush()  # must not hang
    errors = tracker.close()
    assert len(acks) == 1 and "writer process" in acks[0]
    assert errors and "writer process died" in errors[0]


def test_the_writer_records_checkpoints_and_verdicts_without_importing_torch(tmp_path):
    """torch's import is ~1 CPU-second at the start of a run, when Ray and its workers need every
    core: the writer stores a trial's checkpoint bytes and a verification report without it."""
    from models.verify import verify_backprop

    config, result = _trial(0, 20)
    tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", "torchless")
    try:
        tracker.open_parent("name: torchless\n", "uidT", {})
        tracker.record_verification(verify_backprop([1, 4, 1], "tanh"))
        tracker.log_trial(config, result, verified="pass", architecture="1-4-1:tanh")
        tracker.flush()
        assert tracker.logged_outcome(0)["state"] == "COMPLETE"
        with open(f"/proc/{tracker._writer._proc.pid}/maps") as fh:
            libraries = fh.read()
    finally:
        assert tracker.close() == []
    assert "libtorch" not in libraries, "the MLflow writer process imported torch"
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("torchless").experiment_id
    assert len(client.search_runs([experiment], "tags.`mlpsweep.kind` = 'verification'")) == 1
    run = client.search_runs([experiment], "tags.`mlpsweep.kind` = 'trial'")[0]
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoint")} == \
        {"checkpoint/model.pt", "checkpoint/architecture.json", "checkpoint/weights.npz"}


def test_the_writer_leaves_when_its_driver_is_killed(tmp_path):
    import subprocess
    import sys
    import time

    import psutil

    from conftest import ROOT

    script = ("import os, sys; from tracking.sweep import SweepTracker; "
              f"t = SweepTracker('sqlite:///{tmp_path}/mlflow.db', 'orphan'); t.flush(); "
              "print(t._writer._proc.pid, flush=True); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    child = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE, \
        "the writer process outlived its killed driver"


def test_the_driver_never_imports_mlflow_and_its_reads_are_answered_by_the_writer(tmp_path):
    """MLflow's import is ~1.5 s of CPU that a run's start (Ray, its workers) needs more: the
    tracker leaves every MLflow call, reads included, to the writer process."""
    import inspect
    import subprocess
    import sys

    from conftest import ROOT

    script = f"""
import math, sys, torch
from models.training import TrainConfig
from workers.records import Checkpoint, DataConfig, TrialConfig, TrialResult
{inspect.getsource(_trial)}
from tracking.sweep import SweepTracker
uri = 'sqlite:///{tmp_path}/mlflow.db'
t = SweepTracker(uri, 'lean')
assert t.open_parent('name: lean\\n', 'uidL', {{'seed': 0}}).resumed is False
config, result = _trial(0, 20)
t.log_trial(config, result, verified='pass', architecture='1-4-1:tanh')
t.log_progress(0, 0.5, 0.5)
t.flush()
outcome = t.logged_outcome(0)
assert outcome['state'] == result.state and outcome['metrics']['train_mse'] == result.train_mse, outcome
assert t.logged_outcome(1) is None and t.find_verdict('1-4-1:tanh') is None
t.close_parent({{'best_val_mse': 0.5}})
assert t.close() == []
again = SweepTracker(uri, 'lean')
assert again.open_parent('name: lean\\n', 'uidL', {{}}).resumed is True and again.close() == []
print('mlflow' in sys.modules, 'sqlalchemy' in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"], proc.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.search_runs([client.get_experiment_by_name("lean").experiment_id], "tags.`mlpsweep.kind` = 'sweep'")
    assert len(parent) == 1 and parent[0].data.metrics["best_val_mse"] == 0.5
    assert parent[0].data.params == {"seed": "0"}


def test_a_run_starts_its_writer_before_importing_torch(tmp_path):
    """``mlpsweep run`` starts the writer process first thing, so that its MLflow import and store
    run beside Ray's start and torch's import: starting it must not import torch (or MLflow)."""
    import subprocess
    import sys

    from conftest import ROOT

    script = f"""
import sys
from sweeps.cmd_run import ready_tracker, start_tracker
tracker = start_tracker('sqlite:///{tmp_path}/mlflow.db', 'early')
print('torch' in sys.modules, 'mlflow' in sys.modules)
ready_tracker(tracker)
assert tracker.experiment_id and tracker.close() == []
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"], proc.stdout
    assert MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_experiment_by_name("early") is not None
