"""metric.target: the sweep stops once a trial reaches it, says so, and a second run adds nothing."""
from __future__ import annotations

import optuna

from conftest import write_spec
from sweeps.cmd_run import target_line
from sweeps.driver import SweepDriver
from sweeps.spec import load_spec, with_overrides
from workers.backend import InProcessBackend


def test_a_reached_target_ends_the_sweep_for_good_and_is_said(tmp_path):
    text = ("name: t\nmethod: random\nrun_cap: 6\nmetric: {name: val_mse, target: 10.0}\n"
            "data: {dataset: seed-1d}\nparameters:\n  width: {min: 2, max: 9}\n"
            "  epochs: {value: 5}\n  restarts: {value: 1}\n")
    spec = load_spec(write_spec(tmp_path, name="t", text=text))
    storage = f"sqlite:///{tmp_path}/optuna.db"
    first = SweepDriver(with_overrides(spec, run_cap=2), InProcessBackend(1), None, storage).run()
    assert len(first) == 2 and min(s.val_mse for s in first) < 10  # reached
    again = SweepDriver(spec, InProcessBackend(1), None, storage).run()  # run_cap 6: nothing to add
    assert len(optuna.load_study(study_name="t", storage=storage).trials) == len(first)
    assert [s.number for s in again] == [s.number for s in first]
    best = min((s.val_mse, s.number) for s in first if s.val_mse is not None)
    assert target_line(again, spec) == (f"metric.target reached: trial {best[1]} has val_mse {best[0]:.5g} <= 10, so "
                                        f"the sweep stopped at {len(first)} of run_cap 6 trials "
                                        "(lower or remove the target to go on)")
    unreached = load_spec(write_spec(tmp_path, name="u", text=text.replace("target: 10.0", "target: 1e-9")))
    assert target_line(again, unreached) is None
