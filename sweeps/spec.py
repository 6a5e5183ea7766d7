"""The sweep spec: a YAML file in W&B sweep terms, loaded once into a frozen, typed ``SweepSpec``.

A spec names the sweep, the sampler (``method``), the metric, the budget, the data and, under
``parameters``, how each training knob is searched::

    name: seed-1d-demo
    method: tpe                      # tpe (bayes) | random | grid | cmaes | gp | qmc
    metric: {name: val_mse, goal: minimize}
    run_cap: 64
    data: {dataset: seed-1d, validation_fraction: 0.2}
    parameters:
      width: {min: 1, max: 100, distribution: q_log_uniform_values, q: 1}
      activation: {values: [sigmoid, tanh, relu]}
      lr: {distribution: log_uniform_values, min: 1.0e-3, max: 1.0e-1}
      epochs: {value: 500}

Loading never runs code (``yaml.SafeLoader`` rules, no Python tags), caps the file at 1 MiB,
rejects duplicate keys, reads ``1e-3`` as a number (as YAML 1.2 does; PyYAML alone would read
text), and reports every problem at once, one line each, starting with the field's path::

    parameters.lr.min: must be > 0 for a log distribution, got 0
    parameters.optimzer: unknown knob; did you mean 'optimizer'? allowed: width, ...

The knobs and their limits are data (:data:`KNOBS`), so one message format serves every knob
and tests generate invalid values from the same table. Each searched knob resolves to a
:mod:`sweeps.space` dimension that maps one-to-one onto an Optuna distribution; this module
imports no Optuna, Ray, MLflow or torch.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
import reprlib
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Mapping, Sequence

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from models.config import ACTIVATION_NAMES, OPTIMIZERS, parameter_count
from sweeps.space import Categorical, Choice, Constant, Dimension, FloatRange, IntRange, grid_size

__all__ = [
    "SweepSpec",
    "MetricSpec",
    "DataSpec",
    "EarlyTerminateSpec",
    "SpecError",
    "Knob",
    "KNOBS",
    "KNOB_DEFAULTS",
    "OPTIMIZERS",
    "ACTIVATION_NAMES",
    "BUILTIN_DATASETS",
    "METHODS",
    "MAX_SPEC_BYTES",
    "MAX_GRID_VALUES",
    "DIGEST_EXCLUDES",
    "spec_record",
    "spec_changes",
    "record_changes",
    "PARAM_KEYS",
    "DISTRIBUTIONS",
    "load_spec",
    "parse_spec",
    "with_overrides",
    "spec_from_dict",
    "spec_to_dict",
    "spec_to_yaml",
    "spec_digest",
    "is_active",
    "hidden_widths",
]

# The engine's closed registries (models.config holds them without torch); the built-in datasets
# restated so the spec needs no numpy either: a unit test checks they equal models.data's.
BUILTIN_DATASETS: tuple[str, ...] = ("seed-1d", "seed-2d-quadratic", "seed-rotation", "iris-petal")
DATA_FILE_SUFFIXES: tuple[str, ...] = (".csv", ".npz")
METHODS: tuple[str, ...] = ("tpe", "bayes", "random", "grid", "cmaes", "gp", "qmc")

MAX_SPEC_BYTES = 1 << 20  # 1 MiB: a spec is a page of YAML, not a data file
MAX_NESTING = 32  # levels of mappings/lists in a spec
MAX_NODES = 100_000  # values visited, aliases counted each time (stops "billion laughs")
MAX_COBATCH = 256  # trials in one co-batched job
MAX_GRID_VALUES = 1000  # per parameter, for method: grid
MAX_CHOICES = 10_000
MAX_LAYERS = 8  # width_1 .. width_8
MAX_SEED = 2**32 - 1  # NumPy seeds

# Fields left out of spec_digest: changing them neither changes what a trial means nor
# invalidates finished trials (extending run_cap is how a sweep is continued). concurrency and
# cobatch schedule the trials: they set the driver's reproducibility window, so under an adaptive
# sampler a change picks other next trials; each run's own values are in its spec.yaml.
DIGEST_EXCLUDES: tuple[str, ...] = ("description", "run_cap", "concurrency", "device", "cobatch")

Loc = tuple[Any, ...]
Problem = tuple[Loc, str, Any]  # (path, "rule, got value", offending input)


# --------------------------------------------------------------------------------------------
# Messages


_REPR = reprlib.Repr()
_REPR.maxstring = 50
_REPR.maxother = 50
_REPR.maxlong = 40
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 5
_REPR.maxdict = 4
_REPR.maxlevel = 2


def _show(value: Any) -> str:
    """A one-line repr of ``value``, at most 60 characters (never walks a whole structure)."""
    try:
        text = _REPR.repr(value)
    except Exception:  # a repr that fails must not hide the real problem
        text = f"<{type(value).__name__}>"
    text = text.replace("\n", "\\n").replace("\r", "\\r")
    return text if len(text) <= 60 else text[:57] + "..."


_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*\Z")


def _render_loc(loc: Sequence[Any]) -> str:
    """``("parameters", "lr", "values", 2)`` → ``parameters.lr.values[2]``; odd keys bracketed."""
    out = ""
    for part in loc:
        if isinstance(part, str) and _IDENT.match(part):
            out += ("." if out else "") + part
        elif isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        else:
            shown = _show(part)[:40].replace("]", "\\x5d")
            out += f"[{shown}]"
    return out or "spec"


def _closest(word: Any, options: Sequence[str]) -> str | None:
    """The option ``word`` is most likely a misspelling of, or None."""
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    if not close and word.lower() in options:
        close = [word.lower()]
    return close[0] if close else None


def _suggest(word: Any, options: Sequence[str]) -> str:
    close = _closest(word, options)
    return f"did you mean {close!r}? " if close else ""


def _one_of(options: Sequence[str]) -> str:
    return ", ".join(options)


class SpecError(Exception):
    """A spec that cannot be used; ``problems`` holds every reason, one line each.

    Each line starts with the path of the field at fault (``spec`` for the file as a whole),
    then the rule and the offending value: ``run_cap: must be >= 1, got 0``.
    """

    def __init__(self, problems: Sequence[str], origin: str = "<string>") -> None:
        lines = [" ".join(str(p).split("\n")) for p in problems] or ["spec: invalid"]
        super().__init__("\n".join(lines))
        self.problems: list[str] = lines
        self.origin = origin


def _raise(problems: Sequence[Problem], title: str) -> None:
    """Raise the problems as one pydantic ValidationError (pydantic merges it into its own)."""
    raise ValidationError.from_exception_data(
        title,
        [
            InitErrorDetails(
                type=PydanticCustomError("spec", "{message}", {"message": message}),
                loc=tuple(loc),
                input=value,
            )
            for loc, message, value in problems
        ],
    )


# --------------------------------------------------------------------------------------------
# The knob table


KnobKind = Literal["int", "float", "choice", "bool"]


@dataclass(frozen=True)
class Knob:
    """What one training knob accepts, as data.

    Args:
        name: the key under ``parameters``.
        kind: ``int``, ``float``, ``choice`` (one of ``choices``) or ``bool``.
        default: the value when the spec does not mention the knob.
        low, high: numeric limits (None: unbounded); ``low_open``/``high_open`` make them strict.
        choices: the names a ``choice`` knob accepts.
        literals: strings an ``int`` knob also accepts as a value (``batch_size: full``).
        doc: one line for ``mlpsweep validate`` and the README.
    """

    name: str
    kind: KnobKind
    default: Choice
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()
    doc: str = ""

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")

    def type_rule(self) -> str:
        """What a single value must be, as a message fragment (``must be an integer``)."""
        if self.kind == "int":
            extra = "".join(f" or {lit!r}" for lit in self.literals)
            return f"must be an integer{extra}"
        if self.kind == "float":
            return "must be a number"
        if self.kind == "bool":
            return "must be true or false"
        return f"must be one of {_one_of(self.choices)}"

    def bound_rule(self, x: float) -> str | None:
        """The limit ``x`` breaks, or None."""
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return f"must be {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None and (x >= self.high if self.high_open else x > self.high):
            return f"must be {'<' if self.high_open else '<='} {_num(self.high)}"
        return None

    def check(self, value: Any, *, in_range: bool = False) -> tuple[Choice | None, str | None]:
        """Validate one value of this knob.

        Args:
            value: the value as loaded from YAML.
            in_range: the value is a range bound (``min``/``max``): no literals, no choices.

        Returns:
            ``(value, None)`` with ints turned into floats for float knobs, or
            ``(None, message)`` where the message ends in ``got <value>``.
        """
        got = f", got {_show(value)}"
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value, None
            if isinstance(value, str):
                return None, (f"unknown {self.name} {value!r}; {_suggest(value, self.choices)}"
                              f"choose one of {_one_of(self.choices)}")
            return None, f"must be one of {_one_of(self.choices)}{got}"
        if self.kind == "bool":
            if isinstance(value, bool):
                return value, None
            return None, f"must be true or false{got}"
        if isinstance(value, str) and value in self.literals:
            if in_range:
                return None, f"{value!r} can only be a value or one of values, not a range bound{got}"
            return value, None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, self.type_rule() + got
        if self.kind == "int":
            value = whole(value)
            if not isinstance(value, int):
                return None, self.type_rule() + got
        if isinstance(value, float) and not math.isfinite(value):
            return None, f"must be finite{got}"
        rule = self.bound_rule(value)
        if rule is not None:
            return None, rule + got
        return (float(value) if self.kind == "float" else value), None


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and abs(x) < 1e15 else repr(x)


def _knob_table() -> dict[str, Knob]:
    width = dict(kind="int", default=10, low=1, high=4096)
    knobs = [
        Knob("depth", "int", 1, low=1, high=16, doc="number of hidden layers"),
        Knob("width", doc="units in every hidden layer (unless width_k overrides)", **width),  # type: ignore[arg-type]
        *(
            Knob(f"width_{k}", doc=f"units in hidden layer {k}, overrides width; used when depth >= {k}",
                 **width)  # type: ignore[arg-type]
            for k in range(1, MAX_LAYERS + 1)
        ),
        Knob("activation", "choice", "sigmoid", choices=ACTIVATION_NAMES, doc="hidden-layer nonlinearity"),
        Knob("optimizer", "choice", "adam", choices=OPTIMIZERS, doc="training algorithm"),
        Knob("lr", "float", 0.01, low=0.0, low_open=True, high=10.0, doc="learning rate"),
        Knob("momentum", "float", 0.0, low=0.0, high=1.0, high_open=True, doc="SGD/RMSprop momentum"),
        Knob("nesterov", "bool", False, doc="Nesterov momentum for SGD (needs momentum > 0)"),
        Knob("weight_decay", "float", 0.0, low=0.0, doc="L2 penalty lambda on the weights"),
        Knob("batch_size", "int", "full", low=1, high=2**31 - 1, literals=("full",),
             doc="samples per step; full = the whole training set"),
        Knob("epochs", "int", 500, low=1, high=100_000, doc="epoch budget per restart"),
        Knob("restarts", "int", 10, low=1, high=1000, doc="random inits per trial; lowest training MSE wins"),
        Knob("tol", "float", 1e-6, low=0.0, doc="stop a restart when the loss changes by less"),
    ]
    return {k.name: k for k in knobs}


#: Every knob a spec may set under ``parameters``, in the order a define-by-run sampler should
#: visit them (``depth`` first: the per-layer widths exist only up to it).
KNOBS: Mapping[str, Knob] = _knob_table()

#: The value of each knob a spec leaves out (per-layer widths have none: they fall back to width).
KNOB_DEFAULTS: Mapping[str, Choice] = {
    k.name: k.default for k in KNOBS.values() if not k.name.startswith("width_")
}

_KNOB_LIST = "width, width_1..width_8, " + ", ".join(
    n for n in KNOBS if n != "width" and not n.startswith("width_"))


def _layer_of(knob: str) -> int | None:
    m = re.fullmatch(r"width_([1-9][0-9]*)", knob)
    return int(m.group(1)) if m else None


def is_active(knob: str, config: Mapping[str, Any]) -> bool:
    """Whether ``knob`` takes part in a trial whose sampled values so far are ``config``.

    ``width_k`` exists only when ``config["depth"] >= k``; every other knob always does.
    """
    layer = _layer_of(knob)
    return layer is None or layer <= int(config.get("depth", KNOB_DEFAULTS["depth"]))


def hidden_widths(config: Mapping[str, Any]) -> tuple[int, ...]:
    """The width of each hidden layer of a trial: ``width_k`` where given, else ``width``."""
    depth = int(config.get("depth", KNOB_DEFAULTS["depth"]))
    width = int(config.get("width", KNOB_DEFAULTS["width"]))
    return tuple(int(config.get(f"width_{k}", width)) for k in range(1, depth + 1))


# --------------------------------------------------------------------------------------------
# One parameter: W&B forms → a Dimension

PARAM_KEYS = ("value", "values", "min", "max", "distribution", "q")
_RANGE_DISTRIBUTIONS = ("int_uniform", "uniform", "q_uniform", "log_uniform_values", "q_log_uniform_values")
DISTRIBUTIONS = ("constant", "categorical", *_RANGE_DISTRIBUTIONS)
_KEYS_OF = {
    "constant": ("value",),
    "categorical": ("values",),
    "int_uniform": ("min", "max"),
    "uniform": ("min", "max"),
    "log_uniform_values": ("min", "max"),
    "q_uniform": ("min", "max", "q"),
    "q_log_uniform_values": ("min", "max", "q"),
}
_NO_OPTUNA = "has no one-to-one Optuna distribution (Optuna samples bounded ranges)"
_UNSUPPORTED_DISTRIBUTIONS = {
    "inv_log_uniform_values": f"{_NO_OPTUNA}; use log_uniform_values (log-uniform on [a, b] "
                              "gives log-uniform reciprocals on [1/b, 1/a])",
    "normal": f"{_NO_OPTUNA}; use uniform with min/max",
    "q_normal": f"{_NO_OPTUNA}; use q_uniform with min/max/q",
    "log_normal": f"{_NO_OPTUNA}; use log_uniform_values with min/max",
    "q_log_normal": f"{_NO_OPTUNA}; use q_log_uniform_values (integer knobs) or log_uniform_values",
    "log_uniform": "takes natural-log bounds in W&B; use log_uniform_values with the values themselves",
    "q_log_uniform": "takes natural-log bounds in W&B; use q_log_uniform_values with the values themselves",
    "inv_log_uniform": f"{_NO_OPTUNA}; use log_uniform_values",
    "beta": f"{_NO_OPTUNA}; use uniform with min/max",
    "q_beta": f"{_NO_OPTUNA}; use q_uniform with min/max/q",
}
_FOREIGN_PARAM_KEYS = {
    "mu": "W&B's mean of a normal distribution, which has no one-to-one Optuna distribution; use min/max",
    "sigma": "W&B's spread of a normal distribution, which has no one-to-one Optuna distribution; use min/max",
    "a": "W&B's beta-distribution shape; use min/max",
    "b": "W&B's beta-distribution shape; use min/max",
    "probabilities": "W&B's choice weights are not supported (the sampler weighs choices itself); drop it",
    "parameters": "nested parameter groups are not supported; put knobs directly under parameters",
}


def _parse_parameter(knob: Knob, raw: Any, loc: Loc) -> tuple[Dimension | None, list[Problem]]:
    """Turn one W&B parameter mapping into a Dimension, or say everything wrong with it."""
    problems: list[Problem] = []
    if not isinstance(raw, Mapping):
        hint = ""
        if knob.check(raw)[1] is None and len(str(raw)) <= 40:
            hint = f" (write {{value: {raw}}})"
        return None, [(loc, "must be a mapping: {value: x}, {values: [..]}, {min: a, max: b} or "
                            f"{{distribution: name, ..}}{hint}, got {_show(raw)}", raw)]

    dist = raw.get("distribution")
    if not isinstance(dist, str):  # junk such as a list must not reach a dict lookup
        dist = None if dist is None else _show(dist)
    for key in raw:
        if key in PARAM_KEYS:
            continue
        if key in ("mu", "sigma", "a", "b") and dist in _UNSUPPORTED_DISTRIBUTIONS:
            continue  # the distribution's own line says it all
        if key in _FOREIGN_PARAM_KEYS:
            problems.append(((*loc, key), f"{_FOREIGN_PARAM_KEYS[key]}, got {_show(raw[key])}", raw[key]))
        else:
            problems.append(((*loc, key), f"unknown key; {_suggest(key, PARAM_KEYS)}"
                                          f"allowed: {_one_of(PARAM_KEYS)}", key))

    # Which form: the distribution named, or the one W&B infers from the keys present.
    if "distribution" in raw:
        if dist in _UNSUPPORTED_DISTRIBUTIONS:
            problems.append(((*loc, "distribution"), f"W&B's {dist} {_UNSUPPORTED_DISTRIBUTIONS[dist]}", dist))
            return None, problems
        if dist not in DISTRIBUTIONS:
            problems.append(((*loc, "distribution"), f"unknown distribution {_show(dist)}; "
                             f"{_suggest(dist, DISTRIBUTIONS)}choose one of {_one_of(DISTRIBUTIONS)}", dist))
            return None, problems
        for key in PARAM_KEYS[:-2] + ("q",):
            if key in raw and key not in _KEYS_OF[dist]:
                hint = " (use q_uniform for a step)" if key == "q" else ""
                problems.append(((*loc, key), f"not used by distribution {dist}{hint}, got {_show(raw[key])}",
                                 raw[key]))
        for key in _KEYS_OF[dist]:
            if key not in raw and key != "q":
                problems.append(((*loc, key), f"required for distribution {dist}", None))
        if problems:
            return None, problems
    else:
        forms = [f for f, keys in (("value", ("value",)), ("values", ("values",)), ("min/max", ("min", "max")))
                 if any(k in raw for k in keys)]
        if len(forms) > 1:
            problems.append((loc, f"give exactly one of value, values or min/max, got {' and '.join(forms)}",
                             dict(raw)))
            return None, problems
        if not forms:
            if not problems:
                problems.append((loc, "must give value, values, min and max, or distribution, "
                                      f"got {_show(dict(raw))}", dict(raw)))
            return None, problems
        if forms == ["value"]:
            dist = "constant"
        elif forms == ["values"]:
            dist = "categorical"
        else:
            dist = "q_uniform" if "q" in raw else "uniform"
            for key in ("min", "max"):
                if key not in raw:
                    problems.append(((*loc, key), "required with a range (min and max)", None))
        if "q" in raw and dist in ("constant", "categorical"):
            problems.append(((*loc, "q"), f"only with a range (min/max), got {_show(raw['q'])}", raw["q"]))
        if problems:
            return None, problems

    if dist == "constant":
        value, err = knob.check(raw["value"])
        if err:
            return None, [((*loc, "value"), err, raw["value"])]
        return Constant(value), []  # type: ignore[arg-type]

    if dist == "categorical":
        return _parse_values(knob, raw["values"], (*loc, "values"))

    return _parse_range(knob, raw, str(dist), loc)


def _parse_values(knob: Knob, values: Any, loc: Loc) -> tuple[Dimension | None, list[Problem]]:
    if not isinstance(values, list):
        return None, [(loc, f"must be a list of choices, got {_show(values)}", values)]
    if not values:
        return None, [(loc, "must not be empty; list at least one choice (or use value)", values)]
    if len(values) > MAX_CHOICES:
        return None, [(loc, f"must hold at most {MAX_CHOICES} choices, got {len(values)}", None)]
    problems: list[Problem] = []
    choices: list[Choice] = []
    for i, v in enumerate(values):
        value, err = knob.check(v)
        if err:
            problems.append(((*loc, i), err, v))
            continue
        first = next((j for j, c in enumerate(choices) if type(c) is type(value) and c == value), None)
        if first is not None:
            problems.append(((*loc, i), f"repeats values[{first}], got {_show(v)}", v))
            continue
        choices.append(value)  # type: ignore[arg-type]
    if problems:
        return None, problems
    return Categorical(tuple(choices)), []


def _parse_range(knob: Knob, raw: Mapping[str, Any], dist: str, loc: Loc) -> tuple[Dimension | None, list[Problem]]:
    if not knob.numeric:
        what = "true or false" if knob.kind == "bool" else f"one of {_one_of(knob.choices)}"
        return None, [(loc, f"{knob.name} is a choice ({what}): use value or values, not a range, "
                            f"got {_show(dict(raw))}", dict(raw))]
    log = dist in ("log_uniform_values", "q_log_uniform_values")
    problems: list[Problem] = []
    if dist == "int_uniform" and knob.kind == "float":
        problems.append(((*loc, "distribution"), f"int_uniform needs an integer knob; {knob.name} is a "
                         "float, use uniform, got 'int_uniform'", dist))
    if dist == "q_log_uniform_values" and knob.kind == "float":
        problems.append(((*loc, "distribution"), "q_log_uniform_values needs an integer knob (then q: 1): "
                         "Optuna does not combine a step with a log scale; use log_uniform_values, "
                         "got 'q_log_uniform_values'", dist))

    step: float | int | None = None
    if dist.startswith("q_"):
        q = raw.get("q", 1)  # W&B's default quantum
        q = whole(q) if knob.kind == "int" else q
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not (math.isfinite(q) and q > 0):
            problems.append(((*loc, "q"), f"must be a number > 0, got {_show(q)}", q))
        elif knob.kind == "int" and not isinstance(q, int):
            problems.append(((*loc, "q"), f"must be an integer for {knob.name}, got {_show(q)}", q))
        elif log and q != 1:
            problems.append(((*loc, "q"), "must be 1 with q_log_uniform_values: Optuna does not combine a "
                             "step with a log scale; use q_uniform for a step or drop q for a log "
                             f"scale, got {_show(q)}", q))
        elif not log:
            step = q

    bounds: dict[str, float | int] = {}
    for key in ("min", "max"):
        v = raw[key]
        value, err = knob.check(v, in_range=True)
        number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if log and number and (err is None or knob.kind == "float" or isinstance(v, int)):
            # The log rule first: it is the one to fix ("> 0, got 0" alone hides why).
            if knob.kind == "int" and v < 1:
                err = f"must be >= 1 for a log distribution, got {_show(v)}"
            elif v <= 0:
                err = f"must be > 0 for a log distribution, got {_show(v)}"
        if err:
            problems.append(((*loc, key), err, v))
        else:
            bounds[key] = value  # type: ignore[assignment]
    if len(bounds) == 2 and bounds["min"] > bounds["max"]:
        problems.append(((*loc, "min"), f"must be <= max ({_show(raw['max'])}), got {_show(raw['min'])}",
                         raw["min"]))
    if not problems and step is not None:
        steps = (bounds["max"] - bounds["min"]) / step
        if not math.isclose(steps, round(steps), rel_tol=0, abs_tol=1e-9):
            fit = bounds["min"] + math.floor(steps + 1e-9) * step
            problems.append(((*loc, "max"), f"must be min plus a whole number of q ({_show(step)}) steps, "
                             f"e.g. {_show(fit)} (Optuna would cut the range there), got {_show(raw['max'])}",
                             raw["max"]))
    if problems:
        return None, problems
    try:
        if knob.kind == "int":
            return IntRange(int(bounds["min"]), int(bounds["max"]), log=log, step=int(step or 1)), []
        return FloatRange(float(bounds["min"]), float(bounds["max"]), log=log,
                          step=None if step is None else float(step)), []
    except (TypeError, ValueError) as exc:  # space.py restates Optuna's rules; keep them the judge
        return None, [(loc, f"{exc}, got {_show(dict(raw))}", dict(raw))]


def _largest(dim: Dimension) -> Any:
    if isinstance(dim, Constant):
        return dim.value
    if isinstance(dim, Categorical):
        return max(dim.choices)  # type: ignore[type-var]
    return dim.high


def _values(dim: Dimension) -> Sequence[Any]:
    """Every value of a constant, a set of choices or an integer range (not a float range)."""
    if isinstance(dim, Constant):
        return [dim.value]
    if isinstance(dim, Categorical):
        return list(dim.choices)
    assert isinstance(dim, IntRange), dim
    return range(dim.low, dim.high + 1, dim.step)


def _smallest(dim: Dimension) -> Any:
    if isinstance(dim, Constant):
        return dim.value
    if isinstance(dim, Categorical):
        return min(dim.choices)  # type: ignore[type-var]
    return dim.low


def _parse_parameters(raw: Any, method: str | None) -> dict[str, Dimension]:
    """The ``parameters`` block → every knob's Dimension (defaults as Constants), table order."""
    if not isinstance(raw, Mapping):
        _raise([((), f"must be a mapping of knob names to parameters, got {_show(raw)}", raw)], "parameters")
    problems: list[Problem] = []
    given: dict[str, Dimension] = {}
    for name, entry in raw.items():
        knob = KNOBS.get(name) if isinstance(name, str) else None
        if isinstance(entry, (Constant, Categorical, IntRange, FloatRange)):
            entry = _dimension_to_dict(entry)  # a resolved spec validated again: same rules
        if knob is None:
            hint = _suggest(name, list(KNOBS))
            if isinstance(name, str) and re.fullmatch(r"width_[0-9]+", name):
                hint = f"per-layer widths stop at width_{MAX_LAYERS} (deeper layers take width); "
            problems.append(((name,), f"unknown knob; {hint}allowed: {_KNOB_LIST}", name))
            continue
        dim, found = _parse_parameter(knob, entry, (name,))
        problems += found
        if dim is not None:
            given[name] = dim

    space: dict[str, Dimension] = {}
    for name, knob in KNOBS.items():
        if name in given:
            space[name] = given[name]
        elif name in KNOB_DEFAULTS:
            space[name] = Constant(knob.default)

    # Rules across knobs, checked only where the knobs involved are themselves valid.
    def valid(*names: str) -> bool:
        return all(n in given or n not in raw for n in names)

    if valid("depth"):
        max_depth = _largest(space["depth"])
        for name in given:
            layer = _layer_of(name)
            if layer is not None and layer > max_depth:
                problems.append(((name,), f"layer {layer} exceeds the largest depth ({max_depth}); remove "
                                          f"it or let depth reach {layer}, got {_show(raw[name])}", raw[name]))
    if valid("nesterov", "momentum") and True in space["nesterov"]:
        if _smallest(space["momentum"]) <= 0:
            problems.append((("nesterov",), "needs momentum > 0, but momentum can be "
                             f"{_smallest(space['momentum'])}; give momentum a min > 0 or drop true, "
                             f"got {_show(raw.get('nesterov'))}", raw.get("nesterov")))
    if method == "grid":
        for name, dim in given.items():
            size = grid_size(dim)
            if size is None:
                problems.append(((name,), f"method grid needs values or an int range without log, "
                                          f"got {dim}", raw[name]))
            elif size > MAX_GRID_VALUES:
                problems.append(((name,), f"method grid would expand this range to {size} values; the "
                                          f"limit is {MAX_GRID_VALUES} (use values or a step q), got {dim}",
                                 raw[name]))
    if problems:
        _raise(problems, "parameters")
    return space


