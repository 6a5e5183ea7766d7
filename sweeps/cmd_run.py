"""``mlpsweep run SPEC``: run (or continue) a sweep on Ray and track it in MLflow."""
from __future__ import annotations

import argparse
import os
import socket
import sys
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Any, Callable, cast

__all__ = ["register", "prepare", "load_run_spec", "check_data", "execute", "start_backend",
           "start_tracker", "ready_tracker"]


def register(subparsers: Any) -> None:
    from sweeps.cli import positive_int

    parser = subparsers.add_parser(
        "run",
        help="run or continue a sweep (local Ray by default)",
        description="Run the sweep SPEC: Optuna proposes trials, Ray workers train them, MLflow records "
                    "every trial, checkpoint and backprop verification. Running the same spec again "
                    "continues the stored study and finishes the remaining trials only.",
    )
    add_store_options(parser)
    parser.add_argument("spec", metavar="SPEC", help="the sweep spec (YAML)")
    parser.add_argument("--ray-address", default=None,
                        help="attach to a running Ray cluster ('auto', ray://HOST:PORT or HOST:PORT); default: "
                             "start a local Ray; 'none': run in this process without Ray, one trial at a time "
                             "(the same trials and numbers; concurrency only shapes the search)")
    parser.add_argument("--run-cap", type=positive_int, default=None, help="override the spec's run_cap")
    parser.add_argument("--concurrency", type=positive_int, default=None, help="override the spec's concurrency")
    parser.add_argument("--quiet", action="store_true", help="no live progress display")
    add_changed_spec_option(parser)
    parser.set_defaults(handler=_run)


def add_changed_spec_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--allow-changed-spec", action="store_true",
                        help="continue a stored sweep although its spec was edited since (refused without it: "
                             "the edit's trials and the earlier ones would share one study and one best)")


def add_store_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    parser.add_argument("--storage", default=None,
                        help="Optuna storage: a database URL (e.g. postgresql://user@host/db for a cluster) "
                             "or a journal file PATH.journal (default: optuna.journal beside a SQLite MLflow "
                             "store)")


WORKER_MEMORY_MB = 350  # a trial worker's resident memory on the CPU (torch, Ray; session 19: 340 MB)
BFGS_WARN_PARAMETERS = 1_000  # scipy's BFGS above it: O(N^3) per iteration (bench/README.md, session 19)


def prepare(spec_path: str, run_cap: int | None = None, concurrency: int | None = None) -> tuple[Any, list[str]]:
    """Validate everything a run needs before anything starts: spec, data, overrides. Returns
    the spec and its :func:`advice`.

    Raises:
        UsageError: every problem found, one per line.
    """
    spec = load_run_spec(spec_path, run_cap, concurrency)
    arrays = check_data(spec)
    return spec, advice(spec, lambda: arrays)


def advice(spec: Any, arrays_of: Callable[[], Any]) -> list[str]:
    """Warnings (one line each) about a valid spec that runs, but not as its author likely
    expects: scipy's BFGS on networks of more than :data:`BFGS_WARN_PARAMETERS` parameters.
    ``arrays_of()`` gives the spec's data (as :func:`check_data` returns it), called only for a
    spec with BFGS trials (loading a built-in set imports what the driver does, ~0.15 s)."""
    from models.config import parameter_count

    if spec.largest_network("bfgs", 1, 1) is None:
        return []
    data = arrays_of()
    sizes = spec.largest_network("bfgs", len(data.feature_names), len(data.target_names))
    n = parameter_count(sizes)
    if n <= BFGS_WARN_PARAMETERS:
        return []
    matrix = n * n * 8 / 2**20
    size = f"{matrix / 1024:.1f} GiB" if matrix >= 1024 else f"{matrix:.0f} MiB"
    return [f"optimizer: bfgs trials reach {n:,} parameters ({'-'.join(map(str, sizes))}): scipy's BFGS "
            f"keeps dense {n:,} x {n:,} matrices ({size} each, several at once per restart) and multiplies two of "
            f"them per iteration (0.75 s per iteration at 2,701 parameters on 2 cores, growing with the cube); "
            f"lbfgsb does neither: use it above {BFGS_WARN_PARAMETERS:,} parameters"]


