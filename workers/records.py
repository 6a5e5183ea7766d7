"""Typed records that cross the driver/worker boundary. Pure data: no Ray, no MLflow."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from models.config import TrainConfig

__all__ = ["DataConfig", "TrialConfig", "TrialResult", "Checkpoint", "COMPLETE", "FAIL", "PRUNED", "gate_reason"]

COMPLETE, FAIL, PRUNED = "COMPLETE", "FAIL", "PRUNED"


@dataclass(frozen=True)
class DataConfig:
    """How a worker loads the sweep's data (see :func:`models.load_dataset`)."""

    dataset: str
    validation_fraction: float = 0.2
    seed: int = 0
    features: tuple[str, ...] | None = None
    targets: tuple[str, ...] | None = None
    test_path: str | None = None
    standardize: bool = False

    def load_kwargs(self) -> dict[str, Any]:
        return {
            "validation_fraction": self.validation_fraction,
            "seed": self.seed,
            "features": list(self.features) if self.features else None,
            "targets": list(self.targets) if self.targets else None,
            "test_path": self.test_path,
            "standardize": self.standardize,
        }


@dataclass(frozen=True)
class TrialConfig:
    """One trial as the driver sends it to a worker.

    Args:
        number: the Optuna trial number.
        params: the resolved, user-facing configuration (what MLflow shows as params).
        train: the training recipe derived from ``params``.
        data: where the data comes from.
        report_every: epochs between intermediate reports (0: run to the end in one go).
        device: ``cpu``, ``cuda`` or ``auto``.
    """

    number: int
    params: dict[str, Any]
    train: TrainConfig
    data: DataConfig
    report_every: int = 0
    device: str = "cpu"
    metric: str = "val_mse"


@dataclass(frozen=True)
class Checkpoint:
    """The winning restart's weights as the bytes of ``model.pt``
    (:func:`models.checkpoint.state_bytes`: unpickling tensors costs the driver more than the
    training of a tiny trial), plus the architecture."""

    model: bytes
    sizes: tuple[int, ...]
    activation: str
    weights: bytes | None = None  # weights.npz (models.checkpoint.weights_bytes): read without torch
    # the data's standardisation (x_mean, x_std, y_mean, y_std lists) when the model was trained in
    # standard units: x' = (x - x_mean) / x_std in, y = y' * y_std + y_mean out
    standardization: dict[str, list[float]] | None = None

    @classmethod
    def of(cls, state_dict: dict[str, Any], sizes: tuple[int, ...], activation: str,
           standardization: dict[str, list[float]] | None = None) -> Checkpoint:
        from models.checkpoint import state_bytes, weights_bytes

        return cls(state_bytes(state_dict, sizes), tuple(sizes), activation, weights_bytes(state_dict, sizes),
                   standardization)


@dataclass(frozen=True)
class TrialResult:
    """What a worker sends back: the outcome and every number MLflow will show.

    ``state`` is COMPLETE, FAIL (``reason`` says why) or PRUNED. MSEs are those of the restart
    chosen by training MSE; ``restart_*`` hold every restart's final values (NaN if diverged).
    """

    number: int
    state: str
    reason: str | None = None
    train_mse: float | None = None
    val_mse: float | None = None
    test_mse: float | None = None
    best_restart: int | None = None
    restart_train_mse: tuple[float, ...] = ()
    restart_val_mse: tuple[float, ...] = ()
    restart_test_mse: tuple[float, ...] = ()
    restart_status: tuple[str, ...] = ()
    train_curve: tuple[float, ...] = ()
    val_curve: tuple[float, ...] = ()
    intermediate: tuple[tuple[int, float], ...] = ()
    checkpoint: Checkpoint | None = None
    node: str | None = None
    train_seconds: float = 0.0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def objective(self, metric: str) -> float | None:
        value = self.val_mse if metric == "val_mse" else self.train_mse
        return value if value is not None and math.isfinite(value) else None


def gate_reason(architecture: str, error: str | None = None) -> str:
    """Why a trial was not trained under ``verify: gate``: its architecture failed verification,
    or (``error``) the verification could not run."""
    if error is not None:
        return f"backprop verification of {architecture} could not run: {error}"[:500]
    return f"backprop verification failed for {architecture}; no trial of it is trained (see its verification run)"
