"""Backpropagation written out by hand for :class:`models.mlp.MLP`: no autograd anywhere.

The forward pass keeps every pre-activation ``z_l`` and activation ``a_l``; the backward pass
follows the course's protocol step by step::

    delta_out = dL/dy_hat                      (mse: 2(y_hat - y)/(N*D), sse: 2(y_hat - y))
    delta_l   = (delta_{l+1} @ W_{l+1}^T) * phi'(z_l)
    dW_l      = a_{l-1}^T @ delta_l            db_l = sum over rows of delta_l
    dL/dX     = delta_0 @ W_0^T

Each step is a small named function collected in :class:`BackwardSteps`, so a test can plant a
bug in exactly one step (``dataclasses.replace(DEFAULT_STEPS, bias_grad=wrong)``) and hand
``functools.partial(backward, steps=mutant)`` to the verifier. Steps that depend on the layer get
its index ``l`` first, so a mutant can be wrong in one layer only.
"""
from __future__ import annotations

import contextlib
import re
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, NamedTuple, Protocol

import torch
from torch import Tensor

from models.activations import Activation, get_activation
from models.mlp import MLP

__all__ = [
    "LOSSES",
    "ForwardCache",
    "BackwardResult",
    "BackwardError",
    "BackwardSteps",
    "BackwardFn",
    "DEFAULT_STEPS",
    "ManualGradients",
    "forward_cache",
    "loss_value",
    "output_delta",
    "layer_delta",
    "weight_grad",
    "bias_grad",
    "input_grad",
    "backward",
    "manual_gradients",
    "parameters_of",
]

LOSSES = ("mse", "sse")
INPUT = "input"  # the name under which dL/dX is reported next to the parameters

_WEIGHT_NAME = re.compile(r"^(\d+)_weight$")


@dataclass(frozen=True)
class ForwardCache:
    """Everything the backward pass needs from the forward pass, always batched.

    ``a[0]`` is the input X (N, d_in); ``z[l]`` is layer l's pre-activation (N, fan_out) and
    ``a[l + 1]`` its output (phi(z[l]) on hidden layers, z[l] itself on the linear output layer),
    so ``a[-1]`` is the prediction. ``single`` records that X came in as one vector (d_in,).
    """

    z: tuple[Tensor, ...]
    a: tuple[Tensor, ...]
    single: bool = False

    @property
    def n_layers(self) -> int:
        return len(self.z)

    @property
    def prediction(self) -> Tensor:
        return self.a[-1]


class BackwardResult(NamedTuple):
    """What a backward pass returns: gradients keyed like the parameters, and dL/dX (batched)."""

    grads: dict[str, Tensor]
    dX: Tensor


class BackwardError(RuntimeError):
    """A backward pass raised while computing the gradient of ``parameter``.

    ``partial`` holds the gradients finished before the failure, so a verifier can still check
    them and blame only the layer that broke.
    """

    def __init__(self, parameter: str, cause: BaseException, partial: Mapping[str, Tensor]) -> None:
        super().__init__(f"{parameter}: {type(cause).__name__}: {cause}")
        self.parameter = parameter
        self.cause = cause
        self.partial: dict[str, Tensor] = dict(partial)


class BackwardFn(Protocol):
    """Signature of a backward pass the verifier can test (:func:`backward` or a mutant)."""

    def __call__(
        self, cache: ForwardCache, params: Mapping[str, Tensor], y: Tensor, activation: Activation, loss: str
    ) -> BackwardResult: ...


class ManualGradients(NamedTuple):
    """Result of :func:`manual_gradients`.

    ``loss`` is a scalar tensor, ``grads`` is keyed exactly like ``model.named_parameters()``,
    ``dX`` has the shape of the X that was passed in.
    """

    loss: Tensor
    grads: dict[str, Tensor]
    dX: Tensor


# --- parameters and forward ------------------------------------------------------------------


