"""What a trial trains, without torch: the activation and optimizer names, layer sizes, the
architecture's canonical name and the training recipe (:class:`TrainConfig`).

The sweep driver and the MLflow writer build, compare and pickle these for every trial; keeping
them apart from the engine (:mod:`models.training`, which re-exports them) spares those
processes torch's import (~1 s of CPU at the start of a run, on the cores Ray and its workers
start on).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = [
    "ACTIVATION_NAMES",
    "LEAKY_SLOPE",
    "OPTIMIZERS",
    "BATCHED_OPTIMIZERS",
    "SEQUENTIAL_OPTIMIZERS",
    "SCIPY_OPTIMIZERS",
    "DEFAULT_LR",
    "TrainConfig",
    "check_activation",
    "validate_sizes",
    "canonical_architecture",
    "parameter_count",
    "restart_seed",
    "stack_key",
]

# The closed registry of :mod:`models.activations`, in its order (a test checks they agree).
ACTIVATION_NAMES: tuple[str, ...] = (
    "sigmoid", "tanh", "relu", "leaky_relu", "elu", "gelu", "softplus", "identity",
)
LEAKY_SLOPE = 0.01  # leaky_relu's slope below zero
BATCHED_OPTIMIZERS = ("adam", "sgd", "rmsprop")
SEQUENTIAL_OPTIMIZERS = ("lbfgs", "bfgs", "lbfgsb")
SCIPY_OPTIMIZERS = ("bfgs", "lbfgsb")  # scipy.optimize.minimize: on the CPU, in float64
OPTIMIZERS = BATCHED_OPTIMIZERS + SEQUENTIAL_OPTIMIZERS
DEFAULT_LR = {"adam": 0.01, "sgd": 0.01, "rmsprop": 0.01, "lbfgs": 0.5, "bfgs": 1.0, "lbfgsb": 1.0}


def check_activation(name: object) -> str:
    """``name`` if it is a registered activation.

    Raises:
        ValueError: it is not; the message lists the valid names.
    """
    if not isinstance(name, str) or name not in ACTIVATION_NAMES:
        raise ValueError(f"activation: unknown {name!r}; choose one of {', '.join(ACTIVATION_NAMES)}")
    return name


def validate_sizes(sizes: Sequence[int]) -> tuple[int, ...]:
    """Check an architecture's layer sizes and return them as a tuple of ints.

    Raises:
        ValueError: fewer than two sizes, or a size that is not a positive integer.
    """
    try:
        out = tuple(sizes)
    except TypeError:
        raise ValueError(f"sizes: must be a list of positive integers like [1, 10, 1], got {sizes!r}") from None
    if len(out) < 2:
        raise ValueError(f"sizes: needs at least input and output size, like [1, 10, 1]; got {list(out)}")
    for i, s in enumerate(out):
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"sizes[{i}]: must be a positive integer, got {s!r} (in {list(out)})")
    return out


def parameter_count(sizes: Sequence[int]) -> int:
    """Weights and biases of an MLP with layer ``sizes`` (inputs, hidden widths..., outputs)."""
    return sum(a * b + b for a, b in zip(sizes, sizes[1:]))


def canonical_architecture(sizes: Sequence[int], activation: str) -> str:
    """The architecture's canonical name, e.g. ``"1-10-10-1:sigmoid"``."""
    return "-".join(str(s) for s in validate_sizes(sizes)) + ":" + check_activation(activation)


@dataclass(frozen=True)
class TrainConfig:
    """One trial's training recipe (everything but the data).

    Args:
        sizes: ``[d_in, h1, ..., d_out]``.
        activation: a registered activation name.
        optimizer: one of :data:`OPTIMIZERS`.
        lr: learning rate; ``None`` takes the optimizer's default (:data:`DEFAULT_LR`).
        momentum: SGD / RMSprop momentum.
        nesterov: Nesterov momentum for SGD (needs momentum > 0).
        weight_decay: L2 penalty λ·Σ‖W‖² over the weights (not biases) added to the objective.
        batch_size: ``None`` for full batch, 1 for single-sample SGD, else mini-batches.
        max_epochs: epoch budget (scipy: iteration budget).
        restarts: independent random initialisations; the lowest training MSE wins.
        tol: stop a restart when its objective changes by less than this between epochs.
        seed: base seed; restart ``r`` uses :func:`restart_seed` ``(seed, r)``.
    """

    sizes: tuple[int, ...]
    activation: str = "sigmoid"
    optimizer: str = "adam"
    lr: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    batch_size: int | None = None
    max_epochs: int = 2000
    restarts: int = 10
    tol: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", validate_sizes(self.sizes))
        check_activation(self.activation)
        problems = []
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer: unknown {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            problems.append(f"lr: must be a finite number > 0, got {self.lr!r}")
        if not 0.0 <= self.momentum < 1.0:
            problems.append(f"momentum: must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and self.momentum <= 0:
            problems.append("nesterov: needs momentum > 0")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"weight_decay: must be >= 0, got {self.weight_decay!r}")
        if self.batch_size is not None and self.batch_size < 1:
            problems.append(f"batch_size: must be >= 1 or None (full batch), got {self.batch_size!r}")
        if self.max_epochs < 1:
            problems.append(f"max_epochs: must be >= 1, got {self.max_epochs!r}")
        if self.restarts < 1:
            problems.append(f"restarts: must be >= 1, got {self.restarts!r}")
        if not self.tol >= 0:
            problems.append(f"tol: must be >= 0, got {self.tol!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


def stack_key(config: TrainConfig) -> tuple:
    """Configs with equal keys can share one batched computation (co-batching)."""
    batched = config.optimizer in BATCHED_OPTIMIZERS
    return (config.sizes, config.activation, config.optimizer, config.batch_size, config.nesterov, batched)


def restart_seed(seed: int, restart: int) -> int:
    """The seed of restart ``restart`` under base ``seed``: independent of how many restarts run."""
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & (2**63 - 1), int(restart)]).generate_state(1, np.uint64)[0] >> 1)
