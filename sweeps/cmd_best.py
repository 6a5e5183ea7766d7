"""``mlpsweep best NAME --out DIR``: export the best trial's checkpoint and configuration."""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["register", "export_best", "CONFIG_FILE"]

CONFIG_FILE = "config.json"


def register(subparsers: Any) -> None:
    from sweeps.cmd_run import add_store_options

    parser = subparsers.add_parser(
        "best", help="export the best trial's checkpoint and configuration",
        description="Download the best trial's checkpoint (state dict + architecture JSON) from MLflow, "
                    "check its SHA-256 against the one recorded at training time, load it to be sure, and "
                    "write it with the trial's configuration and metrics to DIR.")
    parser.add_argument("name", metavar="NAME", help="the sweep name")
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write (created)")
    parser.add_argument("--force", action="store_true",
                        help="replace the export DIR already holds (refused without it)")
    add_store_options(parser)
    parser.set_defaults(handler=_best)


def export_best(name: str, out: str | Path, tracking_uri: str | None = None, storage: str | None = None,
                *, force: bool = False) -> Path:
    """Export the best trial of sweep ``name`` into ``out``; returns the folder.

    Raises:
        UsageError: ``out`` holds an export already (and not ``force``), no such sweep, no complete
            trial, or no logged checkpoint.
        CheckpointError: the downloaded checkpoint does not match its recorded digest or is not a
            plain state dict.
    """
    from models.checkpoint import load_checkpoint, load_state_dict, save_checkpoint
    from sweeps import optuna_adapter as oa
    from sweeps.cli import UsageError, output_folder
    from sweeps.stores import open_stored_study, resolve_stores
    from tracking.sweep import TAG

    out = output_folder(str(out))
    if not force:
        refuse_replacing(out)
    uri, storage = resolve_stores(tracking_uri, storage)
    study = open_stored_study(name, storage)
    best = oa.best_trial(study)
    if best is None:
        raise UsageError(f"NAME: sweep {name!r} has no complete trial yet; see 'mlpsweep status {name}'")
    from tracking.client import make_client

    client = make_client(uri, create=False)
    experiment = client.get_experiment_by_name(name)
    uid = study.user_attrs.get(oa.STUDY_UID, "")
    runs = client.search_runs([experiment.experiment_id], f"tags.`{TAG['run_key']}` = '{uid}:{best.number}'",
                              max_results=1) if experiment else []
    if not runs:
        raise UsageError(f"NAME: trial {best.number} of {name!r} has no MLflow run in {uri}; "
                         "pass the --tracking-uri the sweep used")
    run = runs[0]
    sha = run.data.tags.get(TAG["sha256"])
    with tempfile.TemporaryDirectory() as tmp:
        local = client.download_artifacts(run.info.run_id, "checkpoint", tmp)
        model = load_checkpoint(local, expected_sha256=sha)  # refuses a changed or crafted file
        extra = load_state_dict(local, expected_sha256=sha)[1].get("extra") or {}
    config = {
        "sweep": name,
        "trial": best.number,
        "mlflow_run_id": run.info.run_id,
        "tracking_uri": uri,
        "architecture": model.architecture,
        "params": best.user_attrs.get("config") or best.params,
        "metrics": {k: run.data.metrics.get(k) for k in ("train_mse", "val_mse", "test_mse")},
        "checkpoint_sha256": sha,
        **data_of(extra.get("data")),
    }
    state = {k: v.detach() for k, v in model.state_dict().items()}

    def write(staged: Path) -> None:
        save_checkpoint(staged, state, list(model.sizes), model.activation.name, extra=extra or None)
        (staged / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True, default=str))

    try:
        _write_whole(out, write)
    except OSError as exc:
        raise UsageError(f"--out: cannot write {out}: {exc.strerror or exc}") from None
    return out


