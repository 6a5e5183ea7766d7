"""The end-of-run report, drawn by a child process that is started with the sweep.

Importing matplotlib, scikit-learn (Optuna's fANOVA) and the report code takes seconds of CPU;
drawing takes a few more. ``mlpsweep run`` starts this process (at low priority) when the sweep
starts, so the imports happen while the sweep runs, and tells it to draw once every trial is
written, while the driver shuts Ray down. ``python -m tracking.report_process`` is the child:
it reads one JSON line ``{"tracking_uri", "sweep", "storage"}`` from stdin and exits on EOF.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import IO, cast

__all__ = ["ReportProcess"]

NICENESS = 10  # the imports run on CPU the sweep leaves idle


class ReportProcess:
    """A child process waiting to draw and log one sweep's report (see module docs)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "tracking.report_process"], stdin=subprocess.PIPE,
                                      text=True)

    def draw(self, tracking_uri: str | None, sweep: str, storage: str | None) -> None:
        """Start drawing (returns at once): every trial must be written to the store by now."""
        stdin = cast(IO[str], self._proc.stdin)
        try:
            stdin.write(json.dumps({"tracking_uri": tracking_uri, "sweep": sweep, "storage": storage}) + "\n")
            stdin.close()
        except BrokenPipeError:  # the child died early; the run goes on without pictures
            pass

    def wait(self, timeout: float = 600) -> int | None:
        """Wait for the report to be logged; returns the child's exit code (None: gave up)."""
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            return None

    def cancel(self) -> None:
        """No report after all (interrupted, failed): end the child."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()


def _child() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the parent's to handle; it ends us
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    except OSError:
        pass
    import optuna.importance  # noqa: F401  (fANOVA pulls in scikit-learn: the slowest import)
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401  (a SQLite or PostgreSQL store's client: 2.3 s here)

    from tracking.client import enable_fast_sqlite
    from tracking.report import log_report_artifacts

    line = sys.stdin.readline()
    if not line.strip():  # the parent closed stdin without asking: nothing to draw
        return 0
    request = json.loads(line)
    enable_fast_sqlite()
    log_report_artifacts(request["tracking_uri"], request["sweep"], request["storage"])
    return 0


if __name__ == "__main__":
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(_child())