def local_advice(concurrency: int, cores: int | None) -> list[str]:
    """A warning when a local Ray would start more workers than this machine has cores."""
    if cores is None or concurrency <= cores:
        return []
    return [f"concurrency: {concurrency} trials at once on this machine's {cores} CPU cores: a local Ray starts "
            f"{concurrency} workers, each with its own torch (~{WORKER_MEMORY_MB} MB of memory, ~1 CPU-second to "
            f"start), and they share the cores; pass --concurrency {cores} here, or --ray-address of a cluster"]


def load_run_spec(spec_path: str, run_cap: int | None = None, concurrency: int | None = None) -> Any:
    """The spec with the command line's overrides (no torch: quick). A built-in dataset is then
    checked whole; a file's contents are :func:`check_data`'s to read.

    Raises:
        UsageError: every problem found, one per line.
    """
    from sweeps.cli import UsageError
    from sweeps.spec import SpecError, load_spec, with_overrides

    try:
        spec = load_spec(spec_path)
    except SpecError as exc:
        raise UsageError("\n".join(exc.problems)) from None
    updates = {k: v for k, v in (("run_cap", run_cap), ("concurrency", concurrency)) if v is not None}
    try:
        return with_overrides(spec, **updates)
    except SpecError as exc:  # the flag's limits are the spec key's: name the flag
        raise UsageError("\n".join(_as_flag(line) for line in exc.problems)) from None


def _as_flag(problem: str) -> str:
    """``run_cap: must be …`` as the flag that set it: ``--run-cap: must be …``."""
    field, _, rest = problem.partition(":")
    return f"--{field.replace('_', '-')}:{rest}"


def check_data(spec: Any) -> Any:
    """Load the spec's dataset once (a file: read and checked), as arrays (returned): no torch here.

    Raises:
        UsageError: the problems with the data (every column's of a file), one per line, each
            naming the field to change.
    """
    from sweeps.cli import UsageError
    from models.data import DataError, load_arrays
    from sweeps.driver import data_config

    dc = data_config(spec)
    try:
        return load_arrays(dc.dataset, **dc.load_kwargs())
    except DataError as exc:
        raise UsageError("\n".join(exc.problems)) from None
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc).splitlines()[0]) from None


def execute(spec: Any, *, tracking_uri: str | None, storage: str | None, ray_address: str | None,
            quiet: bool = False, report: bool = False, allow_changed_spec: bool = False) -> tuple[list[Any], Any]:
    """Run a validated spec to the end; returns (trial summaries, tracker). With ``report``,
    ``tracker.report`` is ready to draw the end-of-run report (the caller's to draw or cancel).

    A spec from :func:`load_run_spec` whose dataset is a file must have passed :func:`check_data`
    first; a built-in dataset is loaded here, beside Ray's start.

    Raises:
        UsageError: among others, the sweep is running in another process with the same
            storage (:mod:`sweeps.runlock`), or it is stored with another spec and not
            ``allow_changed_spec`` (:func:`check_continuation`); nothing is started.
    """
    from sweeps.cli import UsageError
    from sweeps.runlock import SweepRunning, sweep_lock
    from tracking.sweep import default_storage

    storage = storage or default_storage(tracking_uri)
    try:
        with sweep_lock(storage, spec.name):
            check_continuation(spec, storage, allow_changed_spec)
            return _execute(spec, tracking_uri=tracking_uri, storage=storage, ray_address=ray_address,
                            quiet=quiet, report=report)
    except SweepRunning as exc:
        raise UsageError(str(exc)) from None


