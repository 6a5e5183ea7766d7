"""What a sweep writes to MLflow: one experiment, a parent run, a child run per trial.

All writes go through one background thread (:class:`SweepTracker` queues them), so the sweep
driver never waits on MLflow for a value; every run is written with a few ``log_batch`` calls.
Trial runs carry a deterministic run key (``mlpsweep.run_key``), looked up before a run is
created: a trial logged again (a retried write, a resumed driver) keeps its finished run, and a
half-written one is replaced — never two runs, never a metric logged twice.
"""
from __future__ import annotations

import json
import logging
import math
import os
import queue
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME, MLFLOW_SOURCE_NAME

from models.checkpoint import ARCH_FILE, save_checkpoint
from tracking.client import ensure_experiment, make_client, resolve_tracking_uri
from workers.records import TrialConfig, TrialResult

__all__ = ["SweepTracker", "SweepRunInfo", "default_storage", "artifact_root_for", "TAG"]

log = logging.getLogger(__name__)

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
    "study_uid": "mlpsweep.study_uid",
    "restarts": "mlpsweep.restart_status",  # JSON list: converged | max_epochs | diverged: … per restart
}
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
CURVE_POINTS = 200  # learning-curve points per metric; every epoch is in the run's curves.json
CURVES_FILE = "curves.json"


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser()


def default_storage(tracking_uri: str | None) -> str:
    """The Optuna storage beside the MLflow store: ``optuna.db`` next to a SQLite ``mlflow.db``,
    else ``optuna.db`` in the current directory."""
    db = _sqlite_path(resolve_tracking_uri(tracking_uri))
    folder = db.parent if db is not None else Path(".")
    return f"sqlite:///{(folder / 'optuna.db').as_posix()}"


def artifact_root_for(tracking_uri: str | None) -> str | None:
    """Artifacts of a local SQLite store go in ``mlartifacts/`` beside it; a server decides itself."""
    db = _sqlite_path(resolve_tracking_uri(tracking_uri))
    if db is None:
        return None
    return (db.resolve().parent / "mlartifacts").as_uri()


@dataclass(frozen=True)
class SweepRunInfo:
    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    resumed: bool


