"""The engine the sweep driver talks to: a small protocol, an in-process implementation.

The driver never touches Ray directly. It starts *jobs* (one trial, or several same-shape
trials co-batched into one stack; the first job of an architecture verifies its backprop before
it trains), advances them after each round of intermediate reports (pruning some members), and
collects events. The Ray
implementation lives in :mod:`workers.ray_backend`; :class:`InProcessBackend` runs the same
work synchronously in this process (tests, debugging, ``--ray-address none``).
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, Sequence, Union

from workers.records import FAIL, TrialConfig, TrialResult, gate_reason

if TYPE_CHECKING:  # the trial code (torch) is the workers': the driver imports this module without it
    from workers.trial import TrialSession

__all__ = ["Backend", "Reported", "Finished", "JobUpdate", "JobLost", "Verified", "Event", "InProcessBackend",
           "WorkerState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reported:
    """A trial reached a report point; the driver decides whether to prune it."""

    number: int
    epoch: int
    value: float | None


@dataclass(frozen=True)
class Finished:
    result: TrialResult


@dataclass(frozen=True)
class Verified:
    """The backprop verification a job ran before training (``report`` None: it crashed, ``error`` says how)."""

    architecture: str
    report: Any  # models.verify.GradCheckReport, or None with ``error`` set
    error: str | None = None


@dataclass(frozen=True)
class JobUpdate:
    """What one step of a job produced (a verification comes first, in the job's first update).
    Unless ``done``, the driver must ``advance`` the job."""

    job: int
    events: tuple[Union[Verified, Reported, Finished], ...]
    done: bool


@dataclass(frozen=True)
class JobLost:
    """The worker running a job died; its unfinished trials may be retried."""

    job: int
    numbers: tuple[int, ...]
    reason: str


Event = Union[JobUpdate, JobLost]


class Backend(Protocol):
    """What the sweep driver needs from an execution engine."""

    slots: int  # workers
    depth: int  # jobs one worker may hold at once (more than 1: queued behind the one it trains)

    def start(self, job: int, configs: Sequence[TrialConfig], verify: str | None = None) -> None: ...
    def advance(self, job: int, prune: Sequence[int] = ()) -> None: ...
    def pending(self) -> bool: ...  # requests not yet answered
    def events(self, timeout: float | None = None) -> list[Event]: ...
    def close(self) -> None: ...


def _failed(number: int, exc: BaseException, node: str | None) -> Finished:
    return Finished(TrialResult(number, FAIL, reason=f"{type(exc).__name__}: {exc}"[:500], node=node))


class WorkerState:
    """The per-process state of a worker: dataset cache and the jobs it is training.

    Shared by the in-process backend and the Ray actor so both behave the same.
    """

    def __init__(self, node: str | None = None) -> None:
        from workers.trial import DatasetCache

        self.node = node
        self.datasets = DatasetCache()
        self.sessions: dict[int, TrialSession] = {}

    def start(self, job: int, configs: Sequence[TrialConfig], verify: str | None = None) -> JobUpdate:
        """Start a job: verify its architecture first when ``verify`` is ``gate`` or ``record``
        (``gate``: train only if the verification passed), then train to the first report point."""
        checked: tuple[Verified, ...] = ()
        if verify is not None:
            checked = (self.verify(configs[0].train.sizes, configs[0].train.activation),)
            report, error = checked[0].report, checked[0].error
            if verify == "gate" and not (report is not None and report.passed):
                reason = gate_reason(checked[0].architecture, error)
                return JobUpdate(job, checked + tuple(Finished(TrialResult(c.number, FAIL, reason=reason, node=self.node))
                                                      for c in configs), True)
        from workers.trial import TrialSession

        try:
            self.sessions[job] = TrialSession(list(configs), self.datasets.get(configs[0].data), self.node)
        except Exception as exc:
            log.exception("job %s could not start", job)
            return JobUpdate(job, checked + tuple(_failed(c.number, exc, self.node) for c in configs), True)
        update = self.advance(job)
        return JobUpdate(job, checked + update.events, update.done)

    def advance(self, job: int, prune: Sequence[int] = ()) -> JobUpdate:
        session = self.sessions[job]
        try:
            steps = session.advance(tuple(prune))
        except Exception as exc:
            log.exception("job %s failed", job)
            self.sessions.pop(job, None)
            return JobUpdate(job, tuple(_failed(n, exc, self.node) for n in session.open), True)
        events = tuple(Finished(s) if isinstance(s, TrialResult) else Reported(*s) for s in steps)
        done = not session.open
        if done:
            self.sessions.pop(job, None)
        return JobUpdate(job, events, done)

    def verify(self, sizes: tuple[int, ...], activation: str) -> Verified:
        """Run the backprop verification of one architecture; a crash is a report-less event."""
        from models.config import canonical_architecture
        from workers.verification import run_verification

        architecture = canonical_architecture(sizes, activation)
        try:
            return Verified(architecture, run_verification(sizes, activation))
        except Exception as exc:
            log.exception("verification of %s crashed", architecture)
            return Verified(architecture, None, error=f"{type(exc).__name__}: {exc}"[:500])


class InProcessBackend:
    """Runs every request synchronously, in order, in this process."""

    def __init__(self, slots: int = 1, node: str | None = "in-process") -> None:
        self.slots = slots
        self.depth = 1
        self.state = WorkerState(node)
        self._pending: deque[tuple[str, tuple]] = deque()

    def start(self, job: int, configs: Sequence[TrialConfig], verify: str | None = None) -> None:
        self._pending.append(("start", (job, list(configs), verify)))

    def advance(self, job: int, prune: Sequence[int] = ()) -> None:
        self._pending.append(("advance", (job, tuple(prune))))

    def pending(self) -> bool:
        return bool(self._pending)

    def events(self, timeout: float | None = None) -> list[Event]:
        if not self._pending:
            return []
        method, args = self._pending.popleft()
        return [getattr(self.state, method)(*args)]

    def close(self) -> None:
        self._pending.clear()
