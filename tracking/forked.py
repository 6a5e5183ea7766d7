"""Run one function in a forked child process while this one goes on; get its result later.

The report's slowest parts (fANOVA, the pictures) are CPU-bound Python: in one process they
take turns, in two they run on two cores. Fork shares what this process already imported, so a
child starts in milliseconds. Where fork is not available (or not safe: macOS, Windows), the
function runs in this process when its result is asked for.

A child must not use a database connection this process opened before the fork: call
:func:`forget_connections` on the client it uses before its first query.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import traceback
from typing import Any, Callable, Generic, TypeVar

__all__ = ["Forked", "forget_connections", "FORK"]

T = TypeVar("T")
FORK = sys.platform.startswith("linux")  # elsewhere fork is missing or unsafe with system frameworks


class Forked(Generic[T]):
    """``fn(*args)`` started now in a forked child; :meth:`get` returns its result or raises its error.

    A plain ``os.fork`` (not a multiprocessing Process): it works in a daemonic process too (the
    report child of the MLflow writer), and the child leaves by ``os._exit``, running no handler
    of this process's.
    """

    def __init__(self, fn: Callable[..., T], *args: Any) -> None:
        self._fn, self._args = fn, args
        self.pid: int | None = None
        self._status: int | None = None
        if FORK:
            self._conn, child_end = multiprocessing.Pipe(duplex=False)
            self.pid = os.fork()
            if self.pid == 0:
                self._conn.close()
                code = 1
                try:
                    _child(child_end, fn, args)
                    code = 0
                finally:
                    os._exit(code)
            child_end.close()

    def get(self, timeout: float = 300.0) -> T:
        """The function's result (waits at most ``timeout`` seconds for the child).

        Raises:
            RuntimeError: the function raised in the child (its traceback is the message), the
                child died without an answer, or it gave none in time (it is killed).
        """
        if self.pid is None:
            return self._fn(*self._args)
        ok, value = False, f"the child process gave no answer in {timeout:g} s"
        try:
            if self._conn.poll(timeout):
                ok, value = self._conn.recv()
            else:
                self.cancel()
        except EOFError:
            value = None  # it died without answering: its exit code, once reaped, says how
        finally:
            self._conn.close()
            self._reap()
        if not ok:
            raise RuntimeError(value or f"the child process died (exit code {self.exitcode})")
        return value

    @property
    def exitcode(self) -> int | None:
        """The child's exit code once it has ended (-N: killed by signal N), else None."""
        return None if self._status is None else os.waitstatus_to_exitcode(self._status)

    def alive(self) -> bool:
        if self.pid is None or self._status is not None:
            return False
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        if pid:
            self._status = status
        return not pid

    def cancel(self) -> None:
        """Not needed after all: end the child."""
        if self.alive():
            assert self.pid is not None
            os.kill(self.pid, signal.SIGKILL)
        self._reap()

    def _reap(self) -> None:
        if self.pid is not None and self._status is None:
            self._status = os.waitpid(self.pid, 0)[1]


def _child(conn: Any, fn: Callable[..., Any], args: tuple) -> None:
    try:
        answer = (True, fn(*args))
    except BaseException:
        answer = (False, traceback.format_exc(limit=8))
    conn.send(answer)
    conn.close()


def forget_connections(client: Any) -> None:
    """In a forked child: drop the pooled database connections inherited from the parent (without
    closing them: they are the parent's), so the child's queries open its own."""
    from tracking.bulk import sql_store

    store = sql_store(client)
    if store is not None:
        store.engine.dispose(close=False)