def _write_whole(out: Path, write: Callable[[Path], None]) -> None:
    """``write`` the export into a folder staged inside ``out``, then move its files into place
    with Ctrl+C and SIGTERM held until they all are: a failure, Ctrl+C or SIGTERM before leaves
    an earlier export whole, the staged folder and the folders this made removed; one during
    the moves takes effect once the new export is whole."""
    import os
    import shutil

    created = None if out.exists() else out  # the outermost folder this makes, removed on failure
    while created is not None and not created.parent.exists():
        created = created.parent
    with _terminate_as_exit():
        staged, moved = None, False
        try:
            out.mkdir(parents=True, exist_ok=True)
            staged = Path(tempfile.mkdtemp(prefix=".mlpsweep-export-", dir=out))
            write(staged)
            with _signals_held():
                for path in sorted(staged.iterdir(), key=lambda p: (p.name == CONFIG_FILE, p.name)):
                    os.replace(path, out / path.name)  # config.json last: it names a whole export
                moved = True
        except BaseException:
            if created is not None and not moved:
                shutil.rmtree(created, ignore_errors=True)
            raise
        finally:
            if staged is not None:
                shutil.rmtree(staged, ignore_errors=True)


@contextmanager
def _terminate_as_exit() -> Iterator[None]:
    """Within: SIGTERM (``kill PID``) raises ``SystemExit(143)``, so the export's clean-up runs
    as it does for Ctrl+C, instead of the process ending with a staged folder left in DIR. A
    SIGTERM that is ignored, or handled by a handler Python did not install, is left so."""
    import signal
    import threading

    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or previous in (signal.SIG_IGN, None):
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        print("mlpsweep best: terminated (SIGTERM)", file=sys.stderr)
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Within: Ctrl+C and SIGTERM are noted, not acted on; on leaving, the first one noted is
    raised again, for the handler outside. Python runs signal handlers in the main thread,
    whichever thread the kernel gave the signal to (MLflow's download threads live on), so
    handlers hold them where a signal mask, per thread, would not. Ignored ones stay ignored."""
    import signal
    import threading

    held = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) not in (signal.SIG_IGN, None)]
    if threading.current_thread() is not threading.main_thread():
        held = []
    noted: list[int] = []
    previous = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if noted:
            signal.raise_signal(noted[0])


def refuse_replacing(out: Path) -> None:
    """Refuse to write over an earlier export in ``out`` (a model a user may still need), naming it.

    Raises:
        UsageError: ``out`` holds one of the files an export writes.
    """
    from models.checkpoint import ARCH_FILE, MODEL_FILE, WEIGHTS_FILE
    from sweeps.cli import UsageError

    held = [n for n in (MODEL_FILE, WEIGHTS_FILE, ARCH_FILE, CONFIG_FILE) if (out / n).exists()]
    if not held:
        return
    try:
        config = json.loads((out / CONFIG_FILE).read_text())
        what = f"an export (sweep {config['sweep']!r}, trial {config['trial']})"
    except (OSError, ValueError, TypeError, KeyError):
        what = f"{', '.join(held)}, which an export would replace"
    raise UsageError(f"--out: {out} already holds {what}; pass --force to replace it, or name another folder")


def data_of(data: dict[str, Any] | None) -> dict[str, Any]:
    """config.json's ``data`` (the recipe the model was trained on) and ``units``: a model trained
    on standardised data takes and gives standard units, and its MSEs are in them."""
    if not data:
        return {}
    from models.data import standardized

    if not standardized(data["dataset"], bool(data.get("standardize"))):
        return {"data": data, "units": "the data's own: the model takes raw inputs and predicts raw targets"}
    how = ("the model takes x' = (x - x_mean) / x_std and predicts y' (y = y' * y_std + y_mean), "
           "with data.standardization's vectors; the metrics are MSEs in these standard units")
    if "standardization" not in data:  # a checkpoint from before mlpsweep recorded them
        how += ("; this checkpoint does not record the vectors: models.load_dataset with this recipe "
                "recomputes them (its .standardization) from the training rows")
    return {"data": data, "units": f"standardized: {how}"}


def _best(args: argparse.Namespace) -> int:
    from mlflow.exceptions import MlflowException

    from models.checkpoint import CheckpointError
    from sweeps.cli import UsageError, first_line

    try:
        out = export_best(args.name, args.out, args.tracking_uri, args.storage, force=args.force)
    except CheckpointError as exc:
        raise UsageError(str(exc)) from None
    except MlflowException as exc:  # the store cannot be read (or does not exist)
        raise UsageError(f"--tracking-uri: {first_line(exc)}") from None
    print(f"wrote {out}/model.pt, weights.npz, architecture.json and config.json "
          f"(load with models.load_checkpoint('{out}'))")
    return 0
