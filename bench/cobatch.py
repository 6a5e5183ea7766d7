"""How a co-batched job's size pays: the engine's time per trial for jobs of 1–64 same-shape
trials (issue "Performance"; it sets ``sweeps.cobatch.AUTO_ROWS``).

Each job is one :class:`models.training.StackTrainer` over the trials' restarts, trained to the
end on one thread, as a worker does; best of ``--reps`` per job size. Shapes: seed-1d (80
training rows), one hidden layer of 8 or two of 32, 1 or 10 restarts.

    .venv/bin/python bench/cobatch.py [--reps 3] [--sizes 1,8,16,32,64]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from gpu import train  # noqa: E402  (bench/gpu.py: one stack trained to the end, timed)
from models import load_dataset  # noqa: E402
from models.config import TrainConfig  # noqa: E402
from sweeps.cobatch import trial_flops  # noqa: E402

# (width, depth, restarts, epochs)
SHAPES = [(8, 1, 1, 20), (8, 1, 1, 100), (32, 2, 1, 20), (32, 2, 1, 200), (8, 1, 10, 100), (64, 2, 3, 200)]


def config(i: int, width: int, depth: int, restarts: int, epochs: int) -> TrainConfig:
    return TrainConfig(sizes=(1, *[width] * depth, 1), activation="tanh", optimizer="adam",
                       lr=0.001 * 1.1**i, max_epochs=epochs, restarts=restarts, seed=i)


def job_seconds(configs: list[TrainConfig], data, reps: int) -> float:
    """The fastest of ``reps`` trainings of ``configs`` as one job (results read, as a worker does)."""
    return min(train(configs, data, "cpu")[0] for _ in range(reps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sizes", default="1,8,16,32,64", help="trials per job")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_dataset("seed-1d", 0.2, 0)
    sizes = [int(k) for k in args.sizes.split(",")]
    print(f"{'width x depth':>13} {'restarts':>8} {'epochs':>6} {'flops':>8}  ms per trial at " +
          " ".join(f"{k:>6}" for k in sizes))
    for width, depth, restarts, epochs in SHAPES:
        flops = trial_flops(config(0, width, depth, restarts, epochs), len(data.X_train))
        per_trial = [job_seconds([config(i, width, depth, restarts, epochs) for i in range(k)], data, args.reps) / k
                     for k in sizes]
        print(f"{f'{width} x {depth}':>13} {restarts:>8} {epochs:>6} {flops:8.1e}  {'':15}" +
              " ".join(f"{s * 1e3:6.2f}" for s in per_trial), flush=True)


if __name__ == "__main__":
    main()
