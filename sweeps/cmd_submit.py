"""``mlpsweep submit SPEC --address http://HEAD:8265``: run a sweep as a batch job on a Ray cluster.

The spec is validated here first (a bad spec never becomes a job), then the sweep driver
(``mlpsweep run SPEC --ray-address auto``) is submitted through the Ray Jobs API with a
``runtime_env`` whose ``working_dir`` carries the project's four packages and the spec. The
driver runs on the head node; its trials run on the cluster's workers; runs and checkpoints go
to the MLflow server, the study to the ``--storage`` database. With ``--wait`` the job's logs
are followed to the end and the exit code is the job's outcome.

Token authentication: a cluster started with ``RAY_AUTH_MODE=token`` needs its token here, as
``RAY_AUTH_TOKEN``, a file named by ``RAY_AUTH_TOKEN_PATH``, or ``~/.ray/auth_token`` (see
:func:`sweeps.cluster.auth_headers`).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

__all__ = ["register", "submit", "follow", "check_stored_sweep"]

_TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
PRECHECK_TIMEOUT_S = 3  # how long the stored sweep's check waits for a database server from here


def register(subparsers: Any) -> None:
    from sweeps.cli import positive_int
    from sweeps.cmd_run import add_changed_spec_option, add_store_options

    parser = subparsers.add_parser(
        "submit",
        help="run a sweep as a batch job on a Ray cluster",
        description="Validate SPEC here, then submit the sweep driver as a Ray job (Jobs API, dashboard "
                    "port) with the project and the spec as its working directory. Runs, checkpoints and "
                    "the study go to --tracking-uri and --storage as the cluster's nodes reach them. "
                    "Submitting the same spec again continues its study. A cluster with token "
                    "authentication needs RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token).",
    )
    add_store_options(parser)
    parser.add_argument("spec", metavar="SPEC", help="the sweep spec (YAML)")
    parser.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS"),
                        help="the head's Ray Jobs API, http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS)")
    parser.add_argument("--wait", action="store_true",
                        help="follow the job's logs to the end; exit 0 if it succeeded, 1 if it failed or stopped")
    parser.add_argument("--run-cap", type=positive_int, default=None, help="override the spec's run_cap")
    parser.add_argument("--concurrency", type=positive_int, default=None, help="override the spec's concurrency")
    add_changed_spec_option(parser)
    parser.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> int:
    from sweeps.cli import UsageError
    from sweeps.cluster import (alive_gpus, check_address, check_stores, ray_job_command, stage_working_dir,
                                tree_size)
    from sweeps.cmd_run import prepare

    spec, warnings = prepare(args.spec, args.run_cap, args.concurrency)  # a bad spec stops here: no connection
    for line in warnings:
        print(f"mlpsweep submit: warning: {line}", file=sys.stderr)
    problems = check_address(args.address)
    tracking_uri, storage, stores = check_stores(args.tracking_uri, args.storage)
    problems += stores.problems
    data_files, data_problems, data_warnings = _data_files(spec)
    problems += data_problems
    if problems:
        raise UsageError("\n".join(problems))
    unchecked = check_stored_sweep(spec, storage, args.allow_changed_spec, args.address)  # an edit: no job
    for line in stores.warnings + data_warnings + ([unchecked] if unchecked else []):
        print(f"mlpsweep submit: warning: {line}", file=sys.stderr)

    client = _connect(args.address)
    if spec.device == "cuda" and alive_gpus(args.address) == 0:  # else the job would stop at its start
        raise UsageError(f"device: cuda, but the Ray cluster at {args.address} has no GPU node; set device: cpu, "
                         "or auto (a GPU where a worker has one), or add GPU nodes")
    with tempfile.TemporaryDirectory(prefix="mlpsweep-job-") as staging:
        spec_file = stage_working_dir(staging, args.spec, data_files)
        files, size = tree_size(staging)
        print(f"mlpsweep submit: shipping {files} files ({size / 1024:.0f} KiB) as the job's working_dir",
              file=sys.stderr)
        try:
            job_id = submit(client, staging, spec_file, spec.name, tracking_uri, storage,
                            run_cap=args.run_cap, concurrency=args.concurrency,
                            allow_changed_spec=args.allow_changed_spec)
        except RuntimeError as exc:  # the Jobs API answered with an error
            print(f"mlpsweep submit: error: the cluster refused the job: {exc}", file=sys.stderr)
            return 1
    address = args.address.rstrip("/")
    print(job_id)
    print(f"Dashboard: {address}/#/jobs/{job_id}   logs: {ray_job_command('logs -f', job_id, address)}",
          file=sys.stderr)
    if not args.wait:
        return 0
    try:
        status, message = follow(client, job_id, sys.stdout)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} goes on (stop it: {ray_job_command('stop', job_id, address)})",
              file=sys.stderr)
        return 130
    except (ConnectionError, RuntimeError, OSError) as exc:
        print(f"mlpsweep submit: error: lost contact with the cluster while following job {job_id}: {exc}; "
              f"it may still be running: {ray_job_command('status', job_id, address)}", file=sys.stderr)
        return 1
    print(f"job {job_id} {status}" + (f": {message}" if message and status != "SUCCEEDED" else ""),
          file=sys.stderr)
    return 0 if status == "SUCCEEDED" else 1


def check_stored_sweep(spec: Any, storage: str, allow_changed: bool, address: str) -> str | None:
    """Refuse here, before any job, an edited spec that the job's driver would refuse
    (:func:`sweeps.cmd_run.check_continuation`), where this machine reaches the storage the
    cluster uses: a database server on another host that answers within
    :data:`PRECHECK_TIMEOUT_S`; a storage file, or a server on loopback or a local socket, only
    when ``address`` is on loopback, taken to mean the head is this machine (a port forwarded
    from a container or over ssh is not: such a refusal names what it read, and where). A
    storage file absent here, or a database without Optuna's tables, holds no sweep to check
    and is left untouched (Optuna would create its tables on opening it). Where the server does
    not answer, the job checks the spec when it starts, and this returns a warning saying so.

    Raises:
        UsageError: the stored sweep ran with another spec (see ``check_continuation``).
    """
    from sweeps.cli import UsageError, first_line
    from sweeps.cluster import is_loopback, redact
    from sweeps.cmd_run import check_continuation
    from sweeps.stores import check_location, url_scheme
    from tracking.sweep import storage_file

    later = "the job checks the stored sweep's spec against this one when it starts"
    head_here = is_loopback(urlsplit(address).hostname)
    scheme = url_scheme(storage)
    server = scheme not in (None, "sqlite")
    host = urlsplit(storage).hostname if server else None  # none: a local socket
    machines = not server or host is None or is_loopback(host)  # a file or server on each machine
    if machines and not head_here:
        return None  # the head's, not this machine's (check_stores said so)
    if server:
        try:
            check_location("--storage", storage, timeout_s=PRECHECK_TIMEOUT_S)
        except UsageError as exc:
            return f"{exc} (from this machine); {later}"
    local = storage_file(storage)
    try:
        if local is not None and not local.expanduser().is_file():
            return None
        if scheme is not None and not _holds_studies(storage):  # a database, a SQLite file too
            return None
        check_continuation(spec, storage, allow_changed)
    except UsageError as exc:
        if machines:  # say where, should this not be the head's
            raise UsageError(f"{exc} (read in {redact(storage)} on this machine, the head at {address})") from None
        raise
    except Exception as exc:  # noqa: BLE001 - a store this machine cannot read: the job's to check
        return f"--storage: cannot read the stored sweep from here ({first_line(exc)}); {later}"
    return None


def _holds_studies(url: str) -> bool:
    """Whether the database at ``url`` has Optuna's tables, looked up without writing (Optuna's
    storage creates them, and stamps its schema version, when it opens a database without)."""
    from sqlalchemy import create_engine, inspect
    from sqlalchemy.pool import NullPool

    from sweeps.stores import connect_args

    engine = create_engine(url, poolclass=NullPool, connect_args=connect_args(url, PRECHECK_TIMEOUT_S))
    try:
        return "studies" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


def _data_files(spec: Any) -> tuple[list[str], list[str], list[str]]:
    """Relative data files to ship (problems for paths outside the current directory)."""
    if not spec.data.is_file:
        return [], [], []
    ship: list[str] = []
    problems: list[str] = []
    warnings: list[str] = []
    for key in ("dataset", "test_path"):
        value = getattr(spec.data, key)
        if value is None:
            continue
        path = Path(value)
        if path.is_absolute():
            warnings.append(f"data.{key}: {value} is not shipped with the job; it must exist at that path "
                            f"on every node of the cluster")
        elif ".." in path.parts:
            problems.append(f"data.{key}: {value!r} leaves the current directory and cannot travel with the "
                            f"job; run submit from a directory that contains it")
        else:
            ship.append(path.as_posix())
    return ship, problems, warnings


def _connect(address: str) -> Any:
    """A Jobs API client for ``address``; unreachable or unauthorised clusters are usage errors."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    from sweeps.cli import UsageError, first_line
    from sweeps.cluster import auth_headers

    try:
        return JobSubmissionClient(address, headers=auth_headers() or None)
    except AuthenticationError as exc:
        raise UsageError(_auth_hint(address, exc)) from None
    except ConnectionError as exc:
        raise UsageError(f"--address: cannot reach the Ray Jobs API at {address} ({exc}); is the head "
                         f"running and its dashboard port published?") from None
    except RuntimeError as exc:  # Ray's version check: something answers there, not a Ray dashboard
        raise UsageError(f"--address: {address} answers, but not as a Ray cluster's Jobs API "
                         f"({first_line(exc)}); give the head's dashboard URL, http://HOST:8265 by default") from None


