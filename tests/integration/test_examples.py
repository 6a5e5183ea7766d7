"""The shipped seed-1d example does what the README promises: the best trial's test MSE is at
most 0.0125 (the data's noise floor is 0.010), on local Ray, as `make demo` runs it."""
from __future__ import annotations

import re

import pytest

from conftest import ROOT, run_cli, stored_study

pytestmark = pytest.mark.integration


def test_seed_1d_example_reaches_the_noise_floor(tmp_path):
    proc = run_cli("run", str(ROOT / "sweeps" / "examples" / "seed-1d.yaml"), cwd=tmp_path, timeout=600)
    assert "INFO" not in proc.stderr  # MLflow's set-up chatter stays out of the user's terminal
    # stderr is a pipe here, as in a Ray job's log or CI: whole progress lines, the last one final
    lines = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr).splitlines()  # (colour codes, where FORCE_COLOR is set)
    progress = [line for line in lines if " done · " in line]
    assert proc.stderr.endswith("\n") and progress[-1].startswith("20/20 done · 0 running"), proc.stderr[-2000:]
    assert all(line.endswith(("ETA ?", "s")) for line in progress), proc.stderr[-2000:]
    assert not [line for line in lines if line.startswith(("·", "elapsed"))], proc.stderr[-2000:]  # none wrapped
    assert "Dashboard: " in proc.stdout and "(experiment 'seed-1d')" in proc.stdout.split("Dashboard: ")[1].split("\n")[0]
    study = stored_study(tmp_path, "seed-1d")
    best = study.best_trial
    assert best.user_attrs["test_mse"] <= 0.0125, best.user_attrs
    assert len(study.trials) == 20
