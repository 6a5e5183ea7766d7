"""The sweep driver: owns the Optuna study (ask/tell), keeps jobs in flight on a backend,
gates architectures on backprop verification, retries trials whose worker died, and hands
every outcome to the tracker before telling Optuna.

Exactly once: a trial's MLflow run is written when its result is in (looked up by run key
first), and the trial is told to Optuna only after that write succeeded — so a driver killed at
any point leaves either a told trial with its run, or a RUNNING trial that the next run closes
and queues again.

Reproducibility: trials are told in ask order, and the k-th trial of a run is asked right after
the (k − window)-th is told and before any later one is, so the sampler sees the same finished
trials and the same trials in flight (TPE's constant liar) on every run of the same spec and seed
however the workers' timing falls. ``window`` = 2 × slots × cobatch + 1: a slot
freed by a short trial need not wait for a long one ahead of it to be told, and one trial is
always asked ahead so that sampling is off the critical path. Pruning decisions, which compare trials
mid-training, are the one exception. A wider window would leave workers idle less often behind a
long trial, but TPE would then ask knowing fewer results; no wider window found better models
(bench/window.py: 7 worse, 9 as good, over 12 seeds).

Without a pruner each worker holds its next job queued behind the one it trains (the backend's
``depth``), so it starts it without waiting a round trip through the driver; the window is the
same, so this changes when trials run, never which trials are asked.
"""
from __future__ import annotations

import logging
import math
import queue
import signal
import threading
import time
from contextlib import contextmanager
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from models.config import TrainConfig, canonical_architecture, stack_key
from sweeps import optuna_adapter as oa
from sweeps.cobatch import cobatch_limit, max_cobatch
from sweeps.spec import SweepSpec, hidden_widths, spec_digest, spec_to_yaml
from workers.backend import Backend, Finished, JobLost, JobUpdate, Reported, Verified
from workers.records import COMPLETE, FAIL, PRUNED, DataConfig, TrialConfig, TrialResult, gate_reason

__all__ = ["SweepDriver", "SweepStats", "TrialSummary", "build_trial_config", "data_config", "summarize",
           "MAX_ATTEMPTS"]

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3  # a trial whose worker dies is tried at most this often

@dataclass
class TrialSummary:
    number: int
    state: str
    params: dict[str, Any]
    train_mse: float | None = None
    val_mse: float | None = None
    test_mse: float | None = None
    reason: str | None = None


@dataclass
class SweepStats:
    """Live counters for a progress display."""

    run_cap: int
    already_done: int = 0
    done: int = 0
    failed: int = 0
    pruned: int = 0
    running: int = 0
    retried: int = 0
    best_value: float | None = None
    best_number: int | None = None
    started_at: float = field(default_factory=time.monotonic)
    last_event: str = ""

    @property
    def finished(self) -> int:
        return self.already_done + self.done + self.failed + self.pruned


def data_config(spec: SweepSpec) -> DataConfig:
    d = spec.data
    return DataConfig(
        dataset=d.dataset,
        validation_fraction=d.validation_fraction,
        seed=d.seed if d.seed is not None else spec.seed,
        features=tuple(d.features) if d.features else None,
        targets=tuple(d.targets) if d.targets else None,
        test_path=d.test_path,
        standardize=d.standardize,
    )


