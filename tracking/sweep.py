"""What a sweep writes to MLflow: one experiment, a parent run, a child run per trial.

:class:`SweepTracker` is the driver's handle. MLflow itself runs in a writer process
(:mod:`tracking.writer`): writes are queued, so the sweep driver never waits on MLflow for a
value, and the few reads (the parent lookup, verdicts, a resumed trial's run) are calls answered
from there — the driver never imports MLflow. Trial runs carry a deterministic run key
(``mlpsweep.run_key``): a trial logged again (a retried write, a resumed driver) keeps its
finished run, and a half-written one is replaced — never two runs, never a metric logged twice.
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tracking.client import resolve_tracking_uri
from tracking.runs import CURVE_POINTS, CURVES_FILE, TAG, curve_steps
from tracking.writer import TrackingError, WriterProcess, run_key

if TYPE_CHECKING:  # the driver starts this tracker while another thread imports the records
    from workers.records import TrialConfig, TrialResult

__all__ = ["SweepTracker", "SweepRunInfo", "default_storage", "artifact_root_for", "TAG", "CURVE_POINTS",
           "CURVES_FILE", "curve_steps"]


log = logging.getLogger(__name__)


def sqlite_path(uri: str, *, any_driver: bool = False) -> Path | None:
    """The file of a ``sqlite:///PATH[?QUERY]`` URL (with ``any_driver``, ``sqlite+DRIVER:///``
    too: an Optuna storage's SQLAlchemy URL); None for any other URL or path. A tracking URI is
    read without drivers, as MLflow's own local stores are: its study and artifacts stay where
    earlier versions put them."""
    found = re.match(r"sqlite(\+\w+)?:///" if any_driver else r"sqlite:///", uri, re.IGNORECASE)
    if found is None:
        return None
    return Path(uri[found.end():].split("?", 1)[0]).expanduser()


def storage_file(storage: str) -> Path | None:
    """The local file of an Optuna storage (a journal path, a ``sqlite[+DRIVER]:///`` URL); None
    for a database server or an in-memory database."""
    return sqlite_path(storage, any_driver=True) if "://" in storage else Path(storage)


def default_storage(tracking_uri: str | None) -> str:
    """The Optuna storage beside the MLflow store: the journal file ``optuna.journal`` next to a
    SQLite ``mlflow.db``, else in the current directory. An ``optuna.db`` that earlier versions
    wrote there (and no journal) is kept, so its sweeps continue."""
    db = sqlite_path(resolve_tracking_uri(tracking_uri))
    folder = db.parent if db is not None else Path(".")
    legacy, journal = folder / "optuna.db", folder / "optuna.journal"
    if legacy.is_file() and not journal.exists():
        return f"sqlite:///{legacy.as_posix()}"
    return journal.as_posix()


def artifact_root_for(tracking_uri: str | None) -> str | None:
    """Artifacts of a local SQLite store go in ``mlartifacts/`` beside it; a server decides itself."""
    db = sqlite_path(resolve_tracking_uri(tracking_uri))
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
    """The sweep's MLflow handle. Everything MLflow does runs in a writer process
    (:mod:`tracking.writer`): writes are queued, the few reads are calls answered from there, so
    this process never imports MLflow. Call :meth:`close` to have everything written and the
    writer stopped.

    Args:
        tracking_uri: MLflow store (None: ``$MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
        sweep: the sweep name = experiment name = parent run name.
        retry_seconds: how long a write is retried through a store outage
            (default ``$MLPSWEEP_TRACKING_RETRY_S`` or 180).
        report: start the end-of-run report's process with the writer (``self.report``, a
            :class:`tracking.report_process.ReportChild`; else None).
        wait: wait here for the writer to open the store; False: the caller calls
            :meth:`wait_ready` before anything else (the process starts meanwhile).

    Raises:
        TrackingError: the store cannot be used (the experiment could not be found or created).
    """

    def __init__(self, tracking_uri: str | None, sweep: str, *, retry_seconds: float | None = None,
                 report: bool = False, wait: bool = True) -> None:
        self.retry_seconds = float(os.environ.get("MLPSWEEP_TRACKING_RETRY_S", 180)) if retry_seconds is None \
            else retry_seconds
        self.tracking_uri = resolve_tracking_uri(tracking_uri)
        self.sweep = sweep
        self.parent_run_id: str | None = None
        self.study_uid = ""
        self._verdicts: dict[str, str] | None = None  # architecture -> verdict stored before this sweep
        self._writer = WriterProcess(self.tracking_uri, sweep, None, self.retry_seconds, report)
        self.report = self._writer.report
        self.experiment_id = ""
        if wait:
            self.wait_ready()

    def wait_ready(self) -> None:
        """Wait until the writer process has opened the store and found the sweep's experiment.

        Raises:
            TrackingError: the store cannot be used (the writer process has ended).
        """
        self.experiment_id = self._writer.ready()

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
        self.parent_run_id, resumed = self._writer.call("open_parent", spec_yaml, study_uid, params)
        return SweepRunInfo(self.tracking_uri, self.experiment_id, self.parent_run_id, resumed)

    def log_progress(self, number: int, objective: float | None, best: float | None) -> None:
        """Optimisation history on the parent run: the trial's objective and the best so far
        (the writer gathers the points that wait into one ``log_batch``)."""
        points = _points({"trial_objective": objective, "best_so_far": best}, number)
        if self.parent_run_id and points:
            self._writer.send("progress", points)

    def close_parent(self, summary: dict[str, float | int | None], status: str = "FINISHED") -> None:
        if self.parent_run_id:
            self._writer.send("close_parent", _points(summary, 0), status)

    # ----------------------------------------------------------------- verification
    def find_verdict(self, architecture: str) -> str | None:
        """A verdict recorded anywhere in this store when the sweep started, or None (also when
        the store is unreachable: verifying again is cheap, stalling the sweep is not)."""
        if self._verdicts is None:
            try:
                self._verdicts = self._writer.call("verdicts")
            except TrackingError as exc:
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
        return self._writer.call("logged_outcome", number)

    def close_partial_run(self, number: int) -> None:
        """A run a killed driver left half-written: mark it KILLED so none stays RUNNING."""
        self._writer.call("close_partial_run", number)


def _points(values: dict[str, float | int | None], step: int) -> list[tuple[str, float | int | None, int, int]]:
    """Metric points (key, value, step, ms timestamp) for the writer, which keeps the finite ones
    (:func:`tracking.runs.metric`)."""
    ts = int(time.time() * 1000)
    return [(k, v, step, ts) for k, v in values.items()]
