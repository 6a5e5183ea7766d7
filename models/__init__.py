"""The pure core of mlpsweep: the MLP family, activations, datasets, training math, checkpoints.

Imports torch, numpy and scipy only — never Ray, MLflow or Optuna.
"""
from models.activations import ACTIVATIONS, Activation, activation_names, get_activation
from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.data import BUILTIN_DATASETS, Dataset, load_dataset
from models.mlp import MLP, canonical_architecture
from models.training import OPTIMIZERS, TrainConfig, TrainResult, train_restarts

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "activation_names",
    "get_activation",
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "BUILTIN_DATASETS",
    "Dataset",
    "load_dataset",
    "MLP",
    "canonical_architecture",
    "OPTIMIZERS",
    "TrainConfig",
    "TrainResult",
    "train_restarts",
]
