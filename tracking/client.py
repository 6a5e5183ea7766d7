"""Shared MLflow handles: one explicit :class:`~mlflow.MlflowClient`, never the fluent API.

The fluent ``mlflow.start_run`` keeps global, thread-unsafe state; everything in ``tracking/``
takes a client and passes run ids explicitly instead.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:  # MLflow is imported where it is used: the sweep driver never imports it
    from mlflow import MlflowClient

__all__ = ["DEFAULT_TRACKING_URI", "resolve_tracking_uri", "make_client", "ensure_experiment", "log_folder",
           "fold_sqlite_log"]

log = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative: the mlflow.db in the current directory


def resolve_tracking_uri(tracking_uri: str | None) -> str:
    """The tracking URI to use: the argument, else ``$MLFLOW_TRACKING_URI``, else :data:`DEFAULT_TRACKING_URI`."""
    return tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def make_client(tracking_uri: str | None = None, *, create: bool = True) -> MlflowClient:
    """An MLflow client for ``tracking_uri`` (resolved by :func:`resolve_tracking_uri`).

    Args:
        tracking_uri: e.g. ``sqlite:///mlflow.db``, ``http://127.0.0.1:5000``, or None.
        create: create a missing SQLite store (else, for a command that only reads, an error).

    Returns:
        A client bound to that store (and its default artifact location).

    Raises:
        MlflowException: ``create`` is False and the SQLite file does not exist.
    """
    from mlflow import MlflowClient

    # Each REST call retries briefly (MLflow's default backoff sleeps minutes on a server that is
    # down): a command that only reads says so in seconds, and a sweep's tracker has its own loop
    # (MLPSWEEP_TRACKING_RETRY_S, 180 s by default) that rides out longer outages and resumes
    # within seconds of the server's return. Set either variable to choose otherwise.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):]).expanduser()
        if not create and not path.exists():
            from mlflow.exceptions import MlflowException

            raise MlflowException(f"no MLflow store at {path}; pass the --tracking-uri the sweep used")
        _create_sqlite_store(path)
    return MlflowClient(tracking_uri=uri)


def _create_sqlite_store(path: Path) -> None:
    """Create a missing SQLite store all at once: MLflow builds its schema in a side file (dozens of
    migrations, seconds), which is linked into place only when complete. A process killed in
    the middle leaves no half-migrated ``mlflow.db`` that every later run would refuse.

    The migrated, empty schema is kept as a template (:func:`schema_template`): the next new
    store is a copy of it, to which MLflow adds only its default experiment (~1 s of CPU less,
    at the start of a sweep, on the cores Ray and the workers start on)."""
    if path.exists() or not path.parent.is_dir():
        return
    side = path.with_name(f".{path.name}.creating-{os.getpid()}")
    try:
        built = _build_with_template(side, schema_template())
        with _creating(path):
            if not path.exists():
                _drop_stale_log(path)
                os.link(built, path)  # fails if a process outside this lock made one meanwhile: keep it
    except FileExistsError:
        pass
    finally:
        _remove_sqlite(side)
        _remove_sqlite(_fresh(side))


@contextmanager
def _creating(path: Path) -> Iterator[None]:
    """Hold a lock on ``path``'s folder (where ``fcntl`` exists): one process at a time checks,
    cleans and links a new store into place, so none removes the log of a store that another
    one has just linked and opened."""
    try:
        import fcntl
    except ImportError:  # not POSIX: the link still refuses a second store
        yield
        return
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def fold_sqlite_log(tracking_uri: str) -> None:
    """Fold a SQLite store's write-ahead log into ``mlflow.db`` and remove the ``-wal``/``-shm``
    files, once every process of a run is done with it (they end without closing their
    connections, which would do this): the store is then one file again, whole if copied alone.
    Best effort, never waiting: a store another sweep is writing to keeps its log (PASSIVE
    folds what it can without blocking that writer), which is as safe."""
    import sqlite3

    uri = resolve_tracking_uri(tracking_uri)
    if not uri.startswith("sqlite:///"):
        return
    path = Path(uri[len("sqlite:///"):]).expanduser()
    if not path.is_file():
        return
    try:
        db = sqlite3.connect(path, timeout=1)
        try:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()  # the last connection to close removes the log
    except sqlite3.Error as exc:
        log.debug("could not fold the write-ahead log of %s: %s", path, exc)


def _drop_stale_log(path: Path) -> None:
    """Remove the ``-wal`` and ``-shm`` files of a deleted store at ``path`` (``rm mlflow.db``
    while a sweep had it open, or after one was killed). SQLite would replay that write-ahead
    log into the new file, which is not empty (SQLite drops the log of an empty one itself):
    the old store's pages over the new one's, "database disk image is malformed" at worst."""
    for leftover in _logs(path):
        if leftover.exists():
            log.warning("removing %s: the write-ahead log of a deleted MLflow store, which would damage "
                        "the new %s", leftover, path.name)
            leftover.unlink(missing_ok=True)


def _build_with_template(side: Path, template: Path | None) -> Path:
    """Build a store at ``side`` from ``template`` when there is one; else (or when it proves
    damaged: it is removed) by MLflow's migrations, keeping a template for next time. Returns
    where the store was built."""
    if template is not None and template.is_file():
        try:
            _build_store(side, template)
            return side
        except Exception:  # noqa: BLE001 - the migrations below say what is really wrong, if anything
            log.warning("the MLflow schema template %s is unusable; building the schema anew", template)
            template.unlink(missing_ok=True)
            side = _fresh(side)
    _build_store(side, None)
    if template is not None:
        _keep_template(side, template)
    return side


def _fresh(side: Path) -> Path:
    """A second side file for a retry: MLflow keeps one engine per URI."""
    return side.with_name(side.name + "-fresh")


def schema_template() -> Path | None:
    """Where the empty SQLite schema of this MLflow's newest migration is kept (it may not exist
    yet): ``$XDG_CACHE_HOME/mlpsweep`` (else ``~/.cache/mlpsweep``); None without a usable folder."""
    try:  # MLflow's own helper (private: a release without it just gets no template)
        from mlflow.store.db.utils import _get_latest_schema_revision

        revision = _get_latest_schema_revision()
    except Exception:  # noqa: BLE001
        return None
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "mlpsweep"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder / f"mlflow-schema-{revision}.db"


def _build_store(side: Path, template: Path | None) -> None:
    """A complete store at ``side``: a copy of ``template`` or MLflow's migrations, then MLflow's
    own default experiment; its write-ahead log folded into the file."""
    import shutil
    import sqlite3

    from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    if template is not None:
        shutil.copyfile(template, side)
    store = SqlAlchemyStore(f"sqlite:///{side}", DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)  # checks the schema's revision
    store.engine.dispose()
    with sqlite3.connect(side) as db:
        db.execute("PRAGMA journal_mode=DELETE")
    db.close()


def _keep_template(store: Path, template: Path) -> None:
    """Save ``store``'s schema, without its default experiment (its artifact path is this
    folder's), as ``template``; best effort, atomic (a reader sees a whole template or none)."""
    import shutil
    import sqlite3

    tmp = template.with_name(f".{template.name}.{os.getpid()}")
    try:
        shutil.copyfile(store, tmp)
        with sqlite3.connect(tmp) as db:
            db.execute("DELETE FROM experiments")
        db.close()
        os.replace(tmp, template)
    except (OSError, sqlite3.Error) as exc:
        log.debug("could not keep the MLflow schema template %s: %s", template, exc)
    finally:
        tmp.unlink(missing_ok=True)