def _auth_hint(address: str, exc: Exception) -> str:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return (f"--address: the Ray cluster at {address} refused the request: {reason}; it uses token "
            f"authentication: set RAY_AUTH_TOKEN to its token (`ray get-auth-token` on the head, or the "
            f"RAY_AUTH_TOKEN the cluster was started with), or RAY_AUTH_TOKEN_PATH to a file holding it")


def submit(client: Any, working_dir: str, spec_file: str, name: str, tracking_uri: str, storage: str, *,
           run_cap: int | None = None, concurrency: int | None = None, allow_changed_spec: bool = False) -> str:
    """Submit the sweep driver as a Ray job; returns the job's submission id.

    Args:
        client: a ``JobSubmissionClient``.
        working_dir: the staged directory (:func:`sweeps.cluster.stage_working_dir`).
        spec_file: the spec's file name inside ``working_dir``.
        name: the sweep's name, for the submission id and the job's metadata.
        tracking_uri, storage: as the cluster's nodes reach them.
        run_cap, concurrency, allow_changed_spec: passed on to ``mlpsweep run``.

    Returns:
        The job's submission id.

    Raises:
        UsageError: the cluster refused the token, or the working directory is too large to upload.
    """
    from ray.exceptions import AuthenticationError

    from sweeps.cli import UsageError
    from sweeps.cluster import entrypoint, runtime_env, submission_id

    try:
        return client.submit_job(
            entrypoint=entrypoint(spec_file, tracking_uri, storage, run_cap, concurrency, allow_changed_spec),
            runtime_env=runtime_env(working_dir),
            submission_id=submission_id(name),
            metadata={"mlpsweep.sweep": name},
        )
    except AuthenticationError as exc:
        raise UsageError(_auth_hint(client.get_address(), exc)) from None
    except ValueError as exc:  # Ray refuses packages over its upload limit
        raise UsageError(f"SPEC: the job's files are too large to upload ({str(exc).splitlines()[0]}); "
                         f"put large data files on every node and name them by absolute path") from None


