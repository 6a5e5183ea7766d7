"""What a sweep needs to run as a Ray job on a cluster: the job's files, command and stores.

``mlpsweep submit`` runs the sweep driver on the cluster's head node through the Ray Jobs API.
This module builds what travels with the job — a small working directory holding the four
project packages and the spec (:func:`stage_working_dir`), the ``runtime_env`` around it, the
entrypoint command — and checks, before anything is sent, that the tracking store and the
Optuna storage are places the cluster can reach and that outlive the job (:func:`check_stores`).

It imports no Ray, MLflow or Optuna, so ``mlpsweep --help`` stays fast and tests need no cluster.
"""
from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import secrets
import shlex
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence
from urllib.parse import urlsplit

__all__ = [
    "alive_gpus",
    "PACKAGES",
    "StoreCheck",
    "check_address",
    "check_stores",
    "is_loopback",
    "redact",
    "stage_working_dir",
    "tree_size",
    "runtime_env",
    "entrypoint",
    "submission_id",
    "auth_headers",
    "ray_job_command",
]

# The project's packages: everything the driver and the trial workers import from the project.
PACKAGES = ("models", "sweeps", "workers", "tracking")

# Never shipped: caches, local stores and run outputs that may sit inside the package folders.
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyo", "*.db", "*.db-journal", "mlruns",
                                 "mlartifacts", ".pytest_cache", ".mypy_cache", "*.egg-info")

# Forwarded to the job when set here: they tune the MLflow REST client and carry no secrets.
_FORWARDED_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER")

_SQL_SCHEMES = ("postgresql", "postgres", "mysql", "mssql", "oracle", "cockroachdb")
_LOOPBACK_NAMES = ("localhost", "ip6-localhost")


@dataclass
class StoreCheck:
    """Problems (the job cannot work: exit 2, nothing submitted) and warnings (it may not)."""

    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_address(address: str | None) -> list[str]:
    """Problems with the Jobs API address (the head's dashboard, ``http://HEAD:8265``)."""
    if not address:
        return ["--address: required: the Ray Jobs API of the cluster's head node, e.g. "
                "http://127.0.0.1:8265 (or set RAY_API_SERVER_ADDRESS)"]
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        hint = ("; 'ray://' and HOST:6379 are the client and GCS ports, jobs go to the dashboard port"
                if parts.scheme == "ray" or ":" in address and "//" not in address else "")
        return [f"--address: must be the head's dashboard URL, http://HOST:PORT (default port 8265), "
                f"got {address!r}{hint}"]
    return []


def check_stores(tracking_uri: str | None, storage: str | None) -> tuple[str, str, StoreCheck]:
    """Resolve and check where the job records runs (MLflow) and trials (Optuna).

    The driver runs on the head node inside the job's temporary working directory, which Ray
    deletes, so relative paths and missing values (whose defaults are relative) are refused;
    absolute paths are the head node's and only warned about; ``localhost`` URLs are warned
    about because on the cluster they mean the head node.

    Args:
        tracking_uri: ``--tracking-uri`` (falls back to ``$MLFLOW_TRACKING_URI``).
        storage: ``--storage``; left out, ``optuna.db`` beside an absolute SQLite MLflow store.

    Returns:
        (tracking URI, storage URL, their problems and warnings); the URIs are "" when missing.
    """
    check = StoreCheck()
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        check.problems.append(
            "--tracking-uri: required: the sweep runs on the cluster, where the default sqlite:///mlflow.db "
            "would land in the job's temporary directory; give the MLflow server as the cluster's nodes "
            "reach it, e.g. --tracking-uri http://mlflow:5000 (or set MLFLOW_TRACKING_URI)")
    else:
        _check_one("--tracking-uri", uri, check)
    if not storage and uri.startswith("sqlite:///") and Path(uri[len("sqlite:///"):]).is_absolute():
        storage = f"sqlite:///{(Path(uri[len('sqlite:///'):]).parent / 'optuna.db').as_posix()}"
    if not storage:
        if uri:
            check.problems.append(
                "--storage: required (unless --tracking-uri is an absolute sqlite path): the Optuna study must "
                "live where the cluster reaches it and outlive the job, e.g. "
                "--storage postgresql+psycopg2://USER:PASSWORD@postgres:5432/optuna")
        storage = ""
    else:
        from sweeps.optuna_adapter import check_storage

        try:
            check_storage(storage)
            _check_one("--storage", storage, check)
        except ValueError as exc:
            check.problems.append(str(exc))
    return uri, storage, check


