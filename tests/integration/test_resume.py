"""Interrupting a sweep (Ctrl+C) and running it again finishes the remaining trials only."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest import ROOT, run_cli, stored_study, write_spec

pytestmark = pytest.mark.integration


def _finished(folder: Path, name: str) -> int:
    try:
        study = stored_study(folder, name)
    except KeyError:
        return 0
    return sum(t.state.is_finished() and not t.user_attrs.get("mlpsweep_interrupted") for t in study.trials)


def test_ctrl_c_then_rerun_finishes_remaining_trials(tmp_path):
    spec = write_spec(tmp_path, name="resume", run_cap=10, epochs=400)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "sweeps.cli", "run", str(spec), "--quiet", "--ray-address", "none"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while _finished(tmp_path, "resume") < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the sweep ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    done_before = _finished(tmp_path, "resume")
    assert 3 <= done_before < 10

    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    study = stored_study(tmp_path, "resume")
    finished = [t for t in study.trials if t.state.is_finished() and not t.user_attrs.get("mlpsweep_interrupted")]
    assert len(finished) == 10
    assert not [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING]

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("resume")
    parents = client.search_runs([exp.experiment_id], "tags.`mlpsweep.kind` = 'sweep'")
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    trials = client.search_runs([exp.experiment_id], "tags.`mlpsweep.kind` = 'trial'", max_results=1000)
    # a trial whose restarts all diverged is a FAILED run: finished too
    numbers = [int(r.data.tags["mlpsweep.trial"]) for r in trials if r.info.status in ("FINISHED", "FAILED")]
    assert len(numbers) == len(set(numbers)) == 10
    assert sorted(numbers) == sorted(t.number for t in finished)
    assert not [r for r in trials if r.info.status == "RUNNING"]


def test_an_edited_spec_is_refused_before_anything_starts_unless_allowed(tmp_path):
    spec = write_spec(tmp_path, name="edited", run_cap=2, epochs=20)
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    stored = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    spec.write_text(spec.read_text().replace("run_cap: 2", "run_cap: 3").replace("max: 0.1", "max: 0.5"))
    refused = run_cli("run", str(spec), "--quiet", cwd=tmp_path, check=False)
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.splitlines() == [
        "mlpsweep run: error: spec: the stored sweep 'edited' ran with another spec (parameters.lr.max: 0.1 -> 0.5), "
        "and its trials and these would share one study and one best; give this spec another name to start a new "
        "sweep, or pass --allow-changed-spec to continue this one with it"]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir() if p.name != spec.name} == \
        {k: v for k, v in stored.items() if k != spec.name}  # no store touched, no Ray started
    assert len(stored_study(tmp_path, "edited").trials) == 2
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", "--allow-changed-spec", cwd=tmp_path)
    study = stored_study(tmp_path, "edited")
    assert len(study.trials) == 3 and study.trials[-1].params["lr"] <= 0.5
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    parent = client.search_runs([client.get_experiment_by_name("edited").experiment_id],
                                "tags.`mlpsweep.kind` = 'sweep'")[0]
    shown = (Path(client.download_artifacts(parent.info.run_id, "spec.yaml", str(tmp_path / "got")))).read_text()
    assert "max: 0.5" in shown and "run_cap: 3" in shown  # the parent run shows the spec the sweep has now
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)  # the edit is the spec now