def build_trial_config(spec: SweepSpec, number: int, params: dict[str, Any], sizes_io: tuple[int, int],
                       seed_trial: int | None = None) -> TrialConfig:
    """Turn sampled knob values into the worker's typed recipe; its seed is trial ``seed_trial``'s
    (default ``number``; see :data:`sweeps.optuna_adapter.SEED_TRIAL`)."""
    widths = hidden_widths(params)
    batch = params.get("batch_size", "full")
    user_lr = "lr" in spec.user_parameters
    train = TrainConfig(
        sizes=(sizes_io[0], *widths, sizes_io[1]),
        activation=str(params["activation"]),
        optimizer=str(params["optimizer"]),
        lr=float(params["lr"]) if user_lr and "lr" in params else None,
        momentum=float(params.get("momentum", 0.0)),
        nesterov=bool(params.get("nesterov", False)),
        weight_decay=float(params.get("weight_decay", 0.0)),
        batch_size=None if batch == "full" else int(batch),
        max_epochs=int(params["epochs"]),
        restarts=int(params["restarts"]),
        tol=float(params.get("tol", 1e-6)),
        seed=spec.seed * 1_000_003 + (number if seed_trial is None else seed_trial),
    )
    shown = dict(params)
    if "lr" in params:
        shown["lr"] = train.learning_rate  # the optimizer's default when the spec leaves lr out
    return TrialConfig(
        number=number,
        params=shown,
        train=train,
        data=data_config(spec),
        report_every=oa.report_every(spec),
        device=spec.device,
        metric=spec.metric.name,
    )