def _metric(key: str, value: float | None, step: int = 0, ts: int | None = None) -> Metric | None:
    if value is None or not math.isfinite(value):
        return None  # MLflow holds finite values only; a missing value is absent, not NaN
    return Metric(key, float(value), ts or int(time.time() * 1000), step)


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class SweepTracker:
    """The sweep's MLflow writer. Reads (parent lookup, verdicts) are synchronous; writes are
    queued to one background thread. Call :meth:`close` to drain the queue.

    Args:
        tracking_uri: MLflow store (None: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        sweep: the sweep name = experiment name = parent run name.
    """

    def __init__(self, tracking_uri: str | None, sweep: str, *, retry_seconds: float | None = None) -> None:
        self.retry_seconds = float(os.environ.get("MLPSWEEP_TRACKING_RETRY_S", 180)) if retry_seconds is None \
            else retry_seconds
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client: MlflowClient = make_client(self.tracking_uri)
        self.sweep = sweep
        self.experiment_id = ensure_experiment(self.client, sweep, artifact_root_for(self.tracking_uri))
        self.parent_run_id: str | None = None
        self.study_uid = ""
        self._queue: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._errors: list[str] = []
        self._stored: set[int] = set()  # trial numbers with a run in the store when the sweep opened
        self._progress: list[Metric] = []  # parent-run history not yet written
        self._progress_lock = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="mlpsweep-tracking", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- background writer
    def _drain(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                self._queue.task_done()
                return
            try:
                job()
            except Exception as exc:  # keep writing the rest; report at close
                log.exception("MLflow write failed")
                self._errors.append(f"{type(exc).__name__}: {exc}"[:300])
            finally:
                self._queue.task_done()

    def submit(self, job: Callable[[], None]) -> None:
        self._queue.put(job)

    def _retrying(self, what: str, write: Callable[[], None]) -> str | None:
        """Run an idempotent write until it succeeds or the retry budget is spent.

        MLflow's REST client already retries 408/429/5xx and refused connections with backoff;
        this outer loop covers longer outages (a restarted tracking server). Returns None on
        success, else the last error.
        """
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.5
        while True:
            try:
                write()
                return None
            except Exception as exc:  # any store error: retry, the write is idempotent
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                if time.monotonic() + delay > deadline:
                    log.error("MLflow %s failed, giving up after %.0f s: %s", what, self.retry_seconds, error)
                    return error
                log.warning("MLflow %s failed (%s); retrying in %.1f s", what, error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    def flush(self) -> None:
        self._queue.join()

    def close(self) -> list[str]:
        """Write everything queued, stop the writer, return the errors met (if any)."""
        self._queue.put(None)
        self._thread.join()
        return self._errors

    # ----------------------------------------------------------------- parent run
    def open_parent(self, spec_yaml: str, study_uid: str, params: dict[str, Any]) -> SweepRunInfo:
        """Find the sweep's parent run (a resumed sweep reuses it) or create it."""
        self.study_uid = study_uid
        found = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{TAG['kind']}` = 'sweep' and tags.`{TAG['study_uid']}` = '{study_uid}'",
            max_results=1,
        )
        if found:
            self.parent_run_id = found[0].info.run_id
            if found[0].info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
            self._stored = self._stored_trials()
            return SweepRunInfo(self.tracking_uri, self.experiment_id, self.parent_run_id, True)
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.sweep,
            tags={TAG["kind"]: "sweep", TAG["sweep"]: self.sweep, TAG["study_uid"]: study_uid,
                  MLFLOW_SOURCE_NAME: "mlpsweep"},
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()][:100])
        self.client.log_text(self.parent_run_id, spec_yaml, "spec.yaml")
        return SweepRunInfo(self.tracking_uri, self.experiment_id, self.parent_run_id, False)

    def _stored_trials(self) -> set[int]:
        """Trial numbers of this study that already have a run (one paged search, on resume)."""
        numbers: set[int] = set()
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id],
                                           filter_string=f"tags.`{TAG['run_key']}` LIKE '{self.study_uid}:%'",
                                           max_results=5000, page_token=token)
            numbers.update(int(r.data.tags[TAG["run_key"]].rsplit(":", 1)[1]) for r in page)
            token = page.token
            if not token:
                return numbers

    def log_progress(self, number: int, objective: float | None, best: float | None) -> None:
        """Optimisation history on the parent run: the trial's objective and the best so far.
        Points are gathered and written by one ``log_batch`` whenever the writer gets to them."""
        metrics = [m for m in (_metric("trial_objective", objective, number), _metric("best_so_far", best, number)) if m]
        if not (self.parent_run_id and metrics):
            return
        with self._progress_lock:
            first = not self._progress
            self._progress.extend(metrics)
        if first:
            self.submit(self._write_progress)

    def _write_progress(self) -> None:
        with self._progress_lock:
            metrics, self._progress = self._progress, []
        run_id = self.parent_run_id
        if run_id:
            for chunk in _chunks(metrics, MAX_METRICS_PER_BATCH):
                self._retrying("progress", lambda: self.client.log_batch(run_id, metrics=list(chunk)))

    def close_parent(self, summary: dict[str, float | int | None], status: str = "FINISHED") -> None:
        run_id = self.parent_run_id
        if not run_id:
            return
        metrics = [m for m in (_metric(k, v) for k, v in summary.items() if v is not None) if m]

        def write() -> None:
            if metrics:
                self.client.log_batch(run_id, metrics=metrics)
            self.client.set_terminated(run_id, status)

        self.submit(lambda: self._retrying("parent run", write) and None)

    # ----------------------------------------------------------------- verification
    def find_verdict(self, architecture: str) -> str | None:
        """A verdict already recorded anywhere in this store, or None (also when the store is
        unreachable: verifying again is cheap, stalling the sweep is not)."""
        from tracking.verification import find_verification

        try:
            found = find_verification(self.client, None, architecture)
        except Exception as exc:
            log.warning("could not look up the verification of %s: %s", architecture, exc)
            return None
        return found[1] if found else None

    def record_verification(self, report: Any) -> None:
        """Queue a verification run (once per architecture: a retried write finds the first)."""
        from tracking.verification import find_verification, record_verification

        parent, sweep = self.parent_run_id, self.sweep

        def write() -> None:
            if find_verification(self.client, self.experiment_id, report.architecture) is None:
                record_verification(self.client, self.experiment_id, report, parent_run_id=parent, sweep=sweep)

        self.submit(lambda: self._retrying("verification run", write) and None)

    # ----------------------------------------------------------------- trials
    def run_key(self, number: int) -> str:
        return f"{self.study_uid}:{number}"

    def log_trial(self, config: TrialConfig, result: TrialResult, *, verified: str, architecture: str,
                  on_done: Callable[[str | None], None] | None = None) -> None:
        """Queue one trial's run: params, final and per-restart metrics, curves, checkpoint.

        ``on_done(error)`` is called from the writer thread once the run is complete (error None)
        or the retry budget is spent (error says why).
        """
        attempts = []

        def write() -> None:
            attempts.append(1)
            self._write_trial(config, result, verified, architecture, look_up=len(attempts) > 1)

        def job() -> None:
            error = self._retrying(f"trial {config.number}", write)
            if on_done is not None:
                on_done(error)

        self.submit(job)

    def logged_outcome(self, number: int) -> dict[str, Any] | None:
        """A trial's completed run (state, metrics) if its write finished, else None."""
        run = self.find_trial_run(number)
        if run is None or run.info.status == "RUNNING":
            return None
        return {"state": run.data.tags.get(TAG["state"], "FAIL"), "reason": run.data.tags.get(TAG["reason"]),
                "metrics": dict(run.data.metrics), "node": run.data.tags.get(TAG["node"])}

    def close_partial_run(self, number: int) -> None:
        """A run a killed driver left half-written: mark it KILLED so none stays RUNNING."""
        run = self.find_trial_run(number)
        if run is not None and run.info.status == "RUNNING":
            self.client.set_tag(run.info.run_id, TAG["state"], "INTERRUPTED")
            self.client.set_terminated(run.info.run_id, "KILLED")

    def find_trial_run(self, number: int) -> Any | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TAG['run_key']}` = '{self.run_key(number)}'", max_results=5
        )
        return runs[0] if runs else None

    def _write_trial(self, config: TrialConfig, result: TrialResult, verified: str, architecture: str,
                     look_up: bool = False) -> None:
        """One trial's run in four calls: create (with every tag), one ``log_batch`` (params and
        metrics; more only past 1000 values), the checkpoint, terminate. The run key is looked
        up first only where a run may exist: a resumed sweep's trial or a retried write."""
        if look_up or config.number in self._stored:
            existing = self.find_trial_run(config.number)
            if existing is not None and existing.info.status in ("FINISHED", "FAILED"):
                log.info("trial %s already logged as run %s", config.number, existing.info.run_id)
                return
            if existing is not None:
                # A half-written run from an earlier attempt (the store failed mid-write): metric
                # history appends, so replace the run rather than log into it twice.
                self.client.delete_run(existing.info.run_id)
        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_run_id or "",
            MLFLOW_RUN_NAME: f"trial-{config.number}",
            TAG["kind"]: "trial",
            TAG["sweep"]: self.sweep,
            TAG["trial"]: str(config.number),
            TAG["architecture"]: architecture,
            TAG["verified"]: verified,
            TAG["run_key"]: self.run_key(config.number),
            TAG["state"]: result.state,
            "number": str(config.number),
            "state": result.state,
        }
        if result.node:
            tags[TAG["node"]] = result.node
        if result.reason:
            tags[TAG["reason"]] = result.reason[:5000]
        if result.restart_status:
            tags[TAG["restarts"]] = json.dumps(list(result.restart_status))[:5000]
        params = {**config.params, "hidden_sizes": "-".join(map(str, config.train.sizes[1:-1]))}
        param_list = [Param(k, str(v)) for k, v in params.items()][:MAX_PARAMS_PER_BATCH]
        metrics = _trial_metrics(result)
        with tempfile.TemporaryDirectory(prefix="mlpsweep-run-") as tmp:
            if result.checkpoint is not None and result.checkpoint.state_dict:
                tags[TAG["sha256"]] = self._save_checkpoint(str(Path(tmp) / "checkpoint"), config, result)
            if len(result.train_curve) > CURVE_POINTS or len(result.val_curve) > CURVE_POINTS:
                (Path(tmp) / CURVES_FILE).write_text(json.dumps(
                    {"train_mse": _finite_or_none(result.train_curve), "val_mse": _finite_or_none(result.val_curve)}))
            run_id = self.client.create_run(self.experiment_id, run_name=f"trial-{config.number}",
                                            tags=tags).info.run_id
            first = MAX_METRICS_PER_BATCH - len(param_list)
            self.client.log_batch(run_id, params=param_list, metrics=metrics[:first])
            for chunk in _chunks(metrics[first:], MAX_METRICS_PER_BATCH):
                self.client.log_batch(run_id, metrics=list(chunk))
            if any(Path(tmp).iterdir()):
                self.client.log_artifacts(run_id, tmp)
        self.client.set_terminated(run_id, "FAILED" if result.state == "FAIL" else "FINISHED")

    def _save_checkpoint(self, folder: str, config: TrialConfig, result: TrialResult) -> str:
        """Write the trial's checkpoint files into ``folder`` (created); returns their sha256."""
        ckpt = result.checkpoint
        assert ckpt is not None
        save_checkpoint(folder, ckpt.state_dict, ckpt.sizes, ckpt.activation,
                        extra={"trial": config.number, "sweep": self.sweep, "params": config.params,
                               "data": {"dataset": config.data.dataset,
                                        "validation_fraction": config.data.validation_fraction,
                                        "seed": config.data.seed}})
        return str(json.loads((Path(folder) / ARCH_FILE).read_text())["sha256"])


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [v if math.isfinite(v) else None for v in values]


