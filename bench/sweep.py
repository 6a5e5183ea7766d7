"""Benchmark: the sweep service against the training math alone (issue "Performance").

Reference workload "seed-1d-64" (bench/seed-1d-64.yaml): seed-1d, 20 % validation; width 1–100
log, depth 1–3, sigmoid/tanh/relu, adam/sgd (momentum 0.9), lr log 1e-3–1e-1; 10 restarts ×
500 full-batch epochs (tol 0: every restart runs its 500 epochs unless it diverges); objective
val MSE; 64 trials, TPE seed 0, 2 at once; full MLflow tracking with checkpoints.

Three ways to run the same 64 configurations (taken from the service's own study):
- service: ``mlpsweep run`` end to end (local Ray, SQLite MLflow and Optuna), wall time of the
  whole command and of the sweep itself (first trial asked → last trial told);
- plain loop: one process, restarts one after another with ``models.MLP`` and torch.optim,
  as a notebook would;
- batched loop: one process, each trial's restarts as one batched computation
  (``models.train_restarts``): the cost of the math alone.
Runs alternate over ``--reps`` repetitions; medians are reported. Also: tiny-trial throughput
(1 restart, 20 epochs, width 8, 500 trials, full tracking), the same run with 2 trials (a run's
fixed cost, which bounds the end-to-end rate at 500 / its wall), alternating over
``--tiny-reps`` repetitions, with the CPU the whole machine spent on each (Linux: on a machine
whose cores are all busy, wall time can only shrink with CPU), and concurrency 1 vs 2.

    .venv/bin/python bench/sweep.py [--reps 3] [--tiny-trials 500] [--tiny-reps 3] [--skip-plain]
    .venv/bin/python bench/sweep.py --once SPEC [--checkout OTHER_CLONE]   # A/B between checkouts
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from models import load_dataset, train_restarts  # noqa: E402
from models.reference import plain_restart  # noqa: E402

SPEC = ROOT / "bench" / "seed-1d-64.yaml"
TINY = """\
name: tiny
method: random
run_cap: {n}
concurrency: 2
seed: 0
data: {{dataset: seed-1d, validation_fraction: 0.2}}
parameters:
  width: {{value: 8}}
  activation: {{value: tanh}}
  optimizer: {{value: adam}}
  lr: {{distribution: log_uniform_values, min: 0.001, max: 0.1}}
  restarts: {{value: 1}}
  epochs: {{value: 20}}
