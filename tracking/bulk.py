"""A finished run, whole: its artifacts first, then its row, tags, params and metrics in one
transaction on a SQL tracking store.

MLflow's client writes a run in many small transactions of ORM objects: ``create_run`` (which
also reads the experiment and the new run back), ``log_batch`` (a session each for params,
metrics, latest metrics and tags, one ORM object per value), ``set_terminated``: about 12 ms
of CPU for a tiny trial's run, in the writer process whose CPU a small machine takes from the
workers' training. On a SQL store (SQLite, PostgreSQL, MySQL) :func:`write_run` copies the
artifacts under the run's artifact URI first, then inserts every row of the run into MLflow's
own tables in one transaction, applying ``SqlAlchemyStore``'s own validation, NaN/inf
sanitising, duplicate rule and latest-metric rule; tests/tracking/test_bulk.py compares every
row with what MLflow's client writes. A reader never sees the run half-written; a refused or
failed write removes the run's local artifact folder, and a process killed mid-write leaves no
run at all (at most unreferenced artifact files). Any other store
(``mlflow server`` over HTTP) gets MLflow's client calls.
"""
from __future__ import annotations

import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, Union

from mlflow import MlflowClient
from mlflow.entities import Metric, Param

from tracking.client import log_folder

__all__ = ["write_run", "write_record", "write_runs", "RunRecord", "sql_store", "close_connections", "Artifacts"]

# A folder whose files become a run's artifacts, or a function that writes them into the folder
# it is given (creating it first): on a local artifact store, the run's own artifact folder.
Artifacts = Union[str, Path, Callable[[Path], None], None]

_MODELS = ("runs", "tags", "params", "metrics", "latest_metrics")  # a run's tables, in insertion order


