"""A sweep continued by a second command (a larger --run-cap) proposes the trials one command to
that cap proposes, for every method: the samplers draw trial n from (seed, n)."""
from __future__ import annotations

import optuna
import pytest

from conftest import write_spec
from sweeps.driver import SweepDriver
from sweeps.spec import load_spec, with_overrides
from workers.backend import InProcessBackend

SPACE = {
    "grid": "  width: {values: [2, 5, 9]}\n  activation: {values: [tanh, sigmoid]}\n  lr: {values: [0.01, 0.05]}\n",
    "other": "  width: {min: 2, max: 30}\n  activation: {values: [tanh, sigmoid]}\n"
             "  lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}\n",
}


@pytest.mark.parametrize("method", ["random", "tpe", "qmc", "gp", "cmaes", "grid"])
def test_continuing_a_sweep_proposes_what_one_run_to_its_cap_proposes(tmp_path, method):
    text = (f"name: c\nmethod: {method}\nrun_cap: 8\nseed: 3\ndata: {{dataset: seed-1d}}\nparameters:\n"
            + SPACE["grid" if method == "grid" else "other"] + "  epochs: {value: 5}\n  restarts: {value: 1}\n")
    spec = load_spec(write_spec(tmp_path, name="c", text=text))
    continued, whole = f"sqlite:///{tmp_path}/continued.db", f"sqlite:///{tmp_path}/whole.db"
    SweepDriver(with_overrides(spec, run_cap=5), InProcessBackend(1), None, continued).run()
    SweepDriver(spec, InProcessBackend(1), None, continued).run()  # the same command, --run-cap 8
    SweepDriver(spec, InProcessBackend(1), None, whole).run()

    def proposed(storage):
        return [t.params for t in optuna.load_study(study_name="c", storage=storage).trials]

    assert len(proposed(whole)) == 8
    assert proposed(continued) == proposed(whole)


@pytest.mark.parametrize("method", ["random", "tpe", "qmc", "gp", "cmaes", "grid"])
def test_making_a_sampler_warns_of_nothing(method):
    import warnings

    from sweeps.optuna_adapter import make_sampler
    from sweeps.spec import parse_spec

    spec = parse_spec(f"name: x\nmethod: {method}\ndata: {{dataset: seed-1d}}\nparameters: {{width: {{values: [2, 3]}}}}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Optuna's "experimental" warning was two lines on a qmc run's stderr
        make_sampler(spec)
