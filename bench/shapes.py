"""Benchmark: the training engine against a plain PyTorch loop on networks and datasets of
several sizes (what a sweep on a user's own data trains), 1 thread as a worker has.

Each case trains 10 restarts (one trial) or 5 trials × 10 restarts (co-batched) of a tanh net
with the engine (``StackTrainer``: all rows as one batched computation, block by block of rows
on the CPU) and with ``bench/sweep.py``'s plain loop (``models.MLP`` and torch.optim, restarts
one after another, the same stopping rules and mini-batches). Runs alternate over
``--repeats``; medians are reported. Synthetic data: x ~ N(0, 1) in 8 features, y = sin(Σx),
20 % of the rows held out for validation.

    .venv/bin/python bench/shapes.py [--repeats 3] [--case NAME ...]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import dataclass

import torch
from sweep import plain_loop  # bench/sweep.py

from models import TrainConfig, load_dataset
from models.data import Dataset
from models.training import StackTrainer


@dataclass(frozen=True)
class Case:
    name: str
    samples: int  # 0: seed-1d
    sizes: tuple[int, ...]
    epochs: int
    batch_size: int | None = None
    optimizer: str = "adam"
    trials: int = 1


CASES = [
    Case("seed-1d [1,50,50,1]", 0, (1, 50, 50, 1), 500),
    Case("4k×8 [8,32,32,1]", 5000, (8, 32, 32, 1), 60),
    Case("2k×8 [8,64,64,1] sgd", 2000, (8, 64, 64, 1), 60, optimizer="sgd"),
    Case("4k×8 [8,100,100,100,1]", 5000, (8, 100, 100, 100, 1), 10),
    Case("16k×8 [8,64,64,1] batch 256", 20000, (8, 64, 64, 1), 2, batch_size=256),
    Case("5 trials 2k×8 [8,64,64,1]", 2000, (8, 64, 64, 1), 20, trials=5),
]


def synthetic(samples: int, features: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(0)
    X = torch.randn(samples, features, generator=g)
    y = torch.sin(X.sum(1, keepdim=True))
    held = samples // 5
    empty = X[:0]
    return Dataset("synthetic", tuple(f"x{i}" for i in range(features)), ("y",),
                   X[held:], y[held:], X[:held], y[:held], empty, y[:0])


def configs(case: Case) -> list[TrainConfig]:
    return [TrainConfig(case.sizes, "tanh", case.optimizer, lr=1e-3 * (i + 1), momentum=0.9 if case.optimizer == "sgd" else 0.0,
                        batch_size=case.batch_size, max_epochs=case.epochs, restarts=10, tol=0.0, seed=i)
            for i in range(case.trials)]


def engine(cs: list[TrainConfig], data: Dataset) -> float:
    t0 = time.perf_counter()
    StackTrainer(cs, data).advance()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--case", action="append", help="only the cases whose name contains this")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, 1 thread")
    print("| case | engine | plain loop | plain / engine |\n| --- | --- | --- | --- |")
    for case in CASES:
        if args.case and not any(part in case.name for part in args.case):
            continue
        data = load_dataset("seed-1d", validation_fraction=0.2) if not case.samples else synthetic(case.samples)
        cs = configs(case)
        ours, plain = [], []
        for _ in range(args.repeats):  # alternate so drift hits both alike
            ours.append(engine(cs, data))
            plain.append(plain_loop(cs, data)[0])
        e, p = statistics.median(ours), statistics.median(plain)
        print(f"| {case.name} | {e:.3f} s | {p:.3f} s | {p / e:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