def sql_store(client: MlflowClient) -> Any | None:
    """The client's ``SqlAlchemyStore``, or None when it talks to another kind of store."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = client._tracking_client.store  # MLflow caches one store per URI
    return store if isinstance(store, SqlAlchemyStore) else None


def close_connections(client: MlflowClient) -> None:
    """Close the client's pooled database connections (a SQL store; else nothing to close). A
    process that ends with ``os._exit`` calls it first: SQLite keeps a store's write-ahead log
    while any connection lives."""
    store = sql_store(client)
    if store is not None:
        store.engine.dispose()


@dataclass
class RunRecord:
    """One finished run as :func:`write_runs` takes it (see :func:`write_run` for the fields)."""

    run_name: str
    tags: dict[str, str]
    params: Sequence[Param]
    metrics: Sequence[Metric]
    status: str
    artifacts: Artifacts = None


def write_run(client: MlflowClient, experiment_id: str, *, run_name: str, tags: dict[str, str],
              params: Sequence[Param], metrics: Sequence[Metric], status: str,
              artifacts: Artifacts = None) -> str:
    """Write one finished run and return its id.

    Args:
        client: the tracking client.
        experiment_id: an active experiment.
        run_name: the run's name (also its ``mlflow.runName`` tag).
        tags, params, metrics: the run's values; ``mlflow.user`` in ``tags`` sets its user.
        status: ``FINISHED`` or ``FAILED``.
        artifacts: a folder whose files become the run's artifacts (None or empty: none), or a
            function that writes them into the folder it is given, creating it first (on a
            local artifact store the run's own: no copy); it may add to ``tags`` (a digest).

    Raises:
        MlflowException: a value MLflow refuses (a bad key, duplicate param keys...), an inactive
            experiment, or the store's own errors. Over HTTP a run already created is deleted
            (best effort) so that no half-written run stays behind.
    """
    return write_record(client, experiment_id, RunRecord(run_name, tags, params, metrics, status, artifacts))


def write_record(client: MlflowClient, experiment_id: str, record: RunRecord) -> str:
    """:func:`write_run` of a :class:`RunRecord`."""
    if sql_store(client) is None:
        with _folder(record.artifacts) as folder:
            return _write_with_client(client, experiment_id, record, folder)
    return write_runs(client, experiment_id, [record])[0]


def write_runs(client: MlflowClient, experiment_id: str, records: Sequence[RunRecord]) -> list[str]:
    """Write several finished runs on a SQL store in one transaction (all or none); their ids.

    What a trial's run costs the writer beyond its rows (the experiment's check, a session and a
    commit: ~2 ms of a tiny trial's ~5) is paid once for the lot. A refused or failed write
    removes every one of their local artifact folders.

    Raises:
        ValueError: the client's store is not a SQL one (use :func:`write_run`).
        MlflowException: as :func:`write_run`, for any of the runs.
    """
    from mlflow.entities import ViewType
    from mlflow.utils.uri import append_to_uri_path

    store = sql_store(client)
    if store is None:
        raise ValueError(f"write_runs needs a SQL tracking store, not {client.tracking_uri}")
    with store.ManagedSessionMaker() as session:  # as create_run: the experiment must be active
        experiment = store._get_experiment(session, experiment_id, ViewType.ALL)
        store._check_experiment_is_active(experiment)
        location = experiment.artifact_location
    written: list[tuple[str, str]] = []  # (run id, artifact URI)
    rows: dict[str, list[dict[str, Any]]] = {table: [] for table in _MODELS}
    try:
        for record in records:
            run_id = uuid.uuid4().hex
            artifact_uri = append_to_uri_path(location, run_id, store.ARTIFACTS_FOLDER_NAME)
            written.append((run_id, artifact_uri))
            local = _local_folder(artifact_uri) if callable(record.artifacts) else None
            if local is not None:
                record.artifacts(local)  # type: ignore[operator]
            else:
                with _folder(record.artifacts) as folder:
                    if folder is not None:
                        log_folder(client, artifact_uri, folder)
            for table, more in _run_rows(store, experiment_id, run_id, artifact_uri, record).items():
                rows[table] += more
        _insert(store, rows)
    except Exception:  # (an interrupt may come after the commit: its files stay, as for a kill)
        for run_id, artifact_uri in written:
            _remove_local(artifact_uri, run_id)  # a refused or failed run leaves no files behind
        raise
    return [run_id for run_id, _ in written]


def _remove_local(artifact_uri: str, run_id: str) -> None:
    """Delete the folder of a run that was never inserted (``<location>/<run_id>``), when local."""
    import shutil

    folder = _local_folder(artifact_uri)
    if folder is not None and folder.parent.name == run_id:
        shutil.rmtree(folder.parent, ignore_errors=True)


@contextmanager
def _folder(artifacts: Artifacts) -> Iterator[Path | None]:
    """The folder holding ``artifacts``' files (a function's: written into a temporary one);
    None when there are none."""
    if callable(artifacts):
        with tempfile.TemporaryDirectory(prefix="mlpsweep-run-") as tmp:
            artifacts(Path(tmp))
            yield Path(tmp) if any(Path(tmp).iterdir()) else None
    else:
        yield Path(artifacts) if artifacts is not None and any(Path(artifacts).iterdir()) else None


def _local_folder(artifact_uri: str) -> Path | None:
    """The folder of a local (``file:`` or plain path) artifact URI; None for any other scheme."""
    from urllib.parse import urlparse

    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(artifact_uri)) if urlparse(artifact_uri).scheme in ("", "file") else None


def _write_with_client(client: MlflowClient, experiment_id: str, record: RunRecord, artifacts: Path | None) -> str:
    run = client.create_run(experiment_id, run_name=record.run_name, tags=record.tags).info
    try:
        # MLflow splits it into requests
        client.log_batch(run.run_id, params=list(record.params), metrics=list(record.metrics))
        if artifacts is not None:
            log_folder(client, run.artifact_uri, artifacts)
        client.set_terminated(run.run_id, record.status)
    except BaseException:
        try:
            client.delete_run(run.run_id)
        except Exception:  # the store is down: the caller's retry finds and replaces it
            pass
        raise
    return run.run_id


def _run_rows(store: Any, experiment_id: str, run_id: str, artifact_uri: str,
              record: RunRecord) -> dict[str, list[dict[str, Any]]]:
    """Every row of the run, validated and normalised as ``SqlAlchemyStore`` does."""
    run_name, tags, params, metrics, status = record.run_name, record.tags, record.params, record.metrics, record.status
    from mlflow.entities import LifecycleStage, RunTag, SourceType
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME, MLFLOW_USER
    from mlflow.utils.time import get_current_time_millis
    from mlflow.utils.validation import _validate_batch_log_data, _validate_param_keys_unique

    if tags.get(MLFLOW_RUN_NAME, run_name) != run_name:
        raise ValueError(f"run_name {run_name!r} differs from the {MLFLOW_RUN_NAME} tag {tags[MLFLOW_RUN_NAME]!r}")
    checked_metrics, checked_params, checked_tags = _validate_batch_log_data(
        list(metrics), list(params), [RunTag(k, v) for k, v in {**tags, MLFLOW_RUN_NAME: run_name}.items()])
    _validate_param_keys_unique(checked_params)
    now = get_current_time_millis()
    run = {"run_uuid": run_id, "name": run_name, "artifact_uri": artifact_uri, "experiment_id": int(experiment_id),
           "source_type": SourceType.to_string(SourceType.UNKNOWN), "source_name": "", "entry_point_name": "",
           "user_id": tags.get(MLFLOW_USER, "unknown"), "status": status, "start_time": now, "end_time": now,
           "deleted_time": None, "source_version": "", "lifecycle_stage": LifecycleStage.ACTIVE}
    values: list[dict[str, Any]] = []
    latest: dict[str, dict[str, Any]] = {}
    seen: set[Metric] = set()
    for m in checked_metrics:  # as SqlAlchemyStore._log_metrics_once: exact duplicates are written once
        if m in seen:
            continue
        seen.add(m)
        is_nan, value = store.sanitize_metric_value(m.value)
        row = {"run_uuid": run_id, "key": m.key, "value": value, "timestamp": m.timestamp, "step": m.step,
               "is_nan": is_nan}
        values.append(row)
        old = latest.get(m.key)  # as _update_latest_metrics_if_necessary: the strictly later one wins
        if old is None or (m.step, m.timestamp, value) > (old["step"], old["timestamp"], old["value"]):
            latest[m.key] = row
    return {
        "runs": [run],
        "tags": [{"run_uuid": run_id, "key": t.key, "value": t.value} for t in checked_tags],
        "params": [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in checked_params],
        "metrics": values,
        "latest_metrics": list(latest.values()),
    }


def _insert(store: Any, rows: dict[str, list[dict[str, Any]]]) -> None:
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric, SqlParam, SqlRun, SqlTag
    from sqlalchemy import insert

    models = dict(zip(_MODELS, (SqlRun, SqlTag, SqlParam, SqlMetric, SqlLatestMetric)))
    with store.ManagedSessionMaker(read_only=False) as session:
        db = session.connection()
        for table, model in models.items():  # the runs first: the other rows refer to them
            if rows[table]:
                db.execute(insert(model.__table__), rows[table])  # SQL, not ORM: no object per row
