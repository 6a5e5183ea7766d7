"""The process that writes a sweep's runs to MLflow, so the driver's Optuna work and MLflow's
never queue for the same interpreter lock. It also does the sweep's few MLflow reads (the
experiment, the parent run, earlier verdicts, a resumed trial's run): the driver never imports
MLflow (~1.5 s of CPU that the start of a run, Ray's and its workers', needs more).

A trial's run costs 4–7 ms of Python (SQLAlchemy) work on a SQL store (:mod:`tracking.bulk`),
through MLflow's REST client more, and the driver's ask/tell a few ms; in one process the two
would take turns on the GIL, in two they run side by side.
:class:`WriterProcess` is the driver's end: it sends pickled requests, a reader thread turns the
replies into ``on_done`` calls. :class:`RunWriter` is the writing itself, the same code whichever
process runs it. The child leaves when its parent dies, so a killed driver leaves no writer behind.
"""
from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import pickle
import queue
import sys
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tracking.client import DAMAGED_SQLITE_ERRORS
from tracking.forked import FORK
from tracking.runs import (CURVE_POINTS, CURVES_FILE, MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH, TAG, chunks,
                           finite_or_none, metric, trial_metrics)

if TYPE_CHECKING:  # the records: the driver spawns this process before it imports them
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from workers.records import TrialConfig, TrialResult

__all__ = ["RunWriter", "WriterProcess", "TrackingError", "find_trial_run", "run_key", "is_permanent", "DAMAGED"]

log = logging.getLogger(__name__)

Done = Callable[[str | None], None]

# What the driver may ask the writer process for, with an answer (see WriterProcess.call).
CALLS = ("open_parent", "verdicts", "logged_outcome", "close_partial_run")

# The parent run's optimisation history is written at most this often: one MLflow log_batch per
# told trial was a third of the writer's work on tiny trials. A chart a second behind is no loss.
PROGRESS_SECONDS = 1.0


class TrackingError(RuntimeError):
    """An MLflow read the writer process did for the driver failed (the message says why)."""


DAMAGED = "the MLflow store is damaged (retrying cannot help)"  # starts the error of such a write


def is_permanent(exc: BaseException) -> bool:
    """Whether a store error is one that retrying cannot mend: a damaged SQLite file. Outages
    (refused connections, 5xx, a locked database) are not: they are retried."""
    import sqlite3

    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, sqlite3.DatabaseError) and getattr(e, "sqlite_errorname", "") in DAMAGED_SQLITE_ERRORS:
            return True
        orig = getattr(e, "orig", None)  # SQLAlchemy's wrapper of the driver's error
        stack += [e.__cause__, e.__context__, orig if isinstance(orig, BaseException) else None]
    return False


def run_key(study_uid: str, number: int) -> str:
    return f"{study_uid}:{number}"


def find_trial_run(client: MlflowClient, experiment_id: str, key: str) -> Any | None:
    runs = client.search_runs([experiment_id], filter_string=f"tags.`{TAG['run_key']}` = '{key}'", max_results=5)
    return runs[0] if runs else None