def check_continuation(spec: Any, storage: str, allow_changed: bool = False) -> None:
    """Refuse to continue sweep ``spec.name`` stored in ``storage`` with a spec that defines other
    trials than the one it ran with (:func:`sweeps.spec.spec_changes`), naming the changes, unless
    ``allow_changed``; and always with a parameter its trials sampled otherwise (another list of
    values, log against linear: :func:`sweeps.optuna_adapter.incompatible_params`), which Optuna
    cannot continue, or a grid sweep with other points. A new sweep costs nothing here: no storage
    file, no Optuna import.

    Raises:
        UsageError: the edit is refused; the message says how to start anew (or continue anyway).
    """
    from sweeps.cli import UsageError
    from tracking.sweep import storage_file

    local = storage_file(storage)
    if local is not None and not local.expanduser().is_file():  # a new sweep's file does not exist yet
        return
    from sweeps import optuna_adapter as oa
    from sweeps.spec import record_changes, spec_digest

    stored = oa.stored_spec(spec.name, storage)
    if stored is None or stored.digest == spec_digest(spec):
        return
    fresh = "give this spec another name to start a new sweep"
    clash = oa.incompatible_params(stored, spec)
    if clash:
        raise UsageError(f"spec: the stored sweep {spec.name!r} sampled a parameter otherwise ({_listed(clash)}), "
                         f"and Optuna cannot change that within one study; {fresh}")
    if stored.record is None:  # an older mlpsweep's study: which keys changed is unknown
        return
    changes = record_changes(stored.record, spec)
    moved = [c for c in changes if c.startswith(("parameters.", "method:"))] if spec.method == "grid" else []
    if moved:  # Optuna's grid sampler skips the other grid's trials; the driver's cap would count them
        raise UsageError(f"spec: the stored grid sweep {spec.name!r} has other points ({_listed(moved)}), and a "
                         f"grid cannot change within one study; {fresh}")
    if changes and not allow_changed:
        raise UsageError(f"spec: the stored sweep {spec.name!r} ran with another spec ({_listed(changes)}), and its "
                         f"trials and these would share one study and one best; {fresh}, or pass "
                         "--allow-changed-spec to continue this one with it")


def _listed(items: list[str], most: int = 4) -> str:
    return "; ".join(items[:most]) + (f"; and {len(items) - most} more" if len(items) > most else "")


def _execute(spec: Any, *, tracking_uri: str | None, storage: str, ray_address: str | None,
             quiet: bool, report: bool) -> tuple[list[Any], Any]:
    from sweeps.cli import UsageError
    from sweeps.console import Progress, stderr_console

    # Ray's start-up mostly waits on its own processes: beside it, the MLflow writer process
    # starts (MLflow's import, the store), and this process imports the driver (Optuna; never
    # torch: the workers' alone) and checks the data (a built-in set cannot fail to load: the
    # spec checked it whole; a file was read before). Ray stays in this thread (its processes die
    # with the thread that made them). ``device: cuda`` on this machine is checked first (torch's
    # import, ~1 s, for such runs only): a refused run starts nothing and creates no store.
    if spec.device == "cuda" and ray_address in (None, "local", "none"):
        check_local_gpu()
    importances = len(spec.searched()) > 1  # the report's fANOVA needs two searched parameters
    early = start_tracker(tracking_uri, spec.name, report, importances)
    with ThreadPoolExecutor(1, thread_name_prefix="mlpsweep-open") as pool:
        loading = pool.submit(_import_and_load, spec, storage)
        opening = pool.submit(_open_after, loading, early)
        try:
            backend = start_backend(ray_address, spec.concurrency, imported=loading.result, device=spec.device)
        except BaseException:
            _stop_local_ray()
            if opening.exception() is None:
                _discard(opening.result())
            elif isinstance(opening.exception(), UsageError):
                raise cast(BaseException, opening.exception()) from None  # the user's to fix first
            raise
        try:
            tracker = opening.result()
        except BaseException:  # bad data, an unusable store: stop what was started, then say why
            backend.close()
            _stop_local_ray()
            raise
    from sweeps.driver import SweepDriver

    console = stderr_console()
    progress = None if quiet else Progress(console)
    driver = SweepDriver(spec, backend, tracker, storage, on_update=progress.update if progress else None)
    try:
        with progress or nullcontext():
            summaries = driver.run()
            if progress:
                progress.update(driver.stats, last=True)
    except BaseException:
        if tracker.report is not None:
            tracker.report.cancel()
        raise
    finally:
        backend.close()
        errors = tracker.close()
        for e in errors[:5]:
            console.print(f"[yellow]warning:[/] MLflow write failed: {e}")
    return summaries, tracker


