"""A real sweep end to end: local Ray, SQLite MLflow, checked through MlflowClient and Optuna alone."""
from __future__ import annotations

import json
import math

import optuna
import pytest
import torch
from mlflow import MlflowClient

from conftest import run_cli, write_spec, stored_study
from models import load_checkpoint, load_dataset

pytestmark = pytest.mark.integration

PARAMS = {"width", "depth", "activation", "optimizer", "lr", "restarts", "epochs", "hidden_sizes"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("e2e")
    spec = write_spec(folder, name="e2e", run_cap=8)
    proc = run_cli("run", str(spec), "--quiet", cwd=folder, timeout=600)
    return folder, proc


def _runs(client, kind):
    exp = client.get_experiment_by_name("e2e")
    return client.search_runs([exp.experiment_id], f"tags.`mlpsweep.kind` = '{kind}'", max_results=1000)


def test_cli_prints_summary_and_dashboard_command(sweep):
    _, proc = sweep
    assert "top" in proc.stdout and "val_mse" in proc.stdout
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in proc.stdout


def test_a_quiet_run_says_nothing_on_stderr(sweep):
    """--quiet: no progress line and no library's notice (Ray warned of its token authentication
    on every local start)."""
    _, proc = sweep
    assert proc.stderr == "", proc.stderr[-2000:]


def test_the_store_is_one_file_after_the_run(sweep):
    """Its processes end without closing their connections; the command then folds SQLite's
    write-ahead log into mlflow.db, so a copy of that file alone holds the whole sweep."""
    import shutil
    import sqlite3

    folder, _ = sweep
    assert not (folder / "mlflow.db-wal").exists() and not (folder / "mlflow.db-shm").exists()
    copy = folder.parent / "copied-alone.db"
    shutil.copyfile(folder / "mlflow.db", copy)
    with sqlite3.connect(copy) as db:
        assert db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] >= 8 + 1  # the trials and the parent


def test_mlflow_holds_parent_trials_and_verifications(sweep):
    folder, _ = sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    parents = _runs(client, "sweep")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["mlpsweep.sweep"] == "e2e"
    assert {"best_val_mse", "best_test_mse", "best_trial"} <= set(parent.data.metrics)
    assert "spec.yaml" in [a.path for a in client.list_artifacts(parent.info.run_id)]

    trials = _runs(client, "trial")
    assert sorted(int(r.data.tags["mlpsweep.trial"]) for r in trials) == list(range(8))
    architectures = set()
    for run in trials:
        tags, data = run.data.tags, run.data
        assert run.info.status == "FINISHED"
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["mlpsweep.verified"] == "pass"
        assert tags["mlpsweep.node"]
        architectures.add(tags["mlpsweep.architecture"])
        assert PARAMS <= set(data.params), set(data.params)
        assert {"train_mse", "val_mse", "test_mse"} <= set(data.metrics)
        run_id = run.info.run_id
        restarts = client.get_metric_history(run_id, "restart_train_mse")
        statuses = json.loads(tags["mlpsweep.restart_status"])
        assert len(statuses) == 3
        # diverged restarts have no finite MSE: MLflow holds finite values only
        assert sorted(m.step for m in restarts) == [r for r, s in enumerate(statuses) if not s.startswith("diverged")]
        curve = client.get_metric_history(run_id, "curve_val_mse")
        assert len(curve) >= 10 and curve[0].step == 0
        files = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
        assert files == {"checkpoint/model.pt", "checkpoint/architecture.json", "checkpoint/weights.npz"}
        assert len(tags["mlpsweep.checkpoint_sha256"]) == 64

    verifications = _runs(client, "verification")
    verified = {r.data.tags["mlpsweep.architecture"]: r.data.tags["mlpsweep.verified"] for r in verifications}
    assert set(verified) == architectures and set(verified.values()) == {"pass"}
    assert len(verifications) == len(architectures)  # once per architecture


def test_reloaded_checkpoint_reproduces_logged_test_mse(sweep, tmp_path):
    folder, _ = sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    data = load_dataset("seed-1d", validation_fraction=0.2, seed=0)
    for run in _runs(client, "trial")[:3]:
        local = client.download_artifacts(run.info.run_id, "checkpoint", str(tmp_path / run.info.run_id))
        model = load_checkpoint(local, expected_sha256=run.data.tags["mlpsweep.checkpoint_sha256"])
        with torch.no_grad():
            mse = ((model(data.X_test) - data.y_test) ** 2).mean().item()
        assert mse == pytest.approx(run.data.metrics["test_mse"], rel=1e-5)


def test_study_holds_eight_finished_trials(sweep):
    folder, _ = sweep
    study = stored_study(folder, "e2e")
    states = [t.state for t in study.trials]
    assert len(states) == 8 and all(s == optuna.trial.TrialState.COMPLETE for s in states)
    assert all(math.isfinite(t.value) for t in study.trials)


def test_same_spec_and_seed_give_same_trials_in_process(sweep, tmp_path):
    """Ray timing does not leak into the search: an in-process run of the same spec proposes the
    same configurations and gets the same metrics."""
    folder, _ = sweep
    spec = write_spec(tmp_path, name="e2e", run_cap=8)
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    ray_study = stored_study(folder, "e2e")
    local_study = stored_study(tmp_path, "e2e")
    for a, b in zip(ray_study.trials, local_study.trials):
        assert a.params == b.params
        assert a.value == pytest.approx(b.value, rel=1e-6)
        assert a.user_attrs["test_mse"] == pytest.approx(b.user_attrs["test_mse"], rel=1e-6)