def _check_one(flag: str, uri: str, check: StoreCheck) -> None:
    parts = urlsplit(uri)
    scheme = parts.scheme.split("+")[0].lower()
    if scheme in ("sqlite", "file", ""):
        path = _local_path(uri)
        if path is None or not path.is_absolute():
            check.problems.append(
                f"{flag}: {uri!r} is a relative path: on the cluster it would point into the job's temporary "
                f"working directory, which Ray deletes after the job; use a server (http://…, postgresql://…) "
                f"or an absolute path on the head node")
        else:
            check.warnings.append(
                f"{flag}: {uri} is a path on the cluster's head node (where the driver runs); you see it "
                f"here only through a shared filesystem")
    elif scheme in ("http", "https", *_SQL_SCHEMES) and is_loopback(parts.hostname):
        check.warnings.append(
            f"{flag}: {parts.hostname} in {redact(uri)} means the head node on the cluster; fine for a "
            f"one-machine cluster, else give the address the cluster's nodes use (e.g. the compose service name)")


def _local_path(uri: str) -> Path | None:
    from tracking.sweep import sqlite_path

    if uri.startswith("sqlite"):
        found = sqlite_path(uri, any_driver=True)
        if found is not None:
            return found
    if uri.startswith("file://"):
        return Path(urlsplit(uri).path)
    if uri.startswith("sqlite:"):  # sqlite:// (in-memory) or malformed: nothing that outlives the job
        return None
    return Path(uri).expanduser()


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def redact(uri: str) -> str:
    """The URI with any password replaced, for messages."""
    parts = urlsplit(uri)
    if parts.password:
        return uri.replace(f":{parts.password}@", ":***@", 1)
    return uri


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"cannot find the {name!r} package to ship with the job")
    return Path(next(iter(spec.submodule_search_locations)))


def stage_working_dir(dest: str | os.PathLike[str], spec_path: str | os.PathLike[str],
                      data_files: Sequence[str] = ()) -> str:
    """Copy what the job needs into ``dest`` (an empty directory): the packages, the spec, data.

    Args:
        dest: the directory to fill; it becomes the job's ``working_dir``.
        spec_path: the validated spec; copied under its own file name.
        data_files: relative data paths the spec names (``data.dataset``, ``data.test_path``),
            copied to the same relative paths so the loader finds them on every node.

    Returns:
        The spec's file name inside ``dest`` (the job's current directory).

    Raises:
        FileNotFoundError: a package or data file is missing.
    """
    root = Path(dest)
    for name in PACKAGES:
        shutil.copytree(_package_dir(name), root / name, ignore=_IGNORE)
    spec_name = Path(spec_path).name
    if spec_name in PACKAGES:
        spec_name = f"spec-{spec_name}"
    shutil.copy2(spec_path, root / spec_name)
    for rel in data_files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(rel, target)
    return spec_name