"""


def machine_cpu_seconds() -> float | None:
    """CPU seconds every core of this machine has spent busy since boot (``/proc/stat``: user,
    nice, system, irq, softirq, steal); None where there is no ``/proc/stat``."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(f) for f in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_service(spec: Path, folder: Path, *extra: str, checkout: Path = ROOT) -> dict:
    """Run ``mlpsweep run`` in a fresh folder with the code (and ``.venv``) of ``checkout``;
    wall times, per-trial math time and the CPU the machine spent meanwhile (``cpu``: every
    process's, this benchmark's idle wait included, which is nil; None off Linux)."""
    import yaml
    from mlflow import MlflowClient

    from sweeps.optuna_adapter import load_study
    from tracking.sweep import default_storage

    env = {**os.environ, "PYTHONPATH": str(checkout)}
    env.pop("MLFLOW_TRACKING_URI", None)
    python = sys.executable if checkout == ROOT else str(checkout / ".venv" / "bin" / "python")
    cpu0, t0 = machine_cpu_seconds(), time.perf_counter()
    subprocess.run([python, "-m", "sweeps.cli", "run", str(spec), "--quiet", *extra], cwd=folder, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    wall, cpu1 = time.perf_counter() - t0, machine_cpu_seconds()
    name = yaml.safe_load(spec.read_text())["name"]
    study = load_study(name, default_storage(f"sqlite:///{folder}/mlflow.db"))  # journal, or an old checkout's optuna.db
    trials = study.trials
    sweep_wall = (max(t.datetime_complete for t in trials) - min(t.datetime_start for t in trials)).total_seconds()
    client = MlflowClient(f"sqlite:///{folder}/mlflow.db")
    exp = client.get_experiment_by_name(name)
    runs = client.search_runs([exp.experiment_id], "tags.`mlpsweep.kind` = 'trial'", max_results=5000)
    math_seconds = sum(r.data.metrics.get("train_seconds", 0.0) for r in runs)
    complete = [t for t in trials if t.value is not None]
    return {"wall": wall, "cpu": None if cpu0 is None or cpu1 is None else cpu1 - cpu0,
            "sweep_wall": sweep_wall, "math_seconds": math_seconds, "trials": len(trials),
            "best_val": min(t.value for t in complete) if complete else math.nan, "study": study}


def configs_of(study, spec_path: Path) -> list:
    """The service's trial configurations, rebuilt exactly as its driver built them."""
    from sweeps import optuna_adapter as oa
    from sweeps.driver import build_trial_config
    from sweeps.spec import load_spec

    spec = load_spec(spec_path)
    return [build_trial_config(spec, t.number, t.user_attrs["config"], (1, 1), oa.seed_trial(t)).train
            for t in study.trials]


def plain_loop(configs: list, data) -> tuple[float, float]:
    """Restarts one after another in plain PyTorch (``models.reference.plain_restart``: the same
    stopping rules, judged on the full training set at each epoch's start, and, with a
    ``batch_size``, the same mini-batches); each trial keeps its lowest-training-MSE restart."""
    t0 = time.perf_counter()
    best_val = math.inf
    for c in configs:
        runs = [plain_restart(c, data, r) for r in range(c.restarts)]
        finished = [run for run in runs if math.isfinite(run.train_mse)]
        if finished:
            best_val = min(best_val, min(finished, key=lambda run: run.train_mse).val_mse)
    return time.perf_counter() - t0, best_val


def batched_loop(configs: list, data) -> tuple[float, float]:
    t0 = time.perf_counter()
    best_val = math.inf
    for c in configs:
        result = train_restarts(c, data)
        v = result.best(result.val_mse)
        if v is not None and math.isfinite(v):
            best_val = min(best_val, v)
    return time.perf_counter() - t0, best_val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tiny-trials", type=int, default=500)
    parser.add_argument("--tiny-reps", type=int, default=3,
                        help="runs of the tiny sweep and of its 2-trial twin, alternating (medians)")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--once", type=Path, default=None, metavar="SPEC",
                        help="only run SPEC through the service once and print its figures (for A/B runs)")
    parser.add_argument("--checkout", type=Path, default=ROOT,
                        help="with --once: the checkout whose code and .venv run the sweep (default: this one)")
    args = parser.parse_args()
    if args.once is not None:
        with tempfile.TemporaryDirectory(prefix="mlpsweep-once-") as tmp:
            svc = run_service(args.once.resolve(), Path(tmp), checkout=args.checkout.resolve())
        svc.pop("study")
        svc["overhead"] = 1 - (svc["math_seconds"] / 2) / svc["sweep_wall"]
        svc["trials_per_second"] = {"sweep": svc["trials"] / svc["sweep_wall"], "end_to_end": svc["trials"] / svc["wall"]}
        print(json.dumps({"checkout": str(args.checkout), "spec": str(args.once), **svc}, indent=2))
        return
    data = load_dataset("seed-1d", validation_fraction=0.2, seed=0)
    rows: dict[str, list[float]] = {k: [] for k in ("service", "service_sweep", "plain", "batched", "overhead")}
    best: dict[str, float] = {}
    configs = None
    with tempfile.TemporaryDirectory(prefix="mlpsweep-bench-") as tmp:
        for rep in range(args.reps):
            folder = Path(tmp) / f"service-{rep}"
            folder.mkdir()
            svc = run_service(SPEC, folder)
            rows["service"].append(svc["wall"])
            rows["service_sweep"].append(svc["sweep_wall"])
            rows["overhead"].append(1 - (svc["math_seconds"] / 2) / svc["sweep_wall"])
            best["service"] = svc["best_val"]
            configs = configs or configs_of(svc["study"], SPEC)
            order = ["batched", "plain"] if rep % 2 else ["plain", "batched"]
            for which in order:
                if which == "plain" and args.skip_plain:
                    continue
                seconds, val = (plain_loop if which == "plain" else batched_loop)(configs, data)
                rows[which].append(seconds)
                best[which] = val
            print(f"rep {rep}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rows.items() if v), flush=True)
        folder = Path(tmp) / "c1"
        folder.mkdir()
        c1 = run_service(SPEC, folder, "--concurrency", "1")
        # the tiny sweep, and the same command training 2 trials: what a run costs before its trials
        tiny = tiny_runs(Path(tmp), {"tiny": args.tiny_trials, "floor": 2}, args.tiny_reps)

    med = {k: statistics.median(v) for k, v in rows.items() if v}
    figures = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
                   f"({torch.get_num_threads()} threads in the loops)",
        "reps": args.reps,
        "median_seconds": med,
        "service_over_plain": med["plain"] / med["service"] if "plain" in med else None,
        "service_sweep_over_plain": med["plain"] / med["service_sweep"] if "plain" in med else None,
        "service_over_batched": med["service"] / med["batched"],
        "service_sweep_over_batched": med["service_sweep"] / med["batched"],
        "overhead_fraction": med["overhead"],
        "best_val_mse": best,
        "concurrency_1_sweep_seconds": c1["sweep_wall"],
        "scaling_1_to_2": c1["sweep_wall"] / med["service_sweep"],
        # the two runs train different trials (the ask window depends on concurrency, so TPE
        # proposes otherwise): training seconds done per wall second is the like-for-like figure
        "scaling_1_to_2_training_rate": 2 * (1 - med["overhead"]) / (c1["math_seconds"] / c1["sweep_wall"]),
        **tiny_figures(tiny, args.tiny_trials),
    }
    print(json.dumps(figures, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=str))


