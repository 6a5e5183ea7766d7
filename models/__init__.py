"""The pure core of mlpsweep: the MLP family, activations, datasets, training math, checkpoints.

Imports torch, numpy and scipy only — never Ray, MLflow or Optuna. The names below are loaded
on first use, so that a process needing only the torch-free parts (:mod:`models.config`, the
datasets' arrays) does not pay for torch's import.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.activations import ACTIVATIONS, Activation, activation_names, get_activation
    from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
    from models.config import OPTIMIZERS, TrainConfig, canonical_architecture
    from models.data import BUILTIN_DATASETS, Dataset, load_dataset
    from models.mlp import MLP
    from models.training import TrainResult, train_restarts

_WHERE = {
    "ACTIVATIONS": "activations", "Activation": "activations", "activation_names": "activations",
    "get_activation": "activations",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "BUILTIN_DATASETS": "data", "Dataset": "data", "load_dataset": "data",
    "MLP": "mlp",
    "canonical_architecture": "config", "OPTIMIZERS": "config", "TrainConfig": "config",
    "TrainResult": "training", "train_restarts": "training",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"models.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