def follow(client: Any, job_id: str, out: TextIO, poll_s: float = 1.0) -> tuple[str, str]:
    """Print the job's logs as they come until it ends.

    The log stream (a websocket) is followed first; if it breaks, the status is polled instead
    and the logs not yet printed are fetched at the end.

    Returns:
        (final status name, the job's status message).
    """
    import asyncio

    printed = 0

    async def tail() -> None:
        nonlocal printed
        async for chunk in client.tail_job_logs(job_id):
            out.write(chunk)
            out.flush()
            printed += len(chunk)

    try:
        asyncio.run(tail())
    except Exception as exc:  # noqa: BLE001 - the stream is a convenience: fall back to polling
        print(f"mlpsweep submit: log stream ended early ({type(exc).__name__}); polling the job",
              file=sys.stderr)
    failures = 0
    while True:
        try:
            info = client.get_job_info(job_id)
            failures = 0
        except (ConnectionError, OSError):  # a dashboard restart or a network blip: retry for a while
            failures += 1
            if failures * poll_s > 60:
                raise
            time.sleep(poll_s)
            continue
        status = str(getattr(info.status, "value", info.status))
        if status in _TERMINAL:
            break
        time.sleep(poll_s)
    logs = client.get_job_logs(job_id)
    if len(logs) > printed:
        out.write(logs[printed:])
        out.flush()
    return status, info.message or ""
