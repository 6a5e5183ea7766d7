"""The progress line where stderr is no terminal (a Ray job's log, CI, a file): whole lines."""
from __future__ import annotations

import io

from rich.console import Console

from sweeps.console import Progress
from sweeps.driver import SweepStats


def _log() -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=80, force_terminal=False), out


def test_a_log_gets_plain_unwrapped_lines_as_trials_finish_and_the_last_one():
    console, out = _log()
    stats = SweepStats(run_cap=400, best_value=0.0123456, best_number=17)
    with Progress(console, every_s=0.0) as progress:
        assert progress.live is None
        progress.update(stats)
        progress.update(stats)  # nothing changed: not written again
        stats.done, stats.running = 399, 1
        progress.update(stats)
        stats.done, stats.running = 400, 0
        progress.update(stats, last=True)
    lines = out.getvalue().split("\n")
    assert lines[-1] == "" and len(lines) == 4, out.getvalue()  # three lines, each ended
    assert lines[0].startswith("0/400 done · 0 running · 0 failed · 0 pruned · best 0.012346 (trial 17)")
    assert lines[2].startswith("400/400 done · 0 running") and lines[2].endswith("ETA 0s")  # longer than 80
    assert "\x1b[" not in out.getvalue()  # no terminal codes in a log


def test_a_log_line_is_written_at_most_every_so_often_but_the_last_always():
    console, out = _log()
    stats = SweepStats(run_cap=3)
    with Progress(console, every_s=3600.0) as progress:
        progress.update(stats)
        stats.done = 1
        progress.update(stats)  # within the hour: held back
        stats.done = 3
        progress.update(stats, last=True)
    assert [line[:10] for line in out.getvalue().splitlines()] == ["0/3 done ·", "3/3 done ·"]


def test_a_run_stopped_by_an_error_writes_the_line_it_held_back():
    console, out = _log()
    stats = SweepStats(run_cap=3)
    try:
        with Progress(console, every_s=3600.0) as progress:
            progress.update(stats)
            stats.done, stats.failed = 1, 1
            progress.update(stats)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert [line[:28] for line in out.getvalue().splitlines()] == ["0/3 done · 0 running · 0 fai",
                                                                    "2/3 done · 0 running · 1 fai"]


def test_only_a_real_terminal_gets_the_live_line(monkeypatch):
    import os

    monkeypatch.setenv("FORCE_COLOR", "1")  # CI systems set it: their logs are still no terminal
    assert Progress(Console(file=io.StringIO())).live is None
    leader, follower = os.openpty()
    with os.fdopen(follower, "w") as tty:
        assert Progress(Console(file=tty)).live is not None
    os.close(leader)
