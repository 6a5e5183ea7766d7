"""The sweep's insight report: gather a sweep from MLflow and its study, draw it, publish it.

:func:`collect_sweep` reads the sweep through :class:`~mlflow.MlflowClient` alone (runs of the
experiment found by their ``mlpsweep.*`` tags) plus the Optuna study (importances, search
space); :func:`render_pictures` turns that into PNGs with :mod:`tracking.plots`; a
:class:`Report` logs them on the parent run under ``report/`` and writes a self-contained HTML
page. A picture that does not apply (no complete trial, inputs with more than two features) or
fails to draw is skipped with its reason; it never stops the others.
"""
from __future__ import annotations

import base64
import html
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import Run, ViewType

from tracking import plots
from tracking.client import make_client, resolve_tracking_uri
from tracking.forked import Forked, forget_connections
from tracking.search import search_by_tags, tags_filter
from tracking.sweep import TAG, default_storage

__all__ = [
    "REPORT_DIR",
    "SweepNotFoundError",
    "TrialRecord",
    "VerdictRecord",
    "SweepRecord",
    "Picture",
    "Report",
    "collect_sweep",
    "render_pictures",
    "render_html",
    "build_report",
    "log_report_artifacts",
    "write_report",
    "list_sweeps",
    "fmt_mse",
]

log = logging.getLogger(__name__)

REPORT_DIR = "report"
HTML_NAME = "report.html"
TOP_K = 10
TOP_CURVES = 5
TOP_SPREAD = 10
GRID_1D = 400
GRID_2D = 120


class SweepNotFoundError(LookupError):
    """No sweep of that name in the tracking store; ``available`` lists the ones there are."""

    def __init__(self, sweep: str, available: Sequence[str]) -> None:
        self.sweep = sweep
        self.available = list(available)
        found = ", ".join(self.available) if self.available else "none"
        super().__init__(f"no sweep named {sweep!r} in the tracking store; sweeps found: {found}")


def fmt_mse(x: float | None) -> str:
    """How the report prints an MSE: six significant digits, an em dash when absent."""
    return "—" if x is None or not math.isfinite(x) else f"{x:.6g}"


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None or not math.isfinite(x) else f"{x:.{digits}g}"


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class TrialRecord:
    """One trial run as MLflow holds it: tags, params (strings) and final metrics."""

    number: int
    run_id: str
    state: str
    params: dict[str, str]
    metrics: dict[str, float]
    architecture: str = ""
    verified: str = ""
    reason: str = ""
    checkpoint_sha256: str | None = None
    weights_sha256: str | None = None  # of the checkpoint's weights.npz; None: a checkpoint without one

    def metric(self, key: str) -> float | None:
        v = self.metrics.get(key)
        return v if v is not None and math.isfinite(v) else None

    def number_param(self, key: str) -> float | None:
        try:
            return float(self.params[key])
        except (KeyError, ValueError):
            return None

    @property
    def hidden_sizes(self) -> str:
        return self.params.get("hidden_sizes") or self.params.get("width", "?")

    @property
    def group(self) -> str:
        return f"depth {self.params.get('depth', '?')}, {self.params.get('activation', '?')}"


@dataclass(frozen=True)
class VerdictRecord:
    """The backprop verification of one architecture and the trials that used it."""

    architecture: str
    verdict: str  # pass | fail | off | unknown
    run_id: str | None
    max_rel_err_autograd: float | None
    max_rel_err_fd: float | None
    update_max_abs_err: float | None
    n_trials: int


@dataclass(frozen=True)
class SweepRecord:
    """Everything the report shows, as plain data."""

    name: str
    tracking_uri: str
    storage: str
    experiment_id: str
    parent_run_id: str
    metric: str
    spec_yaml: str
    parent_params: dict[str, str]
    parent_metrics: dict[str, float]
    trials: tuple[TrialRecord, ...]
    verdicts: tuple[VerdictRecord, ...]
    importances: dict[str, float] | None  # None: could not be computed (see study_note)
    search_space: dict[str, dict[str, Any]]
    study_note: str = ""

    def complete(self) -> list[TrialRecord]:
        """Complete trials with a finite objective, best first."""
        done = [t for t in self.trials if t.state == "COMPLETE" and t.metric(self.metric) is not None]
        return sorted(done, key=lambda t: (t.metric(self.metric), t.number))  # type: ignore[arg-type, return-value]

    def counts(self) -> dict[str, int]:
        out = {"COMPLETE": 0, "FAIL": 0, "PRUNED": 0}
        for t in self.trials:
            out[t.state] = out.get(t.state, 0) + 1
        return out


@dataclass(frozen=True)
class Picture:
    """One PNG of the report, or the reason it was skipped."""

    name: str  # file stem
    title: str
    caption: str
    png: bytes | None = None
    skipped: str = ""

    @property
    def filename(self) -> str:
        return f"{self.name}.png"


