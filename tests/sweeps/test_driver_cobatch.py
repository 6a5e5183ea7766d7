"""``cobatch: auto`` (the default): small same-shape trials of a sampler that ignores results share
a job, large ones and adaptive samplers' train alone; sharing changes no trial's numbers."""
from __future__ import annotations

import optuna
import pytest

from conftest import write_spec
from sweeps.cobatch import (AUTO_COBATCH, AUTO_ROWS, SMALL_TRIAL_FLOPS, auto_cobatch, cobatch_limit, describe, max_cobatch,
                            trial_flops)
from sweeps.driver import SweepDriver, build_trial_config
from sweeps.spec import load_spec, parse_spec, spec_digest, spec_to_dict
from workers.backend import InProcessBackend

SPEC = """\
name: cb
method: {method}
run_cap: 10
concurrency: 2
seed: 3
data: {{dataset: seed-1d, validation_fraction: 0.2}}
parameters:
  width: {{value: 4}}
  activation: {{value: tanh}}
  optimizer: {{value: adam}}
  lr: {lr}
  restarts: {{value: {restarts}}}
  epochs: {{value: {epochs}}}
  tol: {{value: {tol}}}
verify: gate
cobatch: {cobatch}
"""


def _spec(tmp_path, method="random", cobatch="auto", restarts=1, epochs=30, tol=0.0):
    lr = "{values: [0.01, 0.03]}" if method == "grid" else "{distribution: log_uniform_values, min: 0.001, max: 0.1}"
    text = SPEC.format(method=method, cobatch=cobatch, restarts=restarts, epochs=epochs, tol=tol, lr=lr)
    return load_spec(write_spec(tmp_path, name="cb", text=text))


def _train(spec, **knobs):
    """The training recipe of a trial of ``spec`` with these knob values (a small one by default)."""
    params = {"width": 4, "activation": "tanh", "optimizer": "adam", "lr": 0.01, "restarts": 1, "epochs": 30, **knobs}
    return build_trial_config(spec, 0, params, (1, 1)).train


class JobSizes(InProcessBackend):
    """The in-process backend, recording how many trials each job holds."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self.sizes: list[int] = []

    def start(self, job, configs, verify=None) -> None:
        self.sizes.append(len(configs))
        super().start(job, configs, verify)


def _run(tmp_path, spec) -> tuple[list, list[int]]:
    backend = JobSizes(2)
    storage = f"sqlite:///{tmp_path}/optuna-{spec.cobatch}.db"
    SweepDriver(spec, backend, None, storage).run()
    return optuna.load_study(study_name=spec.name, storage=storage).trials, backend.sizes


@pytest.mark.parametrize("method, expected", [("random", AUTO_ROWS), ("grid", AUTO_ROWS),
                                              ("qmc", AUTO_ROWS), ("tpe", 1), ("cmaes", 1), ("gp", 1)])
def test_auto_cobatches_only_for_samplers_that_ignore_results(tmp_path, method, expected):
    spec = _spec(tmp_path, method=method)  # one restart per trial: jobs of up to AUTO_ROWS trials
    assert spec.cobatch == "auto" and max_cobatch(spec) == expected
    assert f"up to {expected} same-shape" in describe(spec) if expected > 1 else "1 trial per job" in describe(spec)
    assert max_cobatch(_spec(tmp_path, method=method, cobatch=3)) == 3  # a number holds for any sampler


def test_auto_leaves_large_trials_alone(tmp_path):
    spec = _spec(tmp_path)
    small, large = _train(spec), _train(spec, width=50, depth=2, restarts=10, epochs=500)
    assert trial_flops(small, 80) < SMALL_TRIAL_FLOPS < trial_flops(large, 80)
    assert cobatch_limit(spec, small, 80) == AUTO_ROWS and cobatch_limit(spec, large, 80) == 1
    assert cobatch_limit(_spec(tmp_path, cobatch=4), large, 80) == 4


@pytest.mark.parametrize("restarts, expected", [(1, 32), (2, 16), (3, 10), (4, 8), (5, 8), (10, 8), (100, 8)])
def test_auto_fills_a_job_of_small_trials_to_32_restarts_and_never_below_8_trials(tmp_path, restarts, expected):
    assert (AUTO_COBATCH, AUTO_ROWS) == (8, 32) and auto_cobatch(restarts) == expected
    spec = _spec(tmp_path, restarts=restarts)
    assert max_cobatch(spec) == expected  # the window: 2 x slots x this + 1
    assert cobatch_limit(spec, _train(spec, restarts=restarts), 80) == expected


def test_auto_sizes_the_window_for_the_fewest_restarts_a_trial_may_have(tmp_path):
    text = SPEC.format(method="random", cobatch="auto", restarts=1, epochs=30, tol=0.0,
                       lr="{distribution: log_uniform_values, min: 0.001, max: 0.1}")
    ranged = load_spec(write_spec(tmp_path, name="cb", text=text.replace("{value: 1}", "{min: 2, max: 10}")))
    chosen = load_spec(write_spec(tmp_path, name="cb", text=text.replace("{value: 1}", "{values: [10, 4]}")))
    assert max_cobatch(ranged) == 16 and max_cobatch(chosen) == 8
    assert cobatch_limit(ranged, _train(ranged, restarts=5), 80) == 8  # a 5-restart trial's job: 8 trials (40 restarts)


def test_auto_shares_jobs_and_every_trial_keeps_its_numbers(tmp_path):
    together, sizes = _run(tmp_path, _spec(tmp_path))
    alone, alone_sizes = _run(tmp_path, _spec(tmp_path, cobatch=1))
    assert max(sizes) > 1 and len(sizes) < len(together) == 10
    assert alone_sizes == [1] * 10
    for a, b in zip(alone, together):
        assert a.params == b.params and a.state == b.state
        assert (a.value, a.user_attrs["train_mse"], a.user_attrs["test_mse"]) == \
               (b.value, b.user_attrs["train_mse"], b.user_attrs["test_mse"])  # to the last bit


def test_auto_trains_a_trial_estimated_large_alone(tmp_path):
    # 10 restarts x 100,000 epochs are estimated large; tol 10 stops every restart after an epoch
    _, sizes = _run(tmp_path, _spec(tmp_path, restarts=10, epochs=100_000, tol=10.0))
    assert sizes == [1] * 10


def test_cobatch_is_kept_in_the_spec_yaml_but_not_in_the_digest(tmp_path):
    base = "name: x\ndata: {dataset: seed-1d}\nparameters: {}\n"
    auto, four = parse_spec(base), parse_spec(base + "cobatch: 4\n")
    assert spec_to_dict(auto)["cobatch"] == "auto" and spec_to_dict(four)["cobatch"] == 4
    assert spec_digest(auto) == spec_digest(four)  # it schedules trials, as concurrency does
