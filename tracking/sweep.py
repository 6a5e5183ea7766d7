"""What a sweep writes to MLflow: one experiment, a parent run, a child run per trial.

:class:`SweepTracker` is the driver's handle. Reads (the parent lookup, verdicts, a trial's run)
are synchronous; writes go to a writer process (:mod:`tracking.writer`), so the sweep driver
never waits on MLflow for a value. Trial runs carry a deterministic run key
(``mlpsweep.run_key``): a trial logged again (a retried write, a resumed driver) keeps its
finished run, and a half-written one is replaced — never two runs, never a metric logged twice.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mlflow import MlflowClient
from mlflow.entities import Param
from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME

from tracking.client import ensure_experiment, make_client, resolve_tracking_uri
from tracking.runs import CURVE_POINTS, CURVES_FILE, TAG, curve_steps, metric
from tracking.writer import WriterProcess, find_trial_run, run_key
from workers.records import TrialConfig, TrialResult

__all__ = ["SweepTracker", "SweepRunInfo", "default_storage", "artifact_root_for", "TAG", "CURVE_POINTS",
           "CURVES_FILE", "curve_steps"]


log = logging.getLogger(__name__)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):]).expanduser()


def default_storage(tracking_uri: str | None) -> str:
    """The Optuna storage beside the MLflow store: the journal file ``optuna.journal`` next to a
    SQLite ``mlflow.db``, else in the current directory. An ``optuna.db`` that earlier versions
    wrote there (and no journal) is kept, so its sweeps continue."""
    db = _sqlite_path(resolve_tracking_uri(tracking_uri))
    folder = db.parent if db is not None else Path(".")
    legacy, journal = folder / "optuna.db", folder / "optuna.journal"
    if legacy.is_file() and not journal.exists():
        return f"sqlite:///{legacy.as_posix()}"
    return journal.as_posix()


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


class SweepTracker:
    """The sweep's MLflow handle: synchronous reads here, writes in a writer process.
    Call :meth:`close` to have everything written and the writer stopped.

    Args:
        tracking_uri: MLflow store (None: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        sweep: the sweep name = experiment name = parent run name.
        retry_seconds: how long a write is retried through a store outage
            (default ``$MLPSWEEP_TRACKING_RETRY_S`` or 180).
        report: start the end-of-run report's process with the writer (``self.report``, a
            :class:`tracking.report_process.ReportChild`; else None).
    """

    def __init__(self, tracking_uri: str | None, sweep: str, *, retry_seconds: float | None = None,
                 report: bool = False) -> None:
        self.retry_seconds = float(os.environ.get("MLPSWEEP_TRACKING_RETRY_S", 180)) if retry_seconds is None \
            else retry_seconds
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.client: MlflowClient = make_client(self.tracking_uri)
        self.sweep = sweep
        self.experiment_id = ensure_experiment(self.client, sweep, artifact_root_for(self.tracking_uri))
        self.parent_run_id: str | None = None
        self.study_uid = ""
        self._verdicts: dict[str, str] | None = None  # architecture -> verdict stored before this sweep
        self._writer = WriterProcess(self.tracking_uri, sweep, self.experiment_id, self.retry_seconds, report)
        self.report = self._writer.report

    def flush(self) -> None:
        """Wait until every write asked for so far is done."""
        self._writer.flush()

    def close(self) -> list[str]:
        """Write everything queued, stop the writer, return the errors met (if any)."""
        return self._writer.close()

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
            resumed = True
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.sweep,
                tags={TAG["kind"]: "sweep", TAG["sweep"]: self.sweep, TAG["study_uid"]: study_uid,
                      MLFLOW_SOURCE_NAME: "mlpsweep"},
            )
            self.parent_run_id = run.info.run_id
            self.client.log_batch(self.parent_run_id,
                                  params=[Param(k, str(v)[:6000]) for k, v in params.items()][:100])
            self.client.log_text(self.parent_run_id, spec_yaml, "spec.yaml")
            resumed = False
        self._writer.send("parent", self.parent_run_id, study_uid, self._stored_trials() if resumed else set())
        return SweepRunInfo(self.tracking_uri, self.experiment_id, self.parent_run_id, resumed)

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
        """Optimisation history on the parent run: the trial's objective and the best so far
        (the writer gathers the points that wait into one ``log_batch``)."""
        points = [m for m in (metric("trial_objective", objective, number), metric("best_so_far", best, number)) if m]
        if self.parent_run_id and points:
            self._writer.send("progress", points)

    def close_parent(self, summary: dict[str, float | int | None], status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self._writer.send("close_parent", [m for m in (metric(k, v) for k, v in summary.items()) if m], status)

    # ----------------------------------------------------------------- verification
    def find_verdict(self, architecture: str) -> str | None:
        """A verdict recorded anywhere in this store when the sweep started, or None (also when
        the store is unreachable: verifying again is cheap, stalling the sweep is not)."""
        from tracking.verification import known_verdicts

        if self._verdicts is None:
            try:
                self._verdicts = known_verdicts(self.client)
            except Exception as exc:
                log.warning("could not look up earlier verifications: %s", exc)
                return None
        return self._verdicts.get(architecture)

    def record_verification(self, report: Any) -> None:
        """Queue a verification run (once per architecture: a retried write finds the first)."""
        self._writer.send("verification", report)

    # ----------------------------------------------------------------- trials
    def run_key(self, number: int) -> str:
        return run_key(self.study_uid, number)

    def log_trial(self, config: TrialConfig, result: TrialResult, *, verified: str, architecture: str,
                  on_done: Callable[[str | None], None] | None = None) -> None:
        """Queue one trial's run: params, final and per-restart metrics, curves, checkpoint.

        ``on_done(error)`` is called (on a reader thread) once the run is complete (error None)
        or the retry budget is spent (error says why).
        """
        self._writer.send("trial", config, result, verified, architecture, on_done=on_done or (lambda error: None))

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
        return find_trial_run(self.client, self.experiment_id, self.run_key(number))