# --------------------------------------------------------------------------------------------
# The model


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Name = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")]
Fraction = Annotated[StrictFloat, Field(ge=0.0, lt=1.0, allow_inf_nan=False)]


def whole(value: Any) -> Any:
    """A whole-number float as the integer it is (``epochs: 1e3`` is 1000: YAML reads ``1e3`` as
    a float); anything else unchanged, for the integer rule to judge (``8.5``, ``true``, ``"8"``
    stay refused)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[StrictInt, BeforeValidator(whole)]  # an integer key of the spec: 1e3 and 1000.0 are 1000
Seed = Annotated[Int, Field(ge=0, le=MAX_SEED)]
ColumnNames = Annotated[tuple[Annotated[StrictStr, Field(min_length=1)], ...], Field(min_length=1)]


class MetricSpec(_Frozen):
    """What a trial reports and the study minimises.

    ``val_mse`` (default) scores a trial on the validation rows split from the training set;
    ``train_mse`` on the training rows (to reproduce train-on-everything runs). The test set
    never steers the search. ``target``: stop the sweep once a trial reaches it.
    """

    name: Literal["val_mse", "train_mse"] = "val_mse"
    goal: StrictStr = "minimize"
    target: Annotated[StrictFloat, Field(ge=0.0, allow_inf_nan=False)] | None = None

    @field_validator("name", mode="before")
    @classmethod
    def _no_test_metric(cls, v: Any) -> Any:
        if v == "test_mse":
            raise PydanticCustomError("spec", "{message}", {"message": (
                "must be val_mse or train_mse: the test set never steers the search, got 'test_mse'")})
        return v

    @field_validator("goal")
    @classmethod
    def _minimize(cls, v: str, info: ValidationInfo) -> str:
        if v != "minimize":
            metric = info.data.get("name", "an MSE")
            raise PydanticCustomError("spec", "{message}", {"message": (
                f"must be minimize for {metric} (an error: lower is better), got {_show(v)}")})
        return v


class DataSpec(_Frozen):
    """Where trials get their data (see ``models.data.load_dataset``).

    ``dataset`` is a built-in name or a path ending in ``.csv``/``.npz`` (relative paths are
    kept as written and resolved by the data loader). ``features``, ``targets`` and
    ``test_path`` apply to files only. ``seed`` seeds the validation split; left out, it is the
    spec's ``seed``.
    """

    dataset: StrictStr
    validation_fraction: Fraction = 0.2
    features: ColumnNames | None = None
    targets: ColumnNames | None = None
    test_path: StrictStr | None = None
    standardize: StrictBool = False
    seed: Seed | None = None

    @property
    def is_file(self) -> bool:
        return self.dataset not in BUILTIN_DATASETS

    @model_validator(mode="after")
    def _check(self) -> DataSpec:
        problems: list[Problem] = []
        if self.dataset not in BUILTIN_DATASETS and not self.dataset.lower().endswith(DATA_FILE_SUFFIXES):
            problems.append((("dataset",), f"unknown dataset {_show(self.dataset)}; "
                             f"{_suggest(self.dataset, BUILTIN_DATASETS)}choose one of "
                             f"{_one_of(BUILTIN_DATASETS)} or a path ending in .csv or .npz", self.dataset))
        elif not self.is_file:
            for key in ("features", "targets", "test_path"):
                if getattr(self, key) is not None:
                    problems.append(((key,), f"only for a .csv/.npz dataset; {self.dataset} has fixed "
                                             f"columns and test set, got {_show(getattr(self, key))}",
                                     getattr(self, key)))
        if self.test_path is not None and not self.test_path.lower().endswith(DATA_FILE_SUFFIXES):
            problems.append((("test_path",), f"must be a path ending in .csv or .npz, got {_show(self.test_path)}",
                             self.test_path))
        for key in ("features", "targets"):
            names = getattr(self, key) or ()
            for i, n in enumerate(names):
                if n in names[:i]:
                    problems.append(((key, i), f"repeats column {n!r}, got {_show(n)}", n))
        overlap = [c for c in (self.targets or ()) if c in (self.features or ())]
        if overlap:
            problems.append((("targets",), "a column is a feature or a target, not both; also in "
                             f"features: {', '.join(map(repr, overlap))}", self.targets))
        if problems:
            _raise(problems, "DataSpec")
        return self


class EarlyTerminateSpec(_Frozen):
    """Pruning of unpromising trials on their intermediate validation MSE (per epoch).

    ``median`` (Optuna's MedianPruner), ``sha`` (SuccessiveHalvingPruner) or ``hyperband``
    (HyperbandPruner). ``min_iter``: epochs before a trial may be pruned; ``max_iter``: the
    largest epoch budget (default: the largest ``epochs``); ``eta``: the reduction factor.
    ``s`` is W&B's bracket count, accepted for compatibility: Optuna derives the brackets from
    ``min_iter``, ``max_iter`` and ``eta`` itself.
    """

    type: Literal["median", "sha", "hyperband"]
    min_iter: Annotated[Int, Field(ge=1)] | None = None
    max_iter: Annotated[Int, Field(ge=1)] | None = None
    eta: Annotated[Int, Field(ge=2)] = 3
    s: Annotated[Int, Field(ge=1)] | None = None

    @model_validator(mode="after")
    def _order(self) -> EarlyTerminateSpec:
        if self.min_iter is not None and self.max_iter is not None and self.min_iter > self.max_iter:
            _raise([(("min_iter",), f"must be <= max_iter ({self.max_iter}), got {self.min_iter}",
                     self.min_iter)], "EarlyTerminateSpec")
        return self


class SweepSpec(_Frozen):
    """A validated sweep: frozen, typed, every knob resolved to a search-space dimension.

    Build one with :func:`load_spec` / :func:`parse_spec` (files and text, with errors as
    :class:`SpecError`) or :func:`spec_from_dict`. ``parameters`` holds every knob of
    :data:`KNOBS` that a trial uses — the ones the spec leaves out as ``Constant`` defaults,
    per-layer widths only where given — in the order a sampler should visit them;
    :attr:`user_parameters` keeps the block as written.
    """

    name: Name
    description: Annotated[StrictStr, Field(max_length=10_000)] | None = None
    method: Literal["tpe", "random", "grid", "cmaes", "gp", "qmc"] = "tpe"
    metric: MetricSpec = MetricSpec()
    run_cap: Annotated[Int, Field(ge=1, le=100_000)] = 20
    concurrency: Annotated[Int, Field(ge=1, le=1024)] = 1
    seed: Seed = 0
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    data: DataSpec
    parameters: dict[str, Dimension]
    early_terminate: EarlyTerminateSpec | None = None
    verify: Literal["gate", "record", "off"] = "gate"
    # Up to this many waiting trials whose networks have the same shape (and optimizer) train
    # together as one batched computation on one worker; results stay per trial, bit for bit on
    # the CPU. ``auto``: see the driver's ``cobatch_limit`` (small trials of samplers that do not
    # learn from results co-batch, others train alone).
    cobatch: Literal["auto"] | Annotated[Int, Field(ge=1, le=MAX_COBATCH)] = "auto"

    # Not a field: the parameters block as the user wrote it (set by _keep_user_parameters).
    _user_parameters: dict[str, Any] = {}

    @model_validator(mode="wrap")
    @classmethod
    def _keep_user_parameters(cls, data: Any, handler: Any) -> SweepSpec:
        spec = handler(data)
        if isinstance(data, Mapping):
            raw = data.get("parameters")
            spec._user_parameters = copy.deepcopy(dict(raw)) if isinstance(raw, Mapping) else {}
        return spec

    @field_validator("method", mode="before")
    @classmethod
    def _bayes_is_tpe(cls, v: Any) -> Any:
        if isinstance(v, str) and v in METHODS:
            return "tpe" if v == "bayes" else v
        hint = _suggest(v, METHODS).strip()
        raise PydanticCustomError("spec", "{message}", {"message": (
            "must be one of tpe (alias bayes), random, grid, cmaes, gp, qmc, "
            f"got {_show(v)}" + (f" ({hint})" if hint else ""))})

    @field_validator("cobatch", mode="before")
    @classmethod
    def _auto_or_count(cls, v: Any) -> Any:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_COBATCH):
            return v
        raise PydanticCustomError("spec", "{message}", {"message": (
            f"must be auto or an integer from 1 to {MAX_COBATCH} (trials per batched job), got {_show(v)}")})

    @field_validator("verify", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        # YAML 1.1 reads a bare `off` as the boolean false: that is what the user meant.
        return "off" if v is False else v

    @field_validator("data")
    @classmethod
    def _data_fits_metric(cls, v: DataSpec, info: ValidationInfo) -> DataSpec:
        metric = info.data.get("metric")
        if metric is not None and metric.name == "val_mse" and v.validation_fraction == 0:
            _raise([(("validation_fraction",), "must be > 0 when metric.name is val_mse (use train_mse "
                     "to train on every row), got 0", v.validation_fraction)], "SweepSpec")
        if v.seed is None and "seed" in info.data:
            v = v.model_copy(update={"seed": info.data["seed"]})
        return v

    @field_validator("parameters", mode="plain")
    @classmethod
    def _resolve_parameters(cls, v: Any, info: ValidationInfo) -> dict[str, Dimension]:
        return _parse_parameters(v, info.data.get("method"))

    @field_validator("early_terminate")
    @classmethod
    def _fits_epochs(cls, v: EarlyTerminateSpec | None, info: ValidationInfo) -> EarlyTerminateSpec | None:
        space = info.data.get("parameters")
        if v is None or space is None:
            return v
        max_epochs = _largest(space["epochs"])
        problems: list[Problem] = []
        if v.min_iter is not None and v.min_iter > max_epochs:
            problems.append((("min_iter",), f"must be <= the largest epochs ({max_epochs}), got {v.min_iter}",
                             v.min_iter))
        if problems:
            _raise(problems, "SweepSpec")
        if v.max_iter is None:
            v = v.model_copy(update={"max_iter": max(max_epochs, v.min_iter or 1)})
        return v

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(json.dumps(spec_to_dict(self), sort_keys=True))

    def search_space(self) -> dict[str, Dimension]:
        """Every knob a trial uses, mapped to its dimension (defaults included), sampling order."""
        return dict(self.parameters)

    def searched(self) -> dict[str, Dimension]:
        """Only the knobs that vary between trials (not Constants)."""
        return {k: d for k, d in self.parameters.items() if not isinstance(d, Constant)}

    @property
    def user_parameters(self) -> dict[str, Any]:
        """The ``parameters`` block as written in the spec (a copy)."""
        return copy.deepcopy(self._user_parameters)

    @property
    def max_epochs(self) -> int:
        """The largest epoch budget any trial can get."""
        return int(_largest(self.parameters["epochs"]))

    @property
    def max_depth(self) -> int:
        return int(_largest(self.parameters["depth"]))

    def largest_network(self, optimizer: str, inputs: int, outputs: int) -> tuple[int, ...] | None:
        """The layer sizes of the network with the most parameters that a trial trained by
        ``optimizer`` can have, on data of ``inputs`` and ``outputs`` columns; None when no trial
        uses ``optimizer``."""
        if optimizer not in _values(self.parameters["optimizer"]):
            return None
        width = self.parameters["width"]
        nets = [(inputs, *(int(_largest(self.parameters.get(f"width_{k}", width))) for k in range(1, depth + 1)),
                 outputs) for depth in map(int, _values(self.parameters["depth"]))]
        return max(nets, key=parameter_count)


# --------------------------------------------------------------------------------------------
# Turning pydantic's errors into our lines

_SECTIONS: dict[Loc, type[BaseModel]] = {
    (): SweepSpec,
    ("metric",): MetricSpec,
    ("data",): DataSpec,
    ("early_terminate",): EarlyTerminateSpec,
}
_FOREIGN_TOP_KEYS = {
    "program": "W&B runs a program per trial; mlpsweep trains the MLP itself, drop it",
    "command": "W&B runs a command per trial; mlpsweep trains the MLP itself, drop it",
    "project": "W&B's project; mlpsweep logs to the MLflow experiment named by name, drop it",
    "entity": "W&B's entity; mlpsweep logs to MLflow (--tracking-uri), drop it",
    "controller": "W&B's controller; mlpsweep's driver runs locally, drop it",
}
_TYPE_RULES = {
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be an integer",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "string_type": "must be text",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "list_type": "must be a list",
    "tuple_type": "must be a list",
    "finite_number": "must be finite",
    "recursion_loop": "refers to itself",
}


def _line(err: Mapping[str, Any]) -> str:
    loc = tuple(err.get("loc", ()))
    kind, value, ctx = err.get("type"), err.get("input"), err.get("ctx") or {}
    path = _render_loc(loc)
    got = f", got {_show(value)}"
    if kind == "spec":
        rule, got = str(ctx.get("message", err.get("msg"))), ""
    elif kind == "missing":
        rule, got = "required", ""
    elif kind == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        key = loc[-1] if loc else None
        if _SECTIONS.get(loc[:-1]) is SweepSpec and key in _FOREIGN_TOP_KEYS:
            rule = f"unknown key: {_FOREIGN_TOP_KEYS[key]}"
        else:
            rule = f"unknown key; {_suggest(key, allowed)}allowed: {_one_of(allowed)}"
        got = ""
    elif kind == "literal_error":
        options = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        rule = f"must be one of {_one_of(options)}"
        hint = "did you mean 'cuda'?" if value == "gpu" else _suggest(value, options)
        got = f", got {_show(value)}" + (f" ({hint.strip()})" if hint else "")
    elif kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        op, limit = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
                     "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}[kind]
        rule = f"must be {op} {ctx.get(limit)}"
    elif kind == "string_pattern_mismatch":
        rule = "must be 1-100 letters, digits, '.', '_' or '-', starting with a letter or digit"
    elif kind in ("string_too_long", "too_long"):
        rule = f"must be at most {ctx.get('max_length')} long"
    elif kind in ("string_too_short", "too_short"):
        rule = "must not be empty"
    elif kind in _TYPE_RULES:
        rule = _TYPE_RULES[str(kind)]
    else:  # anything else pydantic says, kept to one line
        msg = " ".join(str(err.get("msg", "invalid")).split())
        rule = msg[:1].lower() + msg[1:]
    return f"{path}: {rule}{got}"


def _allowed_keys(section_loc: Loc) -> list[str]:
    section = _SECTIONS.get(section_loc)
    return list(section.model_fields) if section else []


def _problems(exc: ValidationError) -> list[str]:
    errors = exc.errors(include_url=False)
    # A misspelled required key is one problem, not two: "paramters: unknown key; did you mean
    # 'parameters'?" says all that "parameters: required" would.
    meant = set()
    for err in errors:
        loc = tuple(err.get("loc", ()))
        if err.get("type") == "extra_forbidden" and loc:
            close = _closest(loc[-1], _allowed_keys(loc[:-1]))
            meant.add((*loc[:-1], close))
    lines: list[str] = []
    for err in errors:
        if err.get("type") == "missing" and tuple(err.get("loc", ())) in meant:
            continue
        line = _line(err)
        if line not in lines:
            lines.append(line)
    return lines


# --------------------------------------------------------------------------------------------
# Loading


def _float_resolver_pattern() -> re.Pattern[str]:
    # YAML 1.1 (PyYAML) reads 1e-3 as a string; YAML 1.2 and every user read it as a number.
    return re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+)$""")


