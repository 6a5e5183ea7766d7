"""Verify the hand-written backward pass of one MLP architecture, like ``torch.autograd.gradcheck``.

:func:`verify_backprop` builds the network in float64 and checks, per parameter tensor and for
dL/dX:

1. the manual gradients (:mod:`models.backprop`) against autograd on the same inputs;
2. the manual gradients against central finite differences, every coordinate of small tensors
   and a seeded sample of ``max_fd_coords`` coordinates of larger ones (all perturbed forward
   passes of a tensor run as one batched pass, starting at that tensor's layer);
3. one SGD step with the manual gradients against torch's own SGD update driven by autograd.

Relative error, everywhere in this module: ``|manual - ref| / max(|ref|, atol / rtol)``
elementwise. The floor ``atol / rtol`` makes "max relative error <= rtol" the same test as
``|manual - ref| <= max(atol, rtol * |ref|)``: entries far below the floor are judged on absolute
error, so a near-zero gradient cannot blow the ratio up. A check passes iff its max relative
error is <= its rtol (and the shapes match).

Default tolerances (:class:`Tolerances`): vs autograd ``atol=1e-8, rtol=1e-6``: both sides are
the same float64 arithmetic in a different order, so honest differences are ~1e-15 relative,
while every real backprop bug (a wrong constant, a missing φ′, a wrong δ) is O(1) relative;
the margin absorbs ill-conditioned sums in wide nets. Vs finite differences ``eps=1e-6``,
``fd_atol=1e-6, fd_rtol=1e-4``: central differences carry truncation error ~eps² and round-off
~1e-16·|L|/eps ≈ 1e-10·|L|, so they are looser (gradcheck itself uses atol=1e-5, rtol=1e-3).

Activations with kinks (relu, leaky_relu, elu) would give false FD failures where a
pre-activation sits within eps of a kink. Instead of hoping, the verifier shifts the bias of each
hidden unit by the smallest amount that puts every sample's pre-activation at least
``kink_margin`` away from every kink, and records that (and the smallest distance) in the report.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.sgd import sgd

from models.activations import Activation, get_activation
from models.backprop import (
    INPUT,
    LOSSES,
    BackwardError,
    BackwardFn,
    ForwardCache,
    backward as default_backward,
    forward_cache,
    loss_value,
)
from models.mlp import MLP, canonical_architecture, validate_sizes
from models.verdict import GradCheckReport, KinkGuard, LossCheck, TensorCheck, Tolerances, UpdateCheck

__all__ = [
    "Tolerances",
    "TensorCheck",
    "LossCheck",
    "UpdateCheck",
    "KinkGuard",
    "GradCheckReport",
    "verify_backprop",
    "relative_error",
]

DTYPE = torch.float64
_FD_CHUNK_ELEMENTS = 4_000_000  # bound on the float64 elements one batched FD pass may hold (~32 MB)


def relative_error(manual: Tensor, ref: Tensor, floor: float) -> Tensor:
    """Elementwise ``|manual - ref| / max(|ref|, floor)``."""
    return (manual - ref).abs() / ref.abs().clamp(min=floor)


def verify_backprop(
    sizes: Sequence[int],
    activation: str,
    *,
    seed: int = 0,
    samples: int | None = 8,
    eps: float = 1e-6,
    atol: float = 1e-8,
    rtol: float = 1e-6,
    fd_atol: float = 1e-6,
    fd_rtol: float = 1e-4,
    loss: str = "mse",
    max_fd_coords: int | None = 256,
    kink_margin: float = 1e-3,
    lr: float = 0.1,
    backward: BackwardFn | None = None,
) -> GradCheckReport:
    """Check a backward pass for one architecture against autograd, finite differences and SGD.

    Args:
        sizes: layer widths ``[d_in, h1, ..., d_out]``.
        activation: a registered activation name.
        seed: seeds the network, the inputs/targets (standard normal) and the FD coordinate sample.
        samples: batch size N; ``None`` checks one unbatched input of shape (d_in,).
        eps: central-difference step.
        atol, rtol: tolerances vs autograd (and for the loss and the SGD update).
        fd_atol, fd_rtol: looser tolerances vs finite differences.
        loss: ``"mse"`` (mean over N·D) or ``"sse"`` (sum of squares).
        max_fd_coords: per tensor, check every coordinate up to this many, else a seeded sample
            of this many; ``None`` checks every coordinate.
        kink_margin: minimum distance of every hidden pre-activation from an activation kink.
        lr: learning rate of the SGD update check.
        backward: the backward pass under test, with :func:`models.backprop.backward`'s
            signature; default is the project's own. Exceptions it raises become failures.

    Returns:
        A :class:`GradCheckReport`; ``report.passed`` is the verdict.

    Raises:
        ValueError: bad sizes, activation, loss, or non-positive numeric settings.

    The tensors are tiny, so run it with one torch thread (``torch.set_num_threads(1)``, as the
    CLI does and Ray's ``num_cpus=1`` implies): on a busy machine intra-op threads make it 10-20x slower.
    """
    started = time.perf_counter()
    sizes_t = validate_sizes(sizes)
    phi = get_activation(activation)
    tol = Tolerances(atol=atol, rtol=rtol, eps=eps, fd_atol=fd_atol, fd_rtol=fd_rtol)
    _check_settings(tol, loss, samples, max_fd_coords, kink_margin, lr)
    backward_fn: BackwardFn = backward if backward is not None else default_backward

    g = torch.Generator().manual_seed(seed)
    model = MLP(sizes_t, phi.name, generator=g, dtype=DTYPE)
    batch = 1 if samples is None else samples
    X = torch.randn(batch, sizes_t[0], generator=g, dtype=DTYPE)  # (N, d_in)
    y = torch.randn(batch, sizes_t[-1], generator=g, dtype=DTYPE)  # (N, d_out)
    guard = _clear_kinks(model, X, phi, kink_margin)
    if samples is None:
        X, y = X[0], y[0]  # (d_in,), (d_out,)

    params = {name: p.detach().clone() for name, p in model.named_parameters()}
    ref = _autograd_reference(model, X, y, loss, lr)

    cache = forward_cache(params, X, phi)
    y_b = y.reshape(1, -1) if cache.single else y  # (N, d_out)
    manual_loss = loss_value(cache.prediction, y_b, loss)
    grads, dX, error = _run_backward(backward_fn, cache, params, y_b, phi, loss)

    fd_gen = torch.Generator().manual_seed(seed)
    checks = []
    for name in [*params, INPUT]:
        is_input = name == INPUT
        expected = ref.dX.reshape(cache.a[0].shape) if is_input else ref.grads[name]
        got = dX if is_input else grads.get(name)
        checks.append(
            _check_tensor(name, got, expected, params, cache, y_b, phi, loss, tol, max_fd_coords, fd_gen, error)
        )

    loss_rel = float(relative_error(manual_loss, ref.loss, tol.floor))
    loss_check = LossCheck(float(manual_loss), float(ref.loss), loss_rel, loss_rel <= tol.rtol)
    update = _check_update(params, grads, ref.updated, lr, tol)
    passed = all(c.passed for c in checks) and loss_check.passed and update.passed and error is None
    return GradCheckReport(
        architecture=canonical_architecture(sizes_t, phi.name),
        sizes=sizes_t,
        activation=phi.name,
        loss=loss,
        seed=seed,
        samples=samples,
        passed=passed,
        tensors=tuple(checks),
        loss_check=loss_check,
        update_check=update,
        max_rel_err_autograd=_worst(c.max_rel_err_autograd for c in checks),
        max_rel_err_fd=_worst(c.max_rel_err_fd for c in checks),
        tolerances=tol,
        max_fd_coords=max_fd_coords,
        kink_guard=guard,
        seconds=time.perf_counter() - started,
        backward_error=None if error is None else str(error),
    )


# --- pieces ------------------------------------------------------------------------------------


def _check_settings(
    tol: Tolerances, loss: str, samples: int | None, max_fd_coords: int | None, kink_margin: float, lr: float
) -> None:
    problems = [
        f"{name}: must be a positive number, got {value!r}"
        for name, value in (*asdict(tol).items(), ("kink_margin", kink_margin), ("lr", lr))
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0)
    ]
    if not problems and kink_margin < 100 * tol.eps:
        problems.append(f"kink_margin: must be >= 100 * eps ({100 * tol.eps:g}) so FD steps cannot cross a kink")
    if loss not in LOSSES:
        problems.append(f"loss: unknown {loss!r}; choose one of {', '.join(LOSSES)}")
    for name, value in (("samples", samples), ("max_fd_coords", max_fd_coords)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            problems.append(f"{name}: must be a positive integer or None, got {value!r}")
    if problems:
        raise ValueError("\n".join(problems))


@dataclass(frozen=True)
class _Reference:
    loss: Tensor
    grads: dict[str, Tensor]
    dX: Tensor  # shaped like X
    updated: dict[str, Tensor]  # parameters after one torch SGD step


def _autograd_reference(model: MLP, X: Tensor, y: Tensor, loss: str, lr: float) -> _Reference:
    """Autograd gradients and one SGD step driven by them, on a copy of the model.

    The step is ``torch.optim.sgd.sgd``: the functional update that ``torch.optim.SGD.step``
    dispatches to, with SGD's defaults (no momentum, dampening or weight decay). The class
    itself is not instantiated because its constructor imports ``torch._dynamo`` (~0.9 s), which
    alone would blow the CLI's 2 s budget; a test pins the two to the same result.
    """
    net = copy.deepcopy(model)
    Xr = X.clone().requires_grad_(True)
    value = F.mse_loss(net(Xr), y, reduction="mean" if loss == "mse" else "sum")
    value.backward()
    names, tensors = zip(*net.named_parameters())
    grads = {name: p.grad.detach().clone() for name, p in zip(names, tensors) if p.grad is not None}
    with torch.no_grad():
        sgd(
            [p for p in tensors], [p.grad for p in tensors], [None] * len(tensors),
            weight_decay=0.0, momentum=0.0, lr=lr, dampening=0.0, nesterov=False, maximize=False,
        )  # fmt: skip
    updated = {name: p.detach().clone() for name, p in zip(names, tensors)}
    assert Xr.grad is not None
    return _Reference(value.detach(), grads, Xr.grad.detach(), updated)


def _run_backward(
    backward_fn: BackwardFn,
    cache: ForwardCache,
    params: Mapping[str, Tensor],
    y: Tensor,
    phi: Activation,
    loss: str,
) -> tuple[dict[str, Tensor], Tensor | None, BackwardError | None]:
    """Run the backward pass under test; an exception becomes a :class:`BackwardError`."""
    try:
        grads, dX = backward_fn(cache, params, y, phi, loss)
        return dict(grads), dX, None
    except BackwardError as exc:
        return exc.partial, None, exc
    except Exception as exc:  # a mutant may fail anywhere; the report must say so, not crash
        return {}, None, BackwardError("backward", exc, {})


def _check_tensor(
    name: str,
    got: Tensor | None,
    expected: Tensor,
    params: Mapping[str, Tensor],
    cache: ForwardCache,
    y: Tensor,
    phi: Activation,
    loss: str,
    tol: Tolerances,
    max_fd_coords: int | None,
    fd_gen: torch.Generator,
    error: BackwardError | None,
) -> TensorCheck:
    shape = tuple(expected.shape)
    numel = expected.numel()
    # the FD coordinates are drawn whatever happens, so one tensor's failure never reshuffles the rest
    coords = _fd_coordinates(numel, max_fd_coords, fd_gen)
    scale = float(expected.abs().max())
    problem = _shape_problem(name, got, shape, error)
    if problem is not None:
        return TensorCheck(name, shape, numel, None, None, None, None, 0, scale, passed=False, reason=problem)
    assert got is not None
    got = got.to(DTYPE)
    rel_ag = relative_error(got, expected, tol.floor)
    fd = _finite_differences(name, coords, params, cache, y, phi, loss, tol.eps)  # (K,)
    got_k = got.reshape(-1)[coords]  # (K,)
    rel_fd = relative_error(got_k, fd, tol.fd_floor)
    max_rel_ag, max_rel_fd = _max(rel_ag), _max(rel_fd)
    reasons = []
    if not max_rel_ag <= tol.rtol:
        reasons.append(_worst_entry("autograd", got, expected, rel_ag, shape, None))
    if not max_rel_fd <= tol.fd_rtol:
        reasons.append(_worst_entry("finite differences", got_k, fd, rel_fd, shape, coords))
    return TensorCheck(
        name=name,
        shape=shape,
        numel=numel,
        max_abs_err_autograd=_max((got - expected).abs()),
        max_rel_err_autograd=max_rel_ag,
        max_abs_err_fd=_max((got_k - fd).abs()),
        max_rel_err_fd=max_rel_fd,
        fd_coords_checked=int(coords.numel()),
        max_abs_grad=scale,
        passed=not reasons,
        reason="; ".join(reasons),
    )


def _shape_problem(name: str, got: Tensor | None, shape: tuple[int, ...], error: BackwardError | None) -> str | None:
    if got is None:
        if error is not None and error.parameter == name:
            return f"backward raised while computing this gradient: {type(error.cause).__name__}: {error.cause}"
        if error is not None and error.parameter == "backward":
            return f"not computed: backward raised {type(error.cause).__name__}: {error.cause}"
        if error is not None:
            return f"not computed: backward raised while computing {error.parameter}"
        return "no gradient returned for this tensor"
    if not isinstance(got, Tensor):
        return f"gradient is a {type(got).__name__}, not a tensor"
    if tuple(got.shape) != shape:
        return f"gradient has shape {tuple(got.shape)}, the tensor has shape {shape}"
    return None


def _worst_entry(
    against: str, got: Tensor, ref: Tensor, rel: Tensor, shape: tuple[int, ...], coords: Tensor | None
) -> str:
    """gradcheck-style pointer to the worst entry: where, both values, the relative error."""
    k = int(torch.nan_to_num(rel.reshape(-1), nan=math.inf).argmax())
    flat = k if coords is None else int(coords[k])
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape)) if shape else ()
    return (
        f"vs {against}: worst at {index}: manual {float(got.reshape(-1)[k]):.6g}, "
        f"{'autograd' if coords is None else 'numerical'} {float(ref.reshape(-1)[k]):.6g} "
        f"(rel err {float(rel.reshape(-1)[k]):.3g})"
    )


def _fd_coordinates(numel: int, max_fd_coords: int | None, gen: torch.Generator) -> Tensor:
    if max_fd_coords is None or numel <= max_fd_coords:
        return torch.arange(numel)
    return torch.randperm(numel, generator=gen)[:max_fd_coords].sort().values


def _finite_differences(
    name: str,
    coords: Tensor,
    params: Mapping[str, Tensor],
    cache: ForwardCache,
    y: Tensor,
    phi: Activation,
    loss: str,
    eps: float,
) -> Tensor:
    """Central differences (L(θ + eps·e_k) − L(θ − eps·e_k)) / 2eps for the chosen coordinates.

    All 2K perturbed networks run as one batch of R replicas, from the cached forward pass. A
    weight or bias moves one column of its layer's pre-activation z = a·W + b, exactly (W + s·e_ij
    adds s·a[:, i] to column j, b + s·e_j adds s): the replicas share the parameters and start from
    that column (see :func:`_losses_from_column`); an input's replicas run the whole network.
    """
    layer = 0 if name == INPUT else int(name.split("_")[0])
    base = cache.a[0]  # (N, d_in): what an input's replicas copy
    width = max(z.shape[1] for z in cache.z)
    copied = base.numel() if name == INPUT else 0
    per_replica = copied + cache.a[0].shape[0] * width * (cache.n_layers - layer + 1)
    chunk = max(1, _FD_CHUNK_ELEMENTS // (2 * per_replica))
    out = []
    for part in coords.split(chunk):
        K = part.numel()
        R = 2 * K
        sign = torch.cat([torch.full((K,), eps, dtype=DTYPE), torch.full((K,), -eps, dtype=DTYPE)])
        index = part.repeat(2)  # replica r moves coordinate index[r] by sign[r]
        with torch.no_grad():
            if name == INPUT:
                P = base.expand(R, *base.shape).clone()  # (R, N, d_in)
                P.view(R, -1)[torch.arange(R), index] += sign
                losses = _losses_from(layer, P @ params["0_weight"] + params["0_bias"], params, cache.n_layers, y,
                                      phi, loss)  # (R,)
            else:
                fan_out = params[f"{layer}_weight"].shape[1]
                cols = index % fan_out  # the one column of z_layer that each replica moves
                shift = sign[:, None] * (cache.a[layer][:, index // fan_out].T if name.endswith("_weight") else 1.0)
                losses = _losses_from_column(layer, cols, shift, cache, params, y, phi, loss)  # (R,)
        out.append((losses[:K] - losses[K:]) / (2 * eps))
    return torch.cat(out)


def _losses_from(layer: int, z: Tensor, params: Mapping[str, Tensor], L: int, y: Tensor, phi: Activation,
                 loss: str) -> Tensor:
    """Loss of each replica given its pre-activation ``z`` (R, N, fan_out) at ``layer``."""
    for l in range(layer + 1, L):
        z = phi.fn(z) @ params[f"{l}_weight"] + params[f"{l}_bias"]  # (R, N, fan_out)
    r = z - y  # (R, N, d_out)
    sq = (r * r).flatten(1)  # (R, N*d_out)
    return sq.mean(dim=1) if loss == "mse" else sq.sum(dim=1)


def _losses_from_column(layer: int, cols: Tensor, shift: Tensor, cache: ForwardCache, params: Mapping[str, Tensor],
                        y: Tensor, phi: Activation, loss: str) -> Tensor:
    """Loss of each replica r whose pre-activation at ``layer`` is the cached one with column
    ``cols[r]`` moved by ``shift[r]`` ((N,) for a weight, (1,) for a bias) — what moving one
    weight or bias of that layer does.

    Only that column of the layer's output changes, so the next pre-activation is the cached one
    plus (φ(z + shift) − φ(z)) times one row of the next weight: exactly the perturbed network's,
    at a cost of R·N·width instead of a full R·N·width² product.
    """
    R = cols.numel()
    z = cache.z[layer][:, cols].T  # (R, N): the columns the replicas move
    if layer == cache.n_layers - 1:  # the output layer: the column is the prediction's
        out = cache.a[-1].expand(R, -1, -1).clone()  # (R, N, d_out)
        out[torch.arange(R), :, cols] = z + shift
        return _losses_from(layer, out, params, cache.n_layers, y, phi, loss)
    change = phi.fn(z + shift) - phi.fn(z)  # (R, N): both through the same kernel, so no shift is no change
    W_next = params[f"{layer + 1}_weight"]  # (fan_out, next fan_out)
    z_next = cache.z[layer + 1] + change.unsqueeze(-1) * W_next[cols].unsqueeze(1)  # (R, N, next fan_out)
    return _losses_from(layer + 1, z_next, params, cache.n_layers, y, phi, loss)


def _check_update(
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    updated: Mapping[str, Tensor],
    lr: float,
    tol: Tolerances,
) -> UpdateCheck:
    """W − lr·dW with the manual gradients must equal what torch's SGD update produced."""
    missing = [n for n in params if not isinstance(grads.get(n), Tensor) or grads[n].shape != params[n].shape]
    if missing:
        return UpdateCheck(lr, None, None, False, f"no usable manual gradient for {', '.join(missing)}")
    with torch.no_grad():
        stepped = {n: params[n] - lr * grads[n].to(DTYPE) for n in params}
    rel = {n: _max(relative_error(stepped[n], updated[n], tol.floor)) for n in params}
    max_abs = _worst(_max((stepped[n] - updated[n]).abs()) for n in params)
    bad = [n for n in params if not rel[n] <= tol.rtol]
    reason = f"weights differ after the step: {', '.join(bad)}" if bad else ""
    return UpdateCheck(lr, max_abs, _worst(rel.values()), not bad, reason)


