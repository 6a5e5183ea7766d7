"""Faults: workers killed mid-sweep, the driver SIGKILLed, non-finite training, bad input,
untrusted checkpoints. Each test can fail: it counts runs and trials in the real stores."""
from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest import ROOT, TINY_SPEC, run_cli, write_spec, stored_study

pytestmark = pytest.mark.integration


def _study(folder: Path, name: str) -> optuna.Study:
    return stored_study(folder, name)


def _trial_runs(folder: Path, name: str) -> list:
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], "tags.`mlpsweep.kind` = 'trial'", max_results=5000)


def _check_exactly_once(folder: Path, name: str, expected: int) -> list:
    study = _study(folder, name)
    counted = [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get("mlpsweep_interrupted")]
    assert len(counted) == expected
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]
    for t in counted:
        if t.state == optuna.trial.TrialState.FAIL:
            assert t.user_attrs.get("fail_reason"), f"trial {t.number} failed without a reason"
    runs = _trial_runs(folder, name)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    done = Counter(int(r.data.tags["mlpsweep.trial"]) for r in runs if r.info.status in ("FINISHED", "FAILED"))
    assert not [n for n, c in done.items() if c > 1], "a trial number has two finished runs"
    assert {t.number for t in counted} <= set(done)
    return counted


def _worker_pids() -> list[int]:
    import psutil

    return [p.pid for p in psutil.process_iter(["cmdline"])
            if (p.info["cmdline"] or [""])[0].startswith("ray::TrialWorker")]


def test_killed_workers_lose_no_trial_and_duplicate_no_run(tmp_path):
    """40 trials x 3 restarts on local Ray while 10 worker processes are SIGKILLed at random."""
    import ray

    from sweeps.driver import SweepDriver
    from sweeps.spec import load_spec
    from tracking.sweep import SweepTracker
    from workers.ray_backend import RayBackend, connect

    # Long enough that 10 kills always land inside the sweep, however fast the machinery gets.
    spec = load_spec(write_spec(tmp_path, name="killed", run_cap=40, epochs=3000))
    connect(None, num_cpus=2)
    kills: list[int] = []
    stop = threading.Event()

    def killer() -> None:
        rng = random.Random(0)
        time.sleep(3.0)
        while len(kills) < 10 and not stop.is_set():
            pids = _worker_pids()
            if pids:
                pid = rng.choice(pids)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(pid)
                except ProcessLookupError:
                    pass
            stop.wait(rng.uniform(0.3, 0.8))

    try:
        tracker = SweepTracker(f"sqlite:///{tmp_path}/mlflow.db", spec.name)
        backend = RayBackend(2)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        driver = SweepDriver(spec, backend, tracker, f"sqlite:///{tmp_path}/optuna.db")
        driver.run()
        stop.set()
        thread.join()
        backend.close()
        assert tracker.close() == []
        assert len(kills) == 10, f"only {len(kills)} workers were killed: the sweep ended too soon"
        assert driver.stats.retried >= 1
        _check_exactly_once(tmp_path, "killed", 40)
        deadline = time.monotonic() + 30
        while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"], "CPUs still held"
    finally:
        stop.set()
        ray.shutdown()


