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