class _SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags, no code) that also reads ``1e-3`` as a float and rejects
    duplicate keys instead of letting the last one silently win."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=False)
            try:
                line = seen.setdefault(key, key_node.start_mark.line + 1)
            except TypeError:
                continue
            if line != key_node.start_mark.line + 1:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first on line {line}); the second would "
                                f"silently win, keep one", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


_SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _float_resolver_pattern(),
                                  list("-+0123456789"))


def _size(n: int) -> str:
    text = f"{n / 2**20:.1f} MiB"
    return text if n > MAX_SPEC_BYTES and text != "1.0 MiB" else f"{n} bytes"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc)
    problem = " ".join(str(problem).split())
    if problem.startswith("duplicate key"):
        return f"spec: {where}{problem}"
    tag = re.search(r"tag '([^']*)'", problem) or re.search(r"tag:yaml.org,2002:([\w/:.-]+)", problem)
    if "could not determine a constructor" in problem and tag:
        name = re.sub(r"^tag:yaml.org,2002:", "!!", tag.group(1))
        return (f"spec: {where}YAML tag {_show(name)} is not allowed; a spec is plain data "
                "(mappings, lists, text, numbers, true/false)")
    return f"spec: {where}not valid YAML: {problem[:200]}"


def _check_shape(data: Any) -> str | None:
    """Bound nesting and size before pydantic walks the data (aliases can make a few KiB of
    YAML into billions of values, or a list that contains itself)."""
    stack: list[tuple[Any, int, tuple[int, ...]]] = [(data, 1, ())]
    visited = 0
    while stack:
        node, depth, ancestors = stack.pop()
        visited += 1
        if visited > MAX_NODES:
            return f"spec: more than {MAX_NODES} values (YAML aliases?); a spec is a page of settings"
        if depth > MAX_NESTING:
            return f"spec: nested deeper than {MAX_NESTING} levels"
        if isinstance(node, (dict, list, tuple, set, frozenset)):
            if id(node) in ancestors:
                return "spec: a YAML alias makes a value contain itself"
            inner = (*ancestors, id(node))
            children = [*node.keys(), *node.values()] if isinstance(node, dict) else list(node)
            stack.extend((c, depth + 1, inner) for c in children)
    return None