class RunWriter:
    """Writes trial, verification and parent-run records, each retried as one idempotent unit."""

    def __init__(self, tracking_uri: str, sweep: str, experiment_id: str | None, retry_seconds: float,
                 wanted: Callable[[], bool] = lambda: True) -> None:
        from tracking.client import ensure_experiment, make_client
        from tracking.sweep import artifact_root_for

        self.client = make_client(tracking_uri)
        self.sweep = sweep
        self.experiment_id = experiment_id or ensure_experiment(self.client, sweep, artifact_root_for(tracking_uri))
        self.retry_seconds = retry_seconds
        self.parent_run_id = ""
        self.study_uid = ""
        self.stored: set[int] = set()  # trial numbers with a run in the store when the sweep opened
        self.errors: list[str] = []
        self.down = False  # a write spent its retry budget; no retries until one succeeds
        self.wanted = wanted  # False once the driver is gone: stop retrying for it
        self.points: list[Metric] = []  # the parent run's history points not written yet
        self._points_written = time.monotonic()

    def retrying(self, what: str, write: Callable[[], None]) -> str | None:
        """Run an idempotent write until it succeeds or the retry budget is spent.

        MLflow's REST client already retries 408/429/5xx and refused connections with backoff;
        this outer loop covers longer outages (a restarted tracking server). Once one write has
        spent its budget, the next ones are tried once each until one succeeds: a store that
        stays down fails the remaining trials in seconds, not a budget each. A damaged SQLite
        file (:func:`is_permanent`) is not retried at all. Returns None on success, else the
        last error.
        """
        deadline = time.monotonic() + (0.0 if self.down else self.retry_seconds)
        delay = 0.5
        while True:
            try:
                write()
                self.down = False
                return None
            except Exception as exc:  # any store error: retry, the write is idempotent
                error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
                if is_permanent(exc):
                    if not self.down:
                        log.error("MLflow %s failed: the store is damaged, not retried: %s", what, error)
                    self.down = True
                    return f"{DAMAGED}: {error}"
                if time.monotonic() + delay > deadline or not self.wanted():
                    if not self.down:
                        log.error("MLflow %s failed, giving up after %.0f s: %s (later writes are tried once "
                                  "each until one succeeds)", what, self.retry_seconds, error)
                    self.down = True
                    return error
                log.warning("MLflow %s failed (%s); retrying in %.1f s", what, error, delay)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    # ----------------------------------------------------------------- requests
    def trial(self, config: TrialConfig, result: TrialResult, verified: str, architecture: str,
              look_up: bool = False) -> str | None:
        attempts: list[int] = []

        def write() -> None:
            attempts.append(1)
            self._write_trial(config, result, verified, architecture, look_up=look_up or len(attempts) > 1)

        return self.retrying(f"trial {config.number}", write)

    def trials(self, items: list[tuple[TrialConfig, TrialResult, str, str]]) -> list[str | None]:
        """Several trials' runs (co-batched trials come in together): on a SQL store, and where
        no run of theirs can exist yet, in one transaction; else, or if that fails, one by one
        (looking each up first: nothing of a failed transaction is in the store, but a write
        whose commit went through and then raised must not be written twice). Never raises:
        each trial gets its own error, or None."""
        from tracking.bulk import sql_store, write_runs

        fresh = not any(config.number in self.stored for config, *_ in items)
        if len(items) > 1 and fresh and not self.down:
            try:
                if sql_store(self.client) is not None:
                    write_runs(self.client, self.experiment_id, [self._trial_record(*item) for item in items])
                    return [None] * len(items)
            except Exception as exc:  # noqa: BLE001 - each is retried alone, with its own error
                log.info("writing %d trials at once failed (%s: %s); writing them one by one", len(items),
                         type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "")
                return [self._trial_answer(item, look_up=True) for item in items]
        return [self._trial_answer(item) for item in items]

    def _trial_answer(self, item: tuple[TrialConfig, TrialResult, str, str], look_up: bool = False) -> str | None:
        """:meth:`trial`, with an error that is not the store's (those are retried) as its answer."""
        try:
            return self.trial(*item, look_up=look_up)
        except Exception as exc:  # noqa: BLE001 - the driver is answered anyway
            log.exception("MLflow write of trial %s failed", item[0].number)
            return f"{type(exc).__name__}: {exc}"[:300]

    def progress(self, metrics: list[Metric]) -> None:
        for part in chunks(metrics, MAX_METRICS_PER_BATCH) if self.parent_run_id else ():
            def write(points: list[Metric] = list(part)) -> None:
                self.client.log_batch(self.parent_run_id, metrics=points)

            self._note(self.retrying("progress", write))

    def write_progress(self, at_most_every: float = 0.0) -> None:
        """Write the waiting history points, unless the last such write is under ``at_most_every`` s old."""
        if self.points and time.monotonic() - self._points_written >= at_most_every:
            points, self.points = self.points, []
            self.progress(points)
            self._points_written = time.monotonic()

    # ----------------------------------------------------------------- reads (CALLS)
    def open_parent(self, spec_yaml: str, study_uid: str, params: dict[str, Any]) -> tuple[str, bool]:
        """Find the sweep's parent run (a resumed sweep reuses it) or create it: (run id, resumed)."""
        from mlflow.entities import Param
        from mlflow.utils.mlflow_tags import MLFLOW_SOURCE_NAME

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
            # The spec this run continues with (a larger run_cap, an edit it was allowed): the
            # report and the dashboard show what the sweep is now. Params keep their first values.
            self.client.log_text(self.parent_run_id, spec_yaml, "spec.yaml")
            self.stored = self._stored_trials()
            return self.parent_run_id, True
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.sweep,
            tags={TAG["kind"]: "sweep", TAG["sweep"]: self.sweep, TAG["study_uid"]: study_uid,
                  MLFLOW_SOURCE_NAME: "mlpsweep"},
        )
        self.parent_run_id = run.info.run_id
        self.client.log_batch(self.parent_run_id, params=[Param(k, str(v)[:6000]) for k, v in params.items()][:100])
        self.client.log_text(self.parent_run_id, spec_yaml, "spec.yaml")
        return self.parent_run_id, False

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

    def verdicts(self) -> dict[str, str]:
        """Every architecture's verdict recorded anywhere in this store."""
        from tracking.verification import known_verdicts

        return known_verdicts(self.client)

    def logged_outcome(self, number: int) -> dict[str, Any] | None:
        """A trial's completed run (state, metrics) if its write finished, else None."""
        run = self._trial_run(number)
        if run is None or run.info.status == "RUNNING":
            return None
        return {"state": run.data.tags.get(TAG["state"], "FAIL"), "reason": run.data.tags.get(TAG["reason"]),
                "metrics": dict(run.data.metrics), "node": run.data.tags.get(TAG["node"])}

    def close_partial_run(self, number: int) -> None:
        """A run a killed driver left half-written: mark it KILLED so none stays RUNNING."""
        run = self._trial_run(number)
        if run is not None and run.info.status == "RUNNING":
            self.client.set_tag(run.info.run_id, TAG["state"], "INTERRUPTED")
            self.client.set_terminated(run.info.run_id, "KILLED")

    def _trial_run(self, number: int) -> Any | None:
        return find_trial_run(self.client, self.experiment_id, run_key(self.study_uid, number))

    # ----------------------------------------------------------------- writes
    def close_parent(self, metrics: list[Metric], status: str) -> None:
        def write() -> None:
            if metrics:
                self.client.log_batch(self.parent_run_id, metrics=metrics)
            self.client.set_terminated(self.parent_run_id, status)

        if self.parent_run_id:
            self._note(self.retrying("parent run", write))

    def verification(self, report: Any) -> None:
        from tracking.verification import find_verification, record_verification

        attempts: list[int] = []

        def write() -> None:  # a retried write looks for the run a failed attempt may have finished
            attempts.append(1)
            if len(attempts) == 1 or find_verification(self.client, self.experiment_id, report.architecture) is None:
                record_verification(self.client, self.experiment_id, report, parent_run_id=self.parent_run_id or None,
                                    sweep=self.sweep)

        self._note(self.retrying("verification run", write))

    def _note(self, error: str | None) -> None:
        if error is not None:
            self.errors.append(error)

    # ----------------------------------------------------------------- one trial's run
    def _write_trial(self, config: TrialConfig, result: TrialResult, verified: str, architecture: str,
                     look_up: bool = False) -> None:
        """One trial's run, written whole (:func:`tracking.bulk.write_run`). The run key is looked up
        first only where a run may exist: a resumed sweep's trial or a retried write."""
        from tracking.bulk import write_record

        if look_up or config.number in self.stored:
            existing = self._trial_run(config.number)
            if existing is not None and existing.info.status in ("FINISHED", "FAILED"):
                log.info("trial %s already logged as run %s", config.number, existing.info.run_id)
                return
            if existing is not None:
                # A half-written run from an earlier attempt (over HTTP, the server failed mid-write
                # and its delete failed too): metric history appends, so replace the run.
                self.client.delete_run(existing.info.run_id)
        write_record(self.client, self.experiment_id, self._trial_record(config, result, verified, architecture))

    def _trial_record(self, config: TrialConfig, result: TrialResult, verified: str, architecture: str) -> Any:
        """The trial's run as a :class:`tracking.bulk.RunRecord`: tags, params, metrics and a
        function writing its checkpoint (which adds the checkpoint's digests to the tags)."""
        from mlflow.entities import Param
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

        from tracking.bulk import RunRecord

        tags = {
            MLFLOW_PARENT_RUN_ID: self.parent_run_id,
            MLFLOW_RUN_NAME: f"trial-{config.number}",
            TAG["kind"]: "trial",
            TAG["sweep"]: self.sweep,
            TAG["trial"]: str(config.number),
            TAG["architecture"]: architecture,
            TAG["verified"]: verified,
            TAG["run_key"]: run_key(self.study_uid, config.number),
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
        if result.extra.get("cobatched"):
            tags[TAG["cobatched"]] = str(result.extra["cobatched"])
        params = {**config.params, "hidden_sizes": "-".join(map(str, config.train.sizes[1:-1]))}
        param_list = [Param(k, str(v)) for k, v in params.items()][:MAX_PARAMS_PER_BATCH]

        def files(folder: Path) -> None:  # the checkpoint's digest goes into the tags
            if result.checkpoint is not None:
                tags[TAG["sha256"]] = self._save_checkpoint(str(folder / "checkpoint"), config, result)
                if result.checkpoint.weights is not None:
                    tags[TAG["weights_sha256"]] = hashlib.sha256(result.checkpoint.weights).hexdigest()
            if len(result.train_curve) > CURVE_POINTS or len(result.val_curve) > CURVE_POINTS:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / CURVES_FILE).write_text(json.dumps(
                    {"train_mse": finite_or_none(result.train_curve), "val_mse": finite_or_none(result.val_curve)}))

        return RunRecord(run_name=f"trial-{config.number}", tags=tags, params=param_list,
                         metrics=trial_metrics(result), status="FAILED" if result.state == "FAIL" else "FINISHED",
                         artifacts=files)

    def _save_checkpoint(self, folder: str, config: TrialConfig, result: TrialResult) -> str:
        """Write the trial's checkpoint files into ``folder`` (created); returns their sha256."""
        from models.checkpoint import write_checkpoint

        ckpt = result.checkpoint
        assert ckpt is not None
        return write_checkpoint(folder, ckpt.model, ckpt.sizes, ckpt.activation,
                                extra={"trial": config.number, "sweep": self.sweep, "params": config.params,
                                       "data": checkpoint_data(config, ckpt)}, weights=ckpt.weights)