# ----------------------------------------------------------------------------- gathering
def list_sweeps(client: MlflowClient) -> list[str]:
    """Names of the sweeps (parent runs) in the tracking store, sorted."""
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY, max_results=1000)]
    if not ids:
        return []
    runs = search_by_tags(client, ids, {TAG["kind"]: "sweep"})
    return sorted({r.data.tags.get(TAG["sweep"], "") for r in runs} - {""})


def _find_parent(client: MlflowClient, sweep: str, study_uid: str | None) -> tuple[str, Run]:
    experiment = client.get_experiment_by_name(sweep)
    parents: list[Run] = []
    if experiment is not None and experiment.lifecycle_stage == "active":
        parents = list(client.search_runs(
            [experiment.experiment_id],
            tags_filter({TAG["kind"]: "sweep", TAG["sweep"]: sweep}),
            ViewType.ACTIVE_ONLY, max_results=100, order_by=["attributes.start_time DESC"]))
    if experiment is None or not parents:
        raise SweepNotFoundError(sweep, list_sweeps(client))
    matching = [r for r in parents if study_uid and r.data.tags.get(TAG["study_uid"]) == study_uid]
    return experiment.experiment_id, (matching or parents)[0]


def _load_study(sweep: str, storage: str, warn: bool = True) -> tuple[Any, str]:
    """The sweep's Optuna study, or None and why not (logged, with ``warn``); never raises."""
    try:
        from sweeps import optuna_adapter as oa

        return oa.load_study(sweep, storage), ""
    except Exception as exc:  # a missing study or storage only costs the importances
        if warn:
            log.warning("report: cannot load Optuna study %r from %s: %s", sweep, storage, exc)
        return None, f"no Optuna study {sweep!r} in {storage}: {type(exc).__name__}"


def _study_facts(sweep: str, storage: str, importances: bool = True
                 ) -> tuple[str | None, dict[str, float] | None, dict[str, dict[str, Any]], str]:
    """(study uid, importances, search space, note) from the Optuna study; never raises.
    Without ``importances`` (computed elsewhere) they are None and the note is empty. A missing
    study is the caller's to warn of (once it knows the sweep exists at all)."""
    from sweeps import optuna_adapter as oa

    study, note = _load_study(sweep, storage, warn=False)
    if study is None:
        return None, None, {}, note
    uid = study.user_attrs.get(oa.STUDY_UID)
    try:
        space = oa.search_space(study)
    except Exception as exc:
        log.warning("report: cannot read the search space of %r: %s", sweep, exc)
        space = {}
    found, note = _importances_from(study, sweep) if importances else (None, "")
    return uid, found, space, note


def _importances_from(study: Any, sweep: str) -> tuple[dict[str, float] | None, str]:
    """fANOVA importances, or None and why not; never raises."""
    from sweeps import optuna_adapter as oa

    try:
        return oa.param_importances(study), ""
    except Exception as exc:
        log.warning("report: fANOVA importances failed for %r: %s", sweep, exc)
        return None, f"fANOVA failed: {type(exc).__name__}: {exc}"[:300]


def _importances_of(sweep: str, storage: str) -> tuple[dict[str, float] | None, str]:
    """The study's fANOVA importances, or None and why not; never raises. (A missing study is
    :func:`collect_sweep`'s to report, which reads it too: said once, not twice.)"""
    study, note = _load_study(sweep, storage, warn=False)
    return (None, note) if study is None else _importances_from(study, sweep)


def _trial_record(run: Run) -> TrialRecord | None:
    tags = run.data.tags
    try:
        number = int(tags.get(TAG["trial"], ""))
    except ValueError:
        return None
    return TrialRecord(number=number, run_id=run.info.run_id, state=tags.get(TAG["state"], "COMPLETE"),
                       params=dict(run.data.params), metrics=dict(run.data.metrics),
                       architecture=tags.get(TAG["architecture"], ""), verified=tags.get(TAG["verified"], ""),
                       reason=tags.get(TAG["reason"], ""), checkpoint_sha256=tags.get(TAG["sha256"]),
                       weights_sha256=tags.get(TAG["weights_sha256"]))