def start_backend(ray_address: str | None, concurrency: int,
                  imported: Callable[[], object] = lambda: None, device: str = "cpu") -> Any:
    """Where trials run: a local Ray (default), an existing cluster, or this process (``none``).

    ``imported()`` returns once another thread has imported the driver's code: it is called
    after Ray's start, before this thread imports that code itself (two threads importing one
    package at once can see it half made). With ``device: cuda`` the workers ask Ray for a share
    of a GPU each, so that they run on nodes with one.

    Raises:
        UsageError: ``device: cuda`` and the Ray cluster has no GPU.
    """
    if ray_address == "none":
        imported()
        from workers.backend import InProcessBackend

        return InProcessBackend(concurrency)
    from workers.ray_connect import cluster_gpus, connect

    connect(ray_address, num_cpus=max(os.cpu_count() or 1, concurrency))
    gpus = cluster_gpus() if device == "cuda" else 0.0
    if device == "cuda" and gpus < 1:
        from sweeps.cli import UsageError

        where = "this machine's Ray" if ray_address in (None, "local") else f"the Ray cluster at {ray_address}"
        raise UsageError(f"device: cuda, but {where} has no GPU; "
                         "set device: cpu, or auto (a GPU where a worker has one), or add GPU nodes")
    imported()
    from workers.ray_backend import RayBackend

    backend = RayBackend(concurrency, gpus=gpus)
    backend.wait_ready()  # beside MLflow's set-up, not inside the sweep's first trials
    return backend


def target_line(summaries: list[Any], spec: Any) -> str | None:
    """What to say when the sweep stopped at ``metric.target`` (before ``run_cap``), else None."""
    target, name = spec.metric.target, spec.metric.name
    done = [(getattr(s, name), s.number) for s in summaries if s.state == "COMPLETE" and getattr(s, name) is not None]
    if target is None or not done or min(done)[0] > target:
        return None
    value, number = min(done)
    return (f"metric.target reached: trial {number} has {name} {value:.5g} <= {target:g}, so the sweep stopped at "
            f"{len(summaries)} of run_cap {spec.run_cap} trials (lower or remove the target to go on)")


PROBE_SECONDS = 5.0  # a cluster's address must accept a connection within this


def join_cluster(address: str) -> None:
    """Attach this process to the Ray cluster at ``address`` (``auto``, ``ray://HOST:PORT`` or
    ``HOST:PORT``).

    Raises:
        UsageError: a malformed address, or no cluster answers there.
    """
    from sweeps.cli import UsageError, first_line
    from workers.ray_connect import connect

    target, source = auto_address() if address == "auto" else (address, "")
    hint = ("start that cluster, or give --ray-address HOST:PORT of a running one, or leave it out for a local Ray"
            if source else
            "give auto, ray://HOST:PORT or HOST:PORT of a running cluster, or leave it out for a local Ray")
    host, _, port = target.removeprefix("ray://").rpartition(":")
    if host and port.isdigit():  # Ray itself retries a silent address for minutes
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
        except OSError as exc:
            raise UsageError(f"--ray-address: no Ray cluster answers at {address}{source}: "
                             f"{exc.strerror or 'no answer in %g s' % PROBE_SECONDS} ({hint})") from None
        if not speaks_grpc(host.strip("[]"), int(port)):  # Ray would retry another service's port for minutes
            raise UsageError(f"--ray-address: no Ray cluster answers at {address}{source}: something listens there "
                             f"but speaks no gRPC, as Ray's ports do (a head's GCS: HOST:6379 by default; its client "
                             f"server: ray://HOST:10001; the dashboard's 8265 is for 'mlpsweep submit') ({hint})")
    try:
        with warnings.catch_warnings():  # Ray's client warns of the timeout it then raises
            warnings.simplefilter("ignore")
            connect(address)
    except Exception as exc:  # noqa: BLE001 - Ray says ValueError, ConnectionError, RuntimeError, …
        raise UsageError(f"--ray-address: cannot join a Ray cluster at {address!r}{source}: {first_line(exc)} "
                         f"({hint})") from None


