"""The Ray implementation of the backend: a pool of long-lived trial workers (actors).

Each actor imports torch once, uses one thread, caches datasets, and keeps the sessions of the
trials it trains, so a trial resumed after a report continues on the same actor with no
process start. A worker may hold ``depth`` jobs: the one it trains and the next, queued in Ray,
so that it starts the next as soon as it finishes, not a round trip through the driver later.
"""
from __future__ import annotations

import gc
import logging
import math
import os
from collections import deque
from typing import Any

import ray

from workers.backend import Event, Finished, JobLost, JobUpdate, WorkerState
from workers.ray_connect import connect
from workers.records import TrialConfig

__all__ = ["RayBackend", "connect", "TrialWorker", "gpu_share"]

log = logging.getLogger(__name__)


@ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=0)
class TrialWorker:
    """One long-lived worker process: torch imported once, one thread, jobs kept in memory.

    A worker that dies is restarted by Ray (``max_restarts=-1``); the jobs it held are reported
    lost to the driver, which retries their trials (calls are not retried blindly by Ray, so a
    trial's side effects stay under the driver's control).
    """

    def __init__(self) -> None:
        gc.disable()  # torch's import makes ~10^5 objects: collecting them meanwhile is wasted work
        try:
            import torch

            torch.set_num_threads(1)
            self.state = WorkerState(node=ray.get_runtime_context().get_node_id())
        finally:
            gc.freeze()  # what the import made lives as long as the process: no collection walks it again
            gc.enable()

    def start(self, job: int, configs: list[TrialConfig], verify: str | None = None) -> Event:
        return self.state.start(job, configs, verify)

    def advance(self, job: int, prune: tuple[int, ...]) -> Event:
        return self.state.advance(job, prune)

    def pid(self) -> int:
        return os.getpid()


def gpu_share(gpus: float, slots: int) -> float:
    """The GPU fraction each of ``slots`` workers asks Ray for so that all of them fit on ``gpus``
    whole GPUs (Ray places a fraction on one GPU): each GPU takes ``ceil(slots / gpus)`` workers.
    Rounded down to Ray's resource precision (1e-4), so that the shares of one GPU sum to <= 1."""
    if gpus < 1 or slots < 1:
        raise ValueError(f"gpu_share: need gpus >= 1 and slots >= 1, got {gpus} and {slots}")
    per_gpu = math.ceil(slots / math.floor(gpus))
    return math.floor(10_000 / per_gpu) / 10_000


class RayBackend:
    """Runs jobs on ``slots`` TrialWorker actors spread by Ray over the cluster, at most ``depth``
    on each at a time (a job goes to the worker holding the fewest). With ``gpus`` (``device:
    cuda``), each worker also asks for ``gpu_share(gpus, slots)`` of a GPU, so that Ray places
    the workers on nodes that have one."""

    def __init__(self, slots: int, depth: int = 2, gpus: float = 0.0) -> None:
        self.slots = slots
        self.depth = depth
        options: dict[str, Any] = {"scheduling_strategy": "SPREAD"}
        if gpus:
            options["num_gpus"] = gpu_share(gpus, slots)
        self.workers = [TrialWorker.options(**options).remote() for _ in range(slots)]
        self.load = [0] * slots  # jobs each worker holds
        self.owner: dict[int, int] = {}  # job -> worker index
        self.open: dict[int, set[int]] = {}  # job -> trial numbers not finished yet
        self.inflight: dict[ray.ObjectRef, tuple[int, str, int]] = {}  # -> (worker, method, job)
        self.queue: deque[tuple[int, tuple]] = deque()

    def wait_ready(self, timeout: float = 60.0) -> int:
        """Wait (at most ``timeout`` s) until the workers have started (a Ray worker process plus
        torch's import: 2–3 s), so the sweep's first trials do not wait for them; returns how
        many are ready. Workers the cluster has no room for yet are not waited for longer."""
        ready, _ = ray.wait([w.pid.remote() for w in self.workers], num_returns=len(self.workers), timeout=timeout)
        return len(ready)

    # ----------------------------------------------------------------- requests
    def start(self, job: int, configs: list[TrialConfig], verify: str | None = None) -> None:
        self.open[job] = {c.number for c in configs}
        self._submit(job, (job, list(configs), verify))

    def advance(self, job: int, prune: tuple[int, ...] = ()) -> None:
        self._call(self.owner[job], "advance", job, job, tuple(prune))

    def _submit(self, job: int, args: tuple) -> None:
        index = min(range(self.slots), key=self.load.__getitem__)
        if self.load[index] >= self.depth:
            self.queue.append((job, args))
            return
        self.load[index] += 1
        self.owner[job] = index
        self._call(index, "start", job, *args)

    def _call(self, index: int, method: str, job: int, *args: Any) -> None:
        ref = getattr(self.workers[index], method).remote(*args)
        self.inflight[ref] = (index, method, job)

    # ----------------------------------------------------------------- results
    def pending(self) -> bool:
        return bool(self.inflight or self.queue)

    def events(self, timeout: float | None = None) -> list[Event]:
        if not self.inflight:
            return []
        ready, rest = ray.wait(list(self.inflight), num_returns=1, timeout=timeout)
        if ready and rest:
            more, _ = ray.wait(rest, num_returns=len(rest), timeout=0)
            ready += more
        out: list[Event] = []
        for ref in ready:
            index, method, job = self.inflight.pop(ref)
            try:
                event = ray.get(ref)
            except ray.exceptions.RayError as exc:
                event = self._lost(method, job, exc)
            out.append(event)
            if isinstance(event, JobUpdate):
                self.open[job] -= {e.result.number for e in event.events if isinstance(e, Finished)}
                if not event.done:
                    continue
            self.owner.pop(job, None)
            self.open.pop(job, None)
            self.load[index] -= 1
            if self.queue:
                self._submit(*self.queue.popleft())
        return out

    def _lost(self, method: str, job: int, exc: Exception) -> Event:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        reason = f"worker lost ({type(exc).__name__}: {first})"
        log.warning("%s of job %s: %s", method, job, reason)
        return JobLost(job, tuple(sorted(self.open.get(job, ()))), reason)

    def worker_pids(self) -> list[int]:
        return ray.get([w.pid.remote() for w in self.workers])

    def close(self) -> None:
        for w in self.workers:
            ray.kill(w)
        self.workers.clear()