def test_status_and_best_export(sweep, tmp_path):
    folder, _ = sweep
    status = run_cli("status", "e2e", cwd=folder)
    assert "8 complete" in status.stdout
    out = tmp_path / "best"
    run_cli("best", "e2e", "--out", str(out), cwd=folder)
    model = load_checkpoint(out)
    study = stored_study(folder, "e2e")
    import json

    config = json.loads((out / "config.json").read_text())
    assert config["trial"] == study.best_trial.number
    data = load_dataset("seed-1d")
    with torch.no_grad():
        val = ((model(data.X_val) - data.y_val) ** 2).mean().item()
    assert val == pytest.approx(study.best_value, rel=1e-5)
    (out / "model.pt").write_bytes(b"not this")
    again = run_cli("best", "e2e", "--out", str(out), cwd=folder, check=False)
    assert again.returncode == 2 and "already holds an export (sweep 'e2e', trial" in again.stderr
    assert (out / "model.pt").read_bytes() == b"not this"
    run_cli("best", "e2e", "--out", str(out), "--force", cwd=folder)
    assert load_checkpoint(out).state_dict().keys() == model.state_dict().keys()


def test_parent_run_holds_the_optimisation_history(sweep):
    """Progress points are gathered and written in batches: none may be lost or doubled."""
    folder, _ = sweep
    client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
    parent = _runs(client, "sweep")[0].info.run_id
    study = stored_study(folder, "e2e")
    complete = {t.number: t.value for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    objective = {m.step: m.value for m in client.get_metric_history(parent, "trial_objective")}
    assert len(client.get_metric_history(parent, "trial_objective")) == len(complete)
    assert objective == pytest.approx(complete)
    best = [m.value for m in sorted(client.get_metric_history(parent, "best_so_far"), key=lambda m: m.step)]
    assert len(best) == len(study.trials) and best == sorted(best, reverse=True)
    assert best[-1] == pytest.approx(min(complete.values()))


def test_tpe_past_its_random_start_proposes_the_same_trials_whatever_the_timing(tmp_path):
    """TPE's first 10 trials are random; after them, the constant liar sees trials in flight. The
    driver tells trial k − window just before the k-th ask and no later one, so which trials the
    sampler sees as finished never depends on how fast workers are: Ray with 2 workers and this
    process one job at a time propose the same 16 trials."""
    studies = []
    for backend in ("ray", "none"):
        folder = tmp_path / backend
        folder.mkdir()
        spec = write_spec(folder, name="order", run_cap=16, epochs=60)
        extra = ("--ray-address", "none") if backend == "none" else ()
        run_cli("run", str(spec), "--quiet", *extra, cwd=folder)
        studies.append(stored_study(folder, "order").trials)
    ray_trials, local_trials = studies
    assert len(ray_trials) == len(local_trials) == 16
    assert [t.params for t in ray_trials] == [t.params for t in local_trials]
    assert [t.value for t in ray_trials] == pytest.approx([t.value for t in local_trials], rel=1e-6)


def test_the_driver_process_never_imports_torch(tmp_path):
    """torch's import is ~1 CPU-second that a run's start (Ray, its workers) needs more: the
    driver builds, schedules and tells trials with :mod:`models.config` and the data's arrays."""
    import os
    import subprocess
    import sys

    from conftest import ROOT

    spec = write_spec(tmp_path, name="torchless", run_cap=3, epochs=20)
    script = ("import sys; from sweeps.cli import main; "
              f"code = main(['run', {str(spec)!r}, '--quiet']); print('exit', code, 'torch' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**env, "PYTHONPATH": str(ROOT)})
    assert proc.stdout.split()[-3:] == ["exit", "0", "False"], proc.stdout[-2000:] + proc.stderr[-2000:]
    assert len(stored_study(tmp_path, "torchless").trials) == 3


def test_best_of_a_standardised_sweep_says_how_to_use_its_model_on_raw_data(tmp_path):
    # iris-petal is always standardised: the model takes and gives standard units, and the export
    # carries the training rows' vectors that map raw data to them and back
    spec = write_spec(tmp_path, name="std", text=(
        "name: std\nmethod: random\nrun_cap: 2\ndata: {dataset: iris-petal, validation_fraction: 0.2, seed: 3}\n"
        "parameters:\n  width: {value: 5}\n  epochs: {value: 40}\n  restarts: {value: 2}\n"))
    run_cli("run", str(spec), "--quiet", cwd=tmp_path)
    out = tmp_path / "best"
    run_cli("best", "std", "--out", str(out), cwd=tmp_path)
    config = json.loads((out / "config.json").read_text())
    data = load_dataset("iris-petal", validation_fraction=0.2, seed=3)
    vectors = config["data"]["standardization"]
    assert config["data"]["dataset"] == "iris-petal" and config["data"]["seed"] == 3
    assert vectors == data.standardization.as_json()  # the worker's, from the same rows
    assert config["units"].startswith("standardized: the model takes x' = (x - x_mean) / x_std")
    assert json.loads((out / "architecture.json").read_text())["extra"]["data"] == config["data"]
    # the raw test rows, through the recorded vectors, give the recorded test MSE; back in raw units
    x_mean, x_std, y_mean, y_std = (torch.tensor(vectors[k]) for k in ("x_mean", "x_std", "y_mean", "y_std"))
    raw_x, raw_y = data.X_test * x_std + x_mean, data.standardization.inverse_targets(data.y_test)
    model = load_checkpoint(out)
    with torch.no_grad():
        pred = model((raw_x - x_mean) / x_std)
    assert ((pred - data.y_test) ** 2).mean().item() == pytest.approx(config["metrics"]["test_mse"], rel=1e-4)
    raw_mse = ((pred * y_std + y_mean - raw_y) ** 2).mean(dim=0)
    assert raw_mse.numpy() == pytest.approx((((pred - data.y_test) ** 2).mean(dim=0) * y_std**2).numpy(), rel=1e-4)