def speaks_grpc(host: str, port: int, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a gRPC server (HTTP/2) answers at ``host:port`` within ``timeout`` s, as a Ray
    head's GCS and client server do and a web server or a database does not. True, unchecked,
    where Ray's TLS is on (``RAY_USE_TLS``: the handshake is TLS's)."""
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
        return True
    import grpc

    channel = grpc.insecure_channel(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
        return True
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()


def auto_address() -> tuple[str, str]:
    """Where ``--ray-address auto`` leads, as Ray resolves it, and whence, for messages:
    ``$RAY_ADDRESS``, else the cluster the last ``ray start`` on this machine recorded (a file
    that ``ray stop`` removes but a crashed or killed cluster, or another machine's copy of
    ``/tmp``, leaves behind), else a running Ray found on this machine. ``("auto", "")`` where
    Ray finds none (joining then says so) or resolves otherwise than this Ray does."""
    try:
        from ray._private.services import find_bootstrap_address, get_ray_address_from_environment

        found = get_ray_address_from_environment("auto", None)
        recorded = find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 - none found, or another Ray's internals: Ray's own join decides
        return "auto", ""
    if not isinstance(found, str) or found in ("auto", "local"):
        return "auto", ""
    if os.environ.get("RAY_ADDRESS") not in (None, "", "auto"):
        whence = "$RAY_ADDRESS"
    elif found == recorded:
        whence = f"{_address_file() or 'the record'} of the last 'ray start' here"
    else:
        whence = "a Ray running on this machine"
    return found, f" ({found}, from {whence})"


def _address_file() -> str | None:
    """The file in which ``ray start`` records its cluster's address (Ray's internals: None if moved)."""
    try:
        from ray._common.utils import get_ray_address_file

        return str(get_ray_address_file(None))
    except Exception:  # noqa: BLE001 - only a message's detail
        return None


def _import_and_load(spec: Any, storage: str) -> None:
    import sweeps.driver  # noqa: F401  (Optuna, the records; torch is the workers')
    from sweeps.stores import url_scheme

    # Optuna on a SQLite file: no fsync per trial (set before the driver opens it). Not for the
    # default journal file: SQLAlchemy's import is 0.1 CPU-s of the start, on Ray's and the workers' cores.
    if url_scheme(storage) == "sqlite":
        from tracking.client import enable_fast_sqlite

        enable_fast_sqlite()

    if not spec.data.is_file:
        check_data(spec)


def check_local_gpu() -> None:
    """``device: cuda`` on this machine (a local Ray or ``--ray-address none``) needs a GPU here.

    Raises:
        UsageError: torch sees no CUDA device.
    """
    import torch

    from sweeps.cli import UsageError

    if not torch.cuda.is_available():
        raise UsageError(f"device: cuda, but this machine has no CUDA GPU (torch {torch.__version__} sees none); "
                         "set device: cpu, or auto (a GPU where there is one), or run on a cluster with --ray-address")


def _open_after(loading: Future[None], tracker: Any) -> Any:
    """``tracker`` ready, once the driver's code and data loaded (else it is stopped)."""
    try:
        loading.result()  # done (one thread runs both)
    except BaseException:
        _discard(tracker)
        raise
    return ready_tracker(tracker)