def _clear_kinks(model: MLP, X: Tensor, phi: Activation, margin: float) -> KinkGuard:
    """Shift hidden biases (in place) so no pre-activation is within ``margin`` of a kink."""
    if not phi.kinks:
        return KinkGuard((), margin, 0, 0.0, None, f"{phi.name} is smooth: no kinks to avoid")
    kinks = torch.tensor(phi.kinks, dtype=DTYPE)
    shifted, max_shift, min_distance = 0, 0.0, math.inf
    a = X  # (N, d_in)
    with torch.no_grad():
        for l in range(model.n_layers - 1):
            W, b = model.weight(l), model.bias(l)  # (fan_in, fan_out), (fan_out,)
            z = a @ W + b  # (N, fan_out)
            s = _smallest_shifts(z, kinks, margin)  # (fan_out,)
            b.add_(s)
            z = a @ W + b
            shifted += int((s != 0).sum())
            max_shift = max(max_shift, float(s.abs().max()))
            min_distance = min(min_distance, float((z.unsqueeze(-1) - kinks).abs().min()))
            a = phi.fn(z)
    kink_list = ", ".join(f"{k:g}" for k in phi.kinks)
    action = (
        f"biases of {shifted} hidden unit(s) shifted by at most {max_shift:.2g}:"
        if shifted
        else "no bias needed shifting:"
    )
    note = (
        f"{phi.name} has kinks at {kink_list}: {action} every hidden pre-activation is >= {margin:g} "
        f"from a kink (smallest distance {min_distance:.3g}), so finite differences do not straddle one"
    )
    return KinkGuard(tuple(phi.kinks), margin, shifted, max_shift, min_distance, note)