def tree_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(files, bytes) under ``path``."""
    files = size = 0
    for dirpath, _, names in os.walk(path):
        for n in names:
            files += 1
            size += os.path.getsize(os.path.join(dirpath, n))
    return files, size


def runtime_env(working_dir: str, environ: Mapping[str, str] | None = None) -> dict[str, object]:
    """The job's ``runtime_env``: the staged directory and a few non-secret variables.

    The cluster's nodes must already have the project's dependencies (the docker image does);
    only the project's own code travels, so every node runs the code that was submitted.
    """
    environ = os.environ if environ is None else environ
    env_vars = {"PYTHONUNBUFFERED": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
    env_vars.update({k: environ[k] for k in _FORWARDED_ENV if environ.get(k)})
    return {"working_dir": working_dir, "env_vars": env_vars}


def entrypoint(spec_file: str, tracking_uri: str, storage: str, run_cap: int | None = None,
               concurrency: int | None = None, allow_changed_spec: bool = False) -> str:
    """The shell command the job runs on the head node: the sweep driver attached to the cluster."""
    argv = ["python", "-m", "sweeps.cli", "run", spec_file, "--ray-address", "auto",
            "--tracking-uri", tracking_uri, "--storage", storage, "--quiet"]
    if run_cap is not None:
        argv += ["--run-cap", str(run_cap)]
    if concurrency is not None:
        argv += ["--concurrency", str(concurrency)]
    if allow_changed_spec:
        argv.append("--allow-changed-spec")
    return shlex.join(argv)


def submission_id(name: str, now: datetime | None = None) -> str:
    """A readable, unique job id: ``mlpsweep-<name>-<UTC time>-<4 hex>``."""
    now = now or datetime.now(timezone.utc)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "sweep"
    return f"mlpsweep-{slug}-{now.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def auth_headers(environ: Mapping[str, str] | None = None, home: Path | None = None) -> dict[str, str]:
    """The Authorization header for a token-protected cluster, when Ray would not add it itself.

    Ray 2.60's ``JobSubmissionClient`` sends a token only when ``RAY_AUTH_MODE=token`` is set in
    the submitting process. Left unset, we follow the rule ``ray start`` applies on a node: use
    the token if one is configured — ``RAY_AUTH_TOKEN``, else the file at ``RAY_AUTH_TOKEN_PATH``,
    else ``~/.ray/auth_token`` (written by ``ray get-auth-token --generate``). With
    ``RAY_AUTH_MODE`` set (``token`` or ``disabled``) Ray decides, and this returns nothing.

    Returns:
        ``{"Authorization": "Bearer <token>"}`` or ``{}``.
    """
    environ = os.environ if environ is None else environ
    if environ.get("RAY_AUTH_MODE"):
        return {}
    token = environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(environ["RAY_AUTH_TOKEN_PATH"]) if environ.get("RAY_AUTH_TOKEN_PATH") else \
            (home or Path.home()) / ".ray" / "auth_token"
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            token = ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def ray_job_command(verb: str, job_id: str, address: str, environ: Mapping[str, str] | None = None,
                    home: Path | None = None) -> str:
    """The ``ray job`` command line a user can paste to ``verb`` (``logs -f``, ``stop``, ``status``)
    the job: prefixed with ``RAY_AUTH_MODE=token`` where mlpsweep sent a token that Ray's own CLI,
    with the mode unset, would not send (:func:`auth_headers`)."""
    prefix = "RAY_AUTH_MODE=token " if auth_headers(environ, home) else ""
    return f"{prefix}ray job {verb} {job_id} --address {address}"


def alive_gpus(address: str) -> float | None:
    """GPUs of the alive nodes of the Ray cluster whose dashboard is at ``address`` (Ray's state
    API, with :func:`auth_headers`); None when it cannot tell (no state API, no answer)."""
    from ray.util.state import StateApiClient
    from ray.util.state.common import ListApiOptions, StateResource

    try:
        nodes = StateApiClient(address=address, headers=auth_headers() or None).list(
            StateResource.NODES, options=ListApiOptions(limit=10_000, detail=False), raise_on_missing_output=False)
    except Exception:  # noqa: BLE001 - a cluster without the state API: the job's own check decides
        return None
    return sum(float((node.resources_total or {}).get("GPU", 0)) for node in nodes if str(node.state) == "ALIVE")
