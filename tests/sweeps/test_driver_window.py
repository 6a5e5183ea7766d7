"""The first asks of a sweep never wait for tracking: only trial k − window must be logged
before the k-th ask, and for k < window there is no such trial (the window once wrapped around
and held asks 3 and 4 until trials 0 and 1 were written to MLflow)."""
from __future__ import annotations

from conftest import write_spec
from sweeps.driver import SweepDriver
from sweeps.spec import load_spec
from workers.backend import InProcessBackend

SPEC = """\
name: window
method: random
run_cap: 6
concurrency: 2
seed: 0
data: {dataset: seed-1d, validation_fraction: 0.2}
parameters:
  width: {value: 3}
  activation: {value: tanh}
  optimizer: {value: adam}
  lr: {value: 0.01}
  restarts: {value: 1}
  epochs: {value: 5}
verify: off
cobatch: 1
"""


class SlowTracker:
    """A tracker whose writes of trials 0 and 1 are acknowledged only once trial 2's result is in:
    it records how many trials the driver had asked when each result arrived."""

    def __init__(self) -> None:
        self.driver: SweepDriver | None = None
        self.asked_at: dict[int, int] = {}
        self.held: list = []

    def log_trial(self, config, result, *, verified, architecture, on_done) -> None:
        assert self.driver is not None
        self.asked_at[config.number] = len(self.driver.ask_order)
        if config.number < 2:
            self.held.append(on_done)
            return
        for done in self.held:
            done(None)
        self.held.clear()
        on_done(None)

    def open_parent(self, *args) -> None: ...
    def find_verdict(self, architecture: str) -> None: ...
    def log_progress(self, *args) -> None: ...
    def close_parent(self, *args, **kwargs) -> None: ...
    def flush(self) -> None: ...


def test_the_first_asks_do_not_wait_for_the_first_runs_to_be_written(tmp_path):
    spec = load_spec(write_spec(tmp_path, name="window", text=SPEC))
    tracker = SlowTracker()
    driver = SweepDriver(spec, InProcessBackend(2), tracker, str(tmp_path / "optuna.journal"))
    tracker.driver = driver
    driver.run()
    assert driver.window == 5
    # trial 1 finished while trial 0's run was still unwritten: trials 3 (and 4) were asked anyway
    assert tracker.asked_at[1] >= 4, tracker.asked_at
    assert sorted(tracker.asked_at) == list(range(6))
