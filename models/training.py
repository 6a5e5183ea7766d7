"""The training engine: every restart of an architecture trained at once.

The gradient optimizers (adam, sgd, rmsprop) train all restarts as one batched computation:
each parameter is stacked with a leading row dimension R and the forward is a batched matmul.
Rows are independent — a restart's init and mini-batch order depend only on its own seed — so a
row trains exactly as it would alone, and a row that diverges is frozen and excluded without
touching the others. Rows may also come from several trials of the same shape (co-batching),
each with its own learning rate, momentum, L2 penalty, epoch budget and tolerance. On the CPU
an epoch's forward and backward go block by block of rows, each block's activations within the
core's cache (:func:`cpu_block`): the same numbers, 1.4-2x faster on wide nets, many samples or
big co-batched stacks.

On the CPU a row's numbers are also those of a plain loop over :class:`models.MLP` with autograd
and torch.optim, to the last bit: the engine takes their steps in their order (each activation's
gradient as autograd differentiates it, :meth:`Activation.backward`; the bias added after the
product; one-output products through ``mm`` row by row, :func:`_matmul`; torch.optim's step
formulas, :meth:`StackTrainer._update`), for sigmoid, tanh and relu with adam, sgd and rmsprop.

The quasi-Newton optimizers (torch ``lbfgs``, scipy ``bfgs`` and ``lbfgsb``) are inherently
sequential per restart (line searches, curvature history), so they loop over rows; their
objective's gradient comes from the same hand-written backprop as the batched optimizers'
(tested equal to autograd's), 1.4-1.9x cheaper per trial than autograd on these sizes.

Selection follows the course: the restart with the lowest *training* MSE wins.
"""
from __future__ import annotations

import ctypes
import math
import time
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from models.activations import get_activation
from models.config import (BATCHED_OPTIMIZERS, DEFAULT_LR, OPTIMIZERS, SCIPY_OPTIMIZERS, SEQUENTIAL_OPTIMIZERS,
                           TrainConfig, restart_seed, stack_key)
from models.data import Dataset

__all__ = [
    "OPTIMIZERS",
    "BATCHED_OPTIMIZERS",
    "TrainConfig",
    "TrainResult",
    "StackTrainer",
    "Progress",
    "train_restarts",
    "restart_seed",
    "stack_key",
]

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
RMSPROP_ALPHA = 0.99
RMSPROP_EPS = 1e-8
LBFGS_HISTORY = 1000
SCIPY_GTOL = 1e-6

# Row statuses. Diverged rows are excluded from selection.
CONVERGED, MAX_EPOCHS, PRUNED, RUNNING = "converged", "max_epochs", "pruned", "running"


@dataclass(frozen=True)
class TrainResult:
    """Everything one trial's training produced.

    Per-restart tuples are indexed by restart. Diverged restarts have NaN MSEs and a status
    starting with ``"diverged"`` (e.g. ``"diverged: nan_loss at epoch 12"``). A restart's curves
    hold its MSE after 0, 1, …, ``epochs`` updates (``epochs + 1`` points; a diverged restart's
    end on the value that stopped it): the last point is the state whose MSEs are reported, up to
    float32 rounding (the curve's forward fuses the bias add).
    """

    config: TrainConfig
    train_mse: tuple[float, ...]
    val_mse: tuple[float, ...]
    test_mse: tuple[float, ...] | None
    status: tuple[str, ...]
    epochs: tuple[int, ...]
    train_curves: tuple[tuple[float, ...], ...]
    val_curves: tuple[tuple[float, ...], ...]
    best_restart: int | None
    state_dict: dict[str, Tensor] | None
    seconds: float

    @property
    def ok(self) -> bool:
        return self.best_restart is not None

    @property
    def pruned(self) -> bool:
        return any(s == PRUNED for s in self.status)

    def best(self, values: Sequence[float] | None) -> float | None:
        if values is None or self.best_restart is None:
            return None
        return values[self.best_restart]

    @property
    def failure_reason(self) -> str | None:
        if self.ok:
            return None
        # how many of each kind (blow-up, nan_loss, …), then the first restart's own words: a
        # reason that fits on a line whatever the number of restarts, never cut mid-sentence
        kinds = Counter(s.removeprefix("diverged: ").split(" at ")[0] for s in self.status)
        counts = ", ".join(f"{kind} ×{n}" for kind, n in sorted(kinds.items()))
        return f"all {len(self.status)} restarts diverged ({counts}; first: {self.status[0].removeprefix('diverged: ')})"


@dataclass(frozen=True)
class Progress:
    """A snapshot after :meth:`StackTrainer.advance`: per config, where training stands."""

    epoch: int
    done: tuple[bool, ...]
    train_mse: tuple[float, ...]  # per config: the current leader's training MSE (NaN if none)
    val_mse: tuple[float, ...]  # per config: val MSE of the restart leading on training MSE


@dataclass
class _Data:
    X_train: Tensor
    y_train: Tensor
    X_val: Tensor
    y_val: Tensor
    X_test: Tensor
    y_test: Tensor


def _mse(pred: Tensor, y: Tensor, chunk: int | None = None) -> Tensor:
    """Mean over samples and outputs, per row: (R, N, D) vs (N, D) -> (R,)."""
    return _row_reduce(torch.mean, (pred - y) ** 2, (-2, -1), chunk)


# torch's at::internal::GRAIN_SIZE: a reduction over fewer elements runs on one thread.
_TORCH_GRAIN = 32_768


