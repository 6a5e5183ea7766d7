"""Running one trial: the training engine plus the bookkeeping a sweep needs. No Ray here.

A :class:`TrialSession` trains in chunks so that the driver can prune between them; the
in-process backend and the Ray actors both drive it.
"""
from __future__ import annotations

import logging
import math
import socket
import time
from dataclasses import replace
from typing import Callable

from models.data import Dataset, load_dataset
from models.training import StackTrainer, TrainResult
from workers.records import COMPLETE, FAIL, PRUNED, Checkpoint, DataConfig, TrialConfig, TrialResult

__all__ = ["TrialSession", "run_trial", "DatasetCache", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but no CUDA device is available on this node")
    return device


class DatasetCache:
    """Loads each distinct dataset once per process (workers are long-lived)."""

    def __init__(self, loader: Callable[..., Dataset] = load_dataset) -> None:
        self._loader = loader
        self._cache: dict[DataConfig, Dataset] = {}

    def get(self, config: DataConfig) -> Dataset:
        if config not in self._cache:
            self._cache[config] = self._loader(config.dataset, **config.load_kwargs())
        return self._cache[config]


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


class TrialSession:
    """One job in training: one trial, or several same-shape trials co-batched in one stack.

    ``advance()`` trains to the next report point (or to the end when no pruner listens) and
    returns, per trial still in the job, either ``(number, epoch, value)`` to report or its
    final :class:`TrialResult`.

    Args:
        configs: trials with equal :func:`models.training.stack_key` (one or more).
        data: their dataset.
        node: the name of the machine it runs on (recorded as ``mlpsweep.node``).
    """

    def __init__(self, configs: list[TrialConfig], data: Dataset, node: str | None = None) -> None:
        self.configs = list(configs)
        self.node = node or socket.gethostname()
        self.t0 = time.perf_counter()
        self.intermediate: dict[int, list[tuple[int, float]]] = {c.number: [] for c in configs}
        self.open = {c.number: i for i, c in enumerate(configs)}  # trial number -> config index
        self.trainer = StackTrainer([c.train for c in configs], data, device=resolve_device(configs[0].device))
        self.standardization = data.standardization.as_json() if data.standardization is not None else None

    def advance(self, prune: tuple[int, ...] = ()) -> list[tuple[int, int, float | None] | TrialResult]:
        out: list[tuple[int, int, float | None] | TrialResult] = []
        for number in prune:
            if number in self.open:
                self.trainer.prune(self.open[number])
                out.append(self._finish(number, pruned=True))
        if not self.open:
            return out
        # A report at step e gives the MSE after e updates (the curves' point e): advancing to
        # epoch index e + 1 evaluates the model after e updates (index e), as the curves do.
        every = self.configs[0].report_every
        target = None if every <= 0 else max(self.trainer.epoch, 1) + every
        budget = max(self.configs[ci].train.max_epochs for ci in self.open.values())
        if target is not None and target > budget:
            target = None  # the last chunk: on to the evaluation after the last update (advance's default)
        progress = self.trainer.advance(target)
        step = progress.epoch - 1
        for number, ci in list(self.open.items()):
            config = self.configs[ci]
            if target is None or progress.done[ci] or progress.epoch > config.train.max_epochs:
                out.append(self._finish(number))
                continue
            value = progress.val_mse[ci] if config.metric == "val_mse" else progress.train_mse[ci]
            value = _finite(value)
            if value is not None:
                self.intermediate[number].append((step, value))
            out.append((number, step, value))
        return out

    def _finish(self, number: int, pruned: bool = False) -> TrialResult:
        ci = self.open.pop(number)
        result = self.trainer.result(ci)
        return to_trial_result(self.configs[ci], result, pruned=pruned, node=self.node,
                               intermediate=tuple(self.intermediate[number]), wall=time.perf_counter() - self.t0,
                               share=len(self.configs), standardization=self.standardization)


def to_trial_result(
    config: TrialConfig,
    result: TrainResult,
    *,
    pruned: bool,
    node: str | None,
    intermediate: tuple[tuple[int, float], ...] = (),
    wall: float = 0.0,
    share: int = 1,
    standardization: dict[str, list[float]] | None = None,
) -> TrialResult:
    """Map the engine's result to the sweep's outcome (COMPLETE, FAIL with reason, PRUNED);
    ``standardization``: the data's (:meth:`models.data.Standardization.as_json`), for the checkpoint."""
    best = result.best_restart
    common = dict(
        number=config.number,
        restart_train_mse=result.train_mse,
        restart_val_mse=result.val_mse,
        restart_test_mse=result.test_mse or (),
        restart_status=result.status,
        intermediate=intermediate,
        node=node,
        train_seconds=result.seconds / share,  # a co-batched job's math time, split evenly
        wall_seconds=wall,
        extra={"cobatched": share} if share > 1 else {},
    )
    if best is None:
        return TrialResult(state=FAIL, reason=result.failure_reason, **common)  # type: ignore[arg-type]
    state = PRUNED if pruned else COMPLETE
    train = _finite(result.train_mse[best])
    val = _finite(result.val_mse[best]) if config.data.validation_fraction > 0 else None
    test = _finite(result.test_mse[best]) if result.test_mse else None
    objective = val if config.metric == "val_mse" else train
    reason = None
    if objective is None and state == COMPLETE:
        state, reason = FAIL, f"{config.metric} is not finite for the chosen restart {best}"
    return TrialResult(
        state=state,
        reason=reason,
        train_mse=train,
        val_mse=val,
        test_mse=test,
        best_restart=best,
        train_curve=result.train_curves[best],
        val_curve=result.val_curves[best],
        checkpoint=Checkpoint.of(result.state_dict, config.train.sizes, config.train.activation, standardization)
        if result.state_dict else None,
        **common,  # type: ignore[arg-type]
    )


def run_trial(config: TrialConfig, data: Dataset, node: str | None = None) -> TrialResult:
    """Train one trial to the end (no pruning) and return its result. Exceptions become FAIL."""
    try:
        session = TrialSession([replace(config, report_every=0)], data, node)
        (result,) = session.advance()
        assert isinstance(result, TrialResult)
        return result
    except Exception as exc:  # a trial's failure must not end the sweep
        log.exception("trial %s failed", config.number)
        return TrialResult(number=config.number, state=FAIL, reason=f"{type(exc).__name__}: {exc}"[:500], node=node)