def _discard(tracker: Any) -> None:
    tracker.close()
    if tracker.report is not None:
        tracker.report.cancel()


def start_tracker(tracking_uri: str | None, name: str, report: bool = False, importances: bool = True) -> Any:
    """Start the sweep's MLflow writer process (no torch, no MLflow here: milliseconds); it opens
    the store while this process goes on. :func:`ready_tracker` waits for it. ``importances``:
    the report will compute fANOVA importances (its process imports scikit-learn ahead)."""
    from tracking.sweep import SweepTracker

    tracker = SweepTracker(tracking_uri, name, report=report, wait=False)
    if tracker.report is not None:
        tracker.report.prepare(importances)
    return tracker


def ready_tracker(tracker: Any) -> Any:
    """``tracker`` once its writer has opened the store.

    Raises:
        UsageError: the store cannot be used (the message names ``--tracking-uri``).
    """
    from sweeps.cli import UsageError, first_line

    try:
        tracker.wait_ready()
    except Exception as exc:
        _discard(tracker)
        raise UsageError(f"--tracking-uri: cannot use the MLflow store {tracker.tracking_uri}: {first_line(exc)}") from None
    return tracker


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from sweeps.console import dashboard_line, top_table
    from sweeps.stores import resolve_stores

    spec = load_run_spec(args.spec, args.run_cap, args.concurrency)
    arrays = check_data(spec) if spec.data.is_file else None  # a file can fail to load: read before anything starts
    local = args.ray_address in (None, "local")
    for line in advice(spec, lambda: check_data(spec) if arrays is None else arrays) + \
            (local_advice(spec.concurrency, os.cpu_count()) if local else []):
        print(f"mlpsweep run: warning: {line}", file=sys.stderr)
    resolve_stores(args.tracking_uri, args.storage, create=True)  # a mistyped path or a server down: nothing starts
    if args.ray_address not in (None, "local", "none"):
        join_cluster(args.ray_address)  # a cluster that does not answer: nothing starts, no store is made
    summaries, tracker = execute(spec, tracking_uri=args.tracking_uri, storage=args.storage,
                                 ray_address=args.ray_address, quiet=args.quiet, report=True,
                                 allow_changed_spec=args.allow_changed_spec)
    report = tracker.report
    report.draw(tracker.tracking_uri, spec.name, args.storage)  # never fails the run: plots are a bonus
    out = Console(width=max(Console().width, 110))
    out.print(top_table(summaries, spec.metric.name, title=f"sweep {spec.name}: top trials by {spec.metric.name}"))
    complete = sum(s.state == "COMPLETE" for s in summaries)
    tracking_failed = [s for s in summaries if s.reason and s.reason.startswith("tracking failed")]
    out.print(f"{len(summaries)} trials finished ({complete} complete). Best model: "
              f"mlpsweep best {spec.name} --out best-{spec.name}", soft_wrap=True)  # whole, to copy
    reached = target_line(summaries, spec)
    if reached:
        out.print(reached, soft_wrap=True)
    uri = tracker.tracking_uri
    out.print(dashboard_line(uri, spec.name), soft_wrap=True)
    _stop_local_ray()  # beside the drawing, not after it; the results are on screen meanwhile
    report.wait()
    from tracking.client import fold_sqlite_log

    fold_sqlite_log(uri)  # every writer of the store is done: mlflow.db alone holds the sweep
    if tracking_failed:
        from tracking.writer import DAMAGED

        why = "is damaged" if DAMAGED in (tracking_failed[0].reason or "") else "was unreachable past the retry budget"
        print(f"mlpsweep run: {len(tracking_failed)} trial(s) failed because the tracking store {why}: "
              f"{tracking_failed[0].reason}", file=sys.stderr)
        return 1
    return 0


def _stop_local_ray() -> None:
    """Shut this process's Ray down (or leave a cluster) now, not at interpreter exit: it takes seconds."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        from workers.ray_connect import disconnect

        disconnect()
