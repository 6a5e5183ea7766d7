"""A search space as plain data: what each knob of a sweep may take.

Each dimension maps one-to-one onto an Optuna distribution and obeys the same rules, checked
here when it is built, so the Optuna adapter never sees one Optuna would reject:

================  ==================================================  ==========================
Dimension         Optuna                                              rules
================  ==================================================  ==========================
``Constant``      not sampled (or ``CategoricalDistribution((v,))``)  value is a bool/int/float/str
``Categorical``   ``CategoricalDistribution(choices)``                non-empty, no duplicates
``IntRange``      ``IntDistribution(low, high, log, step)``           low <= high; step >= 1;
                                                                      log needs low >= 1, step 1
``FloatRange``    ``FloatDistribution(low, high, log, step)``         finite; low <= high;
                                                                      log needs low > 0, no step
================  ==================================================  ==========================

No Optuna here (nor Ray, MLflow, torch): the spec, the CLI and tests use this module without
the engines, as syne-tune's ``config_space`` does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Union

__all__ = [
    "Constant",
    "Categorical",
    "IntRange",
    "FloatRange",
    "Dimension",
    "Choice",
    "is_discrete",
    "grid_size",
    "grid_values",
]

# What Optuna's CategoricalDistribution accepts (None aside: no knob takes it).
Choice = Union[bool, int, float, str]


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_real(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_choice(x: object, what: str) -> None:
    if not isinstance(x, (bool, int, float, str)):
        raise ValueError(f"{what} must be a bool, int, float or str, got {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        raise ValueError(f"{what} must be finite, got {x!r}")


def _fmt(x: object) -> str:
    # As a spec would write it: true/false, not Python's True/False.
    return ("true" if x else "false") if isinstance(x, bool) else str(x)


def _same(a: object, b: object) -> bool:
    # True == 1 == 1.0 in Python; as sampled values they are different choices.
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Constant:
    """One fixed value: the knob is not searched."""

    value: Choice

    def __post_init__(self) -> None:
        _check_choice(self.value, "Constant value")

    def __contains__(self, x: object) -> bool:
        return _same(x, self.value)

    def __str__(self) -> str:
        return _fmt(self.value)


@dataclass(frozen=True)
class Categorical:
    """A choice among listed values, in the order given (samplers may depend on it)."""

    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.choices, tuple):
            raise TypeError(f"Categorical choices must be a tuple, got {type(self.choices).__name__}")
        if not self.choices:
            raise ValueError("Categorical choices must not be empty")
        for i, c in enumerate(self.choices):
            _check_choice(c, f"Categorical choice [{i}]")
            if any(_same(c, d) for d in self.choices[:i]):
                raise ValueError(f"Categorical choice [{i}] repeats {c!r}")

    def __contains__(self, x: object) -> bool:
        return any(_same(x, c) for c in self.choices)

    def __str__(self) -> str:
        return "one of " + ", ".join(_fmt(c) for c in self.choices)


@dataclass(frozen=True)
class IntRange:
    """Integers ``low, low + step, ...`` up to ``high`` (inclusive), optionally log-uniform.

    As in Optuna, ``high`` is effectively lowered to the last reachable step when
    ``high - low`` is not a multiple of ``step``.
    """

    low: int
    high: int
    log: bool = False
    step: int = 1

    def __post_init__(self) -> None:
        if not (_is_int(self.low) and _is_int(self.high)):
            raise TypeError(f"IntRange bounds must be ints, got {self.low!r} and {self.high!r}")
        if not _is_int(self.step) or self.step < 1:
            raise ValueError(f"IntRange step must be an int >= 1, got {self.step!r}")
        if not isinstance(self.log, bool):
            raise TypeError(f"IntRange log must be a bool, got {self.log!r}")
        if self.low > self.high:
            raise ValueError(f"IntRange needs low <= high, got low={self.low}, high={self.high}")
        if self.log and self.step != 1:
            raise ValueError(f"IntRange cannot combine log with step {self.step} (Optuna forbids it)")
        if self.log and self.low < 1:
            raise ValueError(f"IntRange with log needs low >= 1, got {self.low}")

    @property
    def size(self) -> int:
        """How many values the range holds."""
        return (self.high - self.low) // self.step + 1

    def __contains__(self, x: object) -> bool:
        return _is_int(x) and self.low <= x <= self.high and (x - self.low) % self.step == 0

    def __str__(self) -> str:
        extras = ["log"] if self.log else []
        if self.step != 1:
            extras.append(f"step {self.step}")
        return f"int in [{self.low}, {self.high}]" + "".join(f", {e}" for e in extras)


@dataclass(frozen=True)
class FloatRange:
    """Floats in ``[low, high]``: uniform, log-uniform, or on a grid of ``step``."""

    low: float
    high: float
    log: bool = False
    step: float | None = None

    def __post_init__(self) -> None:
        if not (_is_real(self.low) and _is_real(self.high)):
            raise TypeError(f"FloatRange bounds must be numbers, got {self.low!r} and {self.high!r}")
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError(f"FloatRange bounds must be finite, got {self.low!r} and {self.high!r}")
        if not isinstance(self.log, bool):
            raise TypeError(f"FloatRange log must be a bool, got {self.log!r}")
        if self.step is not None:
            if not _is_real(self.step) or not (math.isfinite(self.step) and self.step > 0):
                raise ValueError(f"FloatRange step must be a finite number > 0, got {self.step!r}")
            object.__setattr__(self, "step", float(self.step))
        if self.low > self.high:
            raise ValueError(f"FloatRange needs low <= high, got low={self.low}, high={self.high}")
        if self.log and self.step is not None:
            raise ValueError(f"FloatRange cannot combine log with step {self.step} (Optuna forbids it)")
        if self.log and self.low <= 0:
            raise ValueError(f"FloatRange with log needs low > 0, got {self.low}")

    def __contains__(self, x: object) -> bool:
        if not _is_real(x) or not self.low <= x <= self.high:  # type: ignore[operator]
            return False
        if self.step is None:
            return True
        k = (float(x) - self.low) / self.step  # type: ignore[arg-type]
        return math.isclose(k, round(k), abs_tol=1e-9)

    def __str__(self) -> str:
        extras = ["log"] if self.log else []
        if self.step is not None:
            extras.append(f"step {self.step:g}")
        return f"float in [{self.low:g}, {self.high:g}]" + "".join(f", {e}" for e in extras)


Dimension = Union[Constant, Categorical, IntRange, FloatRange]


def is_discrete(dim: Dimension) -> bool:
    """Whether a grid can enumerate ``dim``: constants, choices, and int ranges without log."""
    return isinstance(dim, (Constant, Categorical)) or (isinstance(dim, IntRange) and not dim.log)


def grid_size(dim: Dimension) -> int | None:
    """Number of grid points of ``dim``, or None when it is not discrete (see :func:`is_discrete`)."""
    if isinstance(dim, Constant):
        return 1
    if isinstance(dim, Categorical):
        return len(dim.choices)
    if isinstance(dim, IntRange) and not dim.log:
        return dim.size
    return None


def grid_values(dim: Dimension) -> Iterator[Any]:
    """The values a grid search visits for ``dim``, in order.

    Raises:
        ValueError: ``dim`` is not discrete.
    """
    if isinstance(dim, Constant):
        yield dim.value
    elif isinstance(dim, Categorical):
        yield from dim.choices
    elif isinstance(dim, IntRange) and not dim.log:
        yield from range(dim.low, dim.high + 1, dim.step)
    else:
        raise ValueError(f"{dim} has no grid; use an int range without log, or values")