def _smallest_shifts(z: Tensor, kinks: Tensor, margin: float) -> Tensor:
    """Per column of z, the shift of least magnitude leaving every entry >= margin from every kink.

    Candidates are 0 and "move entry i to 2·margin either side of kink k"; the one moving the
    column's smallest entry above the largest kink is always valid, so a shift always exists.
    """
    N, width = z.shape
    zt = z.T  # (width, N)
    edges = (kinks.view(1, 1, -1) - zt.unsqueeze(-1)).reshape(width, -1)  # (width, N*K)
    cands = torch.cat([torch.zeros(width, 1, dtype=z.dtype), edges + 2 * margin, edges - 2 * margin], dim=1)
    shifts = torch.empty(width, dtype=z.dtype)
    step = max(1, 2_000_000 // (cands.shape[1] * N * kinks.numel()))
    for lo in range(0, width, step):
        c = cands[lo : lo + step]  # (w, C)
        moved = zt[lo : lo + step].unsqueeze(1) + c.unsqueeze(-1)  # (w, C, N)
        dist = (moved.unsqueeze(-1) - kinks).abs().flatten(2).min(dim=2).values  # (w, C)
        cost = torch.where(dist >= margin, c.abs(), torch.full_like(c, math.inf))
        shifts[lo : lo + step] = c.gather(1, cost.argmin(dim=1, keepdim=True)).squeeze(1)
    return shifts


def _max(t: Tensor) -> float:
    """Max of a tensor as a float; NaN anywhere gives NaN (so it can never pass)."""
    if t.numel() == 0:
        return 0.0
    if torch.isnan(t).any():
        return math.nan
    return float(t.max())


def _worst(values: Iterable[float | None]) -> float:
    """Max over checks; a check that could not be made (None) or NaN makes it inf / NaN."""
    out = 0.0
    for v in values:
        if v is None:
            v = math.inf
        if math.isnan(v):
            return math.nan
        out = max(out, v)
    return out
