"""Closed registry of activation functions, each with its derivative written out.

The derivative is a function of the pre-activation ``z`` (not of ``a``), which is what the
hand-written backward pass in :mod:`models.backprop` needs: ``delta_l = (...) * dphi(z_l)``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from models.config import LEAKY_SLOPE, check_activation

__all__ = ["Activation", "ACTIVATIONS", "get_activation", "activation_names"]

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_INV_SQRT2PI = 1.0 / math.sqrt(2.0 * math.pi)


@dataclass(frozen=True)
class Activation:
    """An elementwise nonlinearity phi and its derivative phi' (both of z)."""

    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor], Tensor]
    kinks: tuple[float, ...] = ()  # points where phi' is discontinuous (finite differences fail there)
    # phi' computed from a = phi(z), where that is cheaper (the training engine's backward uses it).
    derivative_from_output: Callable[[Tensor], Tensor] | None = None
    # ``fn`` keeping what its gradient needs, z -> (a, saved), and that gradient, (grad, saved) ->
    # dL/dz, step for step as autograd takes it through ``fn``: the training engine's backward
    # then rounds as a plain autograd loop over :class:`models.MLP` does.
    traced: Callable[[Tensor], tuple[Tensor, tuple[Tensor, ...]]] | None = None
    traced_backward: Callable[[Tensor, tuple[Tensor, ...]], Tensor] | None = None

    def __call__(self, z: Tensor) -> Tensor:
        return self.fn(z)

    def forward_saving(self, z: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        """``(phi(z), saved)``: what :meth:`backward` needs kept from the forward."""
        if self.traced is not None:
            return self.traced(z)
        a = self.fn(z)
        return a, ((a,) if self.derivative_from_output is not None else (z, a))

    def backward(self, grad: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
        """dL/dz from dL/da = ``grad`` and :meth:`forward_saving`'s ``saved``: autograd's own steps
        where the activation has them (``traced_backward``), else ``grad * phi'(z)``."""
        if self.traced_backward is not None:
            return self.traced_backward(grad, saved)
        return grad * self.slope(saved[0] if len(saved) == 2 else None, saved[-1])

    def slope(self, z: Tensor | None, a: Tensor) -> Tensor:
        """phi'(z), using the already computed ``a = phi(z)`` when that saves work (then ``z``
        may be None: the caller need not keep it)."""
        if self.derivative_from_output is not None:
            return self.derivative_from_output(a)
        assert z is not None, f"{self.name}: phi' needs the pre-activation z"
        return self.derivative(z)


def _sigmoid(z: Tensor) -> Tensor:
    """1 / (1 + e^-z), elementwise exactly the same wherever an element sits in a tensor (z
    clamped at -88 in float32, where e^-z would overflow: ~6e-39 there, not 0).

    ``torch.sigmoid``'s vectorised body and its scalar tail round differently (seen on AMD EPYC,
    AVX-512: ~1 value in 3 differs in the last bit between a tensor and a slice of it), so a
    trial's values would depend on how many rows share its stack. ``exp``, ``+`` and the
    reciprocal do not; same accuracy (within 4e-6 relative of the float64 value, as
    ``torch.sigmoid``), about 3× its time, small next to the matrix products.
    """
    limit = _SIGMOID_FLOOR.get(z.dtype, 709.0)
    return torch.reciprocal(torch.exp(-z.clamp(min=-limit)) + 1.0)  # out of place: autograd differentiates it too


# Below -it, e^-z would overflow (and autograd's gradient of 1 / (1 + e^-z) be 0 · inf = nan)
_SIGMOID_FLOOR = {torch.float16: 11.0, torch.bfloat16: 88.0, torch.float32: 88.0, torch.float64: 709.0}


def _sigmoid_traced(z: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    e = torch.exp(-z.clamp(min=-_SIGMOID_FLOOR.get(z.dtype, 709.0)))
    s = torch.reciprocal(e + 1.0)
    return s, (e, s * s)


def _sigmoid_backward(grad: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
    # reciprocal: -grad * s^2; + 1: grad; exp: grad * e; neg: -grad; clamp: grad where z >= -limit,
    # 0 elsewhere, as here: at the floor s^2 underflows to 0 (float32: s = 6e-39), and e is finite
    e, s2 = saved
    return grad * s2 * e


def _dsigmoid(z: Tensor) -> Tensor:
    s = _sigmoid(z)
    return s * (1.0 - s)


# Past it, e^(2z) would overflow below; tanh rounds to ±1 in the dtype well before (float32: |z| > 9.1),
# so the clamp changes no value, and autograd's gradient through it is 0 only where the net has blown up
_TANH_SATURATES = {torch.float16: 5.0, torch.bfloat16: 40.0, torch.float32: 40.0, torch.float64: 350.0}


def _tanh(z: Tensor) -> Tensor:
    """(e^2z − 1) / (e^2z + 1) through ``expm1``: within 2e-7 relative of the float64 value (as
    ``torch.tanh``, 1e-7), the same wherever an element sits in a tensor, and 1.8× faster on
    the CPU (torch 2.13's ``tanh`` is not vectorised there: a third of a tanh net's epoch)."""
    limit = _TANH_SATURATES.get(z.dtype, 20.0)
    e = torch.expm1(2.0 * z.clamp(-limit, limit))
    return e / (e + 2.0)


def _tanh_traced(z: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    limit = _TANH_SATURATES.get(z.dtype, 20.0)
    clamped = z.clamp(-limit, limit)
    e = torch.expm1(2.0 * clamped)
    u = e + 2.0
    a = e / u
    factor = torch.rsub(e, -2.0, alpha=2.0)  # -2 (e + 1), exactly; 0 below -limit (e = -1 there)
    if z.device.type != "cpu" or float(z.max()) > limit:
        # 0 above the limit too, without a boolean tensor (on the CPU a comparison and ``where``
        # cost ~10 multiplications each): z - clamped is 0 or at least the float spacing at the
        # limit (> 2^-60) there, so ``moved`` is exactly 1 or 0, and factor - factor·moved exact
        moved = (z - clamped).mul_(2.0**100).clamp_(0.0, 1.0)
        factor = torch.addcmul(factor, factor, moved, value=-1.0)
    return a, (u, a / u, factor)


def _tanh_backward(grad: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
    # autograd: e / u gives e grad / u and u = e + 2 gives it -grad * (a / u); expm1: * (e + 1);
    # 2 * z: * 2; clamp: grad where -limit <= z <= limit (0 elsewhere: so is the factor).
    # The same roundings, two ops fewer: (grad * (a / u) - grad / u) times -2 (e + 1).
    u, a_u, factor = saved
    return torch.addcdiv(grad * a_u, grad, u, value=-1.0) * factor


def _dtanh(z: Tensor) -> Tensor:
    return 1.0 - _tanh(z) ** 2


def _relu(z: Tensor) -> Tensor:
    return torch.clamp(z, min=0.0)


def _relu_traced(z: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
    return torch.clamp(z, min=0.0), ((z >= 0).to(z.dtype),)


def _relu_backward(grad: Tensor, saved: tuple[Tensor, ...]) -> Tensor:
    return grad * saved[0]  # clamp: grad where z >= 0 (at 0 too, as autograd), 0 elsewhere


def _drelu(z: Tensor) -> Tensor:
    return (z > 0).to(z.dtype)


def _leaky_relu(z: Tensor) -> Tensor:
    return torch.where(z > 0, z, LEAKY_SLOPE * z)


def _dleaky_relu(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.full_like(z, LEAKY_SLOPE))


def _elu(z: Tensor) -> Tensor:
    return torch.where(z > 0, z, torch.expm1(torch.clamp(z, max=0.0)))


def _delu(z: Tensor) -> Tensor:
    return torch.where(z > 0, torch.ones_like(z), torch.exp(torch.clamp(z, max=0.0)))


def _gelu(z: Tensor) -> Tensor:  # exact (erf) GELU: z * Phi(z)
    return z * 0.5 * (1.0 + torch.erf(z * _INV_SQRT2))


def _dgelu(z: Tensor) -> Tensor:  # Phi(z) + z * pdf(z)
    cdf = 0.5 * (1.0 + torch.erf(z * _INV_SQRT2))
    pdf = _INV_SQRT2PI * torch.exp(-0.5 * z * z)
    return cdf + z * pdf


def _softplus(z: Tensor) -> Tensor:  # log(1 + e^z), written to be stable for large |z|
    return torch.clamp(z, min=0.0) + torch.log1p(torch.exp(-torch.abs(z)))


def _dsoftplus(z: Tensor) -> Tensor:
    return _sigmoid(z)


def _identity(z: Tensor) -> Tensor:
    return z


def _didentity(z: Tensor) -> Tensor:
    return torch.ones_like(z)


ACTIVATIONS: dict[str, Activation] = {
    a.name: a
    for a in (
        Activation("sigmoid", _sigmoid, _dsigmoid, traced=_sigmoid_traced, traced_backward=_sigmoid_backward),
        Activation("tanh", _tanh, _dtanh, traced=_tanh_traced, traced_backward=_tanh_backward),
        Activation("relu", _relu, _drelu, kinks=(0.0,), traced=_relu_traced, traced_backward=_relu_backward),
        Activation("leaky_relu", _leaky_relu, _dleaky_relu, kinks=(0.0,)),
        Activation("elu", _elu, _delu, kinks=(0.0,), derivative_from_output=lambda a: torch.where(a > 0, 1.0, a + 1.0)),
        Activation("gelu", _gelu, _dgelu),
        Activation("softplus", _softplus, _dsoftplus, derivative_from_output=lambda a: -torch.expm1(-a)),
        Activation("identity", _identity, _didentity, derivative_from_output=torch.ones_like),
    )
}


def activation_names() -> list[str]:
    """Names of every registered activation, in registry order."""
    return list(ACTIVATIONS)


def get_activation(name: str) -> Activation:
    """Look an activation up by name.

    Raises:
        ValueError: the name is not registered; the message lists the valid names.
    """
    return ACTIVATIONS[check_activation(name)]
