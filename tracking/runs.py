"""What a trial run holds in MLflow: tag names, metric rows, thinned curves. No I/O here."""
from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Any, Iterable, Sequence

if TYPE_CHECKING:  # MLflow is the writer process's: the sweep driver never imports it; torch (the
    from mlflow.entities import Metric  # records' training config) comes with the driver's trial code

    from workers.records import TrialResult

__all__ = ["TAG", "CURVE_POINTS", "CURVES_FILE", "curve_steps", "trial_metrics", "metric", "chunks", "finite_or_none"]

TAG = {
    "kind": "mlpsweep.kind",
    "sweep": "mlpsweep.sweep",
    "trial": "mlpsweep.trial",
    "architecture": "mlpsweep.architecture",
    "verified": "mlpsweep.verified",
    "run_key": "mlpsweep.run_key",
    "node": "mlpsweep.node",
    "state": "mlpsweep.state",
    "reason": "mlpsweep.reason",
    "sha256": "mlpsweep.checkpoint_sha256",
    "weights_sha256": "mlpsweep.weights_sha256",
    "study_uid": "mlpsweep.study_uid",
    "restarts": "mlpsweep.restart_status",  # JSON list: converged | max_epochs | diverged: … per restart
    "cobatched": "mlpsweep.cobatched",  # trials trained in this one's job (train_seconds is its share)
}
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
CURVE_POINTS = 100  # learning-curve points per metric; every epoch is in the run's curves.json
CURVES_FILE = "curves.json"


def metric(key: str, value: float | None, step: int = 0, ts: int | None = None) -> Metric | None:
    from mlflow.entities import Metric

    if value is None or not math.isfinite(value):
        return None  # MLflow holds finite values only; a missing value is absent, not NaN
    return Metric(key, float(value), ts or int(time.time() * 1000), step)


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def curve_steps(n: int, points: int = CURVE_POINTS) -> list[int]:
    """At most ``points`` evenly spaced epochs of an ``n``-epoch curve, always the first and last.
    Each MLflow metric value costs a row insert (~0.1 ms on SQLite), and a chart of 100 points
    shows what 2,000 do; the run's ``curves.json`` artifact keeps every epoch."""
    if n <= points:
        return list(range(n))
    stride = -(-(n - 1) // (points - 1))
    return sorted({*range(0, n - 1, stride), n - 1})


def trial_metrics(result: TrialResult) -> list[Metric]:
    """A trial's finite metrics: finals (step 0), per restart (step = restart), curves (step = epoch)."""
    ts = int(time.time() * 1000)
    metrics = [
        metric("train_mse", result.train_mse, 0, ts),
        metric("val_mse", result.val_mse, 0, ts),
        metric("test_mse", result.test_mse, 0, ts),
        metric("best_restart", result.best_restart, 0, ts),
        metric("train_seconds", result.train_seconds, 0, ts),
    ]
    for name, values in (("restart_train_mse", result.restart_train_mse), ("restart_val_mse", result.restart_val_mse),
                         ("restart_test_mse", result.restart_test_mse)):
        metrics += [metric(name, v, r, ts) for r, v in enumerate(values)]
    for name, curve in (("curve_train_mse", result.train_curve), ("curve_val_mse", result.val_curve)):
        metrics += [metric(name, curve[e], e, ts) for e in curve_steps(len(curve))]
    metrics += [metric("intermediate_value", v, e, ts) for e, v in result.intermediate]
    return [m for m in metrics if m is not None]