class SweepDriver:
    """Runs one sweep to its ``run_cap`` (continuing a stored study of the same name).

    Args:
        spec: the validated spec.
        backend: where trials run (:class:`workers.ray_backend.RayBackend` or in-process).
        tracker: the MLflow writer (:class:`tracking.sweep.SweepTracker`), or None.
        storage: Optuna storage URL.
        run_cap: overrides ``spec.run_cap``.
        on_update: called with :class:`SweepStats` after every event (progress display).
    """

    def __init__(
        self,
        spec: SweepSpec,
        backend: Backend,
        tracker: Any | None,
        storage: str,
        *,
        run_cap: int | None = None,
        on_update: Callable[[SweepStats], None] | None = None,
    ) -> None:
        self.spec = spec
        self.backend = backend
        self.tracker = tracker
        self.run_cap = run_cap or spec.run_cap
        self.on_update = on_update or (lambda stats: None)
        self.study = oa.open_study(spec, storage, spec_digest(spec))
        self.stats = SweepStats(run_cap=self.run_cap)
        self.slots = max(1, min(spec.concurrency, backend.slots))
        self.cobatch = max_cobatch(spec)
        # Jobs in flight: a worker may hold its next job, queued behind the one it trains, unless a
        # pruner needs jobs advanced between reports (a queued job would delay those calls).
        self.capacity = self.slots * (backend.depth if oa.report_every(spec) <= 0 else 1)
        self.window = 2 * self.slots * self.cobatch + 1
        self.trials: dict[int, Any] = {}  # asked, not told: number -> optuna Trial
        self.configs: dict[int, TrialConfig] = {}
        self.ask_order: list[int] = []
        self.told: set[int] = set()
        self._tell_pos = 0  # ask_order[:_tell_pos] are all told
        self.ready: deque[int] = deque()  # asked and cleared to train, not started
        self.held: dict[str, list[int]] = {}  # architecture -> trials waiting for its verdict
        # architecture -> pass | fail | pending | not_run (no verdict: the next trial verifies again)
        self.verdicts: dict[str, str] = {}
        self.verifying: dict[str, int] = {}  # architecture -> the job verifying it before it trains
        self.jobs: dict[int, list[int]] = {}  # job -> trial numbers still open in it
        self.next_job = 0
        self.attempts: dict[int, int] = {}
        self.results: dict[int, TrialResult] = {}  # finished, not told
        self.logged: set[int] = set()  # results whose tracking write is done
        self.acks: queue.Queue[tuple[int, str | None]] = queue.Queue()
        self._io: tuple[int, int] | None = None
        self._rows = 0  # training rows (set with _io)
        self._stop_asked = False  # Ctrl+C seen; acted on at the next safe point
        self._all_asked = False  # no more asks this run: every logged trial may be told

    # ----------------------------------------------------------------- set-up
    def _data_shape(self) -> tuple[int, int]:
        if self._io is None:
            from models.data import load_arrays

            dc = data_config(self.spec)
            data = load_arrays(dc.dataset, **dc.load_kwargs())
            self._io = (data.n_features, data.n_targets)
            self._rows = len(data.splits[0])  # X_train
        return self._io

    def run(self) -> list[TrialSummary]:
        """Run until ``run_cap`` trials have finished; returns every finished trial's summary."""
        uid = self.study.user_attrs[oa.STUDY_UID]
        if self.tracker is not None:
            self.tracker.open_parent(spec_to_yaml(self.spec), uid, self._parent_params())
        self._recover_orphans()
        self.stats.already_done = len(oa.finished_trials(self.study))
        self._seed_best()
        self._data_shape()
        remaining = max(0, self.run_cap - self.stats.already_done)
        if self._target_reached():  # an earlier run reached metric.target: the sweep is over
            log.info("metric target reached by trial %s; no new trial", self.stats.best_number)
            remaining = 0
        grid = oa.grid_points(self.spec)
        if grid is not None:  # a grid sweep ends when every point was visited
            remaining = min(remaining, max(0, grid - self.stats.already_done))
            self.stats.run_cap = min(self.run_cap, grid)
        asked = 0
        try:
            with self._deferred_ctrl_c():
                while True:
                    self._start_jobs(full_only=True)  # a freed slot never waits for the next ask
                    while asked < remaining and self._can_ask():
                        self._ask_one()
                        asked += 1
                        self._start_jobs(full_only=True)
                        self._safe_point()
                    self._all_asked = asked >= remaining
                    self._start_jobs()
                    self._drain_acks()
                    self._tell_ready()
                    self._safe_point()
                    if asked >= remaining and not self.trials:
                        break
                    self._wait()
                    self._drain_acks()
                    self._tell_ready()
                    self._safe_point()
                    self.on_update(self.stats)
                    if self._target_reached() and asked < remaining:
                        log.info("metric target reached; finishing the trials in flight")
                        remaining = asked
        except KeyboardInterrupt:
            self._interrupt()
            raise
        return self._finish()

    @contextmanager
    def _deferred_ctrl_c(self) -> Iterator[None]:
        """Ctrl+C sets a flag that the loop acts on between steps, never inside an Optuna or
        MLflow transaction (a tell cut in half leaves a trial neither told nor re-queueable).
        A second Ctrl+C interrupts at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def on_sigint(signum: int, frame: Any) -> None:
            if self._stop_asked:
                raise KeyboardInterrupt
            self._stop_asked = True

        previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    def _safe_point(self) -> None:
        if self._stop_asked:
            raise KeyboardInterrupt

    def _recover_orphans(self) -> None:
        """Trials a killed driver left RUNNING: tell those whose run was fully written (their
        result is safe in MLflow), close half-written runs, and queue the rest again."""
        for t in oa.orphaned_trials(self.study):
            outcome = self.tracker.logged_outcome(t.number) if self.tracker is not None else None
            if outcome is None:
                if self.tracker is not None:
                    self.tracker.close_partial_run(t.number)
                oa.requeue_trial(self.study, t, "interrupted: the driver stopped before the trial finished")
                log.warning("trial %s was left running by a stopped driver; queued again", t.number)
                continue
            metrics = outcome["metrics"]
            for key in ("train_mse", "val_mse", "test_mse"):
                if key in metrics:
                    oa.set_trial_attr(self.study, t.number, key, metrics[key])
            oa.tell(self.study, t.number, outcome["state"], metrics.get(self.spec.metric.name), outcome["reason"])
            log.warning("trial %s finished before the driver stopped; recorded from its MLflow run", t.number)

    def _parent_params(self) -> dict[str, Any]:
        s = self.spec
        return {"method": s.method, "metric": s.metric.name, "run_cap": s.run_cap, "concurrency": s.concurrency,
                "seed": s.seed, "dataset": s.data.dataset, "verify": s.verify}

    def _seed_best(self) -> None:
        best = oa.best_trial(self.study)
        if best is not None:
            self.stats.best_value, self.stats.best_number = best.value, best.number

    def _target_reached(self) -> bool:
        target = self.spec.metric.target
        return target is not None and self.stats.best_value is not None and self.stats.best_value <= target

    # ----------------------------------------------------------------- ask
    def _busy(self) -> int:
        return len(self.jobs)

    def _can_ask(self) -> bool:
        waiting = len(self.ready) + sum(len(v) for v in self.held.values())
        if waiting >= max(0, self.capacity - self._busy()) * self.cobatch + 1:  # one asked ahead
            return False
        last = len(self.ask_order) - self.window + 1  # trials before this one must be logged first
        return all(n in self.told or n in self.logged for n in self.ask_order[self._tell_pos:max(0, last)])

    def _ask_one(self) -> None:
        self._tell_ready()  # the sampler sees exactly trials 0 … k − window told, the rest running
        trial = self.study.ask()
        params = oa.suggest_params(trial, self.spec)
        number = trial.number
        self.trials[number] = trial
        self.ask_order.append(number)
        try:
            config = build_trial_config(self.spec, number, params, self._data_shape(), oa.seed_trial(trial))
        except ValueError as exc:
            self._finished(TrialResult(number, FAIL, reason=f"invalid configuration: {exc}"))
            return
        self.configs[number] = config
        if self.spec.verify == "off":
            self.ready.append(number)
            return
        architecture = self._architecture(number)
        verdict = self.verdicts.get(architecture)
        if verdict is None and self.tracker is not None:
            verdict = self.tracker.find_verdict(architecture)
        if verdict in (None, "not_run"):  # this trial's job verifies the architecture first
            self.verdicts[architecture] = "pending"
            self.ready.append(number)
            return
        self.verdicts[architecture] = verdict
        if self.spec.verify == "record" or verdict == "pass":
            self.ready.append(number)
        elif verdict == "pending":
            self.held.setdefault(architecture, []).append(number)
        else:
            self._gate_fail(number, architecture)

    def _architecture(self, number: int) -> str:
        train = self.configs[number].train
        return canonical_architecture(train.sizes, train.activation)

    def _gate_fail(self, number: int, architecture: str, error: str | None = None) -> None:
        self._finished(TrialResult(number, FAIL, reason=gate_reason(architecture, error)))

    # ----------------------------------------------------------------- start
    def _start_jobs(self, full_only: bool = False) -> None:
        """Start jobs while slots are free; same-shape trials waiting together share a job
        (``full_only``: only jobs of ``cobatch`` trials, the rest wait for more asks)."""
        while self.ready and self._busy() < self.capacity:
            first = self.ready[0]
            key = stack_key(self.configs[first].train)
            limit = cobatch_limit(self.spec, self.configs[first].train, self._rows)
            group = [n for n in self.ready if stack_key(self.configs[n].train) == key][:limit]
            if full_only and len(group) < limit:
                return
            for number in group:
                self.ready.remove(number)
            job = self.next_job
            self.next_job += 1
            self.jobs[job] = group
            for number in group:
                self.attempts[number] = self.attempts.get(number, 0) + 1
            self._count_running()
            self.backend.start(job, [self.configs[n] for n in group], self._carries_verification(first, job))

    def _count_running(self) -> None:
        """Trials training now: those of the oldest ``slots`` jobs (a worker's next job waits)."""
        self.stats.running = sum(len(g) for g in list(self.jobs.values())[:self.slots])

    def _carries_verification(self, number: int, job: int) -> str | None:
        """The first job of an architecture with no verdict verifies it before training (no
        separate verification job, no round trip through the driver between the two)."""
        if self.spec.verify == "off":
            return None
        architecture = self._architecture(number)
        if self.verdicts.get(architecture) != "pending" or architecture in self.verifying:
            return None
        self.verifying[architecture] = job
        return self.spec.verify

    # ----------------------------------------------------------------- events
    def _handle(self, event: Any) -> None:
        if isinstance(event, JobUpdate):
            prune: list[int] = []
            for e in event.events:  # a verification comes first: its verdict tags the trials after it
                if isinstance(e, Verified):
                    self._verified(e)
                elif isinstance(e, Finished):
                    self.jobs[event.job].remove(e.result.number)
                    self._finished(e.result)
                elif isinstance(e, Reported) and e.value is not None:
                    trial = self.trials[e.number]
                    trial.report(e.value, e.epoch)
                    if trial.should_prune():
                        prune.append(e.number)
            if event.done:
                self.jobs.pop(event.job, None)
            else:
                self.backend.advance(event.job, tuple(prune))
        elif isinstance(event, JobLost):
            self.jobs.pop(event.job, None)
            self._retry(event)
        self._count_running()

    def _retry(self, lost: JobLost) -> None:
        """A dead worker's trials are queued again (a verification it carried goes with them)."""
        carried = [a for a, job in self.verifying.items() if job == lost.job]
        for architecture in carried:
            del self.verifying[architecture]
        gave_up = [n for n in lost.numbers if self.attempts.get(n, 0) >= MAX_ATTEMPTS]
        if carried and len(gave_up) == len(lost.numbers):
            self._verification_lost(carried[0], f"{lost.reason} ({MAX_ATTEMPTS} attempts)")
        for number in lost.numbers:
            if number in gave_up:
                self._finished(TrialResult(number, FAIL, reason=f"{lost.reason}; gave up after {MAX_ATTEMPTS} "
                                                                f"attempts"))
                continue
            log.warning("trial %s: %s; retrying (attempt %d of %d)", number, lost.reason,
                        self.attempts[number] + 1, MAX_ATTEMPTS)
            self.stats.retried += 1
            self.ready.appendleft(number)

    def _verified(self, event: Verified) -> None:
        self.verifying.pop(event.architecture, None)
        if event.report is None:  # it crashed: no verdict
            self._verification_lost(event.architecture, event.error or "no report")
            return
        passed = bool(event.report.passed)
        self.verdicts[event.architecture] = "pass" if passed else "fail"
        if self.tracker is not None:
            self.tracker.record_verification(event.report)
        for number in self.held.pop(event.architecture, []):
            if passed:
                self.ready.append(number)
            else:
                self._gate_fail(number, event.architecture)

    def _verification_lost(self, architecture: str, error: str) -> None:
        """A verification that could not run is never read as a failure: the trials waiting on it
        fail saying so (tag ``not_run``), and the next trial of the architecture verifies again."""
        log.error("backprop verification of %s could not run: %s", architecture, error)
        self.verdicts[architecture] = "not_run"
        for number in self.held.pop(architecture, []):
            self._gate_fail(number, architecture, error)

    def _finished(self, result: TrialResult) -> None:
        """A trial's outcome is in: write its run, then (on the ack) tell Optuna in order."""
        number = result.number
        self.results[number] = result
        config = self.configs.get(number)
        if self.tracker is None or config is None:
            self.acks.put((number, None))
            return
        arch = self._architecture(number)
        verdict = self.verdicts.get(arch, "off") if self.spec.verify != "off" else "off"
        self.tracker.log_trial(config, result, verified=verdict, architecture=arch,
                               on_done=lambda error, n=number: self.acks.put((n, error)))

    def _wait(self) -> None:
        """Block until something happens: a backend event or a tracking ack. Never spin: a
        spinning driver holds the GIL the tracking thread needs."""
        if self.backend.pending():
            # Results may be waiting on acks: then poll the backend briefly, between ack checks.
            for event in self.backend.events(timeout=0.02 if self.results else 0.5):
                self._handle(event)
            return
        try:
            self._ack(*self.acks.get(timeout=0.5))
        except queue.Empty:
            pass

    def _drain_acks(self) -> None:
        while True:
            try:
                self._ack(*self.acks.get_nowait())
            except queue.Empty:
                return

    def _ack(self, number: int, error: str | None) -> None:
        """The tracker wrote (or gave up writing) a trial's run: it may now be told."""
        if error is not None:
            old = self.results[number]
            self.results[number] = TrialResult(number, FAIL, reason=f"tracking failed: {error}"[:500], node=old.node)
        self.logged.add(number)

    def _tell_ready(self) -> None:
        """Tell logged trials in ask order; stop at the first one still out. While trials remain
        to be asked, the trial at ask position k − window is the last one told before the k-th
        ask: which trials the sampler sees as told never depends on timing."""
        limit = len(self.ask_order) if self._all_asked else len(self.ask_order) - self.window + 1
        while self._tell_pos < limit:
            self._safe_point()  # Ctrl+C between two tells, never inside one
            number = self.ask_order[self._tell_pos]
            if number not in self.told:
                if number not in self.logged:
                    return
                self._tell(number, self.results.pop(number))
            self._tell_pos += 1

    def _tell(self, number: int, result: TrialResult) -> None:
        trial = self.trials.pop(number)
        for key, val in (("train_mse", result.train_mse), ("val_mse", result.val_mse), ("test_mse", result.test_mse)):
            if val is not None and math.isfinite(val):
                trial.set_user_attr(key, val)
        if number in self.configs:
            trial.set_user_attr("config", self.configs[number].params)
        value = result.objective(self.spec.metric.name)
        oa.tell(self.study, trial, result.state, value, result.reason)
        self.told.add(number)
        self.logged.discard(number)
        self._count(result, value)

    def _count(self, result: TrialResult, value: float | None) -> None:
        if result.state == COMPLETE and value is not None:
            self.stats.done += 1
            if self.stats.best_value is None or value < self.stats.best_value:
                self.stats.best_value, self.stats.best_number = value, result.number
        elif result.state == PRUNED:
            self.stats.pruned += 1
        else:
            self.stats.failed += 1
        self.stats.last_event = f"trial {result.number}: {result.state}" + (f" ({result.reason})" if result.reason else "")
        if self.tracker is not None:
            self.tracker.log_progress(result.number, value if result.state == COMPLETE else None, self.stats.best_value)

    # ----------------------------------------------------------------- the end
    def _interrupt(self) -> None:
        """Ctrl+C: logged results are told; trials in flight are closed and queued again."""
        if self.tracker is not None:
            self.tracker.flush()
        self._drain_acks()
        for number in [n for n in self.ask_order if n in self.logged and n in self.results and n not in self.told]:
            self._tell(number, self.results.pop(number))
        pending = list(self.trials)
        log.warning("interrupted: re-queuing %d trial(s) in flight", len(pending))
        oa.mark_interrupted(self.study, [self.trials[n] for n in pending])
        self.trials.clear()
        if self.tracker is not None:
            self.tracker.close_parent({}, status="KILLED")

    def _finish(self) -> list[TrialSummary]:
        summaries = summarize(self.study)
        if self.tracker is not None:
            metric = self.spec.metric.name
            complete = [s for s in summaries if s.state == COMPLETE and getattr(s, metric) is not None]
            best = min(complete, key=lambda s: getattr(s, metric)) if complete else None
            self.tracker.close_parent({
                "best_val_mse": best.val_mse if best else None,
                "best_train_mse": best.train_mse if best else None,
                "best_test_mse": best.test_mse if best else None,
                "best_trial": best.number if best else None,
                "n_complete": len(complete),
                "n_failed": sum(s.state == FAIL for s in summaries),
                "n_pruned": sum(s.state == PRUNED for s in summaries),
            })
        return summaries


def summarize(study: Any) -> list[TrialSummary]:
    """Every finished (not interrupted) trial of a study, as summaries."""
    out = []
    for t in oa.finished_trials(study):
        out.append(TrialSummary(
            number=t.number,
            state=t.state.name,
            params=dict(t.user_attrs.get("config") or t.params),
            train_mse=t.user_attrs.get("train_mse"),
            val_mse=t.user_attrs.get("val_mse"),
            test_mse=t.user_attrs.get("test_mse"),
            reason=t.user_attrs.get(oa.FAIL_REASON),
        ))
    return out
