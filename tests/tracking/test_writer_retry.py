"""A store that stays down fails the remaining writes fast: once one write has spent its retry
budget, the next are tried once each, until one succeeds and the full budget is back."""
from __future__ import annotations

import time

from tracking.writer import RunWriter


def test_after_a_write_spent_its_budget_the_next_are_tried_once_until_one_succeeds(tmp_path):
    writer = RunWriter(f"sqlite:///{tmp_path}/mlflow.db", "retry", None, retry_seconds=1.2)
    attempts: list[float] = []

    def failing() -> None:
        attempts.append(time.monotonic())
        raise OSError("database disk image is malformed")

    def timed(write) -> tuple[str | None, float, int]:
        attempts.clear()
        start = time.monotonic()
        error = writer.retrying("trial", write)
        return error, time.monotonic() - start, len(attempts)

    error, seconds, tries = timed(failing)
    assert error == "OSError: database disk image is malformed" and tries == 2 and seconds >= 0.5  # retried
    error, seconds, tries = timed(failing)
    assert error is not None and tries == 1 and seconds < 0.2  # the store is down: no budget spent again
    assert timed(lambda: None)[0] is None  # it is back
    error, seconds, tries = timed(failing)
    assert error is not None and tries == 2  # a new outage gets the full budget


def _damaged_store_error(tmp_path) -> Exception:
    """The error SQLite really raises for a file that is not a database, wrapped as MLflow wraps it."""
    import sqlite3

    from mlflow.exceptions import MlflowException

    bad = tmp_path / "not-a-database"
    bad.write_bytes(b"this is not a database file " * 100)
    try:
        sqlite3.connect(bad).execute("SELECT * FROM runs")
    except sqlite3.DatabaseError as exc:
        try:
            raise MlflowException(f"(sqlite3.DatabaseError) {exc}") from exc
        except MlflowException as wrapped:
            return wrapped
    raise AssertionError("SQLite read a file that is not a database")


def test_a_damaged_store_is_not_retried_and_says_so(tmp_path):
    from tracking.writer import DAMAGED, is_permanent

    writer = RunWriter(f"sqlite:///{tmp_path}/mlflow.db", "damaged", None, retry_seconds=30)
    damaged = _damaged_store_error(tmp_path)
    attempts: list[int] = []

    def write() -> None:
        attempts.append(1)
        raise damaged

    start = time.monotonic()
    error = writer.retrying("trial 0", write)
    assert attempts == [1] and time.monotonic() - start < 1.0  # the old code: retried for 30 s
    assert error is not None and error.startswith(DAMAGED) and "not a database" in error
    assert is_permanent(damaged)
    assert not is_permanent(OSError("database disk image is malformed"))  # a message alone proves nothing
    import sqlite3

    locked = sqlite3.OperationalError("database is locked")
    assert not is_permanent(locked)  # an outage: retried
