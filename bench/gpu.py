"""Benchmark and check: the training engine on a CUDA GPU against the CPU (issue "Performance", item 4).

Needs only PyTorch, NumPy and SciPy (no Ray, MLflow or Optuna), so that it runs wherever a GPU is
lent, with nothing installed:

1. agreement: every batched optimizer and activation, and lbfgs, trained on the CPU and on the GPU
   (float32): relative difference of the winner's train MSE, statuses and winner equal or not;
   K co-batched trials against each trained alone on the GPU (largest curve difference);
2. co-batch scaling: K trials of one shape ([1, 64, 64, 1] tanh adam, 10 restarts x 500
   full-batch epochs, learning rates spread) as one stack, on each device: seconds per stack
   and trials per second of training math;
3. seed-1d-64: the reference workload's 64 configurations (``--configs``, written by
   ``--dump-configs`` from a service run, which needs the whole install) through the batched
   loop, one trial per stack and co-batched by shape, on each device.

    .venv/bin/python bench/gpu.py --dump-configs bench/seed-1d-64-configs.json   # once, with the install
    python3 bench/gpu.py [--parts agreement,scaling,seed-1d-64] [--json out.json]  # where the GPU is

The project's .venv holds torch's CPU build (constraints.txt): run this with a Python whose torch
is a CUDA build (the lent GPU machines' python3 is one).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.append(str(ROOT))  # appended: PYTHONPATH may point at another engine to compare

from models import TrainConfig, load_dataset  # noqa: E402
from models.training import StackTrainer, stack_key  # noqa: E402

SHAPE = (1, 64, 64, 1)
CONFIGS = ROOT / "bench" / "seed-1d-64-configs.json"


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def train(configs: list[TrainConfig], data, device: str) -> tuple[float, list]:
    """Train one stack to the end; wall seconds (device work included) and the results."""
    sync(device)
    t0 = time.perf_counter()
    trainer = StackTrainer(configs, data, device=device)
    trainer.advance()
    results = trainer.results()
    sync(device)
    return time.perf_counter() - t0, results


def agreement(data, device: str) -> list[dict]:
    rows = []
    cases = [(opt, act) for opt in ("adam", "sgd", "rmsprop") for act in ("tanh", "relu", "sigmoid")] + [("lbfgs", "tanh")]
    for opt, act in cases:
        config = TrainConfig((1, 16, 16, 1), act, opt, lr={"adam": 0.01, "sgd": 0.01, "rmsprop": 0.003}.get(opt, 0.5),
                             momentum=0.9 if opt == "sgd" else 0.0, max_epochs=50 if opt == "lbfgs" else 500,
                             restarts=5, tol=1e-7, seed=7)
        (_, [cpu]), (_, [gpu]) = train([config], data, "cpu"), train([config], data, device)
        a, b = cpu.best(cpu.train_mse), gpu.best(gpu.train_mse)
        rows.append({"case": f"{opt}/{act}", "rel_diff_train_mse": abs(a - b) / abs(a) if a and b else math.nan,
                     "same_status": cpu.status == gpu.status, "same_winner": cpu.best_restart == gpu.best_restart})
    alone_configs = [TrainConfig(SHAPE, "tanh", "adam", lr=lr, max_epochs=300, restarts=4, tol=0.0, seed=s)
                     for s, lr in enumerate((0.002, 0.01, 0.03, 0.05))]
    _, together = train(alone_configs, data, device)
    diff = 0.0
    for c, t in zip(alone_configs, together):
        _, [alone] = train([c], data, device)
        for x, y in zip(alone.train_curves, t.train_curves):
            diff = max(diff, max(abs(u - v) for u, v in zip(x, y)))
    rows.append({"case": f"co-batched 4 vs alone ({device})", "max_abs_curve_diff": diff})
    return rows


def scaling(data, device: str, ks: list[int], repeats: int) -> list[dict]:
    out = []
    for k in ks:
        configs = [TrainConfig(SHAPE, "tanh", "adam", lr=10 ** (-3 + 2 * i / max(1, k - 1)), max_epochs=500,
                               restarts=10, tol=0.0, seed=i) for i in range(k)]
        times = [train(configs, data, device)[0] for _ in range(repeats)]
        seconds = statistics.median(times)
        out.append({"device": device, "k": k, "rows": 10 * k, "seconds": seconds, "trials_per_second": k / seconds})
        print(f"  {device:5} K={k:4d}: {seconds:7.3f} s per stack, {k / seconds:8.1f} trials/s", flush=True)
    return out


def seed_1d_64(configs: list[TrainConfig], data, device: str, cobatch: int) -> dict:
    groups: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        groups.setdefault(stack_key(c), []).append(c)
    stacks = [g[i : i + cobatch] for g in groups.values() for i in range(0, len(g), cobatch)]
    t0 = time.perf_counter()
    best = math.inf
    for stack in stacks:
        for r in train(stack, data, device)[1]:
            v = r.best(r.val_mse)
            if v is not None and math.isfinite(v):
                best = min(best, v)
    return {"device": device, "cobatch": cobatch, "stacks": len(stacks), "seconds": time.perf_counter() - t0, "best_val": best}


def dump_configs(path: Path) -> None:
    import tempfile

    sys.path.insert(0, str(ROOT / "bench"))
    from sweep import SPEC, configs_of, run_service

    with tempfile.TemporaryDirectory(prefix="mlpsweep-gpu-") as tmp:
        svc = run_service(SPEC, Path(tmp))
    path.write_text(json.dumps([dataclasses.asdict(c) for c in configs_of(svc["study"], SPEC)], indent=0))
    print(f"wrote {path}: best val MSE {svc['best_val']:.5f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", type=Path, default=CONFIGS, help="seed-1d-64's configurations (JSON from --dump-configs)")
    parser.add_argument("--dump-configs", type=Path, metavar="JSON", help="run seed-1d-64 through the service, write its configs")
    parser.add_argument("--parts", default="agreement,scaling,seed-1d-64", help="which parts to run (comma-separated)")
    parser.add_argument("--ks", default="1,4,16,64,256", help="co-batch sizes for the scaling part")
    parser.add_argument("--cpu-max-k", type=int, default=16, help="largest co-batch timed on the CPU")
    parser.add_argument("--cpu-threads", type=int, default=1, help="torch threads on the CPU (workers use 1)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gpu", default="cuda", help="the accelerator's torch device (cpu: a dry run of this script)")
    args = parser.parse_args()
    if args.dump_configs:
        dump_configs(args.dump_configs)
        return
    gpu = args.gpu
    if gpu.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device here (torch.cuda.is_available() is False); --gpu cpu for a dry run")
    torch.set_num_threads(args.cpu_threads)
    data = load_dataset("seed-1d", validation_fraction=0.2, seed=0)
    train([TrainConfig(SHAPE, "tanh", "adam", max_epochs=20, restarts=2)], data, gpu)  # context, cuBLAS handles
    figures: dict = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {torch.cuda.get_device_name() if gpu.startswith('cuda') else 'no GPU'}, torch {torch.__version__}, "
                   f"{args.cpu_threads} CPU thread(s)",
        "engine": str(Path(sys.modules["models"].__file__).parent),
    }
    print(figures["machine"], "| engine", figures["engine"], flush=True)
    parts = args.parts.split(",")
    if "agreement" in parts:
        figures["agreement"] = agreement(data, gpu)
        for row in figures["agreement"]:
            print("  agreement", row, flush=True)
    if "scaling" in parts:
        ks = [int(k) for k in args.ks.split(",")]
        figures["scaling"] = scaling(data, gpu, ks, args.repeats) + scaling(
            data, "cpu", [k for k in ks if k <= args.cpu_max_k], args.repeats)
    if "seed-1d-64" in parts and args.configs.exists():
        configs = [TrainConfig(**{**c, "sizes": tuple(c["sizes"])}) for c in json.loads(args.configs.read_text())]
        figures["seed_1d_64"] = [seed_1d_64(configs, data, d, k) for d in (gpu, "cpu") for k in (1, 64)]
        for row in figures["seed_1d_64"]:
            print("  seed-1d-64", row, flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
