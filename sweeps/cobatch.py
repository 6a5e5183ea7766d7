"""``cobatch``: how many same-shape trials one job trains as one batched computation.

Pure policy (no Optuna, Ray or torch): the driver asks it for each job, ``mlpsweep validate``
shows it. ``auto`` (the default) co-batches only where it is free: the sampler's next trial does
not depend on results (a wider reproducibility window then costs no search quality) and a
trial is small. 8 trials of 8e7 operations trained 3.5x faster in one stack than one after
another on one core (small matrices are bound by per-op overhead, and each job costs ~5 ms of
Ray and bookkeeping); 8 of 9e8 only 1.05x, and big jobs leave a worker idle at a sweep's end
(bench/README.md, session 12).
"""
from __future__ import annotations

from models.config import TrainConfig
from sweeps.spec import SweepSpec

__all__ = ["AUTO_COBATCH", "INDEPENDENT_SAMPLERS", "SMALL_TRIAL_FLOPS", "trial_flops", "max_cobatch",
           "cobatch_limit", "describe"]

AUTO_COBATCH = 8
INDEPENDENT_SAMPLERS = frozenset({"random", "grid", "qmc"})  # their next trial ignores results
SMALL_TRIAL_FLOPS = 1e8  # estimated operations of one trial's training (trial_flops)


def trial_flops(train: TrainConfig, rows: int) -> float:
    """Rough floating-point operations of one trial's training: forward and backward passes
    (~6 per weight and row) over every restart and epoch, on ``rows`` training rows."""
    weights = sum(a * b for a, b in zip(train.sizes, train.sizes[1:]))
    return 6.0 * train.restarts * train.max_epochs * rows * weights


def max_cobatch(spec: SweepSpec) -> int:
    """The most trials one job may hold (it sets the reproducibility window): the spec's
    ``cobatch``, or under ``auto`` :data:`AUTO_COBATCH` for samplers that ignore results, else 1."""
    if spec.cobatch != "auto":
        return int(spec.cobatch)
    return AUTO_COBATCH if spec.method in INDEPENDENT_SAMPLERS else 1


def cobatch_limit(spec: SweepSpec, train: TrainConfig, rows: int) -> int:
    """How many waiting trials shaped like ``train`` one job takes: :func:`max_cobatch`, but
    under ``auto`` 1 for a trial of more than :data:`SMALL_TRIAL_FLOPS`."""
    if spec.cobatch == "auto" and trial_flops(train, rows) > SMALL_TRIAL_FLOPS:
        return 1
    return max_cobatch(spec)


def describe(spec: SweepSpec) -> str:
    """One line for ``mlpsweep validate``: what ``cobatch`` does for this spec."""
    if spec.cobatch != "auto":
        return f"{spec.cobatch} same-shape trial(s) per job"
    if spec.method in INDEPENDENT_SAMPLERS:
        return (f"auto: up to {AUTO_COBATCH} same-shape trials per job when a trial is small "
                f"(under {int(SMALL_TRIAL_FLOPS):,} flops), else 1")
    return f"auto: 1 trial per job ({spec.method} learns from every result)"
