"""``mlpsweep report NAME``: draw what a sweep learned, as PNGs and a self-contained HTML page.

Writes ``report.html`` and the PNGs into ``--out`` (default ``report-NAME/``) and logs them on
the sweep's parent run under ``report/``. matplotlib, MLflow and Optuna load inside the handler.
"""
from __future__ import annotations

import argparse
import os
from typing import Any

from sweeps.cli import UsageError, first_line, output_folder
from sweeps.cmd_run import add_store_options

__all__ = ["register", "run"]


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "report",
        help="draw a sweep's plots and write a self-contained HTML report",
        description="Draw the sweep NAME from the MLflow store and its Optuna study: optimisation history, "
                    "hyperparameter importances, parallel coordinates, MSE against width, the best model's fit, "
                    "learning curves and restart spread. Writes report.html and the PNGs to --out and logs "
                    "them on the sweep's parent run under report/.",
    )
    parser.add_argument("name", metavar="NAME", help="the sweep's name (its spec's name)")
    parser.add_argument("--out", default=None, help="folder to write into (default: report-NAME/)")
    add_store_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handle ``mlpsweep report``.

    Raises:
        UsageError: unknown sweep (the message lists the sweeps in the store) or an unreadable store.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException
    from rich.console import Console

    from sweeps.stores import resolve_stores
    from tracking.report import SweepNotFoundError, build_report

    out_dir = output_folder(args.out if args.out is not None else f"report-{args.name}")
    uri, storage = resolve_stores(args.tracking_uri, args.storage)
    try:
        report = build_report(uri, args.name, storage)
    except SweepNotFoundError as exc:
        raise UsageError(str(exc)) from None
    except MlflowException as exc:
        raise UsageError(f"--tracking-uri: {first_line(exc, 'cannot read the store')}") from None
    try:
        page = report.write(out_dir)
    except OSError as exc:
        raise UsageError(f"--out: cannot write {out_dir}: {exc.strerror or exc}") from None
    console = Console()
    for pic in report.pictures:
        if pic.png is None:
            console.print(f"[yellow]skipped[/] {pic.name}: {pic.skipped}", highlight=False)
    drawn = sum(p.png is not None for p in report.pictures)
    console.print(f"Wrote {drawn} plots and {page}", highlight=False)
    try:
        logged = report.log()
        console.print(f"Logged {len(logged)} artifacts under {logged[0].split('/')[0]}/ on run "
                      f"{report.record.parent_run_id} (experiment '{args.name}')" if logged else "Logged nothing",
                      highlight=False)
    except MlflowException as exc:
        console.print(f"[yellow]warning:[/] could not log the report on the parent run: {exc}", highlight=False)
    console.print(f"Open it: file://{page.resolve()}", highlight=False, soft_wrap=True)
    return 0
