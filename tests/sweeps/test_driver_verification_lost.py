"""A job whose worker died while it verified its architecture has no verdict: the verification
is run again with the trial's retry, and is never read as a failure."""
from __future__ import annotations

import optuna

from conftest import write_spec
from sweeps.driver import MAX_ATTEMPTS, SweepDriver
from sweeps.spec import load_spec
from workers.backend import InProcessBackend, JobLost


class LosingVerifications(InProcessBackend):
    """The in-process backend, except that the first ``losses`` jobs that verify die."""

    def __init__(self, slots: int, losses: int) -> None:
        super().__init__(slots)
        self.losses = losses
        self.verify_calls = 0

    def events(self, timeout: float | None = None) -> list:
        if self._pending and self._pending[0][0] == "start" and self._pending[0][1][2] is not None:
            self.verify_calls += 1
            if self.losses > 0:
                self.losses -= 1
                _, (job, configs, _verify) = self._pending.popleft()
                return [JobLost(job, tuple(c.number for c in configs), "worker lost (killed)")]
        return super().events(timeout)


SPEC = """\
name: lost
method: random
run_cap: 4
concurrency: 1
seed: 0
data: {dataset: seed-1d, validation_fraction: 0.2}
parameters:
  width: {value: 5}
  activation: {value: tanh}
  optimizer: {value: adam}
  lr: {value: 0.01}
  restarts: {value: 1}
  epochs: {value: 20}
verify: gate
cobatch: 1  # one trial asked ahead: trials asked after the give-up verify afresh
"""


def _run(tmp_path, losses: int) -> tuple[list, LosingVerifications, SweepDriver]:
    spec = load_spec(write_spec(tmp_path, name="lost", text=SPEC))
    backend = LosingVerifications(1, losses)
    driver = SweepDriver(spec, backend, None, f"sqlite:///{tmp_path}/optuna.db")
    driver.run()
    return optuna.load_study(study_name="lost", storage=f"sqlite:///{tmp_path}/optuna.db").trials, backend, driver


def test_a_lost_verification_is_run_again_and_its_trials_train(tmp_path):
    trials, backend, driver = _run(tmp_path, losses=MAX_ATTEMPTS - 1)
    assert backend.verify_calls == MAX_ATTEMPTS
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert driver.verdicts == {"1-5-1:tanh": "pass"}


def test_a_verification_that_never_runs_fails_its_trials_saying_so_and_is_tried_again_later(tmp_path):
    trials, backend, _ = _run(tmp_path, losses=MAX_ATTEMPTS)
    carrier, *held = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert f"gave up after {MAX_ATTEMPTS} attempts" in carrier.user_attrs["fail_reason"]
    assert held, "the trials waiting on the lost verification should have failed"
    for t in held:
        assert "could not run" in t.user_attrs["fail_reason"] and "verification failed" not in t.user_attrs["fail_reason"]
    # a later trial of the same architecture asked for a fresh verification, which ran and passed
    assert backend.verify_calls == MAX_ATTEMPTS + 1
    assert any(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
