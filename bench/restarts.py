"""Benchmark: wall time of 10 restarts vs 1 restart in the batched training engine.

Workload (issue "Foundation"): a [1, 50, 50, 1] tanh net, 500 full-batch Adam epochs on
seed-1d (tol 0, so every restart runs all epochs). Target: 10 restarts cost at most 2x one.

    .venv/bin/python bench/restarts.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from models import TrainConfig, load_dataset, train_restarts


def measure(restarts: int, data, repeats: int) -> list[float]:
    config = TrainConfig((1, 50, 50, 1), "tanh", "adam", lr=0.01, max_epochs=500, restarts=restarts, tol=0.0)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        train_restarts(config, data)
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (workers use 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("seed-1d")
    measure(1, data, 1)  # warm-up
    one, ten = [], []
    for _ in range(args.repeats):  # alternate so drift hits both alike
        one += measure(1, data, 1)
        ten += measure(10, data, 1)
    m1, m10 = statistics.median(one), statistics.median(ten)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}")
    print(f"1 restart  : median {m1:.3f} s over {len(one)} runs")
    print(f"10 restarts: median {m10:.3f} s over {len(ten)} runs")
    print(f"ratio 10/1 : {m10 / m1:.2f}x (target <= 2.0x)")


if __name__ == "__main__":
    main()