def parse_spec(source: str | bytes, origin: str = "<string>") -> SweepSpec:
    """Parse and validate a spec from YAML text or bytes.

    Args:
        source: the YAML document (bytes must be UTF-8; a BOM is allowed).
        origin: where it came from, kept on a :class:`SpecError` for messages.

    Returns:
        The validated :class:`SweepSpec`.

    Raises:
        SpecError: anything wrong, all problems at once; never another exception for bad input.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        raw_bytes = bytes(source)
        if len(raw_bytes) > MAX_SPEC_BYTES:
            raise SpecError([f"spec: file is {_size(len(raw_bytes))}; the limit is 1 MiB"], origin)
        try:
            text = raw_bytes.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            byte = raw_bytes[exc.start]
            raise SpecError([f"spec: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start})"], origin) from None
    elif isinstance(source, str):
        text = source
        if len(text) > MAX_SPEC_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
            size = len(text.encode("utf-8", "surrogatepass"))
            raise SpecError([f"spec: text is {_size(size)}; the limit is 1 MiB"], origin)
    else:
        raise TypeError(f"parse_spec takes YAML text or bytes, got {type(source).__name__}; "
                        "use load_spec for a path")
    try:
        data = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError([_yaml_problem(exc)], origin) from None
    except RecursionError:
        raise SpecError([f"spec: nested deeper than {MAX_NESTING} levels"], origin) from None
    except (ValueError, TypeError, OverflowError) as exc:  # e.g. a date like 2024-13-45
        raise SpecError([f"spec: not valid YAML: {' '.join(str(exc).split())[:200]}"], origin) from None
    return spec_from_dict(data, origin)


def spec_from_dict(data: Any, origin: str = "<dict>") -> SweepSpec:
    """Validate an already-parsed spec (a mapping as ``yaml.safe_load`` would give).

    Raises:
        SpecError: anything wrong, all problems at once.
    """
    if data is None:
        raise SpecError(["spec: empty; a spec is a mapping with at least name, data and parameters"], origin)
    if not isinstance(data, Mapping):
        raise SpecError([f"spec: must be a mapping (name: ..., data: ..., parameters: ...), got "
                         f"{type(data).__name__} {_show(data)}"], origin)
    shape = _check_shape(data)
    if shape:
        raise SpecError([shape], origin)
    try:
        return SweepSpec.model_validate(dict(data))
    except ValidationError as exc:
        raise SpecError(_problems(exc), origin) from None


def load_spec(path: str | os.PathLike[str]) -> SweepSpec:
    """Read, parse and validate a spec file.

    Args:
        path: the YAML file. At most 1 MiB; UTF-8.

    Returns:
        The validated :class:`SweepSpec`.

    Raises:
        SpecError: unreadable, too large, not UTF-8, not YAML, or invalid; every problem at once.
    """
    origin = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_SPEC_BYTES:
                raise SpecError([f"spec: file is {_size(size)}; the limit is 1 MiB"], str(origin))
            data = fh.read(MAX_SPEC_BYTES + 1)  # a pipe or device has no size: read at most this
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SpecError([f"spec: cannot read {_show(str(origin))}: {reason}"], str(origin)) from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(["spec: file is larger than the limit of 1 MiB"], str(origin))
    return parse_spec(data, str(origin))


def with_overrides(spec: SweepSpec, **values: Any) -> SweepSpec:
    """A copy of ``spec`` with top-level fields replaced (the command line's ``--run-cap``...),
    each checked by the rules a spec file's value meets.

    Raises:
        SpecError: every value refused, one line each, starting with its field's name.
    """
    copy = spec.model_copy()
    problems: list[str] = []
    for name, value in values.items():
        try:
            copy.__pydantic_validator__.validate_assignment(copy, name, value)
        except ValidationError as exc:
            problems += _problems(exc)
    if problems:
        raise SpecError(problems)
    return copy


# --------------------------------------------------------------------------------------------
# Canonical form


def _dimension_to_dict(dim: Dimension) -> dict[str, Any]:
    """A Dimension in W&B's words; parsing it gives the same Dimension back."""
    if isinstance(dim, Constant):
        return {"value": dim.value}
    if isinstance(dim, Categorical):
        return {"values": list(dim.choices)}
    if isinstance(dim, IntRange):
        if dim.log:
            return {"distribution": "q_log_uniform_values", "min": dim.low, "max": dim.high, "q": 1}
        if dim.step != 1:
            return {"distribution": "q_uniform", "min": dim.low, "max": dim.high, "q": dim.step}
        return {"distribution": "int_uniform", "min": dim.low, "max": dim.high}
    if dim.log:
        return {"distribution": "log_uniform_values", "min": dim.low, "max": dim.high}
    if dim.step is not None:
        return {"distribution": "q_uniform", "min": dim.low, "max": dim.high, "q": dim.step}
    return {"distribution": "uniform", "min": dim.low, "max": dim.high}


def spec_to_dict(spec: SweepSpec) -> dict[str, Any]:
    """The spec in canonical form: every default filled in, ``bayes`` as ``tpe``, each knob in
    W&B's words. Feeding it back to :func:`spec_from_dict` gives an equal spec."""
    out: dict[str, Any] = {"name": spec.name}
    if spec.description is not None:
        out["description"] = spec.description
    out["method"] = spec.method
    out["metric"] = spec.metric.model_dump(exclude_none=True)
    out.update(run_cap=spec.run_cap, concurrency=spec.concurrency, seed=spec.seed, device=spec.device)
    data = spec.data.model_dump(exclude_none=True)
    for key in ("features", "targets"):
        if key in data:
            data[key] = list(data[key])
    out["data"] = data
    out["parameters"] = {k: _dimension_to_dict(d) for k, d in spec.parameters.items()}
    if spec.early_terminate is not None:
        out["early_terminate"] = spec.early_terminate.model_dump(exclude_none=True)
    out["verify"] = spec.verify
    out["cobatch"] = spec.cobatch
    return out


def spec_to_yaml(spec: SweepSpec) -> str:
    """The canonical YAML of a spec (the sweep's MLflow artifact); loads back to an equal spec."""
    return yaml.safe_dump(spec_to_dict(spec), sort_keys=False, default_flow_style=None,
                          allow_unicode=True, width=100)


def spec_record(spec: SweepSpec) -> dict[str, Any]:
    """What defines a sweep's trials: the canonical form without :data:`DIGEST_EXCLUDES` nor
    ``metric.target`` (which decides when the sweep stops, not what a trial is); JSON data, which
    the study stores to say later what an edited spec changed."""
    return _without_target(json.loads(json.dumps(
        {k: v for k, v in spec_to_dict(spec).items() if k not in DIGEST_EXCLUDES})))


def spec_digest(spec: SweepSpec) -> str:
    """SHA-256 (hex) of :func:`spec_record`.

    Two specs with the same digest define the same trials; a resumed sweep compares it with
    the one it stored to notice an edited spec. Extending ``run_cap`` keeps the digest.
    """
    text = json.dumps(spec_record(spec), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def spec_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between two :func:`spec_record`\\ s, as ``path: old -> new`` (``-`` for
    absent); ``metric.target``, which older records hold, is left out."""
    def walk(a: Any, b: Any, path: str) -> list[str]:
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            return [line for k in list(a) + [k for k in b if k not in a]
                    for line in walk(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{path}{k}.")]
        if a == b:
            return []
        show = lambda v: "-" if v is _ABSENT else json.dumps(v, ensure_ascii=False)  # noqa: E731
        return [f"{path[:-1]}: {show(a)} -> {show(b)}"]

    return walk(_without_target(old), _without_target(new), "")


def record_changes(old: Mapping[str, Any], spec: SweepSpec) -> list[str]:
    """What ``spec`` changes against a study's stored :func:`spec_record` ``old``, read as this
    mlpsweep reads it: a setting added since takes its default there too (no change), a default
    that follows another field follows it. A record it can no longer read is compared as stored."""
    new = spec_record(spec)
    try:
        read = spec_record(spec_from_dict({**_without_target(old), "name": spec.name}))
    except (SpecError, TypeError, ValueError):
        return spec_changes(old, new)
    return spec_changes(read, new)


def _without_target(record: Mapping[str, Any]) -> dict[str, Any]:
    metric = record.get("metric")
    if not isinstance(metric, Mapping) or "target" not in metric:
        return dict(record)
    return {**record, "metric": {k: v for k, v in metric.items() if k != "target"}}


_ABSENT = object()