def tiny_runs(root: Path, trials: dict[str, int], reps: int) -> dict[str, list[dict]]:
    """``reps`` runs of each named tiny sweep (its number of trials), alternating, each in a new folder."""
    runs: dict[str, list[dict]] = {name: [] for name in trials}
    for rep in range(reps):
        for name, n in (trials.items() if rep % 2 == 0 else reversed(trials.items())):
            folder = root / f"{name}-{rep}"
            folder.mkdir()
            (folder / "tiny.yaml").write_text(TINY.format(n=n))
            runs[name].append(run_service(folder / "tiny.yaml", folder))
    return runs


def tiny_figures(runs: dict[str, list[dict]], trials: int) -> dict:
    """The tiny sweep's rates (medians, and the range over runs) and what bounds them: the 2-trial
    run's wall (N trials never take less) and the CPU both runs cost the machine."""
    def median(name: str, key: str) -> float | None:
        values = [r[key] for r in runs[name] if r[key] is not None]
        return statistics.median(values) if values else None

    walls = [r["wall"] for r in runs["tiny"]]
    cpu_tiny, cpu_floor = median("tiny", "cpu"), median("floor", "cpu")
    cores = os.cpu_count() or 1
    return {
        "tiny_runs": len(walls),
        "tiny_trials_per_second_end_to_end": trials / statistics.median(walls),
        "tiny_trials_per_second_end_to_end_range": [trials / max(walls), trials / min(walls)],
        "tiny_trials_per_second_sweep": statistics.median(r["trials"] / r["sweep_wall"] for r in runs["tiny"]),
        # A 2-trial run's wall bounds the end-to-end rate: N trials can never take less than it.
        "two_trial_run_seconds": median("floor", "wall"),
        "tiny_trials_per_second_end_to_end_bound": trials / median("floor", "wall"),
        # CPU seconds of the whole machine: the run's fixed cost, each further trial's, and the
        # wall the tiny run could not beat with every core busy all along (CPU / cores).
        "two_trial_run_cpu_seconds": cpu_floor,
        "tiny_run_cpu_seconds": cpu_tiny,
        "tiny_cpu_ms_per_further_trial": None if cpu_tiny is None or cpu_floor is None
        else 1000 * (cpu_tiny - cpu_floor) / (trials - 2),
        "tiny_run_wall_floor_from_cpu": None if cpu_tiny is None else cpu_tiny / cores,
    }


if __name__ == "__main__":
    main()
