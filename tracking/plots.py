"""The sweep's pictures: pure functions from plain data (numbers, arrays, small records) to PNG bytes.

Everything is drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never
through ``pyplot``: no global figure state, no GUI backend, safe to call from any thread.
Each function raises ``ValueError`` when it has nothing to draw, so the caller can skip the
picture and say why.
"""
from __future__ import annotations

import io
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

import numpy as np


@contextmanager
def _without_property_listings() -> Iterator[None]:
    """Import matplotlib's drawing modules without the property listing matplotlib writes into
    every Artist class's ``set()`` docstring as the class is defined (``matplotlib.artist.kwdoc``
    introspects each setter: about a quarter of the import's CPU, in the report's process, on the
    cores a sweep trains on). No one reads those docstrings in a process that draws a report:
    they are left without the listing; ``kwdoc`` itself is restored once the import is done.
    Where matplotlib's drawing modules are already imported, or ``kwdoc`` is not where this
    looks (another matplotlib), the import is matplotlib's own."""
    import sys

    import matplotlib.artist

    real = getattr(matplotlib.artist, "kwdoc", None)
    if real is None or "matplotlib.figure" in sys.modules:
        yield
        return
    matplotlib.artist.kwdoc = lambda artist: ""  # type: ignore[assignment]
    try:
        yield
    finally:
        matplotlib.artist.kwdoc = real


with _without_property_listings():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.collections import LineCollection
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    from matplotlib.transforms import blended_transform_factory

__all__ = [
    "HistoryPoint",
    "ParamAxis",
    "WidthPoint",
    "Split",
    "Curve",
    "Spread",
    "plot_history",
    "plot_importances",
    "plot_parallel_coordinates",
    "infer_axes",
    "plot_mse_vs_width",
    "plot_fit_1d",
    "plot_fit_2d",
    "plot_learning_curves",
    "plot_restart_spread",
    "mse_label",
    "DPI",
]

log = logging.getLogger(__name__)

DPI = 110
SPLIT_STYLE = {  # colour and marker per data split, the same in every picture
    "train": ("tab:blue", "o"),
    "val": ("tab:orange", "s"),
    "test": ("tab:green", "^"),
}
SPLIT_LABEL = {"train": "train", "val": "validation", "test": "test"}
LOG_SPAN = 20.0  # use a log axis once the largest value is this many times the smallest


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class HistoryPoint:
    """One trial of the optimisation history: its number, Optuna state and objective (if any)."""

    number: int
    state: str  # COMPLETE | FAIL | PRUNED
    value: float | None


@dataclass(frozen=True)
class ParamAxis:
    """One axis of the parallel-coordinates view.

    ``kind`` is ``categorical`` (``choices`` in display order), ``linear`` or ``log``;
    ``low``/``high`` fix the numeric range (the search-space bounds), else the data decides.
    """

    name: str
    kind: str
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class WidthPoint:
    """One trial for the MSE-against-width picture; ``group`` is e.g. ``depth 1, tanh``."""

    width: float
    group: str
    train: float | None
    val: float | None
    test: float | None


@dataclass(frozen=True)
class Split:
    """Data points of one split; ``X`` (N, d_in), ``y`` (N, d_out)."""

    name: str  # train | val | test
    X: np.ndarray
    y: np.ndarray


@dataclass(frozen=True)
class Curve:
    """A trial's learning curves (chosen restart): MSE per epoch. ``train_epochs``/``val_epochs``:
    the epoch of each value (MLflow holds 100 points of a longer curve); empty: 0, 1, 2, …"""

    label: str
    train: Sequence[float]
    val: Sequence[float] = field(default_factory=tuple)
    train_epochs: Sequence[int] = field(default_factory=tuple)
    val_epochs: Sequence[int] = field(default_factory=tuple)


@dataclass(frozen=True)
class Spread:
    """Final MSE of every restart of one trial, indexed by restart (NaN: a diverged restart);
    ``chosen`` is the restart the trial kept."""

    label: str
    values: Sequence[float]
    chosen: int | None = None


# ----------------------------------------------------------------------------- helpers
def _figure(width: float = 8.0, height: float = 5.0) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": "mlpsweep"})
    return buf.getvalue()


