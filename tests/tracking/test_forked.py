"""tracking.forked: a function run in a forked child, its result or its error brought back."""
from __future__ import annotations

import os

import pytest

from tracking import forked
from tracking.forked import Forked


def _pid_and_square(x: int) -> tuple[int, int]:
    return os.getpid(), x * x


def _fails(message: str) -> None:
    raise ValueError(message)


def _dies() -> None:
    os._exit(3)


def test_the_result_comes_back_from_another_process():
    pid, value = Forked(_pid_and_square, 7).get()
    assert value == 49
    assert pid != os.getpid()


def test_an_error_in_the_child_is_raised_here_with_its_traceback():
    with pytest.raises(RuntimeError, match="ValueError: no such trial"):
        Forked(_fails, "no such trial").get()


def test_a_child_that_dies_without_an_answer_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="died .*exit code 3"):
        Forked(_dies).get()


def test_a_child_that_hangs_is_killed_after_the_timeout():
    import time

    job = Forked(time.sleep, 60)
    with pytest.raises(RuntimeError, match="no answer in 0.5 s"):
        job.get(timeout=0.5)
    assert not job.alive() and job.exitcode == -9


def test_without_fork_the_function_runs_here_when_asked(monkeypatch):
    monkeypatch.setattr(forked, "FORK", False)
    job = Forked(_pid_and_square, 3)
    assert job.get() == (os.getpid(), 9)


def test_cancel_ends_the_child():
    import time

    job = Forked(time.sleep, 60)
    job.cancel()
    assert not job.alive() and job.exitcode == -9
