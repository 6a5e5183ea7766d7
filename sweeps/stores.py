"""Finding a stored sweep again: its Optuna study and its MLflow experiment, by name."""
from __future__ import annotations

from typing import Any

__all__ = ["resolve_stores", "open_stored_study", "check_storage_option"]


def resolve_stores(tracking_uri: str | None, storage: str | None) -> tuple[str, str]:
    """The MLflow tracking URI and Optuna storage a command should use (same defaults as run)."""
    from tracking.client import resolve_tracking_uri
    from tracking.sweep import default_storage

    uri = resolve_tracking_uri(tracking_uri)
    if storage:
        check_storage_option(storage)
    return uri, storage or default_storage(uri)


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