def checkpoint_data(config: TrialConfig, ckpt: Any) -> dict[str, Any]:
    """What a checkpoint records of the data its model was trained on: the dataset's recipe
    (``models.load_dataset``'s arguments) and, for standardised data, the statistics that map raw
    inputs to the model's and its outputs back (without them the model is unusable on raw data)."""
    data: dict[str, Any] = {"dataset": config.data.dataset, **config.data.load_kwargs()}
    if ckpt.standardization is not None:
        data["standardization"] = ckpt.standardization
    return data


# --------------------------------------------------------------------- the child process
def _warm_up(writer: RunWriter) -> None:
    """Import and open now, while the sweep starts, what the first writes need (MLflow's store
    module and connection: seconds): else the first trials wait that long for their runs, and the
    driver's next asks wait for them. Not torch: a trial's config and checkpoint bytes need none
    (:mod:`models.config`, :func:`models.checkpoint.write_checkpoint`), nor does the report
    child (the fit picture reads ``weights.npz``)."""
    import models.checkpoint  # noqa: F401
    import tracking.verification  # noqa: F401
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository  # noqa: F401

    try:
        writer.client.get_experiment(writer.experiment_id)
    except Exception:  # an unreachable store is the writes' to report, with their retries
        pass


def _serve(inbox: Any, outbox: Any, tracking_uri: str, sweep: str, experiment_id: str, retry_seconds: float,
           parent_pid: int, report_conn: Any | None = None) -> None:
    """The writer's loop: requests in order; the parent run's progress points gathered into one
    write at most every :data:`PROGRESS_SECONDS` (and before a flush or the end). Given
    ``report_conn``, it first forks the report child (:mod:`tracking.report_process`)."""
    import gc
    import signal

    gc.disable()  # until MLflow is imported (below): collecting its ~10^5 new objects meanwhile is wasted work
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the driver's; it closes us in order
    from tracking.client import enable_fast_sqlite

    enable_fast_sqlite()

    def wanted() -> bool:  # a killed driver's writer must not finish runs its successor re-queues
        return os.getppid() == parent_pid

    try:
        writer = RunWriter(tracking_uri, sweep, experiment_id, retry_seconds, wanted)
    except Exception as exc:  # an unusable store: the driver says so and stops
        outbox.put(("ready", -1, (f"{type(exc).__name__}: {str(exc).strip()[:600]}", None)))
        return
    outbox.put(("ready", -1, (None, writer.experiment_id)))
    _warm_up(writer)
    gc.freeze()  # the imported modules live as long as the process: no collection walks them again
    gc.enable()
    if report_conn is not None:
        from tracking.report_process import fork_report_child

        fork_report_child(report_conn, writer.client)  # before any thread starts here
    while True:
        try:
            batch = [inbox.get(timeout=0.5)]
        except queue.Empty:
            if not wanted():
                return
            writer.write_progress()  # nothing else to do: write them now
            continue
        while True:
            try:
                batch.append(inbox.get_nowait())
            except queue.Empty:
                break
        requests = deque(pickle.loads(raw) for raw in batch)
        while requests:
            if not wanted():
                return
            request = requests.popleft()
            kind = request[0]
            if kind == "progress":
                writer.points.extend(_metrics(request[1]))
                continue
            if kind == "trial":  # with the trials right behind it (progress points may sit between)
                trials = [request]
                while requests and requests[0][0] in ("trial", "progress"):
                    more = requests.popleft()
                    if more[0] == "progress":
                        writer.points.extend(_metrics(more[1]))
                    else:
                        trials.append(more)
                _write_trials(writer, outbox, trials)
                continue
            if kind in ("flush", "close", "close_parent"):
                writer.write_progress()
            try:
                if kind == "call":
                    token, name, *args = request[1:]
                    try:
                        if name not in CALLS:
                            raise ValueError(f"unknown call {name!r}")
                        answer: tuple[str | None, Any] = (None, getattr(writer, name)(*args))
                    except Exception as exc:  # the driver decides what a failed read means
                        answer = (f"{type(exc).__name__}: {str(exc).strip()[:300]}", None)
                    outbox.put(("done", token, answer))
                elif kind == "verification":
                    writer.verification(request[1])
                elif kind == "close_parent":
                    writer.close_parent(_metrics(request[1]), request[2])
                elif kind == "flush":
                    outbox.put(("flushed", request[1], None))
                elif kind == "close":
                    outbox.put(("closed", 0, writer.errors))
                    _exit_now(writer, outbox)
            except Exception as exc:  # keep writing the rest; reported at close
                log.exception("MLflow write failed")
                writer.errors.append(f"{type(exc).__name__}: {exc}"[:300])
        writer.write_progress(at_most_every=PROGRESS_SECONDS)