def _row_reduce(op, x: Tensor, dim: int | tuple[int, ...], chunk: int | None, keepdim: bool = False) -> Tensor:
    """``op(x, dim)`` (``torch.sum`` or ``torch.mean``) for every row of a stack; with ``chunk``,
    ``chunk`` rows at a time (see :func:`gpu_chunk`).

    A stack of one row of at least :data:`_TORCH_GRAIN` elements is summed as two equal rows:
    with several threads, torch splits a reduction to one value that long between them and adds
    their partial sums, which rounds otherwise than one thread's sum per row of a taller stack (a
    one-row block of 40,000 samples differed from its row in the whole stack in the last bit).
    Shorter rows are summed by one thread either way (and the expanded view would cost a quasi-Newton
    trial ~5 %)."""
    if x.shape[0] == 1 and x.numel() >= _TORCH_GRAIN and not chunk:
        return op(x.expand(2, *x.shape[1:]), dim=dim, keepdim=keepdim)[:1]
    if not chunk:
        return op(x, dim=dim, keepdim=keepdim)
    dims = {d % x.dim() for d in ((dim,) if isinstance(dim, int) else dim)}
    shape = [1 if i in dims else n for i, n in enumerate(x.shape) if keepdim or i not in dims]
    out = x.new_empty(shape)
    for i in range(0, x.shape[0], chunk):
        op(x[i : i + chunk], dim=dim, keepdim=keepdim, out=out[i : i + chunk])
    return out


def _matmul(a: Tensor, b: Tensor, chunk: int | None = None) -> Tensor:
    """``a @ b`` on every row of a stack: a (N, k) shared or (R, N, k), b (R, k, n).

    On the CPU every row rounds as ``torch.mm`` of that row alone does, which is what a plain
    autograd loop over :class:`models.MLP` computes (so a row's result depends neither on how many
    rows share the stack nor on where in it the row sits, and a co-batched trial equals the same
    trial alone):

    - a batched product (``bmm``) rounds as ``mm`` row by row, but MKL's kernel depends on whether
      each row's matrices start on a 16-byte boundary (seen on AMD EPYC: rows at odd positions of
      a stack of 1×6 gradients rounded differently). So every operand and the result have row
      strides that keep them aligned (:func:`_aligned`; a copy only where a row's size is not a
      multiple of 16 bytes: O(N·k), cheap next to the product).
    - with one output column (``n == 1``: a one-output net's last layer and its weight gradient)
      or one output row (``m == 1``: a one-input net's first weight gradient) ``mm`` goes to
      MKL's matrix-vector kernel, which a batched product never takes (~1e-7 relative apart; for
      ``m == 1`` seen on an AVX-512 Intel Xeon, e.g. (1, 1000)·(1000, 8)) and whose rounding depends on
      where the result starts in memory; and ATen's ``bmm`` multiplies small matrices (fewer than
      :data:`_SMALL_BMM` multiply-adds) with its own loop, not MKL's ``mm``, which on that Xeon
      fuses each multiply-add. Those products, unless each output is one product (``k == 1``:
      it rounds alike everywhere), run row by row through ``mm`` itself, each into a new (64-byte
      aligned) tensor as in a plain loop: about the time of the one batched product at seed-1d's
      sizes.

    ``matmul`` is not used for a shared ``a``: it folds the stack into one product whose rounding
    depends on its height; the expanded view costs nothing.

    On a GPU, cuBLAS picks its kernel by the number of rows, so with ``chunk`` (see
    :func:`gpu_chunk`) every product is ``chunk`` rows, and a lone row with one output column is
    computed as two.
    """
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    if a.device.type == "cpu" and (n == 1 or (k > 1 and (m == 1 or m * k * n < _SMALL_BMM))):
        a = a.expand(b.shape[0], -1, -1)
        if b.shape[0] == 1:
            return torch.mm(a[0], b[0]).unsqueeze(0)
        return torch.stack([torch.mm(x, w) for x, w in zip(a.unbind(0), b.unbind(0))])
    one = b.shape[0] == 1 and b.shape[-1] == 1
    rows = 2 if one else b.shape[0]
    b = b.expand(rows, -1, -1)
    a = a.expand(rows, -1, -1)  # (N, k) or (1, N, k): a view
    cpu = a.device.type == "cpu" and not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad))
    if cpu:
        a, b = _aligned(a), _aligned(b)
    if not chunk:
        # a new stack's rows are aligned where a row's size is a multiple of 16 bytes; autograd
        # (the quasi-Newton rows, trained one by one) cannot write into ``out``
        out = _aligned_empty(rows, m, n, a) if cpu and _padded_size(m * n, a.dtype) != m * n else None
        out = torch.bmm(a, b) if out is None else torch.bmm(a, b, out=out)
    else:
        out = _aligned_empty(rows, m, n, a) if cpu else torch.empty(rows, m, n, dtype=b.dtype, device=b.device)
        for i in range(0, rows, chunk):
            torch.bmm(a[i : i + chunk], b[i : i + chunk], out=out[i : i + chunk])
    return out[:1] if one else out


_ALIGN_BYTES = 16
# ATen's bmm multiplies matrices of fewer multiply-adds than this (m·k·n) with its own loop, not
# with MKL as mm does: the two round alike on AMD EPYC, not on an AVX-512 Intel Xeon (seen:
# (20, 3)·(3, 3) one ulp apart). See :func:`_matmul`.
_SMALL_BMM = 400

# On the CPU, the most bytes one layer's activations of a block of rows may take (see :func:`cpu_block`).
CPU_BLOCK_BYTES = 2**20

# On a GPU, rows per product and per-row sum (see :func:`gpu_chunk`).
GPU_CHUNK_MIN, GPU_CHUNK_MAX = 64, 1024
GPU_CHUNK_FLOPS = 2**30


def gpu_chunk(sizes: Sequence[int], n_train: int, device: torch.device) -> int | None:
    """How many rows each batched product and per-row sum of a stack takes at once on a GPU
    (``None`` on the CPU: one call for the whole stack).

    cuBLAS and torch's reductions choose their kernels, and with them the order in which a row's
    sums are added, by the number of rows they are given (seen on an H200: a product with one
    output column rounds otherwise from 64 rows on than at 10 or 40, a per-row mean from 16 rows
    on). So on a GPU every product and per-row sum is cut into chunks of one size and the stack
    is padded with idle rows to a whole number of chunks: the size depends on the network's
    shape and the training set's size only, never on how many trials share the stack, and a
    co-batched trial gets the numbers it gets alone. The size is a power of two from 64 (a
    multiple of 64 rows starts every chunk on a 256-byte boundary of its stack, so that no chunk
    is aligned otherwise than another) to 1024, the largest whose widest product stays under
    2^30 floating-point operations: such a product takes little longer than its launch, so
    padding a small stack costs little and a large one needs few launches.
    """
    if device.type == "cpu":
        return None
    widest = max(fan_in * fan_out for fan_in, fan_out in zip(sizes[:-1], sizes[1:]))
    chunk = GPU_CHUNK_MAX
    while chunk > GPU_CHUNK_MIN and chunk * 2 * n_train * widest > GPU_CHUNK_FLOPS:
        chunk //= 2
    return chunk


