"""One driver per sweep and storage: a second ``mlpsweep run`` of a sweep that is running would
take the first one's trials in flight for a stopped driver's orphans and queue them again.

On a local storage the lock is a file beside it (``optuna.journal.NAME.lock`` for the journal,
``optuna.db.NAME.lock`` for a SQLite file) held with ``flock`` for the run: the kernel releases
it when the process ends, however it ends, so a killed driver never leaves a stale lock; a clean
run removes the file. On PostgreSQL (cluster runs, drivers on any machine) it is a session
advisory lock keyed by the sweep's name, held on a connection of its own: the server releases it
when that connection ends, a killed driver's included. MySQL storages and machines without
``fcntl`` (Windows) get no lock. ``mlpsweep status`` asks the same lock whether a driver runs the
sweep (:func:`sweep_driver`).
"""
from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["lock_path", "sweep_lock", "sweep_driver", "SweepRunning", "UNKNOWN"]

UNKNOWN = "unknown"  # sweep_driver's answer where no lock exists to ask (MySQL, no flock)
# The session holding a sweep's advisory lock on PostgreSQL (its application_name), if any.
_PG_HOLDER = ("SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
              "WHERE l.locktype = 'advisory' AND l.granted AND l.database = "
              "(SELECT oid FROM pg_database WHERE datname = current_database()) "
              "AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = :k")


class SweepRunning(RuntimeError):
    """Another process runs this sweep on this storage (the message names it and its pid)."""


def lock_path(storage: str, sweep: str) -> Path | None:
    """The lock file of ``sweep`` on ``storage`` (a journal path or a ``sqlite:///`` URL); None
    for a database server's URL."""
    from tracking.sweep import storage_file

    base = storage_file(storage)
    return None if base is None else base.with_name(f"{base.name}.{sweep}.lock")


@contextmanager
def sweep_lock(storage: str, sweep: str) -> Iterator[Path | None]:
    """Hold the sweep's lock while the block runs (yields its path; None where there is none).

    Raises:
        SweepRunning: another live process holds it.
    """
    try:
        import fcntl
    except ImportError:  # no flock here: no lock
        yield None
        return
    path = lock_path(storage, sweep)
    if path is None:
        with _database_lock(storage, sweep):
            yield None
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = _acquire(fcntl, path, sweep)
    try:
        yield path
    finally:
        try:
            path.unlink()  # while still held: a process waiting on this file sees it gone and retries
        except OSError:
            pass
        os.close(fd)


@contextmanager
def _database_lock(storage: str, sweep: str) -> Iterator[None]:
    """PostgreSQL: ``pg_try_advisory_lock`` on the sweep's key, on its own connection; other
    servers: nothing."""
    if not storage.startswith("postgresql"):
        yield
        return
    import socket

    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from sweeps.stores import connect_args

    key = _pg_key(sweep)
    me = f"mlpsweep driver {socket.gethostname()} pid {os.getpid()}"[:63]
    try:
        engine = create_engine(storage, poolclass=NullPool, connect_args=connect_args(storage, application_name=me))
        db = engine.connect()
    except Exception:  # noqa: BLE001 - an unusable storage is Optuna's to report, as without the lock
        yield
        return
    try:
        if not db.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar():
            holder = db.execute(text(_PG_HOLDER), {"k": key}).scalar()
            raise SweepRunning(f"sweep {sweep} is already running with this storage (held by "
                               f"{holder or 'another connection'}); wait for it to end (mlpsweep status {sweep}), "
                               f"stop it, or give this spec another name")
        yield
    finally:
        db.close()  # the server drops the lock with the session
        engine.dispose()


def sweep_driver(storage: str, sweep: str) -> str | None:
    """Who runs ``sweep`` on ``storage`` now: ``"process PID"`` (a local storage) or the driver's
    PostgreSQL session name; None if no driver does; :data:`UNKNOWN` where there is no lock to
    ask (MySQL, no ``flock``, a lock file it may not read, a server not answering).

    A local lock is asked by taking it shared for an instant (the kernel's answer, whatever the
    file system or container); a driver starting in that instant waits for it (:func:`_acquire`).
    """
    path = lock_path(storage, sweep)
    if path is None:
        return _pg_driver(storage, sweep) if storage.startswith("postgresql") else UNKNOWN
    try:
        import fcntl
    except ImportError:
        return UNKNOWN
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None  # removed by the run that held it, at its end
    except OSError:
        return UNKNOWN
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # closing the file below releases it
    except BlockingIOError:
        return f"process {os.pread(fd, 32, 0).decode(errors='replace').strip() or UNKNOWN}"
    except OSError:
        return UNKNOWN
    finally:
        os.close(fd)


def _pg_driver(storage: str, sweep: str) -> str | None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.pool import NullPool

    from sweeps.stores import connect_args

    try:
        engine = create_engine(storage, poolclass=NullPool, connect_args=connect_args(storage))
        with engine.connect() as db:
            holder = db.execute(text(_PG_HOLDER), {"k": _pg_key(sweep)}).first()
        engine.dispose()
    except Exception:  # noqa: BLE001 - the server is the reading command's to report
        return UNKNOWN
    return None if holder is None else (holder[0] or "another connection")


def _lock_soon(fcntl: Any, fd: int, patience: float = 0.25) -> None:
    """``flock`` ``fd`` exclusively, trying again for ``patience`` seconds: ``mlpsweep status``
    holds the lock shared for an instant to ask (:func:`sweep_driver`), a driver for its whole run.

    Raises:
        BlockingIOError: still held after ``patience`` seconds.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _pg_key(sweep: str) -> int:
    """The sweep's advisory lock key on PostgreSQL."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"mlpsweep-driver:{sweep}".encode()).digest()[:8], "big", signed=True)


def _acquire(fcntl: object, path: Path, sweep: str) -> int:
    """Open and lock ``path``; the file must still be the one at ``path`` once locked (a run
    ending meanwhile removes it), else try again on the new file."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _lock_soon(fcntl, fd)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SweepRunning(f"sweep {sweep} is already running in process {holder} with this storage "
                               f"({path.parent}); wait for it to end (mlpsweep status {sweep}), stop it, "
                               f"or give this spec another name") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            return fd
        os.close(fd)