def _verdicts(client: MlflowClient, experiment_id: str, trials: Sequence[TrialRecord]) -> list[VerdictRecord]:
    from tracking.verification import find_verification

    runs = search_by_tags(client, [experiment_id], {TAG["kind"]: "verification"})
    newest: dict[str, Run] = {}
    for r in sorted(runs, key=lambda r: r.info.start_time or 0):
        if r.info.status == "FINISHED":
            newest[r.data.tags.get(TAG["architecture"], "?")] = r
    used: dict[str, list[TrialRecord]] = {}
    for t in trials:
        if t.architecture:
            used.setdefault(t.architecture, []).append(t)
    for arch in used:
        if arch in newest or all(t.verified == "off" for t in used[arch]):
            continue
        try:  # verified earlier in another experiment of the store: the sweep reused that verdict
            found = find_verification(client, None, arch)
            if found is not None:
                newest[arch] = client.get_run(found[0])
        except Exception as exc:
            log.warning("report: looking up the verification of %s failed: %s", arch, exc)
    out = []
    for arch in sorted(set(newest) | set(used)):
        run = newest.get(arch)
        m = run.data.metrics if run is not None else {}
        if run is not None:
            verdict = run.data.tags.get(TAG["verified"], "unknown")
        else:
            verdict = next((t.verified for t in used.get(arch, []) if t.verified), "unknown")
        out.append(VerdictRecord(arch, verdict, run.info.run_id if run is not None else None,
                                 m.get("max_rel_err_autograd"), m.get("max_rel_err_fd"), m.get("update_max_abs_err"),
                                 len(used.get(arch, []))))
    return out


def _spec_text(client: MlflowClient, run_id: str) -> str:
    try:
        with tempfile.TemporaryDirectory(prefix="mlpsweep-report-") as tmp:
            return Path(client.download_artifacts(run_id, "spec.yaml", tmp)).read_text(encoding="utf-8")
    except Exception as exc:
        log.warning("report: no spec.yaml on run %s: %s", run_id, exc)
        return ""


def collect_sweep(tracking_uri: str | None, sweep: str, storage: str | None = None,
                  client: MlflowClient | None = None, importances: bool = True) -> SweepRecord:
    """Read a sweep's parent run, trial runs, verification runs and study.

    Args:
        tracking_uri: the MLflow store (None: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        sweep: the sweep name (= experiment name).
        storage: the Optuna storage (None: the default beside the MLflow store).
        client: an existing client for that store.
        importances: compute the fANOVA importances (else None, for the caller to fill in).

    Returns:
        The sweep as plain records.

    Raises:
        SweepNotFoundError: the store holds no parent run of that sweep.
        MlflowException: the store cannot be read.
    """
    uri = resolve_tracking_uri(tracking_uri)
    storage = storage or default_storage(uri)
    client = client or make_client(uri, create=False)
    uid, found, space, note = _study_facts(sweep, storage, importances)
    experiment_id, parent = _find_parent(client, sweep, uid)  # no such sweep: that alone is said
    if uid is None:
        log.warning("report: cannot load Optuna study %r from %s (%s)", sweep, storage, note)
    parent_id = parent.info.run_id
    runs = search_by_tags(client, [experiment_id], {TAG["kind"]: "trial", "mlflow.parentRunId": parent_id})
    by_number: dict[int, TrialRecord] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time or 0):  # a re-logged trial: the newest wins
        record = _trial_record(run)
        if record is not None:
            by_number[record.number] = record
    trials = tuple(by_number[n] for n in sorted(by_number))
    return SweepRecord(
        name=sweep, tracking_uri=uri, storage=storage, experiment_id=experiment_id, parent_run_id=parent_id,
        metric=parent.data.params.get("metric", "val_mse"), spec_yaml=_spec_text(client, parent_id),
        parent_params=dict(parent.data.params), parent_metrics=dict(parent.data.metrics), trials=trials,
        verdicts=tuple(_verdicts(client, experiment_id, trials)), importances=found,
        search_space=space, study_note=note,
    )


# ----------------------------------------------------------------------------- pictures
class Skip(Exception):
    """A picture does not apply to this sweep; the message says why."""


def _history(rec: SweepRecord, client: MlflowClient) -> bytes:
    if not rec.complete():
        raise Skip("no complete trial yet")
    points = [plots.HistoryPoint(t.number, t.state, t.metric(rec.metric) if t.state == "COMPLETE" else None)
              for t in rec.trials]
    return plots.plot_history(points, rec.metric, title=f"Optimisation history of {rec.name}")


def _importances(rec: SweepRecord, client: MlflowClient) -> bytes:
    if rec.importances is None:
        raise Skip(rec.study_note or "the Optuna study is not available")
    if not rec.importances:
        raise Skip("needs at least two complete trials and a searched parameter that varies")
    label = plots.mse_label(rec.metric)
    logged = all((t.metric(rec.metric) or 0.0) > 0 for t in rec.complete())  # as param_importances decides
    return plots.plot_importances(rec.importances, target=f"log10({label})" if logged else label)


def _axes(rec: SweepRecord, params: list[dict[str, Any]]) -> list[plots.ParamAxis]:
    if not rec.search_space:
        return plots.infer_axes(params, [k for k in params[0] if k != "hidden_sizes"] if params else None)
    axes = []
    for name, d in rec.search_space.items():
        if d["kind"] == "categorical":
            if len(d["choices"]) > 1:
                axes.append(plots.ParamAxis(name, "categorical", tuple(d["choices"])))
        elif d["low"] != d["high"]:
            axes.append(plots.ParamAxis(name, "log" if d["log"] else "linear", low=d["low"], high=d["high"]))
    return axes


