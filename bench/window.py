"""Search quality against the reproducibility window (issue "Performance": what the idle costs buy).

The driver asks trial k right after trial k − window is told (``sweeps/driver.py``): a wider
window leaves workers idle less often behind a long trial, but TPE then proposes each trial
knowing fewer finished ones. This replays the sweep's ask/tell order in one process, with no
Ray and no MLflow, for several windows and spec seeds (the seed moves the data split, the
sampler and the restarts' initial weights), training every trial with the service's own engine;
the window is the only difference within a seed, so the comparison is paired. Window 5 with the
spec's seed reproduces ``mlpsweep run``'s best val MSE exactly.

    .venv/bin/python bench/window.py [--spec bench/seed-1d-64.yaml] [--windows 5,9] [--seeds 0-11]
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best_val(spec_path: str, window: int, seed: int) -> dict:
    """Run the spec's trials in the driver's ask/tell order for ``window``; the best val MSE
    after all trials and after half of them."""
    import optuna
    import torch

    from models import load_dataset, train_restarts
    from sweeps import optuna_adapter as oa
    from sweeps.driver import build_trial_config, data_config
    from sweeps.spec import load_spec
    from workers.trial import to_trial_result

    torch.set_num_threads(1)  # what a worker uses
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(spec_path).model_copy(update={"seed": seed})
    dc = data_config(spec)
    data = load_dataset(dc.dataset, **dc.load_kwargs())
    study = optuna.create_study(direction="minimize", sampler=oa.make_sampler(spec))
    asked: list[tuple] = []  # (trial, objective or None)
    bests: list[float] = []
    told = 0
    t0 = time.perf_counter()
    for k in range(spec.run_cap):
        while told <= k - window:  # trials 0 … k − window told before the k-th ask, in order
            trial, value = asked[told]
            oa.tell(study, trial, "COMPLETE" if value is not None else "FAIL", value,
                    None if value is not None else "no finite objective")
            told += 1
        trial = study.ask()
        config = build_trial_config(spec, trial.number, oa.suggest_params(trial, spec), (data.n_features, data.n_targets))
        result = to_trial_result(config, train_restarts(config.train, data), pruned=False, node=None)
        value = result.objective(spec.metric.name) if result.state == "COMPLETE" else None
        asked.append((trial, value))
        bests.append(min([v for _, v in asked if v is not None], default=math.inf))
    return {"window": window, "seed": seed, "best": bests[-1], "best_at_half": bests[len(bests) // 2 - 1],
            "seconds": round(time.perf_counter() - t0, 1)}


def _seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = map(int, text.split("-"))
        return list(range(low, high + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default=str(ROOT / "bench" / "seed-1d-64.yaml"))
    parser.add_argument("--windows", default="5,9", help="comma-separated; the first is the baseline")
    parser.add_argument("--seeds", default="0-11", help="e.g. 0-11 or 0,3,7")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    windows, seeds = [int(w) for w in args.windows.split(",")], _seeds(args.seeds)
    jobs = [(args.spec, w, s) for s in seeds for w in windows]
    with ProcessPoolExecutor(args.processes) as pool:
        rows = list(pool.map(best_val, *zip(*jobs)))
    got = {(r["window"], r["seed"]): r for r in rows}
    base = windows[0]
    print(f"best val MSE after all trials (after half), spec seeds {seeds[0]}–{seeds[-1]}")
    print("seed " + " ".join(f"{'window ' + str(w):>22}" for w in windows))
    for s in seeds:
        print(f"{s:4d} " + " ".join(f"{got[w, s]['best']:>11.5f} ({got[w, s]['best_at_half']:.5f})" for w in windows))
    summary = {}
    for w in windows[1:]:
        logs = [math.log(got[w, s]["best"] / got[base, s]["best"]) for s in seeds]
        summary[w] = {"geometric_mean_ratio": math.exp(statistics.mean(logs)),
                      "better_in": sum(x < 0 for x in logs), "worse_in": sum(x > 0 for x in logs), "seeds": len(seeds)}
        print(f"window {w} vs {base}: best val MSE x{summary[w]['geometric_mean_ratio']:.3f} (geometric mean), "
              f"better in {summary[w]['better_in']} of {len(seeds)} seeds, worse in {summary[w]['worse_in']}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "summary": summary}, indent=2))


if __name__ == "__main__":
    main()
