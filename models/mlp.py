"""The MLP family of the course notebooks: ``MLP([d_in, h1, ..., hk, d_out], activation)``.

Layer ``l`` owns ``"{l}_weight"`` of shape (fan_in, fan_out) and ``"{l}_bias"`` of shape
(fan_out,); hidden layers compute ``a = phi(a_prev @ W + b)``, the output layer is linear.
A state dict saved from here loads straight into the course's own MLP class.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from models.activations import Activation, get_activation
from models.config import canonical_architecture, validate_sizes

__all__ = ["MLP", "validate_sizes", "canonical_architecture", "init_parameters"]


def init_parameters(
    sizes: Sequence[int], generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> dict[str, Tensor]:
    """Fresh parameters with the course's initialisation.

    W ~ N(0, 1)/sqrt(fan_in), b ~ N(0, 1)/sqrt(fan_out), drawn layer by layer (W then b) from
    ``generator``; the draw order is part of the reproducibility contract.
    """
    params: dict[str, Tensor] = {}
    for l, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        params[f"{l}_weight"] = torch.randn(fan_in, fan_out, generator=generator, dtype=dtype) / math.sqrt(fan_in)
        params[f"{l}_bias"] = torch.randn(fan_out, generator=generator, dtype=dtype) / math.sqrt(fan_out)
    return params


class MLP(nn.Module):
    """Fully connected network ``sizes = [d_in, h1, ..., hk, d_out]`` with a linear output.

    Args:
        sizes: layer widths including input and output, e.g. ``[2, 5, 7, 1]``.
        activation: a name from :data:`models.activations.ACTIVATIONS` (default ``"sigmoid"``).
        generator: optional torch generator for a reproducible initialisation.

    Raises:
        ValueError: bad sizes or an unknown activation.
    """

    def __init__(
        self,
        sizes: Sequence[int],
        activation: str = "sigmoid",
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.sizes: tuple[int, ...] = validate_sizes(sizes)
        self.activation: Activation = get_activation(activation)
        for name, value in init_parameters(self.sizes, generator, dtype).items():
            self.register_parameter(name, nn.Parameter(value))

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def architecture(self) -> str:
        return canonical_architecture(self.sizes, self.activation.name)

    def weight(self, l: int) -> Tensor:
        return getattr(self, f"{l}_weight")

    def bias(self, l: int) -> Tensor:
        return getattr(self, f"{l}_bias")

    def forward(self, x: Tensor) -> Tensor:
        """Map one input (d_in,) to (d_out,), or a batch (N, d_in) to (N, d_out)."""
        if x.shape[-1] != self.sizes[0]:
            raise ValueError(f"input: last dimension must be {self.sizes[0]}, got shape {tuple(x.shape)}")
        a = x
        for l in range(self.n_layers):
            z = a @ self.weight(l) + self.bias(l)
            a = self.activation(z) if l < self.n_layers - 1 else z
        return a

    def extra_repr(self) -> str:
        return f"sizes={list(self.sizes)}, activation={self.activation.name!r}"