def _logs(path: Path) -> tuple[Path, Path]:
    """A SQLite file's write-ahead log and its shared-memory index."""
    return path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")


def _remove_sqlite(path: Path) -> None:
    for leftover in (path, *_logs(path)):
        leftover.unlink(missing_ok=True)


def log_folder(client: MlflowClient, artifact_uri: str, folder: str | Path) -> None:
    """Copy ``folder``'s files into the artifacts of the run whose artifact URI is ``artifact_uri``.

    ``client.log_artifacts`` / ``log_text`` first look the run up to learn that URI (a
    ``get_run``: about 15 % of a tiny trial's store time); ``create_run`` has just returned it.
    """
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    get_artifact_repository(artifact_uri, tracking_uri=client.tracking_uri).log_artifacts(str(folder))


def ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None = None) -> str:
    """Id of the experiment called ``name``, creating it (or restoring it if deleted) as needed.

    Safe against a concurrent creator: when another process wins the race, its experiment is
    looked up and returned.

    Args:
        client: the tracking client.
        name: experiment name.
        artifact_location: where a newly created experiment stores artifacts (store default if None).

    Returns:
        The experiment id.

    Raises:
        MlflowException: the store refused for another reason than the race.
    """
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    for _ in range(3):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == LifecycleStage.DELETED:
                _restore(client, experiment.experiment_id, name)
            return str(experiment.experiment_id)
        try:
            return str(client.create_experiment(name, artifact_location=artifact_location))
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            log.debug("experiment %r was created concurrently; looking it up", name)
    raise MlflowException(f"experiment {name!r}: could neither find nor create it")


def _restore(client: MlflowClient, experiment_id: str, name: str) -> None:
    from mlflow.entities import LifecycleStage
    from mlflow.exceptions import MlflowException

    try:
        client.restore_experiment(experiment_id)
        log.info("restored deleted experiment %r (id %s)", name, experiment_id)
    except MlflowException:
        # someone else restored it first; anything else shows up as the experiment still deleted
        if client.get_experiment(experiment_id).lifecycle_stage != LifecycleStage.ACTIVE:
            raise


_FAST_SQLITE = False


# SQLite's answers for a damaged file: no retry mends it (SQLITE_CORRUPT: e.g. a write-ahead log
# left by a deleted store replayed into a new one; SQLITE_NOTADB: not a SQLite file at all).
DAMAGED_SQLITE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def enable_fast_sqlite() -> None:
    """Make every SQLite store this process opens (MLflow's and Optuna's) commit without an fsync.

    Sets ``journal_mode=WAL`` and ``synchronous=NORMAL`` on each new SQLite connection. A commit
    then costs microseconds instead of an fsync (17 ms on our machines, dozens per trial). A
    killed process loses nothing (the WAL lives in the OS page cache); only a power cut can
    drop the last commits, and the database stays consistent. Readers (``mlflow ui``,
    ``mlpsweep status``) keep working while a sweep writes.
    """
    global _FAST_SQLITE
    if _FAST_SQLITE:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "connect")
    def _pragmas(dbapi_connection, connection_record):  # type: ignore[no-untyped-def]
        if type(dbapi_connection).__module__.startswith("sqlite3"):
            import sqlite3

            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.DatabaseError as exc:
                # A file that is no database, or a damaged one: its first query says so. Raised
                # here, MLflow would retry creating its engine for ~100 s before any error.
                if getattr(exc, "sqlite_errorname", "") not in DAMAGED_SQLITE_ERRORS:
                    raise
            finally:
                cursor.close()

    _FAST_SQLITE = True