def curve_steps(n: int, points: int = CURVE_POINTS) -> list[int]:
    """At most ``points`` evenly spaced epochs of an ``n``-epoch curve, always the first and last.
    Each MLflow metric value costs a row insert (~0.1 ms on SQLite), and a chart of 200 points
    shows what 2,000 do; the run's ``curves.json`` artifact keeps every epoch."""
    if n <= points:
        return list(range(n))
    stride = -(-(n - 1) // (points - 1))
    return sorted({*range(0, n - 1, stride), n - 1})


def _trial_metrics(result: TrialResult) -> list[Metric]:
    """A trial's finite metrics: finals (step 0), per restart (step = restart), curves (step = epoch)."""
    ts = int(time.time() * 1000)
    metrics = [
        _metric("train_mse", result.train_mse, 0, ts),
        _metric("val_mse", result.val_mse, 0, ts),
        _metric("test_mse", result.test_mse, 0, ts),
        _metric("best_restart", result.best_restart, 0, ts),
        _metric("train_seconds", result.train_seconds, 0, ts),
    ]
    for name, values in (("restart_train_mse", result.restart_train_mse), ("restart_val_mse", result.restart_val_mse),
                         ("restart_test_mse", result.restart_test_mse)):
        metrics += [_metric(name, v, r, ts) for r, v in enumerate(values)]
    for name, curve in (("curve_train_mse", result.train_curve), ("curve_val_mse", result.val_curve)):
        metrics += [_metric(name, curve[e], e, ts) for e in curve_steps(len(curve))]
    metrics += [_metric("intermediate_value", v, e, ts) for e, v in result.intermediate]
    return [m for m in metrics if m is not None]
