"""The MLP's forward pass in NumPy (float64): a trained model evaluated without torch.

The end-of-run report draws the best model's fit from ``weights.npz``
(:func:`models.checkpoint.load_weights`) with this, sparing its process torch's import (about
a CPU-second, on cores the sweep is still using). The activations restate the formulas of
:mod:`models.activations` for NumPy arrays; a test checks the two agree for every name.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping, Sequence

import numpy as np

from models.config import LEAKY_SLOPE

__all__ = ["ACTIVATIONS", "hidden_layers", "output_layer", "forward"]

_erf = np.vectorize(math.erf, otypes=[np.float64])

ACTIVATIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "tanh": np.tanh,
    "relu": lambda z: np.maximum(z, 0.0),
    "leaky_relu": lambda z: np.where(z > 0, z, LEAKY_SLOPE * z),
    "elu": lambda z: np.where(z > 0, z, np.expm1(np.minimum(z, 0.0))),
    "gelu": lambda z: z * 0.5 * (1.0 + _erf(z / math.sqrt(2.0))),
    "softplus": lambda z: np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z))),
    "identity": lambda z: z,
}


def hidden_layers(weights: Mapping[str, np.ndarray], sizes: Sequence[int], activation: str,
                  x: np.ndarray) -> np.ndarray:
    """The last hidden layer's activations for inputs ``x`` (N, d_in): (N, h_last); ``x`` itself
    for a network without hidden layers. ``weights`` in the course's naming (``"0_weight"``...)."""
    phi = ACTIVATIONS[activation]
    a = np.asarray(x, dtype=np.float64)
    for l in range(len(sizes) - 2):
        a = phi(a @ weights[f"{l}_weight"].astype(np.float64) + weights[f"{l}_bias"].astype(np.float64))
    return a


def output_layer(weights: Mapping[str, np.ndarray], sizes: Sequence[int], a: np.ndarray) -> np.ndarray:
    """The (linear) output for the last hidden layer's activations ``a``: (N, d_out)."""
    last = len(sizes) - 2
    return a @ weights[f"{last}_weight"].astype(np.float64) + weights[f"{last}_bias"].astype(np.float64)


def forward(weights: Mapping[str, np.ndarray], sizes: Sequence[int], activation: str, x: np.ndarray) -> np.ndarray:
    """The network's output for inputs ``x`` (N, d_in): (N, d_out), in float64."""
    return output_layer(weights, sizes, hidden_layers(weights, sizes, activation, x))