def _typed(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _parallel(rec: SweepRecord, client: MlflowClient) -> bytes:
    done = rec.complete()
    if len(done) < 2:
        raise Skip("needs at least two complete trials")
    params = [{k: _typed(v) for k, v in t.params.items()} for t in done]
    axes = _axes(rec, params)
    if not axes:
        raise Skip("no searched parameter varies")
    return plots.plot_parallel_coordinates(params, [t.metric(rec.metric) for t in done], axes, rec.metric)  # type: ignore[misc]


def _width(rec: SweepRecord, client: MlflowClient) -> bytes:
    done = rec.complete()
    points = [plots.WidthPoint(t.number_param("width") or 0.0, t.group, t.metric("train_mse"), t.metric("val_mse"),
                               t.metric("test_mse")) for t in done]
    points = [p for p in points if p.width > 0]
    if not points:
        raise Skip("no complete trial with a width")
    widths = {p.width for p in points}
    if len(widths) < 2:  # one x: nothing to read off (the top-trials table holds the numbers)
        raise Skip(f"every complete trial has width {widths.pop():g}; search width to see MSE against it")
    return plots.plot_mse_vs_width(points, rec.metric)


def _history_of(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    """A metric's values by step (an epoch of a curve, a restart's index)."""
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def _curves(rec: SweepRecord, client: MlflowClient) -> bytes:
    top = rec.complete()[:TOP_CURVES]
    if not top:
        raise Skip("no complete trial")
    curves = []
    for t in top:
        train, val = (_history_of(client, t.run_id, key) for key in ("curve_train_mse", "curve_val_mse"))
        curves.append(plots.Curve(f"trial {t.number}: {t.hidden_sizes} {t.params.get('activation', '')} "
                                  f"({fmt_mse(t.metric(rec.metric))})",
                                  [train[e] for e in sorted(train)], [val[e] for e in sorted(val)],
                                  sorted(train), sorted(val)))  # a long curve's 100 points at their epochs
    return plots.plot_learning_curves(curves)


def _spread(rec: SweepRecord, client: MlflowClient) -> bytes:
    top = rec.complete()[:TOP_SPREAD]
    if not top:
        raise Skip("no complete trial")
    key = "restart_val_mse" if rec.metric == "val_mse" else "restart_train_mse"
    spreads = []
    for t in top:
        logged = _history_of(client, t.run_id, key)  # a diverged restart's NaN is not logged
        values = [logged.get(r, math.nan) for r in range(max(logged, default=-1) + 1)]
        chosen = t.metric("best_restart")
        spreads.append(plots.Spread(f"#{t.number} {t.hidden_sizes} {t.params.get('activation', '')}", values,
                                    int(chosen) if chosen is not None else None))
    if not any(len(s.values) for s in spreads):
        raise Skip(f"the top trials logged no {key}")
    return plots.plot_restart_spread(spreads, key)


def _stored_spec(rec: SweepRecord) -> Any | None:
    """The sweep's spec from its ``spec.yaml`` artifact; None where there is none, or one this
    version cannot read."""
    if not rec.spec_yaml:
        return None
    try:
        from sweeps.spec import parse_spec

        return parse_spec(rec.spec_yaml, origin="spec.yaml")
    except Exception as exc:
        log.info("report: cannot read the sweep's spec.yaml (%s)", exc)
        return None


def _load_data(rec: SweepRecord, meta: dict[str, Any]) -> Any:
    """The sweep's dataset (:class:`models.data.Arrays`: no torch): from the spec artifact, else
    from the checkpoint's ``extra.data``."""
    from models.data import load_arrays

    spec = _stored_spec(rec)
    if spec is not None:
        d = spec.data
        try:
            return load_arrays(d.dataset, d.validation_fraction, d.seed if d.seed is not None else spec.seed,
                               features=d.features, targets=d.targets, test_path=d.test_path,
                               standardize=d.standardize)
        except Exception as exc:
            log.info("report: spec.yaml does not give the data (%s); using the checkpoint's", exc)
    data = (meta.get("extra") or {}).get("data")
    if not data:
        raise Skip("neither the spec nor the checkpoint says which data the sweep used")
    recipe = {k: data[k] for k in ("features", "targets", "test_path", "standardize") if data.get(k) is not None}
    return load_arrays(data["dataset"], data.get("validation_fraction", 0.2), data.get("seed", 0), **recipe)


def _best_weights(best: TrialRecord, folder: str) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The best trial's weights as NumPy arrays, checked against the digests MLflow records:
    from ``weights.npz`` (no torch), or from ``model.pt`` for a checkpoint written before it."""
    from models.checkpoint import load_state_dict, load_weights

    if best.weights_sha256 is not None:
        return load_weights(folder, best.weights_sha256)
    state, meta = load_state_dict(folder, best.checkpoint_sha256)
    return {name: value.double().numpy() for name, value in state.items()}, meta


def _fit(rec: SweepRecord, client: MlflowClient) -> bytes:
    from models.forward import forward, hidden_layers, output_layer

    done = rec.complete()
    if not done:
        raise Skip("no complete trial")
    best = done[0]
    with tempfile.TemporaryDirectory(prefix="mlpsweep-report-") as tmp:
        try:
            folder = client.download_artifacts(best.run_id, "checkpoint", tmp)
        except Exception as exc:
            raise Skip(f"trial {best.number} has no checkpoint ({type(exc).__name__})") from None
        weights, meta = _best_weights(best, folder)
    sizes: list[int] = list(meta["sizes"])
    if sizes[0] > 2:
        raise Skip(f"the inputs have {sizes[0]} features; the fit is drawn for 1 or 2 only")
    ds = _load_data(rec, meta)
    if ds.n_features != sizes[0]:
        raise Skip(f"the data has {ds.n_features} features but the model takes {sizes[0]}")
    activation = meta["activation"]
    splits = [plots.Split(s, X, y) for s, (X, y) in zip(("train", "val", "test"),
                                                         zip(ds.splits[0::2], ds.splits[1::2]))]
    allX = np.concatenate([s.X for s in splits if s.X.shape[0]])
    scaled = " (standardised)" if ds.standardization is not None else ""
    title = (f"Best model: trial {best.number}, {best.architecture or meta.get('architecture', '')}, "
             f"{plots.mse_label(rec.metric)} {fmt_mse(best.metric(rec.metric))}")
    if sizes[0] == 1:
        x = np.linspace(allX[:, 0].min(), allX[:, 0].max(), GRID_1D)
        a = hidden_layers(weights, sizes, activation, x[:, None])  # (G, h_last)
        y = output_layer(weights, sizes, a)  # (G, d_out)
        units = None
        if len(sizes) > 2:  # each hidden unit's contribution to each output: (d_out, G, h)
            units = a[None, :, :] * weights[f"{len(sizes) - 2}_weight"].astype(np.float64).T[:, None, :]
        return plots.plot_fit_1d(splits, x, y, units, ds.feature_names[0] + scaled,
                                 [n + scaled for n in ds.target_names], title)
    lo, hi = allX.min(axis=0), allX.max(axis=0)
    pad = 0.05 * (hi - lo)
    x1 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], GRID_2D)
    x2 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], GRID_2D)
    g1, g2 = np.meshgrid(x1, x2)  # (G2, G1)
    out = forward(weights, sizes, activation, np.column_stack([g1.ravel(), g2.ravel()]))  # (G2*G1, d_out)
    z = out.T.reshape(-1, GRID_2D, GRID_2D)
    return plots.plot_fit_2d(splits, x1, x2, z, [n + scaled for n in ds.feature_names],
                             [n + scaled for n in ds.target_names], title)


Drawer = Callable[[SweepRecord, MlflowClient], bytes]
PICTURES: tuple[tuple[str, str, str, Drawer], ...] = (
    ("history", "Optimisation history",
     "The objective of every trial in order, and the best found so far.", _history),
    ("importances", "Hyperparameter importances",
     "How much of the variation in log10(objective) each searched parameter explains (Optuna's fANOVA).",
     _importances),
    ("parallel_coordinates", "Parallel coordinates",
     "Every complete trial as a line through its parameter values, coloured by its objective.", _parallel),
    ("mse_vs_width", "MSE against width",
     "Training, validation and test MSE as the hidden layers widen, one line per depth and activation: "
     "overfitting shows where training MSE keeps falling while validation and test MSE rise.", _width),
    ("fit", "The best model's fit",
     "The data and the best trial's model; for one input, thin lines are its hidden units' contributions.",
     _fit),
    ("learning_curves", "Learning curves",
     "Training and validation MSE per epoch of the top trials (the restart each trial kept).", _curves),
    ("restart_spread", "Spread over restarts",
     "Final MSE of every restart of the top trials; the star marks the restart kept by training MSE.", _spread),
)


def render_pictures(rec: SweepRecord, client: MlflowClient | None = None,
                    names: Collection[str] | None = None) -> list[Picture]:
    """Draw the pictures of the report; one that does not apply or fails is skipped, with why.

    Args:
        rec: from :func:`collect_sweep`.
        client: a client for ``rec.tracking_uri`` (made if None).
        names: draw only these (default: all).

    Returns:
        One :class:`Picture` per entry of :data:`PICTURES` drawn, in order.
    """
    client = client or make_client(rec.tracking_uri)
    out = []
    for name, title, caption, draw in PICTURES:
        if names is not None and name not in names:
            continue
        t0 = time.perf_counter()
        try:
            out.append(Picture(name, title, caption, png=draw(rec, client)))
        except Skip as why:
            out.append(Picture(name, title, caption, skipped=str(why)))
        except Exception as exc:  # a broken picture never stops the report
            log.warning("report: the %s picture failed: %s: %s", name, type(exc).__name__, exc)
            out.append(Picture(name, title, caption, skipped=f"could not draw it: {type(exc).__name__}: {exc}"[:300]))
        log.debug("report: %s in %.2f s", name, time.perf_counter() - t0)
    return out


# ----------------------------------------------------------------------------- HTML
_CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d232b}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:26px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #d5dae1;padding-bottom:4px}
.sub{color:#5b6675;margin:0 0 16px}
.cards{display:flex;flex-wrap:wrap;gap:10px}.card{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:8px 14px;min-width:110px}
.card b{display:block;font-size:19px}.card span{color:#5b6675;font-size:13px}
figure{background:#fff;border:1px solid #dde2e8;border-radius:8px;margin:12px 0;padding:12px}
figure img{max-width:100%;height:auto;display:block;margin:0 auto}figcaption{color:#4a5563;font-size:14px;margin-top:6px}
.skipped{color:#8a5a00;background:#fff8e6;border:1px solid #f0d9a0;border-radius:6px;padding:8px 12px}
table{border-collapse:collapse;background:#fff;width:100%;font-size:14px}
th,td{border:1px solid #dde2e8;padding:4px 8px;text-align:left}th{background:#eef1f5}
td.num{text-align:right;font-variant-numeric:tabular-nums;font-family:ui-monospace,Menlo,Consolas,monospace}
tbody tr:nth-child(even){background:#fafbfc}
.pass{color:#0a7d32;font-weight:600}.fail{color:#b3261e;font-weight:600}
pre{background:#fff;border:1px solid #dde2e8;border-radius:8px;padding:12px;overflow:auto;font-size:13px}
details summary{cursor:pointer;margin:8px 0}footer{color:#6b7684;font-size:13px;margin-top:32px}
"""


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


@dataclass(frozen=True)
class Cell:
    """One table cell: its text (escaped when rendered), a ``data-key`` naming the value, its look."""

    text: str
    key: str = ""
    num: bool = False
    cls: str = ""


def _table(table_id: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]], row_attrs: Sequence[str] = ()) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = []
        for c in row:
            classes = " ".join(x for x in ("num" if c.num else "", c.cls) if x)
            attrs = (f' class="{_e(classes)}"' if classes else "") + (f' data-key="{_e(c.key)}"' if c.key else "")
            cells.append(f"<td{attrs}>{_e(c.text)}</td>")
        body.append(f"<tr{row_attrs[i] if i < len(row_attrs) else ''}>{''.join(cells)}</tr>")
    return (f'<table id="{_e(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


TRIAL_HEADERS = ("rank", "trial", "hidden sizes", "activation", "optimizer", "lr", "train MSE", "val MSE",
                 "test MSE", "verified")


def _trial_rows(trials: Sequence[TrialRecord]) -> tuple[list[list[Cell]], list[str]]:
    rows, attrs = [], []
    for rank, t in enumerate(trials, start=1):
        rows.append([
            Cell(str(rank), "rank", True), Cell(str(t.number), "trial", True), Cell(t.hidden_sizes, "hidden_sizes"),
            Cell(t.params.get("activation", "—"), "activation"), Cell(t.params.get("optimizer", "—"), "optimizer"),
            Cell(_fmt(t.number_param("lr"), 4), "lr", True), Cell(fmt_mse(t.metric("train_mse")), "train_mse", True),
            Cell(fmt_mse(t.metric("val_mse")), "val_mse", True), Cell(fmt_mse(t.metric("test_mse")), "test_mse", True),
            Cell(t.verified or "—", "verified", cls=_verdict_class(t.verified)),
        ])
        attrs.append(f' data-run-id="{_e(t.run_id)}"')
    return rows, attrs


def _verdict_class(verdict: str) -> str:
    return verdict if verdict in ("pass", "fail") else ""


def _units(rec: SweepRecord) -> str:
    """`` (standardised: every MSE in standard units)`` when the sweep's data are, else ``""``."""
    from models.data import standardized

    spec = _stored_spec(rec)  # without one, the dataset param decides
    dataset, standardize = ((spec.data.dataset, spec.data.standardize) if spec
                            else (rec.parent_params.get("dataset", ""), False))
    return " (standardised: every MSE in standard units)" if standardized(dataset, standardize) else ""


def render_html(rec: SweepRecord, pictures: Sequence[Picture], top_k: int = TOP_K) -> str:
    """The self-contained report page: plots as data URIs, inline CSS, no scripts, no links out."""
    counts = rec.counts()
    done = rec.complete()
    best = done[0] if done else None
    cards = [
        (str(len(rec.trials)), "trials"), (str(counts.get("COMPLETE", 0)), "complete"),
        (str(counts.get("FAIL", 0)), "failed"), (str(counts.get("PRUNED", 0)), "pruned"),
        (fmt_mse(best.metric(rec.metric)) if best else "—", f"best {plots.mse_label(rec.metric)}"),
        (fmt_mse(best.metric("test_mse")) if best else "—", "its test MSE"),
        (f"#{best.number}" if best else "—", "best trial"),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>mlpsweep report: {_e(rec.name)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>Sweep <code>{_e(rec.name)}</code></h1>",
        f'<p class="sub">method {_e(rec.parent_params.get("method", "?"))} · dataset '
        f'{_e(rec.parent_params.get("dataset", "?"))}{_e(_units(rec))} · objective {_e(rec.metric)} (minimised) · '
        f"verification {_e(rec.parent_params.get('verify', '?'))}</p>",
        '<div class="cards" id="counts">'
        + "".join(f"<div class=card><b>{_e(v)}</b><span>{_e(k)}</span></div>" for v, k in cards) + "</div>",
    ]
    parts.append(f"<h2>Top {min(top_k, len(done))} trials by {_e(rec.metric)}</h2>")
    if done:
        rows, attrs = _trial_rows(done[:top_k])
        parts.append(_table("top-trials", TRIAL_HEADERS, rows, attrs))
    else:
        parts.append('<p class="skipped">No complete trial yet.</p>')
    for pic in pictures:
        parts.append(f'<h2 id="{_e(pic.name)}">{_e(pic.title)}</h2>')
        if pic.png is not None:
            data = base64.b64encode(pic.png).decode("ascii")
            parts.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_e(pic.title)}">'
                         f"<figcaption>{_e(pic.caption)}</figcaption></figure>")
        else:
            parts.append(f'<p class="skipped">Not drawn: {_e(pic.skipped)}</p>')
    parts.append("<h2>Backprop verification per architecture</h2>")
    if rec.verdicts:
        vrows = [[Cell(v.architecture, "architecture"), Cell(v.verdict, "verdict", cls=_verdict_class(v.verdict)),
                  Cell(str(v.n_trials), "n_trials", True), Cell(_fmt(v.max_rel_err_autograd), "max_rel_err_autograd", True),
                  Cell(_fmt(v.max_rel_err_fd), "max_rel_err_fd", True),
                  Cell(_fmt(v.update_max_abs_err), "update_max_abs_err", True)] for v in rec.verdicts]
        table = _table("verification", ("architecture", "verdict", "trials", "max rel. error vs autograd",
                                        "max rel. error vs finite differences", "SGD update max abs. error"), vrows)
        parts.append(table)
    else:
        parts.append('<p class="skipped">No verification recorded for this sweep.</p>')
    others = [t for t in rec.trials if t not in done[:top_k]]
    if others:
        rows = []
        for t in others:
            rows.append([Cell(str(t.number), "trial", True), Cell(t.state, "state"), Cell(t.hidden_sizes, "hidden_sizes"),
                         Cell(t.params.get("activation", "—"), "activation"), Cell(t.params.get("optimizer", "—"), "optimizer"),
                         Cell(fmt_mse(t.metric("train_mse")), "train_mse", True),
                         Cell(fmt_mse(t.metric("val_mse")), "val_mse", True),
                         Cell(fmt_mse(t.metric("test_mse")), "test_mse", True), Cell(t.reason[:200], "reason")])
        parts.append(f"<details><summary>The other {len(others)} trials</summary>"
                     + _table("other-trials", ("trial", "state", "hidden sizes", "activation", "optimizer", "train MSE",
                                               "val MSE", "test MSE", "reason"), rows) + "</details>")
    parts.append("<h2>Spec</h2>")
    parts.append(f'<pre id="spec">{_e(rec.spec_yaml) if rec.spec_yaml else "(no spec.yaml on the parent run)"}</pre>')
    parts.append(f"<footer>MLflow store {_e(rec.tracking_uri)} · experiment {_e(rec.experiment_id)} · parent run "
                 f"{_e(rec.parent_run_id)} · Optuna storage {_e(rec.storage)}"
                 f"{(' · ' + _e(rec.study_note)) if rec.study_note else ''} · generated "
                 f"{_e(time.strftime('%Y-%m-%d %H:%M:%S'))}</footer>")
    parts.append("</main></body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- publishing
@dataclass
class Report:
    """A collected and drawn sweep, ready to write to disk or log to MLflow."""

    record: SweepRecord
    pictures: list[Picture]
    client: MlflowClient = field(repr=False)

    def html(self) -> str:
        return render_html(self.record, self.pictures)

    def write(self, out_dir: str | Path) -> Path:
        """Write the PNGs and ``report.html`` into ``out_dir`` (created); returns the HTML's path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for pic in self.pictures:
            if pic.png is not None:
                (out / pic.filename).write_bytes(pic.png)
        page = out / HTML_NAME
        page.write_text(self.html(), encoding="utf-8")
        return page

    def log(self) -> list[str]:
        """Log the PNGs and the HTML page on the parent run under ``report/``; returns their artifact paths.

        Raises:
            MlflowException: the artifact store refused.
        """
        with tempfile.TemporaryDirectory(prefix="mlpsweep-report-") as tmp:
            self.write(tmp)
            names = sorted(p.name for p in Path(tmp).iterdir())
            self.client.log_artifacts(self.record.parent_run_id, tmp, artifact_path=REPORT_DIR)
        return [f"{REPORT_DIR}/{n}" for n in names]


# About half the drawing time, and no model: a forked child's OpenMP or BLAS pool is broken if
# the parent had used one (the fit picture runs the best model, so it stays here).
CHILD_PICTURES = ("mse_vs_width", "learning_curves", "restart_spread")


def _render_forked(record: SweepRecord, names: Collection[str]) -> list[Picture]:
    client = make_client(record.tracking_uri)
    forget_connections(client)
    return render_pictures(record, client, names)


def build_report(tracking_uri: str | None, sweep: str, storage: str | None = None) -> Report:
    """Collect a sweep and draw its pictures.

    Args:
        tracking_uri: the MLflow store (None: the default).
        sweep: the sweep name.
        storage: the Optuna storage (None: the default beside the MLflow store).

    Returns:
        The :class:`Report`.

    Raises:
        SweepNotFoundError: no such sweep in the store.
        MlflowException: the store cannot be read.
    """
    uri = resolve_tracking_uri(tracking_uri)
    storage = storage or default_storage(uri)
    # Three parts on two cores: fANOVA (the slowest) and half the pictures in forked children.
    fanova = Forked(_importances_of, sweep, storage)
    try:
        client = make_client(uri, create=False)
        record = collect_sweep(uri, sweep, storage, client=client, importances=False)
    except BaseException:
        fanova.cancel()
        raise
    drawn = Forked(_render_forked, record, CHILD_PICTURES)
    try:
        found, note = fanova.get()
    except RuntimeError as exc:  # the child died: the report goes on without importances
        found, note = None, f"fANOVA failed: {str(exc).strip().splitlines()[-1]}"[:300]
    record = replace(record, importances=found, study_note=note or record.study_note)
    pictures = render_pictures(record, client, [p[0] for p in PICTURES if p[0] not in CHILD_PICTURES])
    try:
        pictures += drawn.get()
    except RuntimeError as exc:
        log.warning("report: the process drawing %s failed; drawing them here: %s", ", ".join(CHILD_PICTURES), exc)
        pictures += render_pictures(record, client, CHILD_PICTURES)
    order = [p[0] for p in PICTURES]
    return Report(record, sorted(pictures, key=lambda p: order.index(p.name)), client)


def write_report(tracking_uri: str | None, sweep: str, storage: str | None, out_dir: str | Path) -> Path:
    """Write the sweep's PNGs and self-contained ``report.html`` into ``out_dir``.

    Args:
        tracking_uri: the MLflow store (None: the default).
        sweep: the sweep name.
        storage: the Optuna storage (None: the default beside the MLflow store).
        out_dir: the folder to write (created if missing).

    Returns:
        The path of ``report.html``.

    Raises:
        SweepNotFoundError: no such sweep in the store.
        MlflowException: the store cannot be read.
    """
    return build_report(tracking_uri, sweep, storage).write(out_dir)


def log_report_artifacts(tracking_uri: str | None, sweep: str, storage: str | None = None) -> list[str]:
    """Draw the sweep's pictures and log them (and the HTML page) on its parent run under ``report/``.

    Made to end ``mlpsweep run``: it never raises for a picture or the store; whatever goes
    wrong is logged as a warning and the pictures that could be drawn are still logged.

    Args:
        tracking_uri: the MLflow store (None: the default).
        sweep: the sweep name.
        storage: the Optuna storage (None: the default beside the MLflow store).

    Returns:
        The artifact paths logged (e.g. ``report/history.png``); empty if nothing could be logged.
    """
    t0 = time.perf_counter()
    try:
        report = build_report(tracking_uri, sweep, storage)
        paths = report.log()
    except Exception as exc:
        log.warning("report: could not log the report of sweep %r: %s: %s", sweep, type(exc).__name__, exc)
        return []
    log.info("report: logged %d artifacts for %s in %.1f s", len(paths), sweep, time.perf_counter() - t0)
    return paths