def _finite(values: Sequence[float | None]) -> np.ndarray:
    a = np.array([v for v in values if v is not None], dtype=float)
    return a[np.isfinite(a)]


def _wants_log(values: np.ndarray) -> bool:
    pos = values[values > 0]
    return pos.size > 1 and pos.size == values.size and pos.max() / pos.min() >= LOG_SPAN


def mse_label(metric: str) -> str:
    """How a metric reads on an axis: ``val_mse`` → ``validation MSE``."""
    return {"val_mse": "validation MSE", "train_mse": "training MSE", "test_mse": "test MSE"}.get(metric, metric)


# ----------------------------------------------------------------------------- history
def plot_history(points: Sequence[HistoryPoint], metric: str = "val_mse", title: str = "") -> bytes:
    """Objective of every trial and the best so far, in trial order.

    Failed and pruned trials have no objective; they are marked along the bottom edge.

    Args:
        points: one per trial.
        metric: the objective's name, for the axis label.
        title: figure title (default: "Optimisation history").

    Returns:
        PNG bytes.

    Raises:
        ValueError: no trial has a finite objective.
    """
    done = sorted((p for p in points if p.value is not None and math.isfinite(p.value)), key=lambda p: p.number)
    if not done:
        raise ValueError("no trial with a finite objective")
    x = np.array([p.number for p in done])
    y = np.array([p.value for p in done], dtype=float)
    best = np.minimum.accumulate(y)
    fig = _figure()
    ax = fig.add_subplot()
    ax.scatter(x, y, s=22, color="tab:blue", alpha=0.75, label=f"trial {mse_label(metric)}", zorder=3)
    last = max(p.number for p in points)
    ax.step(np.append(x, last), np.append(best, best[-1]), where="post", color="tab:red", lw=2,
            label="best so far", zorder=4)
    i = int(np.argmin(y))
    ax.annotate(f"best: trial {x[i]}\n{y[i]:.4g}", (x[i], y[i]), xytext=(12, 14), textcoords="offset points",
                fontsize=8, color="tab:red", arrowprops={"arrowstyle": "-", "color": "tab:red", "lw": 0.8})
    edge = blended_transform_factory(ax.transData, ax.transAxes)
    for state, marker, color in (("FAIL", "x", "black"), ("PRUNED", "v", "tab:gray")):
        xs = [p.number for p in points if p.state == state]
        if xs:
            ax.scatter(xs, np.full(len(xs), 0.02), marker=marker, color=color, s=28, transform=edge,
                       clip_on=False, label=f"{state.lower()} ({len(xs)})", zorder=5)
    if _wants_log(y):
        ax.set_yscale("log")
    ax.set_xlabel("trial number")
    ax.set_ylabel(mse_label(metric))
    ax.set_title(title or "Optimisation history")
    ax.grid(True, which="major", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8, frameon=False)
    return _png(fig)


