"""What a backprop verification found (:class:`GradCheckReport`), without torch.

:func:`models.verify.verify_backprop` makes these on a worker; the sweep driver, the MLflow
writer and ``mlpsweep verify`` only read, store and print them, so this module imports no torch
(the driver unpickles one per verified architecture). See :mod:`models.verify` for what each
check means and why the default tolerances are what they are.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping

__all__ = ["Tolerances", "TensorCheck", "LossCheck", "UpdateCheck", "KinkGuard", "GradCheckReport"]


@dataclass(frozen=True)
class Tolerances:
    """Pass/fail thresholds; see the module docstring for why these defaults."""

    atol: float = 1e-8
    rtol: float = 1e-6
    eps: float = 1e-6
    fd_atol: float = 1e-6
    fd_rtol: float = 1e-4

    @property
    def floor(self) -> float:
        """Denominator floor of the relative error vs autograd."""
        return self.atol / self.rtol

    @property
    def fd_floor(self) -> float:
        """Denominator floor of the relative error vs finite differences."""
        return self.fd_atol / self.fd_rtol


@dataclass(frozen=True)
class TensorCheck:
    """The verdict for one gradient: a parameter tensor, or ``"input"`` for dL/dX."""

    name: str
    shape: tuple[int, ...]
    numel: int
    max_abs_err_autograd: float | None
    max_rel_err_autograd: float | None
    max_abs_err_fd: float | None
    max_rel_err_fd: float | None
    fd_coords_checked: int
    max_abs_grad: float  # scale of the true (autograd) gradient, for reading the errors
    passed: bool
    reason: str = ""  # empty when passed; otherwise which check failed and where


@dataclass(frozen=True)
class LossCheck:
    """Manual forward pass vs the autograd forward pass: the loss value."""

    manual: float
    autograd: float
    max_rel_err: float
    passed: bool


@dataclass(frozen=True)
class UpdateCheck:
    """One SGD step with the manual gradients vs torch's SGD update driven by autograd."""

    lr: float
    max_abs_err: float | None
    max_rel_err: float | None
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class KinkGuard:
    """How inputs were kept away from the activation's kinks (see module docstring)."""

    kinks: tuple[float, ...]
    margin: float
    units_shifted: int
    max_shift: float
    min_distance: float | None  # smallest |z - kink| over all hidden pre-activations; None: no kinks
    note: str


@dataclass(frozen=True)
class GradCheckReport:
    """Typed result of :func:`verify_backprop`; ``passed`` is the verdict."""

    architecture: str
    sizes: tuple[int, ...]
    activation: str
    loss: str
    seed: int
    samples: int | None  # None: a single unbatched input (d_in,)
    passed: bool
    tensors: tuple[TensorCheck, ...]
    loss_check: LossCheck
    update_check: UpdateCheck
    max_rel_err_autograd: float
    max_rel_err_fd: float
    tolerances: Tolerances
    max_fd_coords: int | None
    kink_guard: KinkGuard
    seconds: float
    backward_error: str | None = None  # the exception a backward pass raised, if any

    @property
    def failing_parameters(self) -> tuple[str, ...]:
        """Names of the gradients that failed (parameter names, ``"input"`` for dL/dX)."""
        return tuple(t.name for t in self.tensors if not t.passed)

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict; non-finite floats become the strings ``"nan"``, ``"inf"``, ``"-inf"``."""
        out = _json_safe(asdict(self))
        out["verdict"] = self.verdict
        out["failing_parameters"] = list(self.failing_parameters)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GradCheckReport:
        """Inverse of :meth:`to_dict` (e.g. for a report read back from MLflow)."""
        d = _json_unsafe(dict(data))
        return cls(
            architecture=d["architecture"],
            sizes=tuple(d["sizes"]),
            activation=d["activation"],
            loss=d["loss"],
            seed=d["seed"],
            samples=d["samples"],
            passed=d["passed"],
            tensors=tuple(TensorCheck(**{**t, "shape": tuple(t["shape"])}) for t in d["tensors"]),
            loss_check=LossCheck(**d["loss_check"]),
            update_check=UpdateCheck(**d["update_check"]),
            max_rel_err_autograd=d["max_rel_err_autograd"],
            max_rel_err_fd=d["max_rel_err_fd"],
            tolerances=Tolerances(**d["tolerances"]),
            max_fd_coords=d["max_fd_coords"],
            kink_guard=KinkGuard(**{**d["kink_guard"], "kinks": tuple(d["kink_guard"]["kinks"])}),
            seconds=d["seconds"],
            backward_error=d.get("backward_error"),
        )

    def format_table(self) -> str:
        """Per-layer table in the spirit of gradcheck's report, one row per gradient."""
        tol = self.tolerances
        batch = "single input" if self.samples is None else f"N={self.samples}"
        lines = [
            f"backprop check {self.architecture}  loss={self.loss}  {batch}  seed={self.seed}",
            f"{'':10} {'':14} {'vs autograd':^21}   {'vs finite differences':^33}",
            f"{'tensor':10} {'shape':14} {'max abs':>10} {'max rel':>10}   "
            f"{'max abs':>10} {'max rel':>10} {'coords':>11}  result",
        ]
        for t in self.tensors:
            coords = f"{t.fd_coords_checked}/{t.numel}"
            lines.append(
                f"{t.name:10} {str(t.shape):14} {_e(t.max_abs_err_autograd):>10} {_e(t.max_rel_err_autograd):>10}   "
                f"{_e(t.max_abs_err_fd):>10} {_e(t.max_rel_err_fd):>10} {coords:>11}  {'ok' if t.passed else 'FAIL'}"
            )
            if not t.passed:
                lines.append(f"{'':12}^ {t.reason}")
        lc, uc = self.loss_check, self.update_check
        lines += [
            f"loss       manual {lc.manual:.12g} vs autograd {lc.autograd:.12g}: "
            f"rel err {_e(lc.max_rel_err)}  {'ok' if lc.passed else 'FAIL'}",
            f"update     one SGD step (lr={uc.lr:g}) manual vs torch SGD: max abs err "
            f"{_e(uc.max_abs_err)}, max rel err {_e(uc.max_rel_err)}  {'ok' if uc.passed else 'FAIL'}"
            + (f" ({uc.reason})" if uc.reason else ""),
            f"tolerance  autograd |Δ| <= max(atol={tol.atol:g}, rtol={tol.rtol:g}·|ref|); finite differences "
            f"(central, eps={tol.eps:g}) |Δ| <= max({tol.fd_atol:g}, {tol.fd_rtol:g}·|ref|); "
            "rel err = |Δ| / max(|ref|, atol/rtol)",
            f"kinks      {self.kink_guard.note}",
        ]
        if self.backward_error:
            lines.append(f"error      backward raised: {self.backward_error}")
        verdict = "PASS" if self.passed else "FAIL: " + ", ".join(self.failing_parameters or ("see above",))
        lines.append(f"result     {verdict}  ({self.seconds:.2f} s)")
        return "\n".join(lines)


def _e(value: float | None) -> str:
    return "-" if value is None else f"{value:.1e}"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _json_unsafe(obj: Any) -> Any:
    if obj in ("nan", "inf", "-inf") and isinstance(obj, str):
        return float(obj)
    if isinstance(obj, dict):
        return {k: _json_unsafe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_unsafe(v) for v in obj]
    return obj