def _write_trials(writer: RunWriter, outbox: Any, requests: list[tuple]) -> None:
    """``("trial", token, config, result, verified, architecture)`` requests, written together
    (:meth:`RunWriter.trials`); each is answered, in order."""
    errors = writer.trials([tuple(request[2:]) for request in requests])  # type: ignore[misc]
    for request, error in zip(requests, errors):
        outbox.put(("done", request[1], error))


def _metrics(points: list[tuple[str, float | int | None, int, int]]) -> list[Metric]:
    """The driver's (key, value, step, ms timestamp) points as MLflow metrics (finite ones)."""
    return [m for m in (metric(k, v, step, ts) for k, v, step, ts in points) if m is not None]


def _exit_now(writer: RunWriter, outbox: Any) -> None:
    """Everything is written and the reply sent: close the store's connections and end the process
    without the interpreter's teardown of MLflow and SQLAlchemy (~1 s the driver waited for)."""
    from tracking.bulk import close_connections

    try:
        close_connections(writer.client)
        outbox.close()
        outbox.join_thread()  # the reply is in the pipe
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(0)


class WriterProcess:
    """The driver's end of the writer process: requests go out in order, replies come back to
    ``on_done`` callbacks on a reader thread; :meth:`call` asks for a read and waits for it.
    With ``experiment_id`` None the process finds or creates the sweep's experiment first
    (:meth:`ready` returns its id)."""

    def __init__(self, tracking_uri: str, sweep: str, experiment_id: str | None, retry_seconds: float,
                 report: bool = False) -> None:
        from tracking.report_process import ReportChild

        context = multiprocessing.get_context("spawn")
        self._inbox = context.Queue()
        self._outbox = context.Queue()
        mine, theirs = context.Pipe() if report and FORK else (None, None)
        self._proc = context.Process(
            target=_serve, name="mlpsweep-tracking", daemon=True,
            args=(self._inbox, self._outbox, tracking_uri, sweep, experiment_id, retry_seconds, os.getpid(), theirs))
        self._proc.start()
        if theirs is not None:
            theirs.close()
        self.report = ReportChild(mine) if report else None  # the report child's handle (see _serve)
        self._lock = threading.Lock()
        self._waiting: dict[int, Done] = {}
        self._next = 0
        self._errors: list[str] | None = None
        self._closed = threading.Event()
        self._ready = threading.Event()
        self._started: tuple[str | None, Any] = ("the MLflow writer process has stopped", None)
        self._reader = threading.Thread(target=self._read, name="mlpsweep-tracking-replies", daemon=True)
        self._reader.start()

    def send(self, *request: Any, on_done: Done | None = None) -> None:
        """Queue a request; ``on_done(error)`` is called once the child has answered it."""
        if on_done is not None:
            with self._lock:
                token, self._next = self._next, self._next + 1
                self._waiting[token] = on_done
            request = (request[0], token, *request[1:])
        if self._closed.is_set():
            if on_done is not None:
                self._answer(token, "the MLflow writer process has stopped")
            return
        self._inbox.put(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL))

    def ready(self) -> str:
        """Wait until the process has opened the store; the sweep's experiment id.

        Raises:
            TrackingError: the store cannot be used (the process has ended).
        """
        self._ready.wait()
        return str(self._check(self._started))

    def call(self, name: str, *args: Any) -> Any:
        """Ask the process for one of :data:`CALLS` (after everything sent before) and wait.

        Raises:
            TrackingError: the read failed, or the process has stopped.
        """
        done = threading.Event()
        answer: list[Any] = []
        self.send("call", name, *args, on_done=lambda payload: (answer.append(payload), done.set()))
        done.wait()
        return self._check(answer[0])

    @staticmethod
    def _check(payload: Any) -> Any:
        error, value = payload if isinstance(payload, tuple) else (payload, None)  # a bare string: the process is gone
        if error is not None:
            raise TrackingError(error)
        return value

    def flush(self) -> None:
        """Wait until everything sent so far is written."""
        done = threading.Event()
        self.send("flush", on_done=lambda error: done.set())
        done.wait()

    def close(self) -> list[str]:
        """Write everything sent, stop the child, return the errors it met."""
        if not self._closed.is_set():
            self._inbox.put(pickle.dumps(("close",)))
            self._closed.wait()
        # Not join(timeout): that waits for the process's sentinel pipe, which the report child
        # forked from it holds open (an inherited copy) until the report is drawn.
        deadline = time.monotonic() + 30
        while self._proc.is_alive() and time.monotonic() < deadline:
            time.sleep(0.005)
        return list(self._errors or [])

    def _answer(self, token: int, error: str | None) -> None:
        with self._lock:
            callback = self._waiting.pop(token, None)
        if callback is not None:
            callback(error)

    def _read(self) -> None:
        while True:
            try:
                kind, token, payload = self._outbox.get(timeout=0.5)
            except queue.Empty:
                if self._proc.is_alive():
                    continue
                self._fail(f"the MLflow writer process died (exit code {self._proc.exitcode})")
                return
            if kind == "closed":
                self._errors = payload
                self._closed.set()
                return
            if kind == "ready":
                self._started = payload
                self._ready.set()
                continue
            self._answer(token, payload)

    def _fail(self, error: str) -> None:
        """The child is gone: every request still waiting gets ``error``, nothing hangs."""
        self._errors = [error]
        self._closed.set()
        if not self._ready.is_set():
            self._started = (error, None)
        self._ready.set()  # a process that died starting up: ready() raises this error
        with self._lock:
            waiting, self._waiting = self._waiting, {}
        for callback in waiting.values():
            callback(error)
