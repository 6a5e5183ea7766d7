"""The stores a command uses, checked before anything starts, and finding a stored sweep again
(its Optuna study and its MLflow experiment, by name).

A local store's folder must exist (a mistyped path is refused, not created); a database server
must answer within seconds with its driver installed (MLflow alone retries a refused connection
for minutes, Optuna prints a traceback). Each problem is one line naming the flag.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["resolve_stores", "open_stored_study", "check_storage_option", "check_location", "connect_args",
           "url_scheme", "SQL_SCHEMES"]

CONNECT_TIMEOUT_S = 10  # a database server that does not answer in this long is reported as down
SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
# What a database driver calls its connect timeout (DBAPI connect() keyword), by SQLAlchemy URL
# scheme: the dialect's default driver first; drivers not listed get none.
TIMEOUT_ARG = {"postgresql": "connect_timeout", "postgresql+psycopg2": "connect_timeout",
               "postgresql+psycopg": "connect_timeout", "postgresql+pg8000": "timeout",
               "mysql": "connect_timeout", "mysql+mysqldb": "connect_timeout", "mysql+pymysql": "connect_timeout"}


SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "oracle")  # what Optuna's RDBStorage takes (SQLAlchemy)


def url_scheme(text: str) -> str | None:
    """The database of a URL, lower case and without its driver (``postgresql+psycopg2://…``:
    ``postgresql``); None for a path. (Here, not in :mod:`sweeps.optuna_adapter`: ``run`` checks
    its stores before Ray starts, and Optuna's import belongs beside Ray's start.)"""
    return text.split("://", 1)[0].split("+", 1)[0].lower() if "://" in text else None


def connect_args(url: str, timeout_s: float = CONNECT_TIMEOUT_S, **more: Any) -> dict[str, Any]:
    """SQLAlchemy ``connect_args`` for the database at ``url``: its driver's connect timeout of
    ``timeout_s`` (where the driver has one), and ``more``."""
    scheme = url.split("://", 1)[0].lower()
    name = TIMEOUT_ARG.get(scheme)
    return {**({name: int(timeout_s) if name == "connect_timeout" else timeout_s} if name else {}), **more}


def resolve_stores(tracking_uri: str | None, storage: str | None, *, create: bool = False) -> tuple[str, str]:
    """The MLflow tracking URI and Optuna storage a command should use (same defaults as run),
    each checked by :func:`check_location`; ``create``: the command may create them (``run``),
    else a SQLite storage file must exist already.

    Raises:
        UsageError: a store that cannot be used, naming ``--tracking-uri`` or ``--storage``.
    """
    from tracking.client import resolve_tracking_uri
    from tracking.sweep import default_storage

    uri = resolve_tracking_uri(tracking_uri)
    if storage:
        check_storage_option(storage)
    storage = storage or default_storage(uri)
    check_location("--tracking-uri", uri, create=True)  # a missing SQLite file: the reader says so
    check_location("--storage", storage, create=create)
    return uri, storage


def check_location(flag: str, where: str, *, create: bool = True, timeout_s: int = CONNECT_TIMEOUT_S) -> None:
    """``where`` (a ``sqlite:///`` URL, a journal path, a database server's URL; anything else,
    e.g. ``http://``, is the caller's) can be used: a local file's folder exists, and without
    ``create`` a SQLite file too; a server answers within ``timeout_s``.

    Raises:
        UsageError: the first problem, one line starting with ``flag``.
    """
    from sweeps.cli import UsageError
    from tracking.sweep import sqlite_path

    scheme = url_scheme(where)
    if scheme in ("sqlite", None):
        path = sqlite_path(where, any_driver=True) if scheme else Path(where).expanduser()
        if path is None or not path.name or path.name == ":memory:":
            return  # an in-memory database
        if path.is_dir():
            raise UsageError(f"{flag}: {path} is a folder; give a file in it (e.g. {path / 'mlflow.db'})")
        if not path.parent.is_dir():
            raise UsageError(f"{flag}: the folder {path.parent} does not exist; create it first or fix the path")
        if scheme and not create and not path.is_file():
            raise UsageError(f"{flag}: {path} does not exist; pass the {flag} the sweep used")
        if scheme and not _is_sqlite_file(path):
            raise UsageError(f"{flag}: {path} is not a SQLite database (it does not start as one); pass the {flag} "
                             f"the sweep used, or move that file away")
    elif scheme in SQL_SCHEMES:
        _check_server(flag, where, timeout_s)


def _is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is missing, empty (SQLite makes a database of it) or starts with SQLite's
    header: else MLflow and Optuna fail on it only after retrying for a minute or more."""
    try:
        with open(path, "rb") as fh:
            return fh.read(len(SQLITE_HEADER)) in (b"", SQLITE_HEADER)
    except OSError:  # missing (made later), or unreadable: the store's own open says why
        return True


def _check_server(flag: str, url: str, timeout_s: float) -> None:
    from sqlalchemy import create_engine, make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError
    from sqlalchemy.pool import NullPool

    from sweeps.cli import UsageError, first_line

    try:
        shown = make_url(url).render_as_string(hide_password=True)
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args(url, timeout_s))
    except ModuleNotFoundError as exc:
        raise UsageError(f"{flag}: {url.split('://')[0]}:// needs the Python package {exc.name!r}, "
                         "which is not installed") from None
    except (ArgumentError, SQLAlchemyError, ValueError) as exc:
        raise UsageError(f"{flag}: {url!r} is not a usable database URL: {first_line(exc)}") from None
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        raise UsageError(f"{flag}: cannot connect to {shown}: {first_line(getattr(exc, 'orig', None) or exc)}") from None
    finally:
        engine.dispose()


def check_storage_option(storage: str) -> None:
    """``--storage`` as given on the command line: a one-line usage error unless it is usable."""
    from sweeps.cli import UsageError
    from sweeps.optuna_adapter import check_storage

    try:
        check_storage(storage)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def open_stored_study(name: str, storage: str) -> Any:
    """Load the study of sweep ``name``.

    Raises:
        UsageError: no such study; the message lists the sweeps in that storage.
    """
    from sweeps.cli import UsageError
    from sweeps import optuna_adapter as oa

    try:
        return oa.load_study(name, storage)
    except KeyError:
        names = oa.study_names(storage)
        known = ", ".join(names) if names else "none"
        raise UsageError(f"NAME: no sweep {name!r} in {storage}; sweeps there: {known}") from None