def cpu_block(sizes: Sequence[int], n: int, dtype: torch.dtype) -> int:
    """How many rows of a stack one CPU pass over ``n`` samples takes at once: as many as keep a
    layer's activations (rows × n × its width) within :data:`CPU_BLOCK_BYTES`, at least one.

    A pass's elementwise steps (the activation, its slope, the deltas) run at the speed of the
    memory once a layer's activations outgrow the core's cache: ten restarts of
    [8, 100, 100, 100, 1] tanh on 4,000 samples (16 MB a layer) trained 1.5× slower as one stack
    than as ten one-row stacks, and slower than a plain PyTorch loop. So the forward and backward
    of an epoch go block by block, each block's activations hot in the cache from its forward to
    its backward. The size depends on the shape and ``n`` only, and every product, sum and
    elementwise step works on each row by itself, so no number depends on the blocks.
    """
    widest = max(sizes[1:])
    return max(1, CPU_BLOCK_BYTES // (n * widest * dtype.itemsize))


def _joined(parts: list[Tensor]) -> Tensor:
    """The blocks' per-row values as one tensor (one block: itself, no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


@dataclass(frozen=True)
class _Block:
    """A block of rows of a stack (see :func:`cpu_block`), with views of the stack's tensors on
    it; ``rows`` None: the whole stack, its tensors themselves."""

    rows: slice | None
    params: list[Tensor]
    weight_decay: Tensor | None  # None: no row of the stack has an L2 penalty
    fillers: list[Tensor | None]
    grads: Tensor

    def of(self, t: Tensor) -> Tensor:
        """A per-row tensor's rows of this block."""
        return t if self.rows is None else t[self.rows]


def _padded_size(n: int, dtype: torch.dtype) -> int:
    """``n`` elements rounded up to a whole number of 16-byte blocks."""
    per = _ALIGN_BYTES // dtype.itemsize
    return -(-n // per) * per


def _layout(sizes: Sequence[int], dtype: torch.dtype) -> tuple[list[tuple[int, tuple[int, int]]], int]:
    """Where each parameter sits in a row of the flat buffer, ``[(offset, shape)]`` in the order
    W0 (fan_in, fan_out), b0 (1, fan_out), W1, ..., and the row's length: every parameter starts
    on a 16-byte boundary (see :func:`_matmul`)."""
    places, offset = [], 0
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        for shape in ((fan_in, fan_out), (1, fan_out)):
            places.append((offset, shape))
            offset += _padded_size(shape[0] * shape[1], dtype)
    return places, offset


def _gaps(places: Sequence[tuple[int, tuple[int, int]]], row: int) -> list[int]:
    """The padding after each parameter of a :func:`_layout`."""
    ends = [o + shape[0] * shape[1] for o, shape in places]
    return [start - end for end, start in zip(ends, [o for o, _ in places[1:]] + [row])]


def _on_boundary(x: Tensor) -> Tensor:
    """``x``, or a copy of it where it does not start on a 16-byte boundary (a slice of a dataset)."""
    return x if x.data_ptr() % _ALIGN_BYTES == 0 else x.clone()


def _aligned_empty(rows: int, m: int, n: int, like: Tensor) -> Tensor:
    """An uninitialised (rows, m, n) stack whose every row starts on a 16-byte boundary
    (rows of contiguous m×n matrices, each padded to a multiple of 16 bytes)."""
    stride = _padded_size(m * n, like.dtype)
    buffer = torch.empty(rows, stride, dtype=like.dtype, device=like.device)  # 64-byte aligned
    return buffer.as_strided((rows, m, n), (stride, n, 1))


def _aligned(x: Tensor) -> Tensor:
    """``x`` (a stack) itself when each row's matrix starts on a 16-byte boundary, else a copy that does."""
    if x.data_ptr() % _ALIGN_BYTES == 0 and (x.stride(0) * x.element_size()) % _ALIGN_BYTES == 0:
        return x
    if x.stride(0) == 0:  # a shared matrix, expanded: copy it once
        return x[0].clone().expand(x.shape[0], -1, -1)
    if x.stride(-2) < x.stride(-1):  # a transposed view stays one (MKL's kernel for it differs)
        return _aligned(x.transpose(-2, -1)).transpose(-2, -1)
    out = _aligned_empty(x.shape[0], x.shape[1], x.shape[2], x)
    out.copy_(x)
    return out


# glibc's mallopt parameters (see :func:`_keep_freed_memory`)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_malloc_tuned = False


def _keep_freed_memory() -> None:
    """Let glibc's malloc hand an epoch's freed tensors to the next epoch instead of the system.

    An epoch allocates and frees the same tensors every time. By default glibc maps an allocation
    past 128 KB from the system and unmaps it when freed, or trims its heap once twice that is free
    at its top, so every epoch touched fresh pages: [1, 50, 50, 1] tanh, 10 restarts × 500 epochs
    took 500,000+ page faults and 2.2 s of system time in 3.2 s. Here allocations under 32 MB come
    from the heap and up to 256 MB of freed heap stays in the process. Once per process; a no-op
    where the C library has no ``mallopt`` (not glibc)."""
    global _malloc_tuned
    if _malloc_tuned:
        return
    _malloc_tuned = True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, 32 * 2**20)
    mallopt(_M_TRIM_THRESHOLD, 256 * 2**20)


class StackTrainer:
    """Trains a stack of rows (restarts of one or several same-shape configs) epoch by epoch.

    Use :func:`train_restarts` for the common case. The class exists so that a worker can
    advance training in chunks and let the sweep driver prune between chunks.

    Args:
        configs: one or more configs with equal :func:`stack_key`.
        data: the dataset (train/val/test tensors).
        device: torch device for the math (scipy's ``bfgs`` and ``lbfgsb``: always the CPU).
        dtype: float32 (default) or float64.
        restart_ids: train only these restart indices of every config (default: all), e.g. to
            reproduce one restart of a trial alone.
        row_chunk: rows per product and per-row sum, the stack padded to a multiple of it
            (default: :func:`gpu_chunk`'s choice, none on the CPU; 0: none).
        row_block: rows per block of a CPU pass (default: :func:`cpu_block`'s choice; 0: the
            whole stack at once). Not with chunks.
    """

    def __init__(
        self,
        configs: Sequence[TrainConfig],
        data: Dataset,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        restart_ids: Sequence[int] | None = None,
        row_chunk: int | None = None,
        row_block: int | None = None,
    ) -> None:
        if not configs:
            raise ValueError("configs: need at least one TrainConfig")
        keys = {stack_key(c) for c in configs}
        if len(keys) != 1:
            raise ValueError("configs: co-batched configs must share sizes, activation, optimizer and batch_size")
        first = configs[0]
        if data.X_train.shape[1] != first.sizes[0] or data.y_train.shape[1] != first.sizes[-1]:
            raise ValueError(
                f"sizes: the dataset has {data.X_train.shape[1]} inputs and {data.y_train.shape[1]} outputs, "
                f"the network {first.sizes[0]} and {first.sizes[-1]}"
            )
        if data.X_train.shape[0] == 0:
            raise ValueError("data: the training set is empty")
        self.configs = tuple(configs)
        # scipy's optimizers work on NumPy arrays: their rows are trained on the CPU, whatever
        # ``device`` (a GPU would only add a copy each way per evaluation on these sizes)
        self.device = torch.device("cpu" if first.optimizer in SCIPY_OPTIMIZERS else device)
        if self.device.type == "cpu":
            _keep_freed_memory()
        self.dtype = dtype
        self.act = get_activation(first.activation)
        self.sizes = first.sizes
        self.optimizer = first.optimizer
        self.batch_size = first.batch_size
        self.nesterov = first.nesterov
        self._t0 = time.perf_counter()
        self._seconds = 0.0
        put = lambda t: _on_boundary(t.to(device=self.device, dtype=dtype))  # noqa: E731
        self.data = _Data(
            put(data.X_train), put(data.y_train), put(data.X_val), put(data.y_val), put(data.X_test), put(data.y_test)
        )
        # Row bookkeeping: row -> (config index, restart index).
        self.owner: list[tuple[int, int]] = [
            (ci, r) for ci, c in enumerate(configs) for r in (range(c.restarts) if restart_ids is None else restart_ids)
        ]
        R = len(self.owner)
        self.R = R
        n_train = data.X_train.shape[0]
        self._chunk = gpu_chunk(first.sizes, n_train, self.device) if row_chunk is None else (row_chunk or None)
        # Tensors hold ``rows`` rows: the R real ones, then idle ones (zero parameters and learning
        # rate) up to a whole number of chunks.
        self.rows = R if not self._chunk else -(-R // self._chunk) * self._chunk
        self._block = 0 if self._chunk or self.device.type != "cpu" else row_block
        seeds = [restart_seed(configs[ci].seed, r) for ci, r in self.owner]
        self.generators = [torch.Generator().manual_seed(s) for s in seeds]
        # All parameters of all rows live in one flat buffer (R, P); self.params are views of it:
        # [W0 (R, fan_in, fan_out), b0 (R, 1, fan_out), W1, b1, ...].
        self.flat, self.params = self._init_stack()
        idle = [0.0] * (self.rows - R)
        row = lambda f, dt=dtype: torch.tensor([f(configs[ci]) for ci, _ in self.owner] + idle, dtype=dt, device=self.device)  # noqa: E731
        self.lr = row(lambda c: c.learning_rate)
        self._neg_lr = -self.lr.view(-1, 1)
        self._lr64 = row(lambda c: c.learning_rate, torch.float64)  # Adam's step size, as torch.optim takes it
        self.momentum = row(lambda c: c.momentum)
        self.weight_decay = row(lambda c: c.weight_decay)
        self._l2 = bool((self.weight_decay > 0).any())
        self._momentum_rows = int((self.momentum > 0).sum())
        self._momentum = self._momentum_rows > 0
        self.tol = [configs[ci].tol for ci, _ in self.owner]
        self.max_epochs = [configs[ci].max_epochs for ci, _ in self.owner]
        self.status = [RUNNING] * R
        self.epochs = [0] * R
        self.prev_obj = [math.inf] * R
        self.train_curves: list[list[float]] = [[] for _ in range(R)]
        self.val_curves: list[list[float]] = [[] for _ in range(R)]
        self.epoch = 0
        self._state: dict[str, Tensor] = {}
        self._block_views: dict[int, list[_Block]] = {}
        self._final: tuple[list[float], list[float], list[float]] | None = None
        self._cast: dict[str, tuple[Tensor, Tensor]] = {}
        self._lbfgs: dict[int, tuple[torch.optim.LBFGS, list[Tensor]]] = {}
        self._step = 0

    # ----------------------------------------------------------------- set-up
    def _init_stack(self) -> tuple[Tensor, list[Tensor]]:
        from models.mlp import init_parameters

        per_row = [list(init_parameters(self.sizes, g, torch.float32).values()) for g in self.generators]
        places, P = _layout(self.sizes, self.dtype)
        self._fillers = [torch.zeros(self.rows, gap, dtype=self.dtype, device=self.device) if gap else None
                         for gap in _gaps(places, P)]  # what a gradient buffer holds between parameters
        flat = torch.zeros(self.rows, P, dtype=self.dtype, device=self.device)  # gaps and idle rows stay 0
        views = [flat[:, o : o + shape[0] * shape[1]].view(self.rows, *shape) for o, shape in places]
        with torch.no_grad():
            for i, view in enumerate(views):
                view[: self.R].copy_(torch.stack([p[i] for p in per_row]).view_as(view[: self.R]))
        return flat, views

    # ----------------------------------------------------------------- math
    def forward(self, params: Sequence[Tensor], X: Tensor) -> Tensor:
        """Batched forward: X (N, d) shared or (R, N, d) per row -> (R, N, d_out)."""
        a = X
        L = len(params) // 2
        chunk = self._chunk_for(params[0])
        for l in range(L):
            W, b = params[2 * l], params[2 * l + 1]
            z = _matmul(a, W, chunk=chunk) + b  # (R, N, fan_out)
            a = self.act.fn(z) if l < L - 1 else z
        return a

    def _chunk_for(self, stacked: Tensor) -> int | None:
        """The chunk for the whole stack's math; none for one row trained alone (quasi-Newton)."""
        return self._chunk if stacked.shape[0] == self.rows else None

    def _penalty(self, params: Sequence[Tensor], weight_decay: Tensor) -> Tensor:
        """λ·Σ‖W‖² per row of ``params`` (a block of the stack), ``weight_decay`` its rows' λ."""
        total = torch.zeros(params[0].shape[0], dtype=self.dtype, device=self.device)
        for W in params[0::2]:
            total = total + _row_reduce(torch.sum, W**2, (-2, -1), self._chunk_for(W))
        return weight_decay * total

    def _blocks(self, n: int) -> list[_Block]:
        """The blocks of rows of one pass over ``n`` samples (see :func:`cpu_block`), made once per ``n``."""
        if n not in self._block_views:
            size = cpu_block(self.sizes, n, self.dtype) if self._block is None else (self._block or self.rows)
            whole = _Block(None, self.params, self.weight_decay if self._l2 else None, self._fillers, self._buf("grad"))
            self._block_views[n] = [whole] if size >= self.rows else [
                _Block(rows, [t[rows] for t in whole.params], None if whole.weight_decay is None else whole.weight_decay[rows],
                       [None if f is None else f[rows] for f in whole.fillers], whole.grads[rows])
                for rows in (slice(i, min(i + size, self.rows)) for i in range(0, self.rows, size))]
        return self._block_views[n]

    def _evaluate(self, X: Tensor, y: Tensor) -> list[float]:
        if X.shape[0] == 0:
            return [math.nan] * self.R
        with torch.no_grad():
            return _joined([_mse(self.forward(b.params, X), y, self._chunk) for b in self._blocks(X.shape[0])]).tolist()

    # ----------------------------------------------------------------- public
    @property
    def active(self) -> list[bool]:
        return [s == RUNNING for s in self.status]

    def done(self) -> bool:
        return not any(self.active)

    def advance(self, until_epoch: int | None = None) -> Progress:
        """Train until every row stopped or ``until_epoch`` epochs have run.

        Returns:
            A :class:`Progress` snapshot for pruning decisions.
        """
        t0 = time.perf_counter()
        self._final = None
        # Epoch index e evaluates the parameters after e updates (the curves' point e, the stopping
        # rules) and then updates them; index max_epochs only evaluates: the curves end on the
        # state whose MSEs the result reports, and the rules judge the last update too.
        target = max(self.max_epochs) + 1 if until_epoch is None else until_epoch
        if self.optimizer in BATCHED_OPTIMIZERS:
            while self.epoch < target and not self.done():
                self._batched_epoch()
        else:
            self._sequential(target)
        self._seconds += time.perf_counter() - t0
        return self.progress()

    def prune(self, config_index: int) -> None:
        """Stop every still-running row of one config (the driver pruned that trial)."""
        for row, (ci, _) in enumerate(self.owner):
            if ci == config_index and self.status[row] == RUNNING:
                self.status[row] = PRUNED

    def progress(self) -> Progress:
        done, train, val = [], [], []
        for ci in range(len(self.configs)):
            rows = [r for r, (c, _) in enumerate(self.owner) if c == ci]
            done.append(all(self.status[r] != RUNNING for r in rows))
            live = [r for r in rows if self.train_curves[r] and math.isfinite(self.train_curves[r][-1])
                    and not self.status[r].startswith("diverged")]
            if live:
                lead = min(live, key=lambda r: self.train_curves[r][-1])
                train.append(self.train_curves[lead][-1])
                val.append(self.val_curves[lead][-1] if self.val_curves[lead] else math.nan)
            else:
                train.append(math.nan)
                val.append(math.nan)
        return Progress(self.epoch, tuple(done), tuple(train), tuple(val))

    def rows_of(self, config_index: int) -> list[int]:
        return [r for r, (c, _) in enumerate(self.owner) if c == config_index]

    def results(self) -> list[TrainResult]:
        """Finish every config (rows still running are out of budget); one result per config."""
        return [self.result(ci) for ci in range(len(self.configs))]

    def result(self, config_index: int) -> TrainResult:
        """Finish one config (its rows still running are out of budget) and build its result;
        the other configs of the stack are untouched and may train on."""
        rows = self.rows_of(config_index)
        for r in rows:
            if self.status[r] == RUNNING:
                self.status[r] = MAX_EPOCHS
        train, val, test = (list(mses) for mses in self._final_mses())
        for r in rows:
            if len(self.train_curves[r]) == self.epochs[r] and not self.status[r].startswith("diverged"):
                # stopped between evaluations (pruned after a chunk): the curves end, as always, on
                # the state whose MSEs this result reports
                self.train_curves[r].append(train[r])
                if self.data.X_val.shape[0]:
                    self.val_curves[r].append(val[r])
            if self.status[r].startswith("diverged") or not math.isfinite(train[r]):
                if not self.status[r].startswith("diverged"):
                    self.status[r] = f"diverged: non-finite final loss after epoch {self.epochs[r]}"
                train[r] = val[r] = test[r] = math.nan
        finite = [r for r in rows if math.isfinite(train[r])]
        best_row = min(finite, key=lambda r: train[r]) if finite else None
        state = None
        if best_row is not None:
            state = {}
            for l in range(len(self.sizes) - 1):
                state[f"{l}_weight"] = self.params[2 * l][best_row].detach().to("cpu", torch.float32).clone()
                state[f"{l}_bias"] = self.params[2 * l + 1][best_row, 0].detach().to("cpu", torch.float32).clone()
        has_test = self.data.X_test.shape[0] > 0
        return TrainResult(
            config=self.configs[config_index],
            train_mse=tuple(train[r] for r in rows),
            val_mse=tuple(val[r] for r in rows),
            test_mse=tuple(test[r] for r in rows) if has_test else None,
            status=tuple(self.status[r] for r in rows),
            epochs=tuple(self.epochs[r] for r in rows),
            train_curves=tuple(tuple(self.train_curves[r]) for r in rows),
            val_curves=tuple(tuple(self.val_curves[r]) for r in rows),
            best_restart=None if best_row is None else rows.index(best_row),
            state_dict=state,
            seconds=self._seconds,
        )

    def _final_mses(self) -> tuple[list[float], list[float], list[float]]:
        """Every row's train, validation and test MSE at the parameters as they are: evaluated
        once after each :meth:`advance`, whose configs' results all read them (a stack of K
        trials ending together evaluated the whole stack K times)."""
        if self._final is None:
            d = self.data
            self._final = (self._evaluate(d.X_train, d.y_train), self._evaluate(d.X_val, d.y_val),
                           self._evaluate(d.X_test, d.y_test))
        return self._final

    # ----------------------------------------------------------------- stopping rules
    def _check(self, row: int, objective: float, epoch: int) -> None:
        """Apply the course's stopping rules to one row's objective at the start of ``epoch``."""
        prev = self.prev_obj[row]
        if not math.isfinite(objective):
            kind = "nan_loss" if math.isnan(objective) else "inf_loss"
            self.status[row] = f"diverged: {kind} at epoch {epoch}, restart {self.owner[row][1]}"
        elif objective > 2.0 * prev:
            self.status[row] = (f"diverged: blow-up at epoch {epoch}, restart {self.owner[row][1]} "
                                f"({prev:.3g} -> {objective:.3g})")
        elif abs(prev - objective) < self.tol[row]:
            self.status[row] = CONVERGED
        elif self.epochs[row] >= self.max_epochs[row]:
            self.status[row] = MAX_EPOCHS
        self.prev_obj[row] = objective

    # ----------------------------------------------------------------- batched optimizers
    def _forward_cache(self, X: Tensor, params: Sequence[Tensor]) -> tuple[list[Tensor], list[tuple]]:
        """Forward keeping activations ``[X, a_1, ..., a_L]`` (a_L the linear output) and what
        each hidden layer's activation needs for its backward (``saved[l]``, of ``acts[l]``);
        of ``params`` (a block of the stack, or one row trained alone)."""
        chunk = self._chunk_for(params[0])
        acts: list[Tensor] = [X]
        saved: list[tuple] = [()]
        L = len(params) // 2
        for l in range(L):
            W, b = params[2 * l], params[2 * l + 1]
            z = _matmul(acts[-1], W, chunk=chunk) + b  # (R, N, fan_out); the bias added as models.MLP does
            a, kept = self.act.forward_saving(z) if l < L - 1 else (z, ())
            acts.append(a)
            saved.append(kept)
        return acts, saved

    def _gradients(self, cache: tuple[list[Tensor], list[tuple]], y: Tensor,
                   params: Sequence[Tensor], weight_decay: Tensor | None) -> list[Tensor]:
        """Hand-written batched backprop of per-row mean MSE (+ L2): the recipe that
        models.backprop implements and the verification job checks, stacked over the rows of
        ``params`` (a block of the stack, or one row trained alone) with their ``weight_decay``
        (None: none). Returns the gradients in the order of the parameters."""
        chunk = self._chunk_for(params[0])
        acts, saved = cache
        out = acts[-1]  # (R, N, D)
        n, d = out.shape[-2], out.shape[-1]
        delta = (out - y) * (2.0 / (n * d))  # dL/dz_L  (R, N, D)
        L = len(params) // 2
        grads: list[Tensor] = [torch.empty(0)] * len(params)
        for l in range(L - 1, -1, -1):
            a_prev = acts[l]  # (R, N, fan_in) or shared (N, fan_in)
            W = params[2 * l]  # (R, fan_in, fan_out)
            dW = _matmul(a_prev.transpose(-2, -1), delta, chunk=chunk)  # (R, fan_in, fan_out)
            if weight_decay is not None:
                dW = dW + (2.0 * weight_decay).view(-1, 1, 1) * W
            grads[2 * l] = dW
            grads[2 * l + 1] = _row_reduce(torch.sum, delta, 1, chunk, keepdim=True)  # (R, 1, fan_out)
            if l > 0:  # delta_{l-1} = (delta_l W_l^T) * phi'(z_{l-1})
                delta = self.act.backward(_matmul(delta, W.transpose(1, 2), chunk=chunk), saved[l])
        return grads

    def _pass(self, X: Tensor, y: Tensor, grads: bool, losses: bool = True) -> tuple[Tensor, Tensor]:
        """Per-row MSE and objective (MSE + L2) of the parameters on ``(X, y)`` (``X`` (n, d)
        shared, or (rows, n, d) one batch per row; without ``losses``, two empty tensors) and,
        with ``grads``, their gradients into the ``"grad"`` buffer (rows, P), laid out as the
        flat buffer (gaps zero); block by block of rows."""
        mses, objectives = [], []
        for b in self._blocks(X.shape[-2]):
            Xb, yb = (X, y) if X.dim() == 2 else (b.of(X), b.of(y))
            cache = self._forward_cache(Xb, b.params)
            if losses:
                mse = _mse(cache[0][-1], yb, self._chunk_for(b.params[0]))
                mses.append(mse)
                objectives.append(mse if b.weight_decay is None else mse + self._penalty(b.params, b.weight_decay))
            if grads:
                parts = self._gradients(cache, yb, b.params, b.weight_decay)
                torch.cat([part for grad, filler in zip(parts, b.fillers) for part in (grad.reshape(grad.shape[0], -1), filler)
                           if part is not None], dim=1, out=b.grads)
        return (_joined(mses), _joined(objectives)) if losses else (self.lr[:0], self.lr[:0])

    def _batched_epoch(self) -> None:
        d = self.data
        N = d.X_train.shape[0]
        active = self.active
        epoch = self.epoch
        full_batch = self.batch_size is None or self.batch_size >= N
        # Objective of the parameters at the start of the epoch (curves and stopping) and, in the
        # same pass, the full-batch gradients where a row may still update after the check.
        updates = full_batch and any(a and e < m for a, e, m in zip(active, self.epochs, self.max_epochs))
        mse, objective = self._pass(d.X_train, d.y_train, updates)
        val = self._evaluate(d.X_val, d.y_val) if d.X_val.shape[0] else None
        mse_l, obj_l = mse.tolist(), objective.tolist()
        for r in range(self.R):
            if not active[r]:
                continue
            self.train_curves[r].append(mse_l[r])
            if val is not None:
                self.val_curves[r].append(val[r])
            self._check(r, obj_l[r], epoch)
        still = self.active
        if any(still):
            if full_batch:
                self._update(still)
            else:
                self._minibatch_pass(still)
            for r in range(self.R):
                if still[r]:
                    self.epochs[r] += 1
        self.epoch += 1

    def _minibatch_pass(self, still: list[bool]) -> None:
        d = self.data
        N = d.X_train.shape[0]
        B = int(self.batch_size or N)
        perms = torch.stack([torch.randperm(N, generator=g) for g in self.generators]
                            + [torch.arange(N)] * (self.rows - self.R)).to(self.device)  # (rows, N)
        for start in range(0, N, B):
            idx = perms[:, start : start + B]  # (R, b)
            self._pass(d.X_train[idx], d.y_train[idx], grads=True, losses=False)  # per-row batches (R, b, d_in)
            self._update(still)

    def _update(self, still: list[bool]) -> None:
        """One optimizer step on the flat (R, P) parameter buffer from the gradients :meth:`_pass`
        left in the ``"grad"`` buffer, laid out as it; rows not in ``still`` keep their values.
        One buffer means a handful of tensor ops per step, whatever the depth. Each row's step
        rounds as torch.optim's on that row alone: a step subtracted as it is, or a direction
        scaled by -lr in one rounding (torch.optim's ``add_(alpha=-lr)``, a fused multiply-add:
        ``addcmul``)."""
        self._step += 1
        g = self._buf("grad")
        momentum = self.momentum.view(-1, 1)
        with torch.no_grad():
            if self.optimizer == "adam":
                direction, step = None, self._adam(g)
            elif self.optimizer == "sgd":
                direction, step = self._sgd(g, momentum), None
            else:
                direction, step = self._rmsprop(g, momentum)
            every_row = all(still)
            if step is None:  # a direction, scaled by -lr (sgd; rmsprop with momentum on every row)
                assert direction is not None
                if every_row:
                    self.flat.addcmul_(direction, self._neg_lr)
                    return
                new = torch.addcmul(self.flat, direction, self._neg_lr)
            elif direction is None:  # a step, subtracted (adam; rmsprop without momentum)
                if every_row:
                    self.flat.sub_(step)
                    return
                new = self.flat - step
            else:  # rmsprop rows with and without momentum: each takes its own branch
                new = torch.where(momentum > 0, torch.addcmul(self.flat, direction, self._neg_lr), self.flat - step)
            if not every_row:
                mask = torch.tensor(still + [True] * (self.rows - self.R), device=self.device).view(-1, 1)
                new = torch.where(mask, new, self.flat)
            self.flat.copy_(new)

    def _buf(self, name: str) -> Tensor:
        if name not in self._state:
            self._state[name] = torch.zeros_like(self.flat)
        return self._state[name]

    def _sgd(self, g: Tensor, momentum: Tensor) -> Tensor:
        # torch.optim.SGD (dampening 0): buf = m*buf + g; direction g + m*buf (nesterov) or buf
        if not self._momentum:
            return g
        buf = self._buf("momentum")
        buf.mul_(momentum).add_(g)  # a row without momentum: buf = g
        return torch.addcmul(g, buf, momentum) if self.nesterov else buf

    def _adam(self, g: Tensor) -> Tensor:
        # torch.optim.Adam's update, written out so that lr is per row: its step size lr / (1 - b1^t)
        # taken in double precision from the trial's lr, as torch.optim takes it from a Python float.
        b1, b2 = ADAM_BETAS
        m, v = self._buf("exp_avg"), self._buf("exp_avg_sq")
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        t = self._step  # rows step together; a frozen row never resumes, so one counter serves all
        bias2_sqrt = (1 - b2**t) ** 0.5
        denom = (v.sqrt() / bias2_sqrt).add_(ADAM_EPS)
        step_size = (self._lr64 / (1 - b1**t)).to(self.dtype).view(-1, 1)
        return step_size * m / denom

    def _rmsprop(self, g: Tensor, momentum: Tensor) -> tuple[Tensor | None, Tensor | None]:
        # torch.optim.RMSprop: with momentum, buf = m*buf + g/avg and the direction buf; without,
        # the step lr*g/avg (``addcdiv``). (direction, step): a stack with rows of both has both.
        v = self._buf("square_avg")
        v.mul_(RMSPROP_ALPHA).addcmul_(g, g, value=1 - RMSPROP_ALPHA)
        avg = v.sqrt().add_(RMSPROP_EPS)
        step = self.lr.view(-1, 1) * g / avg if self._momentum_rows < self.rows else None
        if not self._momentum:
            return None, step
        buf = self._buf("momentum")
        buf.mul_(momentum).addcdiv_(g, avg)
        return buf, step

    # ----------------------------------------------------------------- quasi-Newton optimizers
    def _sequential(self, until_epoch: int) -> None:
        """Train each still-running row alone with lbfgs (torch) or bfgs / lbfgsb (scipy)."""
        for r in range(self.R):
            if self.status[r] != RUNNING:
                continue
            if self.optimizer == "lbfgs":
                self._torch_lbfgs_row(r, until_epoch)
            else:
                self._scipy_row(r)
        self.epoch = max(self.epochs) if self.epochs else 0

    def _row_params(self, r: int, dtype: torch.dtype) -> list[Tensor]:
        return [p[r : r + 1].detach().to(dtype).clone() for p in self.params]

    def _set_row(self, r: int, row_params: Sequence[Tensor]) -> None:
        with torch.no_grad():
            for view, q in zip(self.params, row_params):
                view[r : r + 1].copy_(q.detach().reshape(view[r : r + 1].shape))

    def _row_objective(self, r: int, params: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        X, y = self._train_as(params[0].dtype)
        mse = _mse(self.forward(params, X), y)[0]
        return mse, self._row_penalised(r, mse, params)

    def _row_penalised(self, r: int, mse: Tensor, params: Sequence[Tensor]) -> Tensor:
        """Row ``r``'s objective: ``mse`` plus its L2 penalty on ``params``' weights, if any."""
        wd = float(self.weight_decay[r])
        return mse + wd * sum((W**2).sum() for W in params[0::2]) if wd > 0 else mse

    def _row_gradients(self, r: int, params: Sequence[Tensor]) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Row ``r``'s MSE, objective (:meth:`_row_objective`'s) and gradients at ``params``, by the
        engine's own backprop (:meth:`_gradients`, as the batched optimizers): the quasi-Newton
        optimizers' objective, cheaper than autograd's graph and backward on these sizes."""
        X, y = self._train_as(params[0].dtype)
        cache = self._forward_cache(X, params)
        mse = _mse(cache[0][-1], y)[0]
        l2 = self.weight_decay[r : r + 1].to(params[0]) if float(self.weight_decay[r]) > 0 else None
        return mse, self._row_penalised(r, mse, params), self._gradients(cache, y, params, l2)

    def _train_as(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Training data in ``dtype`` (scipy works in float64), converted once."""
        key = f"train_{dtype}"
        if key not in self._cast:
            self._cast[key] = (self.data.X_train.to(dtype), self.data.y_train.to(dtype))
        return self._cast[key]

    def _record_row(self, r: int, params: Sequence[Tensor], mse: float) -> None:
        self.train_curves[r].append(mse)
        d = self.data
        if d.X_val.shape[0]:
            with torch.no_grad():
                X, y = d.X_val.to(params[0].dtype), d.y_val.to(params[0].dtype)
                self.val_curves[r].append(float(_mse(self.forward(params, X), y)[0]))

    def _torch_lbfgs_row(self, r: int, until_epoch: int) -> None:
        if r not in self._lbfgs:
            params = self._row_params(r, self.dtype)
            opt = torch.optim.LBFGS(params, lr=float(self.lr[r]), history_size=LBFGS_HISTORY)
            self._lbfgs[r] = (opt, params)
        opt, params = self._lbfgs[r]

        def closure() -> Tensor:
            _, objective, grads = self._row_gradients(r, params)
            for p, g in zip(params, grads):
                p.grad = g
            return objective

        while self.status[r] == RUNNING and self.epochs[r] < until_epoch:
            with torch.no_grad():
                mse, objective = self._row_objective(r, params)
            self._record_row(r, params, float(mse))
            self._check(r, float(objective), self.epochs[r])
            if self.status[r] != RUNNING:
                break
            opt.step(closure)
            self.epochs[r] += 1
        self._set_row(r, params)

    def _scipy_row(self, r: int) -> None:
        from scipy.optimize import minimize

        params64 = self._row_params(r, torch.float64)
        shapes = [p.shape for p in params64]
        numels = [p.numel() for p in params64]

        def unflatten(v: np.ndarray) -> list[Tensor]:
            flat = torch.from_numpy(v)
            return [t.view(s) for t, s in zip(torch.split(flat, numels), shapes)]

        last: list[tuple[np.ndarray, float]] = []  # the point scipy evaluated last, and its MSE

        def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
            mse, objective, grads = self._row_gradients(r, unflatten(v))
            last[:] = [(v.copy(), float(mse))]
            return objective.item(), torch.cat([g.reshape(-1) for g in grads]).numpy()

        def callback(xk: np.ndarray) -> None:  # scipy's new iterate: mostly the point it just evaluated
            ps = unflatten(xk)
            if last and np.array_equal(last[0][0], xk):
                mse = last[0][1]
            else:
                with torch.no_grad():
                    mse = float(self._row_objective(r, ps)[0])
            self._record_row(r, ps, mse)

        x0 = torch.cat([p.reshape(-1) for p in params64]).numpy()
        callback(x0)
        method = "BFGS" if self.optimizer == "bfgs" else "L-BFGS-B"
        with np.errstate(all="ignore"):
            res = minimize(fun, x0, method=method, jac=True, callback=callback,
                           options={"gtol": SCIPY_GTOL, "maxiter": self.max_epochs[r]})
        self.epochs[r] = int(res.nit)
        final = unflatten(np.asarray(res.x, dtype=np.float64))
        if not np.isfinite(res.fun) or not np.all(np.isfinite(res.x)):
            self.status[r] = f"diverged: nan_loss at epoch {res.nit}, restart {self.owner[r][1]}"
        else:
            # BFGS often ends on "precision loss" before maxiter: the gradient cannot shrink further.
            self.status[r] = MAX_EPOCHS if res.nit >= self.max_epochs[r] else CONVERGED
        self._set_row(r, [t.to(torch.float32) for t in final])


def train_restarts(
    config: TrainConfig,
    data: Dataset,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> TrainResult:
    """Train ``config.restarts`` copies of one architecture and keep the best by training MSE.

    Args:
        config: the recipe.
        data: train/val/test tensors (see :func:`models.load_dataset`).
        device: where the math runs (scipy's ``bfgs`` and ``lbfgsb``: the CPU).
        dtype: float32 (default) or float64.

    Returns:
        Every restart's final train/val/test MSE, per-epoch curves, statuses, the winner's index
        and its state dict in the DOMAIN naming (``"{l}_weight"``, ``"{l}_bias"``).

    Raises:
        ValueError: the config does not fit the data.
    """
    trainer = StackTrainer([config], data, device=device, dtype=dtype)
    trainer.advance()
    return trainer.results()[0]