# ----------------------------------------------------------------------------- importances
def plot_importances(importances: Mapping[str, float], target: str = "log10(validation MSE)") -> bytes:
    """Horizontal bars of hyperparameter importances, most important on top.

    Args:
        importances: parameter name → importance (e.g. fANOVA's, summing to 1).
        target: what the importances explain, for the axis label.

    Returns:
        PNG bytes.

    Raises:
        ValueError: no importances, or a non-finite one.
    """
    items = sorted(importances.items(), key=lambda kv: kv[1])
    if not items:
        raise ValueError("no parameter importances")
    values = np.array([v for _, v in items], dtype=float)
    if not np.all(np.isfinite(values)):
        raise ValueError("non-finite parameter importance")
    fig = _figure(7.0, max(3.2, 0.9 + 0.45 * len(items)))
    ax = fig.add_subplot()
    bars = ax.barh([k for k, _ in items], values, color="tab:blue", alpha=0.85)
    ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], padding=3, fontsize=9)
    ax.set_xlim(0, max(values.max() * 1.18, 1e-9))
    ax.set_xlabel(f"importance for {target} (fANOVA, sums to 1)")
    ax.set_title("Hyperparameter importances")
    ax.grid(True, axis="x", alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------- parallel coordinates
def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def infer_axes(params: Sequence[Mapping[str, Any]], names: Sequence[str] | None = None) -> list[ParamAxis]:
    """Axes for :func:`plot_parallel_coordinates` when the search space is not known.

    Numbers get a linear axis (log when positive and spanning more than a decade), anything
    else a categorical one. Parameters with a single value are left out.
    """
    names = list(names) if names is not None else list(dict.fromkeys(k for p in params for k in p))
    axes = []
    for name in names:
        values = [p[name] for p in params if name in p]
        distinct = list(dict.fromkeys(values))
        if len(distinct) < 2:
            continue
        if all(_is_number(v) for v in distinct):
            a = np.array(distinct, dtype=float)
            kind = "log" if a.min() > 0 and a.max() / a.min() > 10 else "linear"
            axes.append(ParamAxis(name, kind))
        else:
            axes.append(ParamAxis(name, "categorical", tuple(sorted(distinct, key=str))))
    return axes


def _axis_positions(axis: ParamAxis, values: list[Any]) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """Each value's position in [0, 1] on the axis (NaN where missing) and the axis' tick labels."""
    if axis.kind == "categorical":
        choices = list(axis.choices) or list(dict.fromkeys(v for v in values if v is not None))
        extra = [v for v in dict.fromkeys(values) if v is not None and v not in choices]
        choices += extra
        n = len(choices)
        where = {c: (i / (n - 1) if n > 1 else 0.5) for i, c in enumerate(choices)}
        pos = np.array([where.get(v, np.nan) if v is not None else np.nan for v in values], dtype=float)
        return pos, [(where[c], str(c)) for c in choices]
    nums = np.array([float(v) if v is not None else np.nan for v in values], dtype=float)
    seen = nums[np.isfinite(nums)]
    lo = axis.low if axis.low is not None else (seen.min() if seen.size else 0.0)
    hi = axis.high if axis.high is not None else (seen.max() if seen.size else 1.0)
    if seen.size:
        lo, hi = min(lo, seen.min()), max(hi, seen.max())
    log_axis = axis.kind == "log" and lo > 0
    f = np.log10 if log_axis else (lambda a: a)
    span = f(hi) - f(lo)
    with np.errstate(invalid="ignore", divide="ignore"):
        pos = (f(nums) - f(lo)) / span if span > 0 else np.full_like(nums, 0.5)
    ticks = [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")] if span > 0 else [(0.5, f"{lo:.3g}")]
    if span > 0:
        mid = 10 ** ((f(lo) + f(hi)) / 2) if log_axis else (lo + hi) / 2
        ticks.insert(1, (0.5, f"{mid:.3g}"))
    return pos, ticks


def plot_parallel_coordinates(params: Sequence[Mapping[str, Any]], values: Sequence[float],
                              axes: Sequence[ParamAxis], metric: str = "val_mse") -> bytes:
    """One polyline per trial across its hyperparameters, ending at its objective.

    Lines are coloured by the objective (log colour scale when it spans decades) and the best
    trials are drawn last, on top. Categorical parameters are spread evenly along their axis;
    a parameter a trial does not have (a width beyond its depth) leaves a gap in its line.

    Args:
        params: one mapping of parameter values per trial.
        values: the trials' objectives, aligned with ``params``.
        axes: the parameter axes, in display order (see :func:`infer_axes`).
        metric: the objective's name.

    Returns:
        PNG bytes.

    Raises:
        ValueError: fewer than two trials with a finite objective, misaligned inputs, or no axes.
    """
    if len(params) != len(values):
        raise ValueError(f"{len(params)} parameter sets but {len(values)} values")
    keep = [i for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if len(keep) < 2:
        raise ValueError("needs at least two trials with a finite objective")
    if not axes:
        raise ValueError("no varying parameter to draw")
    y = np.array([values[i] for i in keep], dtype=float)
    rows = [params[i] for i in keep]
    columns, ticks = [], []
    for axis in axes:
        pos, t = _axis_positions(axis, [r.get(axis.name) for r in rows])
        columns.append(pos)
        ticks.append(t)
    log_y = _wants_log(y)
    obj = ParamAxis(mse_label(metric), "log" if log_y else "linear")
    pos, t = _axis_positions(obj, list(y))
    columns.append(pos)
    ticks.append(t)
    grid = np.column_stack(columns)  # (n_trials, n_axes + 1)
    norm = LogNorm(y.min(), y.max()) if log_y else Normalize(y.min(), y.max())
    cmap = "viridis_r"
    sm = ScalarMappable(norm=norm, cmap=cmap)

    n_axes = grid.shape[1]
    fig = _figure(max(7.0, 1.5 * n_axes + 2.0), 5.0)
    ax = fig.add_subplot()
    xs = np.arange(n_axes)
    order = np.argsort(-y)  # worst first: the best lines end up on top
    # One collection, not a line per trial: the same picture, drawn in one pass (500 trials:
    # ~3x faster); a NaN (a parameter the trial lacks) breaks its line as it breaks a plot's.
    ax.add_collection(LineCollection([np.column_stack([xs, grid[i]]) for i in order],
                                     colors=sm.to_rgba(y[order], alpha=0.8),
                                     linewidths=np.where(y[order] == y.min(), 2.2, 1.1)))
    for j, axis_ticks in enumerate(ticks):
        ax.axvline(j, color="black", lw=0.8, zorder=0)
        for p, label in axis_ticks:
            ax.text(j + 0.04, p, label, fontsize=8, va="center", ha="left",
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.7})
    ax.set_xticks(xs, [a.name for a in axes] + [obj.name])
    ax.set_xlim(-0.2, n_axes - 0.5)
    ax.set_ylim(-0.06, 1.06)
    ax.set_yticks([])
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    ax.set_title(f"Parallel coordinates of {len(keep)} complete trials")
    fig.colorbar(sm, ax=ax, label=mse_label(metric), pad=0.01)
    return _png(fig)


# ----------------------------------------------------------------------------- overfitting
def _width_ticks(ax: Any, widths: list[float]) -> None:
    """Plain-number ticks on a log width axis: every width when few, else 1-2-5 steps."""
    if len(widths) <= 10:
        ax.set_xticks(widths, [f"{w:g}" for w in widths])
    else:
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_mse_vs_width(points: Sequence[WidthPoint], metric: str = "val_mse") -> bytes:
    """Train, validation and test MSE against width: one panel per split, one line per group.

    Where several trials share a group and width (other learning rates, optimizers…), the line
    goes through the one with the lowest ``metric`` — the one the sweep would pick — and every
    trial is shown as a faint dot. Overfitting shows as training MSE falling with width while
    validation and test MSE turn up.

    Args:
        points: one per complete trial.
        metric: ``val_mse`` or ``train_mse``: picks the trial drawn at each width.

    Returns:
        PNG bytes.

    Raises:
        ValueError: no point with a finite MSE.
    """
    pts = [p for p in points if p.width > 0 and any(_finite([getattr(p, s)]).size for s in ("train", "val", "test"))]
    if not pts:
        raise ValueError("no trial with a width and a finite MSE")
    splits = [s for s in ("train", "val", "test") if any(_finite([getattr(p, s)]).size for p in pts)]
    key = metric.removesuffix("_mse") if metric.removesuffix("_mse") in splits else splits[0]
    groups = sorted({p.group for p in pts})
    colors = {g: f"C{i % 10}" for i, g in enumerate(groups)}
    chosen: dict[tuple[str, float], WidthPoint] = {}
    for p in pts:
        score = getattr(p, key)
        score = score if score is not None and math.isfinite(score) else math.inf
        old = chosen.get((p.group, p.width))
        old_score = getattr(old, key) if old is not None else None
        if old is None or score < (old_score if old_score is not None and math.isfinite(old_score) else math.inf):
            chosen[(p.group, p.width)] = p

    fig = _figure(4.0 * len(splits) + 1.0, 4.8)
    axes = fig.subplots(1, len(splits), sharey=True, squeeze=False)[0]
    all_values = _finite([getattr(p, s) for p in pts for s in splits])
    for ax, split in zip(axes, splits):
        for g in groups:
            dots = [(p.width, getattr(p, split)) for p in pts if p.group == g and _finite([getattr(p, split)]).size]
            if dots:
                ax.scatter(*zip(*dots), s=12, color=colors[g], alpha=0.25, linewidths=0)
            line = sorted((w, getattr(p, split)) for (gg, w), p in chosen.items()
                          if gg == g and _finite([getattr(p, split)]).size)
            if line:
                ax.plot(*zip(*line), "-o", color=colors[g], ms=4, lw=1.6)
        ax.set_xscale("log")
        _width_ticks(ax, sorted({p.width for p in pts}))
        ax.set_title(f"{mse_label(split + '_mse')}")
        ax.set_xlabel("width (units in the first hidden layer)")
        ax.grid(True, which="both", alpha=0.25)
    if _wants_log(all_values):
        axes[0].set_yscale("log")
    axes[0].set_ylabel("MSE")
    handles = [Line2D([], [], color=colors[g], marker="o", ms=4, label=g) for g in groups]
    handles.append(Line2D([], [], color="gray", marker="o", ls="", alpha=0.35, label="every trial"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8, frameon=False)
    fig.suptitle(f"MSE against width (line: the best trial by {mse_label(metric)} at each width)")
    return _png(fig)


# ----------------------------------------------------------------------------- fits
def _check_splits(splits: Sequence[Split], d_in: int) -> list[Split]:
    kept = [s for s in splits if s.X.shape[0] > 0]
    if not kept:
        raise ValueError("no data points")
    for s in kept:
        if s.X.ndim != 2 or s.X.shape[1] != d_in or s.y.ndim != 2 or s.y.shape[0] != s.X.shape[0]:
            raise ValueError(f"split {s.name}: expected X (N, {d_in}) and y (N, k), got {s.X.shape} and {s.y.shape}")
    return kept


def plot_fit_1d(splits: Sequence[Split], x_grid: np.ndarray, y_grid: np.ndarray, units: np.ndarray | None = None,
                feature_name: str = "x", target_names: Sequence[str] = ("y",), title: str = "") -> bytes:
    """Data points of every split, the model's curve and its hidden units' contributions.

    Args:
        splits: train/val/test points, ``X`` of shape (N, 1).
        x_grid: (G,) inputs where the model was evaluated.
        y_grid: (G, d_out) the model's outputs there.
        units: (d_out, G, h) each last-layer hidden unit's contribution to each output
            (its activation times its output weight), drawn as thin lines; None for none.
        feature_name, target_names: axis labels.
        title: figure title.

    Returns:
        PNG bytes: one column per output (at most four); the units go in a second row when
        their contributions dwarf the data.

    Raises:
        ValueError: no data, or shapes that do not match.
    """
    kept = _check_splits(splits, 1)
    x_grid = np.asarray(x_grid, dtype=float).reshape(-1)
    y_grid = np.asarray(y_grid, dtype=float).reshape(x_grid.size, -1)
    d_out = min(y_grid.shape[1], 4)
    if units is not None and (units.ndim != 3 or units.shape[1] != x_grid.size or units.shape[0] < d_out):
        raise ValueError(f"units: expected (d_out, {x_grid.size}, h), got {units.shape}")
    ranges = []
    for o in range(d_out):
        data_y = np.concatenate([s.y[:, o] for s in kept] + [y_grid[:, o]])
        lo, hi = float(data_y.min()), float(data_y.max())
        pad = 0.25 * (hi - lo or 1.0)
        ranges.append((lo - pad, hi + pad))
    # Units are drawn over the data as the course did when they live on the data's scale; large
    # opposing contributions (common) would only show as clipped strokes, so they get their own row.
    overlay = units is None or all(
        units[o].min() >= ranges[o][0] - 0.5 * (ranges[o][1] - ranges[o][0])
        and units[o].max() <= ranges[o][1] + 0.5 * (ranges[o][1] - ranges[o][0]) for o in range(d_out))
    rows = 1 if overlay else 2
    fig = _figure(5.0 + 3.5 * d_out, 5.4 if overlay else 7.0)
    grid = fig.subplots(rows, d_out, squeeze=False, sharex=True,
                        gridspec_kw={"height_ratios": [3, 1.4]} if rows == 2 else None)
    for o in range(d_out):
        ax = grid[0, o]
        target = target_names[o] if o < len(target_names) else f"output {o}"
        if units is not None:
            uax = ax if overlay else grid[1, o]
            h = units.shape[2]
            order = np.argsort(-np.abs(units[o]).max(axis=0))[:40]  # the strongest units, if there are many
            for j, k in enumerate(order):
                uax.plot(x_grid, units[o, :, k], lw=1.0, alpha=0.65, color=f"C{(j % 7) + 3}",
                         label=f"hidden units ({h}): activation × output weight" if j == 0 else None)
            if not overlay:
                uax.set_ylabel("unit × weight")
                uax.set_title(f"the {h} last-layer hidden units' contributions to {target} "
                              "(they sum, with the bias, to the model)", fontsize=9)
                uax.grid(True, alpha=0.25)
                uax.set_xlabel(feature_name)
        for s in kept:
            color, marker = SPLIT_STYLE.get(s.name, ("gray", "o"))
            ax.scatter(s.X[:, 0], s.y[:, o], s=14, color=color, marker=marker, alpha=0.75,
                       label=f"{SPLIT_LABEL.get(s.name, s.name)} ({s.X.shape[0]})", zorder=3)
        ax.plot(x_grid, y_grid[:, o], color="black", lw=2.2, label="best model", zorder=4)
        ax.set_ylim(*ranges[o])
        ax.set_xlim(x_grid.min(), x_grid.max())
        if overlay:
            ax.set_xlabel(feature_name)
        ax.set_ylabel(target)
        ax.grid(True, alpha=0.25)
    labelled: dict[str, Any] = {}
    for a in grid.flat:
        for handle, label in zip(*a.get_legend_handles_labels()):
            labelled.setdefault(label, handle)
    fig.legend(labelled.values(), labelled.keys(), loc="outside lower center", ncol=5, fontsize=8, frameon=False)
    fig.suptitle(title or "Best model's fit")
    return _png(fig)


def plot_fit_2d(splits: Sequence[Split], x1: np.ndarray, x2: np.ndarray, z: np.ndarray,
                feature_names: Sequence[str] = ("x1", "x2"), target_names: Sequence[str] = ("y",),
                title: str = "") -> bytes:
    """Filled contours of the model's output over the input plane, one panel per output.

    The data points are drawn on top, filled with their true target in the same colours:
    where a point's colour differs from the background, the model misses it.

    Args:
        splits: train/val/test points, ``X`` of shape (N, 2).
        x1: (G1,) grid along the first input; x2: (G2,) along the second.
        z: (d_out, G2, G1) the model's outputs on the grid.
        feature_names, target_names: axis and panel labels.
        title: figure title.

    Returns:
        PNG bytes (at most four panels).

    Raises:
        ValueError: no data, or shapes that do not match.
    """
    kept = _check_splits(splits, 2)
    z = np.asarray(z, dtype=float)
    if z.ndim != 3 or z.shape[1:] != (len(x2), len(x1)):
        raise ValueError(f"z: expected (d_out, {len(x2)}, {len(x1)}), got {z.shape}")
    d_out = min(z.shape[0], 4)
    fig = _figure(6.0 * d_out + 0.5, 5.2)
    axes = fig.subplots(1, d_out, squeeze=False)[0]
    for o, ax in enumerate(axes):
        truth = np.concatenate([s.y[:, o] for s in kept])
        norm = Normalize(min(truth.min(), z[o].min()), max(truth.max(), z[o].max()))
        cs = ax.contourf(x1, x2, z[o], levels=20, cmap="viridis", norm=norm)
        ax.contour(x1, x2, z[o], levels=10, colors="white", linewidths=0.4, alpha=0.5)
        for s in kept:
            _, marker = SPLIT_STYLE.get(s.name, ("gray", "o"))
            ax.scatter(s.X[:, 0], s.X[:, 1], c=s.y[:, o], cmap="viridis", norm=norm, marker=marker, s=22,
                       edgecolors="white", linewidths=0.6)
        name = target_names[o] if o < len(target_names) else f"output {o}"
        fig.colorbar(cs, ax=ax, label=f"{name} (model: background; data: points)")
        ax.set_xlabel(feature_names[0])
        ax.set_ylabel(feature_names[1])
        if d_out > 1:
            ax.set_title(name)
    handles = [Line2D([], [], ls="", marker=SPLIT_STYLE.get(s.name, ("", "o"))[1], mfc="lightgray", mec="black",
                      label=f"{SPLIT_LABEL.get(s.name, s.name)} ({s.X.shape[0]})") for s in kept]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    fig.suptitle(title or "Best model's fit")
    return _png(fig)


# ----------------------------------------------------------------------------- training
def plot_learning_curves(curves: Sequence[Curve]) -> bytes:
    """Training (solid) and validation (dashed) MSE per epoch of a few trials, log scale.

    Args:
        curves: one per trial, best first (at most ten are drawn).

    Returns:
        PNG bytes.

    Raises:
        ValueError: no curve with a finite value.
    """
    shown = [c for c in curves if _finite(list(c.train) + list(c.val)).size][:10]
    if not shown:
        raise ValueError("no learning curve with a finite value")
    fig = _figure(8.5, 5.0)
    ax = fig.add_subplot()
    values = []
    for i, c in enumerate(shown):
        color = f"C{i}"
        for seq, epochs, style in ((c.train, c.train_epochs, "-"), (c.val, c.val_epochs, "--")):
            y = np.array(seq, dtype=float)
            if y.size:
                x = np.array(epochs, dtype=float) if len(epochs) == y.size else np.arange(y.size)
                ax.plot(x, y, style, color=color, lw=1.5, alpha=0.9)
                values.append(y[np.isfinite(y)])
        ax.plot([], [], "-", color=color, label=c.label)
    allv = np.concatenate(values)
    if allv.size and allv.min() > 0:
        ax.set_yscale("log")
    ax.plot([], [], "-", color="gray", label="training")
    ax.plot([], [], "--", color="gray", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE (chosen restart)")
    ax.set_title(f"Learning curves of the top {len(shown)} trials")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig)


def plot_restart_spread(spreads: Sequence[Spread], metric: str = "restart_val_mse") -> bytes:
    """Final MSE of every restart, one column per trial: a box, the points, the kept restart starred.

    Restarts are the architecture's luck of the draw; a wide column means a single fit would be
    unreliable, and a star above the lowest point means the restart kept by training MSE was
    not the best on this metric.

    Args:
        spreads: one per trial, best first.
        metric: which restart MSE the values are, for the axis label.

    Returns:
        PNG bytes.

    Raises:
        ValueError: no trial with a finite restart value.
    """
    shown = [s for s in spreads if _finite(list(s.values)).size]
    if not shown:
        raise ValueError("no restart values")
    data = [_finite(list(s.values)) for s in shown]
    fig = _figure(max(6.0, 0.8 * len(shown) + 2.5), 5.0)
    ax = fig.add_subplot()
    positions = np.arange(1, len(shown) + 1)
    ax.boxplot(data, positions=positions, widths=0.5, showfliers=False, patch_artist=True,
               boxprops={"facecolor": "tab:blue", "alpha": 0.18}, medianprops={"color": "tab:blue"})
    rng = np.random.default_rng(0)
    starred = False
    for p, s, d in zip(positions, shown, data):
        ax.scatter(p + rng.uniform(-0.12, 0.12, d.size), d, s=16, color="tab:blue", alpha=0.7, zorder=3)
        v = np.array(s.values, dtype=float)
        if s.chosen is not None and 0 <= s.chosen < v.size and math.isfinite(v[s.chosen]):
            ax.scatter([p], [v[s.chosen]], marker="*", s=140, color="tab:red", zorder=4,
                       label=None if starred else "kept restart (lowest training MSE)")
            starred = True
    if _wants_log(np.concatenate(data)):
        ax.set_yscale("log")
    ax.set_xticks(positions, [s.label for s in shown], rotation=30 if len(shown) > 6 else 0, ha="right"
                  if len(shown) > 6 else "center", fontsize=8)
    label = {"restart_val_mse": "validation MSE", "restart_train_mse": "training MSE",
             "restart_test_mse": "test MSE"}.get(metric, metric)
    ax.set_ylabel(f"final {label} of each restart")
    ax.set_title(f"Spread over restarts, top {len(shown)} trials")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, framealpha=0.85)
    return _png(fig)
