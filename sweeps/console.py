"""What the CLI shows people: the live progress line and the tables (rich)."""
from __future__ import annotations

import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.table import Table

__all__ = ["top_table", "progress_line", "fmt", "dashboard_line", "Progress", "LOG_EVERY_S"]

LOG_EVERY_S = 10.0  # in a log (no terminal), the progress line is written at most this often


def fmt(x: float | None, digits: int = 5) -> str:
    return "—" if x is None else f"{x:.{digits}g}"


def _hidden(params: dict[str, Any]) -> str:
    from sweeps.spec import hidden_widths

    return "-".join(map(str, hidden_widths(params)))


def top_table(summaries: Sequence[Any], metric: str, k: int = 5, title: str | None = None) -> Table:
    """The best ``k`` COMPLETE trials by the sweep's metric."""
    complete = [s for s in summaries if s.state == "COMPLETE" and getattr(s, metric) is not None]
    complete.sort(key=lambda s: getattr(s, metric))
    table = Table(title=title or f"top {min(k, len(complete))} trials by {metric}", title_justify="left")
    for col in ("trial", "hidden", "depth", "activation", "optimizer", "lr", "train_mse", "val_mse", "test_mse"):
        table.add_column(col, justify="right" if col not in ("activation", "optimizer") else "left")
    for s in complete[:k]:
        p = s.params
        table.add_row(str(s.number), _hidden(p), str(p.get("depth", "")), str(p.get("activation", "")),
                      str(p.get("optimizer", "")), fmt(p.get("lr"), 3), fmt(s.train_mse), fmt(s.val_mse),
                      fmt(s.test_mse))
    return table


def progress_line(stats: Any) -> str:
    elapsed = time.monotonic() - stats.started_at
    new_done = stats.done + stats.failed + stats.pruned
    left = stats.run_cap - stats.finished
    eta = f"{left * elapsed / new_done:.0f}s" if new_done else "?"
    best = fmt(stats.best_value) + (f" (trial {stats.best_number})" if stats.best_number is not None else "")
    return (f"[bold]{stats.finished}/{stats.run_cap}[/] done · {stats.running} running · {stats.failed} failed · "
            f"{stats.pruned} pruned · best {best} · {elapsed:.0f}s elapsed · ETA {eta}")


class Progress:
    """The sweep's progress line on ``console`` (stderr). On a terminal it is redrawn in place
    (rich's ``Live``). In a log — a Ray job's (``submit --wait``, ``ray job logs``), CI's, a
    file, also with ``FORCE_COLOR`` set — ``Live`` would write only the last line, at the end,
    without its newline; there it is a plain line, never wrapped, whenever the counts (done,
    running, failed, pruned) have changed but at most every ``every_s`` seconds, and the last
    one when the sweep ends (or the line held back, when it stops on an error or Ctrl+C)."""

    def __init__(self, console: Console, every_s: float = LOG_EVERY_S) -> None:
        from rich.live import Live

        self.console = console
        self.every_s = every_s
        self.live = Live("starting…", console=console, refresh_per_second=4, transient=False) \
            if console.is_terminal and _isatty(console.file) else None
        self._said: tuple[int, ...] | None = None  # the counts of the last line written to a log
        self._at = -math.inf
        self._held: str | None = None  # a line not written yet (too soon after the last)

    def __enter__(self) -> "Progress":
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, kind: Any, *exc: Any) -> None:
        if self.live is not None:
            self.live.__exit__(kind, *exc)
        elif kind is not None and self._held is not None:
            self.console.print(self._held, soft_wrap=True)

    def update(self, stats: Any, last: bool = False) -> None:
        """Show ``stats`` (a :class:`sweeps.driver.SweepStats`); ``last``: the sweep has ended."""
        line = progress_line(stats)
        if self.live is not None:
            self.live.update(line)
            return
        counts = (stats.finished, stats.running, stats.failed, stats.pruned)
        if counts == self._said and not last:
            return
        now = time.monotonic()
        if last or now - self._at >= self.every_s:
            self.console.print(line, soft_wrap=True)
            self._said, self._at, self._held = counts, now, None
        else:
            self._held = line


def _isatty(file: Any) -> bool:
    try:
        return bool(file.isatty())
    except (AttributeError, ValueError):  # no such method, or a closed file
        return False


def stderr_console() -> Console:
    return Console(stderr=True)


def dashboard_line(uri: str, experiment: str) -> str:
    """Where to watch the sweep: a tracking server's own address, else the ``mlflow ui`` command
    for the local store — this install's ``mlflow`` (a path where it is not on PATH)."""
    if uri.startswith(("http://", "https://")):
        return f"Dashboard: {uri.rstrip('/')}   (experiment '{experiment}')"
    beside = Path(sys.executable).parent / "mlflow"
    found = shutil.which("mlflow")
    command = str(beside) if beside.exists() and (found is None or Path(found).resolve() != beside.resolve()) else "mlflow"
    return f"Dashboard: {command} ui --backend-store-uri {uri} --host 127.0.0.1   (experiment '{experiment}')"