def parameters_of(model_or_params: MLP | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Detached parameter tensors keyed ``"{l}_weight"``, ``"{l}_bias"``.

    Raises:
        ValueError: the mapping is not a contiguous run of layers 0..L-1 with weight and bias.
    """
    if isinstance(model_or_params, MLP):
        params = {name: p.detach() for name, p in model_or_params.named_parameters()}
    else:
        params = {name: torch.as_tensor(p).detach() for name, p in model_or_params.items()}
    n_layers = _count_layers(params)
    for l in range(n_layers):
        if f"{l}_bias" not in params:
            raise ValueError(f"params: layer {l} has a weight but no '{l}_bias'")
    return params


def _count_layers(params: Mapping[str, Tensor]) -> int:
    indices = sorted(int(m.group(1)) for m in map(_WEIGHT_NAME.match, params) if m)
    if not indices or indices != list(range(len(indices))):
        raise ValueError(f"params: expected weights '0_weight' .. 'L-1_weight', got {sorted(params)}")
    return len(indices)


def _resolve_activation(
    model_or_params: MLP | Mapping[str, Tensor], activation: str | Activation | None
) -> Activation:
    if isinstance(activation, Activation):
        return activation
    if activation is not None:
        return get_activation(activation)
    if isinstance(model_or_params, MLP):
        return model_or_params.activation
    raise ValueError("activation: required when passing a parameter dict instead of an MLP")


def forward_cache(
    model_or_params: MLP | Mapping[str, Tensor],
    X: Tensor,
    activation: str | Activation | None = None,
) -> ForwardCache:
    """Forward pass that keeps every pre-activation z_l and activation a_l.

    Args:
        model_or_params: an :class:`~models.mlp.MLP`, or its parameters as a name → tensor dict.
        X: one input (d_in,) or a batch (N, d_in).
        activation: name or :class:`Activation`; required with a dict, defaults to the model's.

    Returns:
        A batched :class:`ForwardCache` (a single input becomes a batch of one).

    Raises:
        ValueError: X does not match the first layer, or the parameters are malformed.
    """
    params = parameters_of(model_or_params)
    phi = _resolve_activation(model_or_params, activation)
    n_layers = _count_layers(params)
    d_in = params["0_weight"].shape[0]
    if X.dim() not in (1, 2) or X.shape[-1] != d_in:
        raise ValueError(f"X: expected shape ({d_in},) or (N, {d_in}), got {tuple(X.shape)}")
    single = X.dim() == 1
    a = X.detach().reshape(1, d_in) if single else X.detach()  # (N, d_in)
    zs: list[Tensor] = []
    acts: list[Tensor] = [a]
    with torch.no_grad():
        for l in range(n_layers):
            W, b = params[f"{l}_weight"], params[f"{l}_bias"]  # (fan_in, fan_out), (fan_out,)
            z = a @ W + b  # (N, fan_out)
            a = phi.fn(z) if l < n_layers - 1 else z
            zs.append(z)
            acts.append(a)
    return ForwardCache(z=tuple(zs), a=tuple(acts), single=single)


# --- the named backward steps ------------------------------------------------------------------


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ValueError(f"loss: unknown {loss!r}; choose one of {', '.join(LOSSES)}")


def loss_value(y_hat: Tensor, y: Tensor, loss: str) -> Tensor:
    """Mean (``"mse"``, over N samples and D outputs) or sum (``"sse"``) of squared errors."""
    _check_loss(loss)
    r = y_hat - y  # (N, D)
    return (r * r).mean() if loss == "mse" else (r * r).sum()


def output_delta(y_hat: Tensor, y: Tensor, loss: str) -> Tensor:
    """dL/dy_hat (N, D): ``2(y_hat - y)/(N*D)`` for mse, ``2(y_hat - y)`` for sse."""
    _check_loss(loss)
    r = y_hat - y  # (N, D)
    return 2.0 * r / r.numel() if loss == "mse" else 2.0 * r


def layer_delta(l: int, delta_next: Tensor, W_next: Tensor, z: Tensor, activation: Activation) -> Tensor:
    """δ_l = (δ_{l+1} W_{l+1}ᵀ) ⊙ φ′(z_l) for hidden layer ``l``."""
    # delta_next (N, fan_out_{l+1}), W_next (fan_out_l, fan_out_{l+1}), z (N, fan_out_l)
    return (delta_next @ W_next.T) * activation.derivative(z)


def weight_grad(l: int, a_prev: Tensor, delta: Tensor) -> Tensor:
    """dW_l = a_{l-1}ᵀ δ_l: (fan_in, N) @ (N, fan_out)."""
    return a_prev.T @ delta


def bias_grad(l: int, delta: Tensor) -> Tensor:
    """db_l = Σ over rows (samples) of δ_l: (N, fan_out) → (fan_out,)."""
    return delta.sum(dim=0)


def input_grad(delta0: Tensor, W0: Tensor) -> Tensor:
    """dL/dX = δ_0 W_0ᵀ: (N, fan_out_0) @ (fan_out_0, d_in)."""
    return delta0 @ W0.T


@dataclass(frozen=True)
class BackwardSteps:
    """The pieces :func:`backward` is assembled from; replace one to plant a bug."""

    output_delta: Callable[[Tensor, Tensor, str], Tensor] = field(default=output_delta)
    layer_delta: Callable[[int, Tensor, Tensor, Tensor, Activation], Tensor] = field(default=layer_delta)
    weight_grad: Callable[[int, Tensor, Tensor], Tensor] = field(default=weight_grad)
    bias_grad: Callable[[int, Tensor], Tensor] = field(default=bias_grad)
    input_grad: Callable[[Tensor, Tensor], Tensor] = field(default=input_grad)


DEFAULT_STEPS = BackwardSteps()


@contextlib.contextmanager
def _blame(parameter: str, done: Mapping[str, Tensor]) -> Iterator[None]:
    """Turn an exception inside a step into a :class:`BackwardError` naming ``parameter``."""
    try:
        yield
    except BackwardError:
        raise
    except Exception as exc:
        raise BackwardError(parameter, exc, done) from exc


def backward(
    cache: ForwardCache,
    params: Mapping[str, Tensor],
    y: Tensor,
    activation: Activation,
    loss: str = "mse",
    *,
    steps: BackwardSteps = DEFAULT_STEPS,
) -> BackwardResult:
    """Hand-written backward pass over a :class:`ForwardCache`.

    Args:
        cache: from :func:`forward_cache` (batched).
        params: the parameters the cache was computed with.
        y: targets shaped like the prediction, (N, D).
        activation: the hidden layers' activation (its ``derivative`` is φ′ of z).
        loss: ``"mse"`` or ``"sse"``.
        steps: the step functions to use; :data:`DEFAULT_STEPS` is the correct backward pass.

    Returns:
        Gradients keyed like the parameters, and dL/dX (N, d_in).

    Raises:
        BackwardError: a step raised; names the gradient being computed and keeps the finished ones.
    """
    grads: dict[str, Tensor] = {}
    L = cache.n_layers
    with torch.no_grad():
        with _blame(f"{L - 1}_weight", grads):
            delta = steps.output_delta(cache.prediction, y, loss)  # (N, d_out)
        for l in range(L - 1, -1, -1):
            with _blame(f"{l}_weight", grads):
                grads[f"{l}_weight"] = steps.weight_grad(l, cache.a[l], delta)  # (fan_in, fan_out)
            with _blame(f"{l}_bias", grads):
                grads[f"{l}_bias"] = steps.bias_grad(l, delta)  # (fan_out,)
            if l > 0:
                # delta of the hidden layer below: its gradients are the ones it corrupts
                with _blame(f"{l - 1}_weight", grads):
                    delta = steps.layer_delta(l - 1, delta, params[f"{l}_weight"], cache.z[l - 1], activation)
        with _blame(INPUT, grads):
            dX = steps.input_grad(delta, params["0_weight"])  # (N, d_in)
    # in the order model.named_parameters() lists them
    ordered = {name: grads[name] for l in range(L) for name in (f"{l}_weight", f"{l}_bias")}
    return BackwardResult(ordered, dX)


def manual_gradients(model: MLP, X: Tensor, y: Tensor, loss: str = "mse") -> ManualGradients:
    """Loss, parameter gradients and dL/dX by hand-written backpropagation (no autograd).

    Args:
        model: the network; its parameters are read (detached), never modified.
        X: one input (d_in,) or a batch (N, d_in).
        y: targets with the prediction's shape: (d_out,) for one input, (N, d_out) for a batch.
        loss: ``"mse"`` (mean over N·D squared errors) or ``"sse"`` (their sum).

    Returns:
        :class:`ManualGradients` with a scalar loss, grads keyed like ``model.named_parameters()``
        and dX shaped like X.

    Raises:
        ValueError: unknown loss, or X / y shapes that do not fit the model.
    """
    _check_loss(loss)
    params = parameters_of(model)
    activation = model.activation
    cache = forward_cache(params, X, activation)
    y_b = y.detach().reshape(1, -1) if cache.single else y.detach()  # (N, D)
    if y_b.shape != cache.prediction.shape or (cache.single and y.dim() != 1):
        expected = tuple(cache.prediction.shape[1:]) if cache.single else tuple(cache.prediction.shape)
        raise ValueError(f"y: expected shape {expected} like the prediction, got {tuple(y.shape)}")
    with torch.no_grad():
        value = loss_value(cache.prediction, y_b, loss)
    grads, dX = backward(cache, params, y_b, activation, loss)
    return ManualGradients(loss=value, grads=grads, dX=dX.reshape(X.shape))
