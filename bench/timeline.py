"""Where a sweep's worker time goes: training math, job overhead, idle slots (issue "Performance").

Runs SPEC the way ``mlpsweep run`` does (``sweeps.cmd_run.execute``: local Ray, MLflow and the
Optuna journal in a temporary folder) with timestamps on every job the driver hands to a worker
and on every ask and tracking ack, then splits the slot time of the sweep (first ask to last
result, times concurrency) into:

- math: time inside the training loop (``train_seconds`` of every trial);
- job overhead: the rest of each job as the driver sees it (Ray's round trip, the verification
  a job runs first, set-up and final evaluation, pickling);
- idle: a worker with no job, with what the driver was waiting for (an ask held back by the
  reproducibility window waits for a trial ``window`` places earlier to be logged);
- tail: workers done while the last trial finishes.

    .venv/bin/python bench/timeline.py bench/seed-1d-64.yaml [--gaps]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_by_process() -> dict[str, float]:
    """CPU seconds so far of every process on the machine, grouped by what it is (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    me = os.getpid()
    out: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        seconds = (int(fields[11]) + int(fields[12])) / tick
        if int(entry.name) == me:
            group = "driver"
        elif "TrialWorker" in cmd:
            group = "workers"
        elif "multiprocessing" in cmd and "spawn_main" in cmd:
            group = "mlflow writer"
        elif "ray" in cmd:
            group = "ray system"
        else:
            group = "other: " + (cmd.split()[0].rsplit("/", 1)[-1] if cmd.strip() else entry.name)
        out[group] = out.get(group, 0.0) + seconds
    return out


def instrumented_run(spec_path: Path) -> tuple[list[tuple], float]:
    """Run the sweep; returns the time-ordered events and the command's wall time."""
    import sweeps.driver as driver_module
    import workers.ray_backend as rb
    from sweeps.cmd_run import execute, prepare
    from workers.backend import Finished, JobUpdate, Verified

    events: list[tuple] = []  # (time, kind, worker, job or trial number, extra)
    now = time.perf_counter

    class TimedBackend(rb.RayBackend):
        def _call(self, index, method, job, *args):
            events.append((now(), "submit", index, job, method))
            super()._call(index, method, job, *args)

        def events(self, timeout=None):
            before = dict(self.inflight)
            out = super().events(timeout)
            t = now()
            for ref in set(before) - set(self.inflight):
                index, method, job = before[ref]
                mine = [e for u in out if isinstance(u, JobUpdate) and u.job == job for e in u.events]
                finished = [e.result for e in mine if isinstance(e, Finished)]
                verified = [e.report.seconds for e in mine if isinstance(e, Verified) and e.report is not None]
                # a co-batched job's trials share one session: its wall time once, its math summed
                session = max((r.wall_seconds for r in finished), default=0.0)
                events.append((t, "done", index, job, (sum(r.train_seconds for r in finished), session, sum(verified))))
            return out

    rb.RayBackend = TimedBackend  # start_backend looks it up at call time
    Driver = driver_module.SweepDriver
    ack, ask = Driver._ack, Driver._ask_one

    def timed_ack(self, number, error):
        events.append((now(), "ack", None, number, None))
        return ack(self, number, error)

    def timed_ask(self):
        t = now()
        ask(self)
        events.append((t, "ask", None, self.ask_order[-1], now() - t))

    run = Driver.run

    def timed_run(self):
        before = cpu_by_process()
        try:
            return run(self)
        finally:
            after = cpu_by_process()
            used = {k: round(after.get(k, 0) - before.get(k, 0), 2) for k in after}
            events.append((now(), "cpu", None, None, {k: v for k, v in used.items() if v >= 0.05}))

    Driver._ack, Driver._ask_one, Driver.run = timed_ack, timed_ask, timed_run
    spec, _ = prepare(str(spec_path))
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="mlpsweep-timeline-") as tmp:
        os.chdir(tmp)
        try:
            t0 = now()
            execute(spec, tracking_uri=None, storage=None, ray_address=None, quiet=True)
            wall = now() - t0
        finally:
            os.chdir(cwd)
    return sorted(events, key=lambda e: e[0]), wall


def split(events: list[tuple], slots: int) -> tuple[dict, list[str]]:
    """Slot time of the sweep by where it went, and one line per idle gap over 50 ms.

    A worker may hold a second job queued behind the one it trains: that job's time counts from
    the moment the driver saw the first one done (the worker started it then or earlier)."""
    start = min(e[0] for e in events if e[1] == "ask")
    end = max(e[0] for e in events if e[1] == "done")
    busy = math_s = idle = session_s = verify_s = 0.0
    held: dict[int, deque[float]] = {}  # worker -> submit times of the jobs it holds, oldest first
    last_done: dict[int, float] = {}
    free_since: dict[int, tuple[float, int]] = {}
    gaps = []
    for i, (t, kind, worker, job, extra) in enumerate(events):
        if kind == "submit":
            if not held.get(worker):
                t_free, i_free = free_since.pop(worker, (start, 0))
                idle += t - t_free
                if t - t_free > 0.05:
                    waited = [f"{e[1]} {e[3]} at {e[0] - start:.2f}" for e in events[i_free + 1:i] if e[1] in ("ask", "ack")]
                    gaps.append(f"worker {worker} idle {t - t_free:.2f} s from {t_free - start:.2f} s: "
                                + ", ".join(waited[:4]))
            held.setdefault(worker, deque()).append(t)
        elif kind == "done":
            busy += t - max(held[worker].popleft(), last_done.get(worker, start))
            last_done[worker] = t
            math_s += extra[0]
            session_s += extra[1]
            verify_s += extra[2]
            if not held[worker]:
                free_since[worker] = (t, i)
    tail = sum(end - t for t, _ in free_since.values())
    total = slots * (end - start)
    figures = {
        "sweep_seconds": round(end - start, 2),
        "slot_seconds": round(total, 2),
        "math": round(math_s / total, 3),
        "job_overhead": round((busy - math_s) / total, 3),
        "  of which verification": round(verify_s / total, 3),
        "  of which trial set-up and results in the worker": round((session_s - math_s) / total, 3),
        "  of which Ray's round trip and the rest": round((busy - session_s - verify_s) / total, 3),
        "idle": round(idle / total, 3),
        "tail": round(tail / total, 3),
        "overhead (1 - math / concurrency / sweep)": round(1 - math_s / total, 3),
        "asks_seconds": round(sum(e[4] for e in events if e[1] == "ask"), 2),
        "cpu_seconds_during_the_sweep": next((e[4] for e in events if e[1] == "cpu"), {}),
    }
    return figures, gaps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec", type=Path)
    parser.add_argument("--gaps", action="store_true", help="also list every idle gap over 50 ms and its cause")
    args = parser.parse_args()
    import yaml

    slots = int(yaml.safe_load(args.spec.read_text()).get("concurrency", 1))
    events, wall = instrumented_run(args.spec.resolve())
    figures, gaps = split(events, slots)
    if args.gaps:
        print("\n".join(gaps))
    print(json.dumps({"spec": str(args.spec), "command_seconds": round(wall, 2), **figures}, indent=2))


if __name__ == "__main__":
    main()
