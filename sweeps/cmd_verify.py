"""``mlpsweep verify``: check the hand-written backprop of one architecture, print the table.

Exit 0 when verification passes, 1 when it fails, 2 on bad input. With ``--tracking-uri`` the
verdict is recorded in MLflow, and an architecture already verified there is not run again.
torch and MLflow are imported inside the handler so ``mlpsweep --help`` stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from sweeps.cli import UsageError, first_line

__all__ = ["register", "parse_sizes", "run"]

DEFAULT_EXPERIMENT = "mlpsweep-verification"
LOSSES = ("mse", "sse")  # mirrors models.backprop.LOSSES without importing torch
_SIZES_HINT = "expected comma-separated positive integers like 2,10,10,1"
MAX_SIZE = 4096  # a layer's width, as a sweep's width knob allows (a float64 check of more runs out of memory)
MAX_HIDDEN_LAYERS = 16  # as the depth knob allows
MAX_SAMPLES = 10_000


def register(subparsers: Any) -> None:
    """Add the ``verify`` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser(
        "verify",
        help="check hand-written backprop against autograd and finite differences",
        description=(
            "Verify the hand-written forward/backward pass of one MLP architecture in float64: "
            "against autograd, against central finite differences, and one SGD step against "
            "torch's. Prints a per-tensor table; exit 0 on pass, 1 on fail, 2 on bad input."
        ),
    )
    p.add_argument("--sizes", required=True, help="layer widths d_in,h1,...,d_out, e.g. 2,10,10,1")
    p.add_argument("--activation", default="sigmoid", help="hidden-layer activation (default: sigmoid)")
    p.add_argument("--loss", default="mse", help="mse (mean squared error, default) or sse (sum of squares)")
    p.add_argument("--seed", default="0", help="seed for the network, inputs and FD sample (default: 0)")
    p.add_argument("--samples", default="8", help="batch size of the check (default: 8)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON instead of the table")
    p.add_argument("--tracking-uri", help="record the verdict in this MLflow store (e.g. sqlite:///mlflow.db)")
    p.add_argument(
        "--experiment", default=DEFAULT_EXPERIMENT, help=f"MLflow experiment (default: {DEFAULT_EXPERIMENT})"
    )
    p.add_argument("--force", action="store_true", help="verify again even if the store already has a verdict")
    p.set_defaults(handler=run)


def parse_sizes(text: str) -> tuple[list[int], list[str]]:
    """Parse ``--sizes``; returns the sizes and a list of one-line problems (empty when valid)."""
    entries = text.split(",")
    sizes: list[int] = []
    problems: list[str] = []
    for i, entry in enumerate(entries, start=1):
        entry = entry.strip()
        if not entry:
            problems.append(f"--sizes: entry {i} of {text!r} is empty; {_SIZES_HINT}")
            continue
        try:
            value = int(entry)
        except ValueError:
            problems.append(f"--sizes: entry {i} of {text!r} is {entry!r}, not an integer; {_SIZES_HINT}")
            continue
        if value < 1:
            problems.append(f"--sizes: entry {i} of {text!r} is {value}; {_SIZES_HINT}")
            continue
        if value > MAX_SIZE:
            problems.append(f"--sizes: entry {i} of {text!r} is {value}; a layer has at most {MAX_SIZE} units")
            continue
        sizes.append(value)
    if not problems and len(sizes) < 2:
        problems.append(f"--sizes: got {text!r}, needs at least an input and an output size; {_SIZES_HINT}")
    if not problems and len(sizes) - 2 > MAX_HIDDEN_LAYERS:
        problems.append(f"--sizes: got {len(sizes) - 2} hidden layers; at most {MAX_HIDDEN_LAYERS}")
    return sizes, problems


def _parse_int(flag: str, text: str, minimum: int, maximum: int | None = None) -> tuple[int, list[str]]:
    expected = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    try:
        value = int(text)
    except ValueError:
        return 0, [f"{flag}: {text!r} is not an integer; expected {expected}"]
    if value < minimum or (maximum is not None and value > maximum):
        return 0, [f"{flag}: got {value}; expected {expected}"]
    return value, []


def run(args: argparse.Namespace) -> int:
    """Handle ``mlpsweep verify``; see the module docstring for exit codes.

    Raises:
        UsageError: bad --sizes, --activation, --loss, --seed, --samples or --tracking-uri.
    """
    from models.activations import activation_names

    sizes, problems = parse_sizes(args.sizes)
    if args.activation not in activation_names():
        problems.append(f"--activation: unknown {args.activation!r}; choose one of {', '.join(activation_names())}")
    if args.loss not in LOSSES:
        problems.append(f"--loss: unknown {args.loss!r}; choose one of {', '.join(LOSSES)}")
    seed, bad_seed = _parse_int("--seed", args.seed, 0)
    samples, bad_samples = _parse_int("--samples", args.samples, 1, MAX_SAMPLES)
    problems += bad_seed + bad_samples
    if problems:
        raise UsageError("\n".join(problems))
    if args.tracking_uri:  # a mistyped folder is refused, not created; a server down says so at once
        from sweeps.stores import check_location

        check_location("--tracking-uri", args.tracking_uri, create=True)
    settings = dict(seed=seed, samples=samples, loss=args.loss)

    import torch

    # the check's tensors are tiny: intra-op threads only add synchronisation, and on a busy
    # machine they make it 10-20x slower (1 s instead of 0.05 s for 1-100-100-100-1)
    torch.set_num_threads(1)

    note = ""
    if args.tracking_uri:
        report, note = _verify_tracked(args, sizes, settings)
    else:
        from models.verify import verify_backprop

        report = verify_backprop(sizes, args.activation, **settings)

    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        if note:
            print(note, file=sys.stderr)
    else:
        print(report.format_table())
        if note:
            print(note)
    return 0 if report.passed else 1


def _verify_tracked(args: argparse.Namespace, sizes: list[int], settings: dict[str, Any]) -> tuple[Any, str]:
    """Look the architecture up in MLflow, verify and record it if needed; (report, note for people)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from mlflow.exceptions import MlflowException

    from tracking.client import ensure_experiment, make_client
    from tracking.verification import load_verification_report, verify_and_record

    try:
        client = make_client(args.tracking_uri)
        experiment_id = ensure_experiment(client, args.experiment)
    except MlflowException as exc:
        raise UsageError(f"--tracking-uri: {args.tracking_uri!r}: {first_line(exc, 'cannot open the store')}") from None
    record = verify_and_record(client, experiment_id, sizes, args.activation, force=args.force, **settings)
    where = f"experiment {args.experiment!r} at {args.tracking_uri}"
    if not record.reused:
        assert record.report is not None
        return record.report, f"recorded: run {record.run_id} in {where}"
    report = load_verification_report(client, record.run_id)
    return report, (
        f"already verified: run {record.run_id} in {where} ({record.verdict}); not run again "
        "(the report shown is that run's; --force verifies again)"
    )
