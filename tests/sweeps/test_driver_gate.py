"""``verify: gate`` and ``record``: the first job of an architecture verifies it, then trains
only if it passed (gate) or anyway (record); a known verdict is reused, never re-run."""
from __future__ import annotations

import functools

import optuna
import pytest

import models.verify
from conftest import write_spec
from models.backprop import BackwardSteps, backward
from sweeps.driver import SweepDriver
from sweeps.spec import load_spec
from workers.backend import InProcessBackend

SPEC = """\
name: gate
method: random
run_cap: 5
concurrency: 1
seed: 0
data: {{dataset: seed-1d, validation_fraction: 0.2}}
parameters:
  width: {{values: [3, 4]}}
  activation: {{value: tanh}}
  optimizer: {{value: adam}}
  lr: {{value: 0.01}}
  restarts: {{value: 1}}
  epochs: {{value: 10}}
verify: {mode}
"""


class CountingBackend(InProcessBackend):
    """The in-process backend, counting the jobs that verify and the trials that train."""

    def __init__(self) -> None:
        super().__init__(1)
        self.verifying_jobs: list[str | None] = []
        self.trained: list[int] = []

    def start(self, job, configs, verify=None) -> None:
        self.verifying_jobs.append(verify)
        super().start(job, configs, verify)

    def events(self, timeout=None):
        out = super().events(timeout)
        for update in out:
            self.trained += [e.result.number for e in update.events
                             if hasattr(e, "result") and e.result.train_mse is not None]
        return out


def _run(tmp_path, mode: str) -> tuple[list, CountingBackend, SweepDriver]:
    spec = load_spec(write_spec(tmp_path, name="gate", text=SPEC.format(mode=mode)))
    backend = CountingBackend()
    driver = SweepDriver(spec, backend, None, f"sqlite:///{tmp_path}/optuna.db")
    driver.run()
    return optuna.load_study(study_name="gate", storage=f"sqlite:///{tmp_path}/optuna.db").trials, backend, driver


@pytest.fixture
def broken_backprop(monkeypatch):
    doubled = BackwardSteps(output_delta=lambda y_hat, y, loss: 4 * (y_hat - y) / y.numel())
    monkeypatch.setattr(models.verify, "default_backward", functools.partial(backward, steps=doubled))


def test_each_architecture_is_verified_once_by_its_first_job_and_then_trains(tmp_path):
    trials, backend, driver = _run(tmp_path, "gate")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert sorted(v for v in backend.verifying_jobs if v) == ["gate", "gate"]  # 1-3-1 and 1-4-1, once each
    assert driver.verdicts == {"1-3-1:tanh": "pass", "1-4-1:tanh": "pass"}
    assert sorted(backend.trained) == [t.number for t in trials]


def test_gate_trains_no_trial_of_an_architecture_that_fails(tmp_path, broken_backprop):
    trials, backend, driver = _run(tmp_path, "gate")
    assert backend.trained == []
    assert set(driver.verdicts.values()) == {"fail"}
    for t in trials:
        assert t.state == optuna.trial.TrialState.FAIL
        assert "backprop verification failed for 1-" in t.user_attrs["fail_reason"]
    # a failed verdict is final: later trials of the architecture fail without verifying again
    assert len([v for v in backend.verifying_jobs if v]) == len(driver.verdicts)


def test_record_trains_anyway_and_keeps_the_verdict(tmp_path, broken_backprop):
    trials, backend, driver = _run(tmp_path, "record")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert set(driver.verdicts.values()) == {"fail"}
    assert sorted(backend.trained) == [t.number for t in trials]


def test_off_verifies_nothing(tmp_path, broken_backprop):
    trials, backend, driver = _run(tmp_path, "off")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 5
    assert backend.verifying_jobs and set(backend.verifying_jobs) == {None} and driver.verdicts == {}
