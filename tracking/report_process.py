"""The end-of-run report, drawn by a child that the MLflow writer process forks at its start.

The report needs MLflow's store, matplotlib and, for a sweep searching two parameters or more,
scikit-learn (Optuna's fANOVA: :meth:`ReportChild.prepare` says whether): seconds of imports; not torch (the fit picture reads the best trial's ``weights.npz``). The writer process
has imported MLflow when it forks this child (in milliseconds, sharing it), so the child
imports the rest at low priority, on CPU that Ray's start and the workers leave idle; it then
waits for :meth:`ReportChild.draw`, sent once every trial is written, and draws while the
driver shuts Ray down. Where fork is unavailable (:data:`tracking.forked.FORK`), the report is
drawn in the driver by :meth:`ReportChild.wait`.
"""
from __future__ import annotations

import gc
import logging
import os
import signal
from typing import Any

from tracking.forked import FORK

__all__ = ["ReportChild", "fork_report_child", "NICENESS"]

log = logging.getLogger(__name__)

NICENESS = 10  # the imports run on CPU the sweep leaves idle
ENDED = "report: the report process ended without logging the report"


class ReportChild:
    """The driver's handle on the report child: ``draw`` once, then ``wait`` (or ``cancel``).

    ``conn`` is the driver's end of a pipe whose other end the writer process forks the child
    with; None: no child (no fork on this platform): ``wait`` draws here.
    """

    def __init__(self, conn: Any | None) -> None:
        self._conn = conn
        self._request: tuple[str | None, str, str | None] | None = None
        self._pid: int | None = None

    def pid(self, timeout: float = 30) -> int | None:
        """The child's process id (its first message), None if there is none."""
        if self._pid is None and self._conn is not None:
            try:
                if self._conn.poll(timeout):
                    self._pid = self._conn.recv()
            except (EOFError, OSError):
                pass
        return self._pid

    def prepare(self, importances: bool) -> None:
        """Tell the child, while it waits, whether to import fANOVA's scikit-learn now (~1 CPU-s):
        only a sweep with two searched parameters or more gets importances computed."""
        if self._conn is not None:
            try:
                self._conn.send({"importances": bool(importances)})
            except OSError:  # it died early: draw() says so
                pass

    def draw(self, tracking_uri: str | None, sweep: str, storage: str | None) -> None:
        """Start drawing (returns at once): every trial must be written to the store by now."""
        self._request = (tracking_uri, sweep, storage)
        if self._conn is not None:
            try:
                self._conn.send(self._request)
            except OSError:  # the child died early; the run goes on without pictures
                log.warning(ENDED)
                self.cancel()
                return
            self.pid()  # sent first thing after the fork: here long since

    def wait(self, timeout: float = 600) -> bool:
        """Wait (at most ``timeout`` s) for the report to be logged; True once it was tried."""
        if self._request is None:  # nothing asked
            self.cancel()
            return False
        if self._conn is None:
            from tracking.report import log_report_artifacts

            log_report_artifacts(*self._request)
            self._request = None
            return True
        try:
            done = self._conn.poll(timeout) and self._conn.recv() == "done"
        except (EOFError, OSError):  # it died: the run goes on without pictures
            done = False
        if not done:
            log.warning(ENDED)
        else:
            self._request = None
        self.cancel()
        return done

    def cancel(self) -> None:
        """No report after all (interrupted, failed): the child ends (it leaves when its pipe
        closes while it waits for a request; a drawing one is killed)."""
        if self._conn is not None:
            if self._request is not None and not self._conn.poll(0):  # asked, still at work
                _kill(self._pid)
            self._conn.close()
            self._conn = None
        self._request = None


def _kill(pid: int | None) -> None:
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # already gone
            pass


def fork_report_child(conn: Any, client: Any) -> None:
    """In the writer process, with MLflow imported: fork the report child, which
    serves one draw request from ``conn`` and exits (at once when the pipe closes unused).
    ``client`` is the writer's MLflow client, whose pooled connections the child must not share."""
    if not FORK:
        return
    if os.fork() != 0:
        conn.close()  # the child's alone: the pipe closes when the driver or the child is done
        return
    code = 1
    try:
        conn.send(os.getpid())
        code = _serve_one(conn, client)
    except (EOFError, ConnectionError):  # the driver is gone (Ctrl+C, a failed start): no one to draw for
        code = 0
    except BaseException:
        log.exception("report: drawing failed")
    finally:
        os._exit(code)


def _serve_one(conn: Any, client: Any) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C is the driver's to handle; it ends us
    try:
        os.setpriority(os.PRIO_PROCESS, 0, NICENESS)
    except OSError:
        pass
    from tracking.forked import forget_connections

    forget_connections(client)
    gc.disable()  # while matplotlib (and scikit-learn) are imported: no collection of what lives on
    from tracking.report import log_report_artifacts

    try:
        request = conn.recv()
        if isinstance(request, dict):  # prepare(): fANOVA pulls in scikit-learn, the slowest import
            if request.get("importances", True):
                import optuna.importance  # noqa: F401
            request = conn.recv()
    except (EOFError, ConnectionError):  # the driver closed the pipe without asking, or died: nothing to draw
        return 0
    finally:
        gc.freeze()  # the report's reads and pictures then collect only their own objects (0.3 → 0.1 s
        gc.enable()  # to read a sweep of 500 trials)
    log_report_artifacts(*request)
    _close_store(request[0])  # the run's last writer: the driver then folds SQLite's log away
    conn.send("done")
    return 0


def _close_store(tracking_uri: str | None) -> None:
    """Close this process's pooled connections to the store before it ends with ``os._exit``."""
    try:
        from tracking.bulk import close_connections
        from tracking.client import make_client

        close_connections(make_client(tracking_uri))
    except Exception as exc:  # noqa: BLE001 - the report is logged; this is tidiness
        log.debug("report: could not close the store's connections: %s", exc)
