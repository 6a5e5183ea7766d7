"""Benchmark and check: the training engine on a CUDA GPU against the CPU (issue "Performance", item 4).

Needs only PyTorch, NumPy and SciPy (no Ray, MLflow or Optuna), so that it runs wherever a GPU is
lent, with nothing installed:

1. agreement: every batched optimizer and activation, and lbfgs, trained on the CPU and on the GPU
   (float32): relative difference of the winner's train MSE, statuses and winner equal or not;
2. ops: whether a batched product's or a per-row sum's result for a row depends on how many rows
   the call holds, where the row sits, or how the call's memory is aligned (the rows of a call of
   10 rows against the same rows in calls of 1 to 2,560, at other positions and offsets);
3. exactness: co-batched trials against each trained alone on the GPU, bit for bit, for several
   nets, optimizers and a mini-batch case, with the engine's row chunks (``--chunks``: 0 = none,
   auto = what the engine picks, or a number of rows);
4. co-batch scaling: K trials of one shape ([1, 64, 64, 1] tanh adam, 10 restarts x 500
   full-batch epochs, learning rates spread) as one stack, on each device and with each row
   chunk: seconds per stack and trials per second of training math;
5. seed-1d-64: the reference workload's 64 configurations (``--configs``, written by
   ``--dump-configs`` from a service run, which needs the whole install) through the batched
   loop, one trial per stack and co-batched by shape, on each device.

    .venv/bin/python bench/gpu.py --dump-configs bench/seed-1d-64-configs.json   # once, with the install
    python3 bench/gpu.py [--parts agreement,ops,exactness,scaling,seed-1d-64] [--json out.json]  # where the GPU is

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


def train(configs: list[TrainConfig], data, device: str, chunk: int | None = None) -> tuple[float, list]:
    """Train one stack to the end (``chunk``: the engine's row chunk, None = its own choice);
    wall seconds (device work included) and the results."""
    sync(device)
    t0 = time.perf_counter()
    trainer = StackTrainer(configs, data, device=device, row_chunk=chunk)
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
    return rows


def _differs(ref: torch.Tensor, got: torch.Tensor) -> dict:
    """How many of ref's rows got differs in, bit for bit, and by how much at most."""
    rows = [i for i in range(ref.shape[0]) if not torch.equal(ref[i], got[i])]
    return {"rows_differing": len(rows), "max_abs_diff": float((ref - got).abs().max()) if rows else 0.0}


def ops(device: str) -> list[dict]:
    """Ten rows computed in calls of other heights, positions and alignments, against a call of ten."""
    g = torch.Generator().manual_seed(0)
    big = 2560
    out = []
    products = {"X@W0 (80x1, 1x64)": ((80, 1), (1, 64), False), "a@W1 (80x64, 64x64)": ((80, 64), (64, 64), False),
                "a@W2 (80x64, 64x1)": ((80, 64), (64, 1), False), "a^T@delta (64x80, 80x64)": ((80, 64), (80, 64), True)}
    for name, (sa, sb, transposed) in products.items():
        A = torch.randn(big, *sa, generator=g).to(device)
        B = torch.randn(big, *sb, generator=g).to(device)
        op = (lambda x, y: torch.bmm(x.transpose(1, 2), y)) if transposed else torch.bmm
        ref = op(A[:10], B[:10])
        for height in (1, 10, 16, 40, 64, 128, 256, 1024, big):
            for pos in (0, 5) if height >= 16 else (0,):
                a, b = A[:height].clone(), B[:height].clone()
                n = min(10, height)
                a[pos : pos + n], b[pos : pos + n] = A[:n], B[:n]
                got = op(a, b)[pos : pos + n]
                out.append({"op": name, "height": height, "pos": pos, **_differs(ref[:n], got)})
        for shift in (1, 4, 16, 64):  # the same 128-row call, its memory shifted by `shift` floats
            a = torch.empty(128 * A[0].numel() + shift, device=device)[shift:].view(128, *sa)
            a.copy_(A[:128])
            out.append({"op": name, "height": 128, "pos": 0, "shift_floats": shift, **_differs(ref, op(a, B[:128])[:10])})
    X = torch.randn(big, 80, 64, generator=g).to(device)
    sums = {"sum over samples (bias grad)": lambda x: x.sum(dim=1, keepdim=True),
            "mean over samples, outputs (MSE)": lambda x: x[..., :1].mean(dim=(-2, -1))}
    for name, f in sums.items():
        ref = f(X[:10])
        for height in (1, 10, 16, 64, 128, 256, 1024, big):
            n = min(10, height)
            out.append({"op": name, "height": height, "pos": 0, **_differs(ref[:n], f(X[:height])[:n])})
    return out


def _same(xs, ys) -> bool:
    """Equal to the last bit, NaN equal to NaN (a diverged restart's curve ends in one)."""
    return len(xs) == len(ys) and all(x == y or (x != x and y != y) for x, y in zip(xs, ys))


def exactness(device: str, chunks: list[int | None]) -> list[dict]:
    """Co-batched trials against each trained alone, bit for bit, per row chunk: 5 trials of 13
    restarts, so that alone a trial's calls have fewer than 16 rows and together more than 64
    (where the ops part saw cuBLAS and torch's reductions change kernels on an H200)."""
    datasets = {name: load_dataset(name, validation_fraction=0.2, seed=0) for name in ("seed-1d", "iris-petal")}
    cases = [("seed-1d", SHAPE, "tanh", "adam", None), ("seed-1d", (1, 6, 6, 1), "tanh", "sgd", None),
             ("seed-1d", (1, 6, 6, 1), "relu", "rmsprop", None), ("iris-petal", (2, 9, 2), "sigmoid", "adam", None),
             ("seed-1d", (1, 16, 16, 1), "tanh", "sgd", 16)]
    rows = []
    for chunk in chunks:
        for dataset, sizes, act, opt, batch in cases:
            configs = [TrainConfig(sizes, act, opt, lr=lr, momentum=0.9 if opt != "adam" else 0.0, batch_size=batch,
                                   weight_decay=1e-3 if i == 2 else 0.0, max_epochs=200, restarts=13, tol=0.0, seed=100 + i)
                       for i, lr in enumerate((0.002, 0.01, 0.03, 0.05, 0.005))]
            data = datasets[dataset]
            _, together = train(configs, data, device, chunk)
            differing, diff = 0, 0.0
            for c, t in zip(configs, together):
                _, [alone] = train([c], data, device, chunk)
                curves = list(zip(alone.train_curves + alone.val_curves, t.train_curves + t.val_curves))
                if any(not _same(x, y) for x, y in curves) or alone.status != t.status:
                    differing += 1
                for x, y in curves:
                    diff = max([diff] + [abs(u - v) for u, v in zip(x, y) if math.isfinite(u) and math.isfinite(v)])
            rows.append({"chunk": "auto" if chunk is None else chunk, "case": f"{dataset} {list(sizes)} {act} {opt}"
                         + (f" batch {batch}" if batch else ""), "trials_differing": differing, "of": len(configs),
                         "max_abs_curve_diff": diff})
            print("  exactness", rows[-1], flush=True)
    return rows


def scaling(data, device: str, ks: list[int], repeats: int, chunk: int | None = None) -> list[dict]:
    out = []
    for k in ks:
        configs = [TrainConfig(SHAPE, "tanh", "adam", lr=10 ** (-3 + 2 * i / max(1, k - 1)), max_epochs=500,
                               restarts=10, tol=0.0, seed=i) for i in range(k)]
        times = [train(configs, data, device, chunk)[0] for _ in range(repeats)]
        seconds = statistics.median(times)
        label = "auto" if chunk is None else chunk
        out.append({"device": device, "chunk": label, "k": k, "rows": 10 * k, "seconds": seconds,
                    "trials_per_second": k / seconds})
        print(f"  {device:5} chunk {label!s:>4} K={k:4d}: {seconds:7.3f} s per stack, {k / seconds:8.1f} trials/s", flush=True)
    return out


def seed_1d_64(configs: list[TrainConfig], data, device: str, cobatch: int, chunk: int | None = None) -> dict:
    groups: dict[tuple, list[TrainConfig]] = {}
    for c in configs:
        groups.setdefault(stack_key(c), []).append(c)
    stacks = [g[i : i + cobatch] for g in groups.values() for i in range(0, len(g), cobatch)]
    t0 = time.perf_counter()
    best = math.inf
    for stack in stacks:
        for r in train(stack, data, device, chunk)[1]:
            v = r.best(r.val_mse)
            if v is not None and math.isfinite(v):
                best = min(best, v)
    return {"device": device, "chunk": "auto" if chunk is None else chunk, "cobatch": cobatch, "stacks": len(stacks),
            "seconds": time.perf_counter() - t0, "best_val": best}


def save(figures: dict, path: Path | None) -> None:
    """Write what is measured so far (a run stopped at its time limit keeps the parts it finished)."""
    if path:
        path.write_text(json.dumps(figures, indent=2))


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
    parser.add_argument("--parts", default="agreement,ops,exactness,scaling,seed-1d-64", help="which parts to run (comma-separated)")
    parser.add_argument("--chunks", default="auto,0", help="the engine's row chunks to compare on the GPU (auto, 0 = none, rows)")
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
    chunks = [None if c == "auto" else int(c) for c in args.chunks.split(",")]
    save(figures, args.json)
    if "ops" in parts:
        figures["ops"] = ops(gpu)
        for row in figures["ops"]:
            if row["rows_differing"]:
                print("  ops differ", row, flush=True)
        print(f"  ops: {sum(1 for r in figures['ops'] if r['rows_differing'])} of {len(figures['ops'])} calls differ", flush=True)
    save(figures, args.json)
    if "exactness" in parts:
        figures["exactness"] = exactness(gpu, chunks)
        save(figures, args.json)
    if "scaling" in parts:
        ks = [int(k) for k in args.ks.split(",")]
        figures["scaling"] = [row for chunk in chunks for row in scaling(data, gpu, ks, args.repeats, chunk)] + scaling(
            data, "cpu", [k for k in ks if k <= args.cpu_max_k], args.repeats)
        save(figures, args.json)
    if "seed-1d-64" in parts and args.configs.exists():
        configs = [TrainConfig(**{**c, "sizes": tuple(c["sizes"])}) for c in json.loads(args.configs.read_text())]
        figures["seed_1d_64"] = []
        for device, cobatch, chunk in [(gpu, k, c) for c in chunks for k in (1, 64)] + [("cpu", 1, None), ("cpu", 64, None)]:
            figures["seed_1d_64"].append(seed_1d_64(configs, data, device, cobatch, chunk))
            print("  seed-1d-64", figures["seed_1d_64"][-1], flush=True)
            save(figures, args.json)


if __name__ == "__main__":
    main()
