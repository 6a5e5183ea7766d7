"""``mlpsweep status NAME``: where a sweep stands, from its study and MLflow store."""
from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    from sweeps.cli import positive_int
    from sweeps.cmd_run import add_store_options

    parser = subparsers.add_parser(
        "status", help="show a sweep's progress and best trials",
        description="Show how many trials of sweep NAME finished, failed, were pruned or are running, "
                    "and its best trials.")
    parser.add_argument("name", metavar="NAME", help="the sweep name (the spec's name)")
    add_store_options(parser)
    parser.add_argument("--top", type=positive_int, default=5, help="how many best trials to list (default 5)")
    parser.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from collections import Counter

    from rich.console import Console

    from sweeps import optuna_adapter as oa
    from sweeps.console import fmt, top_table
    from sweeps.driver import summarize
    from sweeps.runlock import sweep_driver
    from sweeps.stores import open_stored_study, resolve_stores

    uri, storage = resolve_stores(args.tracking_uri, args.storage)
    study = open_stored_study(args.name, storage)
    trials = study.get_trials(deepcopy=False)
    counts = Counter(t.state.name for t in trials)
    interrupted = sum(1 for t in trials if t.user_attrs.get(oa.INTERRUPTED))
    metric = study.user_attrs.get("metric", "val_mse")
    out = Console(width=120)
    out.print(f"sweep [bold]{args.name}[/]  storage {storage}  tracking {uri}")
    parts = [f"{counts.get(s, 0)} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING", "WAITING")]
    out.print("trials: " + ", ".join(parts) + (f" ({interrupted} of the failed were interrupted and re-queued)"
                                               if interrupted else ""))
    driver_line = _driver_line(sweep_driver(storage, args.name), counts.get("RUNNING", 0))
    if driver_line:
        out.print(driver_line)
    best = oa.best_trial(study)
    if best is not None:
        out.print(f"best: trial {best.number}, {metric} {fmt(best.value)}, test_mse "
                  f"{fmt(best.user_attrs.get('test_mse'))}")
    summaries = summarize(study)
    out.print(top_table(summaries, metric, k=args.top))
    failed = [s for s in summaries if s.state == "FAIL" and s.reason]
    for s in failed[:5]:
        out.print(f"trial {s.number} failed: {s.reason}")
    return 0


def _driver_line(driver: str | None, running: int) -> str | None:
    """Whether the sweep's "running" trials are being run: by whom, or left by a stopped driver."""
    from sweeps.runlock import UNKNOWN

    if driver == UNKNOWN:
        return None
    if driver is not None:
        return (f"driver: {driver} is running this sweep (its running trials include those asked and "
                "waiting for a worker)")
    if running:
        return (f"driver: none is running this sweep; its {running} running trial(s) were left by a stopped "
                f"driver, and 'mlpsweep run' of its spec queues them again")
    return None
