"""``cobatch``: how many same-shape trials one job trains as one batched computation.

Pure policy (no Optuna, Ray or torch): the driver asks it for each job, ``mlpsweep validate``
shows it. ``auto`` (the default) co-batches only where it is free: the sampler's next trial does
not depend on results (a wider reproducibility window then costs no search quality) and a
trial is small. 8 trials of 8e7 operations trained 3.5x faster in one stack than one after
another on one core (small matrices are bound by per-op overhead, and each job costs ~5 ms of
Ray and bookkeeping); 8 of 9e8 only 1.05x, and big jobs leave a worker idle at a sweep's end
(bench/README.md, session 12). A stack keeps paying until it holds ~32 rows (restarts x trials):
one-restart trials train 1.5-2x faster per trial 32 to a job than 8, ten-restart ones no faster
(bench/README.md, session 26), so a job of small trials takes 8, or more where that leaves it
under :data:`AUTO_ROWS` rows.
"""
from __future__ import annotations

from models.config import TrainConfig
from sweeps.space import Categorical, Constant, IntRange
from sweeps.spec import SweepSpec

__all__ = ["AUTO_COBATCH", "AUTO_ROWS", "INDEPENDENT_SAMPLERS", "SMALL_TRIAL_FLOPS", "trial_flops", "auto_cobatch",
           "max_cobatch", "cobatch_limit", "describe"]

AUTO_COBATCH = 8  # trials per job of small trials under ``auto``, at least
AUTO_ROWS = 32  # ... and more while the job's stack stays within this many rows (restarts x trials)
INDEPENDENT_SAMPLERS = frozenset({"random", "grid", "qmc"})  # their next trial ignores results
SMALL_TRIAL_FLOPS = 1e8  # estimated operations of one trial's training (trial_flops)


def trial_flops(train: TrainConfig, rows: int) -> float:
    """Rough floating-point operations of one trial's training: forward and backward passes
    (~6 per weight and row) over every restart and epoch, on ``rows`` training rows."""
    weights = sum(a * b for a, b in zip(train.sizes, train.sizes[1:]))
    return 6.0 * train.restarts * train.max_epochs * rows * weights


def auto_cobatch(restarts: int) -> int:
    """Small trials of ``restarts`` restarts per job under ``auto``: :data:`AUTO_COBATCH`, or as
    many as fill :data:`AUTO_ROWS` rows (32 one-restart trials, 16 two-restart ones, ...)."""
    return max(AUTO_COBATCH, AUTO_ROWS // max(1, restarts))


def _fewest_restarts(spec: SweepSpec) -> int:
    """The fewest restarts any trial of ``spec`` may have (its ``restarts`` knob)."""
    dim = spec.parameters.get("restarts")
    if isinstance(dim, Constant):
        return int(dim.value)
    if isinstance(dim, IntRange):
        return dim.low
    if isinstance(dim, Categorical):
        return min(int(v) for v in dim.choices)
    return 1  # no such knob, or a kind it cannot take: assume the smallest trials


def max_cobatch(spec: SweepSpec) -> int:
    """The most trials one job may hold (it sets the reproducibility window): the spec's
    ``cobatch``, or under ``auto`` :func:`auto_cobatch` of the spec's fewest restarts for
    samplers that ignore results, else 1."""
    if spec.cobatch != "auto":
        return int(spec.cobatch)
    return auto_cobatch(_fewest_restarts(spec)) if spec.method in INDEPENDENT_SAMPLERS else 1


def cobatch_limit(spec: SweepSpec, train: TrainConfig, rows: int) -> int:
    """How many waiting trials shaped like ``train`` one job takes: the spec's ``cobatch``; under
    ``auto`` 1 for a trial of more than :data:`SMALL_TRIAL_FLOPS` or a sampler that learns from
    results, else :func:`auto_cobatch` of its restarts."""
    if spec.cobatch != "auto":
        return int(spec.cobatch)
    if trial_flops(train, rows) > SMALL_TRIAL_FLOPS:
        return 1
    return min(max_cobatch(spec), auto_cobatch(train.restarts))


def describe(spec: SweepSpec) -> str:
    """One line for ``mlpsweep validate``: what ``cobatch`` does for this spec."""
    if spec.cobatch != "auto":
        return f"{spec.cobatch} same-shape trial(s) per job"
    if spec.method in INDEPENDENT_SAMPLERS:
        return (f"auto: up to {max_cobatch(spec)} same-shape trials per job when a trial is small "
                f"(under {int(SMALL_TRIAL_FLOPS):,} flops; {AUTO_COBATCH}, or as many as hold "
                f"{AUTO_ROWS} restarts in all), else 1")
    return f"auto: 1 trial per job ({spec.method} learns from every result)"