def _wait_until_told(folder: Path, name: str, told: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Return once ``told`` trials of the running sweep are finished in its Optuna journal."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the sweep ended before {told} trials were told"
        try:
            if sum(t.state.is_finished() for t in _study(folder, name).trials) >= told:
                return
        except (KeyError, ValueError):  # no journal or no study yet
            pass
        time.sleep(0.1)
    raise AssertionError(f"{told} trials were not told within {timeout} s")


# Kill points: during the start (Ray, MLflow, the first verification), then after a third and
# three quarters of the trials are told, counted in the journal (a faster machine or a leaner
# start must not move a kill point past the end of the sweep).
@pytest.mark.parametrize("kill_at", ["1.5s", "4told", "9told"])
def test_driver_sigkill_then_rerun_finishes_exactly_run_cap(tmp_path, kill_at):
    # Plain SGD at small rates: no restart blows up, so every trial must end COMPLETE. Every
    # epoch runs (tol 0), so that each trial takes a while.
    text = TINY_SPEC.format(name="sigkill", run_cap=12, seed=0, epochs=2500).replace(
        "optimizer: {value: adam}", "optimizer: {value: sgd}").replace("min: 0.005, max: 0.1", "min: 0.005, max: 0.03"
    ).replace("verify: gate", "  tol: {value: 0.0}\nverify: gate")
    assert "sgd" in text and "max: 0.03" in text and "tol: {value: 0.0}" in text
    spec = write_spec(tmp_path, text=text)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--quiet", "--ray-address", "none"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_at.endswith("s"):
        time.sleep(float(kill_at[:-1]))
        assert proc.poll() is None, "the sweep ended before the kill point"
    else:
        _wait_until_told(tmp_path, "sigkill", int(kill_at.removesuffix("told")), proc)
    proc.kill()
    proc.wait(timeout=30)
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    counted = _check_exactly_once(tmp_path, "sigkill", 12)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted), [
        (t.number, t.state.name, t.user_attrs.get("fail_reason")) for t in counted if t.state.name != "COMPLETE"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("sigkill")
    parents = client.search_runs([exp.experiment_id], "tags.`mlpsweep.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"


NONFINITE_SPEC = """\
name: nonfinite
method: grid
run_cap: 3
concurrency: 1
data: {{dataset: {data}, validation_fraction: 0.2}}
parameters:
  width: {{value: 4}}
  activation: {{value: tanh}}
  optimizer: {{value: sgd}}
  lr: {{values: [0.01, 10.0]}}
  restarts: {{value: 3}}
  epochs: {{value: 50}}
verify: off
"""


def test_non_finite_training_fails_with_reason_and_stores_finite_values(tmp_path):
    huge = tmp_path / "huge.csv"
    huge.write_text("x,y\n" + "".join(f"{i},{1e30 * (i % 3 + 1)}\n" for i in range(40)))
    for data, name in (("seed-1d", "lr10"), (str(huge), "inf")):
        folder = tmp_path / name
        folder.mkdir()
        spec = folder / "spec.yaml"
        spec.write_text(NONFINITE_SPEC.format(data=data))
        run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=folder)
        study = _study(folder, "nonfinite")
        assert len(study.trials) == 2  # the grid: lr 0.01 and 10 (run_cap 3 stops at the grid's end)
        for t in study.trials:
            if t.state == optuna.trial.TrialState.FAIL:
                reason = t.user_attrs["fail_reason"]
                assert "at epoch" in reason and "restart" in reason, reason
            else:
                assert t.value is not None and t.value == t.value and abs(t.value) != float("inf")
        assert any(t.state == optuna.trial.TrialState.FAIL for t in study.trials)
        for run in _trial_runs(folder, "nonfinite"):
            for value in run.data.metrics.values():
                assert value == value and abs(value) != float("inf")


@pytest.mark.parametrize("text", [
    "name: x\nmethod: tpe\nrun_cap: 0\ndata: {dataset: seed-1d}\nparameters: {optimzer: {value: adam}}\n",
    "name: x\ndata: {dataset: seed-1d}\nparameters: {lr: {distribution: log_uniform_values, min: 0, max: 1}}\n",
    "!!python/object/apply:os.system ['touch pwned']\n",
    "name: x\ndata: {dataset: missing.csv}\nparameters: {}\n",
])
def test_bad_input_to_run_starts_nothing(tmp_path, text):
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    before = set(os.listdir(tmp_path))
    proc = run_cli("run", str(spec), cwd=tmp_path, check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.strip()
    assert all(line.startswith("mlpsweep run: error: ") for line in proc.stderr.strip().splitlines())
    assert set(os.listdir(tmp_path)) == before  # no study, no MLflow store, nothing written


def test_bad_data_file_starts_nothing(tmp_path):
    bad = tmp_path / "nan.csv"
    bad.write_text("x,y\n1,2\n2,nan\n3,4\n")
    spec = write_spec(tmp_path, text=f"name: x\ndata: {{dataset: {bad}}}\nparameters: {{}}\n")
    before = set(os.listdir(tmp_path))
    proc = run_cli("run", str(spec), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "non-finite" in proc.stderr and "Traceback" not in proc.stderr
    assert set(os.listdir(tmp_path)) == before


class _Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_crafted_checkpoint_is_refused_by_best(tmp_path):
    spec = write_spec(tmp_path, name="evil", run_cap=2, epochs=20)
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    marker = tmp_path / "pwned"
    models = list((tmp_path / "mlartifacts").rglob("model.pt"))
    assert len(models) == 2
    for path in models:  # replace every stored checkpoint, and fix up its architecture.json digest
        with open(path, "wb") as fh:
            pickle.dump({"0_weight": _Evil(str(marker))}, fh)
        from models.checkpoint import file_sha256

        arch = path.parent / "architecture.json"
        meta = json.loads(arch.read_text())
        meta["sha256"] = file_sha256(path)
        arch.write_text(json.dumps(meta))
    proc = run_cli("best", "evil", "--out", str(tmp_path / "out"), cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "SHA-256" in proc.stderr and "Traceback" not in proc.stderr
    assert not marker.exists()
    from models import CheckpointError, load_checkpoint

    with pytest.raises(CheckpointError, match="not a plain tensor state dict"):
        load_checkpoint(models[0].parent)  # without the MLflow digest, weights_only still refuses
    assert not marker.exists()


@pytest.mark.parametrize("ray_address", ["none", None])
def test_unusable_tracking_store_is_one_line_exit_2_and_creates_nothing(tmp_path, ray_address):
    """MLflow is set up beside Ray's start: a store that cannot be used still stops everything."""
    from conftest import free_port

    spec = write_spec(tmp_path, name="nostore")
    extra = ["--ray-address", ray_address] if ray_address else []
    proc = run_cli("run", str(spec), "--quiet", "--tracking-uri", f"http://127.0.0.1:{free_port()}", *extra,
                   cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mlpsweep run: error:")]
    assert len(lines) == 1 and "--tracking-uri" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "optuna.journal").exists()


@pytest.mark.parametrize("ray_address", ["none", None])
def test_device_cuda_without_a_gpu_is_one_line_exit_2_and_starts_nothing(tmp_path, monkeypatch, ray_address):
    """Without the check, every trial failed on its worker and the run exited 0."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU here, whatever this machine has
    spec = write_spec(tmp_path, name="nogpu")
    spec.write_text(spec.read_text() + "device: cuda\n")
    before = set(os.listdir(tmp_path))
    extra = ["--ray-address", ray_address] if ray_address else []
    proc = run_cli("run", str(spec), "--quiet", *extra, cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("mlpsweep run: error:")]
    assert len(lines) == 1 and "device: cuda" in lines[0] and "device: cpu" in lines[0], proc.stderr
    assert proc.stderr.strip().splitlines() == lines  # nothing else: Ray did not start (it warns as it does)
    assert set(os.listdir(tmp_path)) == before  # no study, no MLflow store
