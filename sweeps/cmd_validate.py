"""``mlpsweep validate SPEC``: check a sweep spec without running anything.

Prints the resolved sweep (one line per knob: a constant, the choices, or a range with its
scale and step) and exits 0; a bad spec exits 2 with every problem on its own line. Nothing is
created: no study, no MLflow run, no Ray job.
"""
from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="check a sweep spec and show its search space",
        description="Load and validate a sweep spec (YAML), report every problem at once, and show "
                    "the resolved search space. Runs nothing.",
    )
    parser.add_argument("spec", metavar="SPEC", help="the sweep spec file (YAML)")
    parser.add_argument("--json", action="store_true",
                        help="print the canonical spec, its digest and search space as JSON "
                             "(an invalid spec: {\"valid\": false, \"errors\": [...]}, exit 2)")
    parser.set_defaults(handler=_validate)


def _validate(args: argparse.Namespace) -> int:
    from sweeps.cli import UsageError
    from sweeps.cmd_run import prepare

    try:
        spec, warnings = prepare(args.spec)  # what run refuses before it starts, its data included
    except UsageError as exc:
        if args.json:  # a script reading stdout gets JSON either way; stderr and exit 2 as always
            print(json.dumps({"spec_file": args.spec, "valid": False, "errors": str(exc).splitlines()}, indent=2))
        raise
    print(_as_json(spec, args.spec, warnings) if args.json else _summary(spec, args.spec, warnings))
    return 0


def _dimension_json(dim: Any) -> dict[str, Any]:
    from sweeps.space import Categorical, Constant, IntRange

    if isinstance(dim, Constant):
        return {"kind": "constant", "value": dim.value}
    if isinstance(dim, Categorical):
        return {"kind": "categorical", "choices": list(dim.choices)}
    kind = "int" if isinstance(dim, IntRange) else "float"
    return {"kind": kind, "low": dim.low, "high": dim.high, "log": dim.log, "step": dim.step}


def _as_json(spec: Any, origin: str, warnings: list[str]) -> str:
    from sweeps.spec import spec_digest, spec_to_dict

    return json.dumps({
        "spec_file": origin,
        "valid": True,
        "warnings": warnings,
        "digest": spec_digest(spec),
        "spec": spec_to_dict(spec),
        "search_space": {k: _dimension_json(d) for k, d in spec.search_space().items()},
    }, indent=2)


def _summary(spec: Any, origin: str, warnings: list[str]) -> str:
    from models.data import standardized
    from sweeps.cobatch import describe
    from sweeps.space import Constant, grid_size
    from sweeps.spec import spec_digest

    given = spec.user_parameters
    space = spec.search_space()
    searched = [k for k, d in space.items() if not isinstance(d, Constant)]
    m = spec.metric
    target = f", stop at {m.target:g}" if m.target is not None else ""
    d = spec.data
    data = f"{d.dataset}, validation_fraction {d.validation_fraction:g}, split seed {d.seed}"
    if standardized(d.dataset, d.standardize):
        data += ", standardized (MSEs in standard units)"
    if d.is_file:
        data += "".join(f", {key} {', '.join(v) if isinstance(v, tuple) else v}"
                        for key in ("features", "targets", "test_path")
                        if (v := getattr(d, key)) is not None)
    lines = [
        f"{origin}: valid",
        f"  sweep     {spec.name}: {spec.method} sampler, {m.goal} {m.name}{target}",
        f"  budget    {spec.run_cap} trials, {spec.concurrency} at once, seed {spec.seed}, device {spec.device}",
        f"  data      {data}",
    ]
    if spec.early_terminate is not None:
        e = spec.early_terminate
        shown = {"type", "max_iter", "eta", "s"} if e.type == "median" else {"type"}  # median uses min_iter only
        parts = [f"{k} {v}" for k, v in e.model_dump(exclude=shown, exclude_none=True).items()]
        lines.append(f"  pruning   {e.type}: {', '.join(parts)}")
    lines.append(f"  verify    {spec.verify}")
    lines.append(f"  cobatch   {describe(spec)}")
    if spec.method == "grid":
        total = 1
        for dim in space.values():
            total *= grid_size(dim) or 1
        part = f" (run_cap {spec.run_cap} covers part of it)" if spec.run_cap < total else ""
        lines.append(f"  grid      {total} combinations{part}")
    lines.append(f"  search space: {len(searched)} of {len(space)} knobs searched")
    width = max(len(k) for k in space)
    for name, dim in space.items():
        note = "" if name in given else "  (default)"
        layer = name.startswith("width_")
        cond = f"  (when depth >= {name.split('_')[1]})" if layer else ""
        lines.append(f"    {name:<{width}}  {dim}{cond}{note}")
    lines.append(f"  digest    {spec_digest(spec)}")
    lines += [f"  warning   {line}" for line in warnings]
    return "\n".join(lines)
