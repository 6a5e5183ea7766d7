"""A worker may hold its next job queued behind the one it trains (``Backend.depth``), so it
never waits a round trip through the driver between jobs. The driver uses that only when no
pruner needs jobs advanced between reports; what the sampler proposes never depends on it."""
from __future__ import annotations

import pytest

from conftest import write_spec
from sweeps.driver import SweepDriver
from sweeps.spec import load_spec
from workers.backend import InProcessBackend

SPEC = """\
name: depth
method: tpe
run_cap: 14
concurrency: 2
seed: 0
data: {{dataset: seed-1d, validation_fraction: 0.2}}
parameters:
  width: {{min: 2, max: 6}}
  activation: {{value: tanh}}
  optimizer: {{value: adam}}
  lr: {{distribution: log_uniform_values, min: 0.001, max: 0.1}}
  restarts: {{value: 1}}
  epochs: {{value: 40}}
verify: off
{extra}"""


class HoldingBackend(InProcessBackend):
    """Two workers that may each hold ``depth`` jobs; records the most jobs held at once."""

    def __init__(self, depth: int) -> None:
        super().__init__(2)
        self.depth = depth
        self.most_held = 0

    def start(self, job, configs, verify=None) -> None:
        super().start(job, configs, verify)
        self.most_held = max(self.most_held, len(self._pending))


def _run(tmp_path, name: str, depth: int, extra: str = "") -> tuple[HoldingBackend, list[int], list]:
    folder = tmp_path / name
    folder.mkdir()
    spec = load_spec(write_spec(folder, name="depth", text=SPEC.format(extra=extra)))
    backend = HoldingBackend(depth)
    running: list[int] = []
    driver = SweepDriver(spec, backend, None, str(folder / "optuna.journal"),
                         on_update=lambda stats: running.append(stats.running))
    driver.run()
    return backend, running, sorted(driver.study.trials, key=lambda t: t.number)


def test_each_worker_holds_its_next_job_and_the_trials_are_the_same(tmp_path):
    deep, running, trials = _run(tmp_path, "deep", depth=2)
    shallow, _, reference = _run(tmp_path, "shallow", depth=1)
    assert deep.most_held == 4 and shallow.most_held == 2
    assert running and max(running) <= 2  # queued jobs are not shown as running
    assert len(trials) == len(reference) == 14
    assert [t.params for t in trials] == [t.params for t in reference]
    assert [t.value for t in trials] == pytest.approx([t.value for t in reference], rel=1e-9)


def test_no_job_waits_behind_another_when_a_pruner_advances_them(tmp_path):
    deep, _, trials = _run(tmp_path, "pruned", depth=2, extra="early_terminate: {type: median, min_iter: 10}\n")
    assert deep.most_held == 2
    assert len(trials) == 14
