"""Attaching to Ray — a new local instance or a running cluster — importing Ray only.

Kept apart from :mod:`workers.ray_backend` (which imports torch with the trial code) so that
``mlpsweep run`` can start Ray while another thread imports torch and loads the data.
"""
from __future__ import annotations

import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import ray

from workers.ray_worker_boot import install as skip_serializer_imports, ray_default_worker

__all__ = ["connect", "disconnect", "cluster_gpus", "LOCAL_SYSTEM_CONFIG"]

log = logging.getLogger(__name__)

# The raylet connects to its own object store as soon as it has started it; when the store is not
# listening yet (a busy machine), the default wait before the next attempt, 1 s, delays every
# later start-up step by a second. Same patience (100 × 0.1 s = 10 × 1 s), finer steps.
LOCAL_SYSTEM_CONFIG: dict[str, Any] = {
    "raylet_client_connect_timeout_milliseconds": 100,
    "raylet_client_num_connect_attempts": 100,
}


def connect(address: str | None = None, *, num_cpus: int | None = None) -> dict[str, Any]:
    """Attach to Ray: a new local instance (``address=None``), ``"auto"``, or ``ray://host:port``.

    A local instance starts no dashboard (and would bind one to 127.0.0.1) and picks free ports
    (Redis holds 6379 on many machines). Ray 2.60 resolves a loopback node IP to the machine's
    address, so its own gRPC servers are protected by its token authentication, not by binding.
    """
    if ray.is_initialized():
        return {"address": ray.get_runtime_context().gcs_address}
    kwargs: dict[str, Any] = {"logging_level": logging.WARNING, "log_to_driver": False}
    if address in (None, "local"):
        # A new instance even where one runs already (``ray start``: ray.init would join it, and
        # refuse num_cpus). No dashboard (MLflow is the dashboard); if one is turned on, it binds
        # to loopback.
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                      dashboard_host="127.0.0.1", _system_config=LOCAL_SYSTEM_CONFIG)
    else:
        kwargs["address"] = address
    local = address in (None, "local")
    skip_serializer_imports()  # this process's too: it serializes no Arrow, pydantic v1 or starlette objects
    with _lean_head(local), _agent_stand_ins(local), _prompt_node_wait(local), _quiet_auth_notice():
        info = ray.init(**kwargs)
    return {"address": getattr(info, "address_info", {}).get("gcs_address")}


def cluster_gpus() -> float:
    """GPUs the Ray this process is attached to has, over all its nodes (a local Ray: this
    machine's, as Ray detected them)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def disconnect() -> None:
    """Shut down the Ray this process started (or leave the cluster it joined)."""
    ray.shutdown()


class _DropAuthOnNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled")


@contextmanager
def _quiet_auth_notice() -> Iterator[None]:
    """Without Ray's notice that a new local instance has token authentication on ("Set
    RAY_AUTH_MODE=disabled to opt out"), printed on every start: the sweep's own Ray is meant to
    have it on. Its warning that authentication is *off* still shows."""
    logger, notice = logging.getLogger("ray._private.authentication.authentication_token_setup"), _DropAuthOnNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def _ray_internals(wanted: dict[str, tuple[str, ...]]) -> dict[str, Any] | None:
    """The ``ray._private`` modules named, each with the attributes listed; None where this Ray's
    internals differ (a start then goes Ray's own way)."""
    import importlib

    found: dict[str, Any] = {}
    for name, attributes in wanted.items():
        try:
            found[name] = importlib.import_module(f"ray._private.{name}")
        except ImportError:
            return None
        if not all(hasattr(found[name], attribute) for attribute in attributes):
            return None
    return found


@contextmanager
def _replaced(*changes: tuple[Any, str, Any]) -> Iterator[None]:
    """Each ``(owner, name, value)`` set for the block (Ray's internals, patched for a start);
    what was there put back after it."""
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in changes]
    for owner, name, value in changes:
        setattr(owner, name, value)
    try:
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


NODE_POLL_S = 0.01  # how often a starting local Ray's GCS is asked whether the raylet has registered
NODE_WAIT_S = 10.0  # polled at most this long; then Ray's own wait goes on as it would have


@contextmanager
def _prompt_node_wait(local: bool) -> Iterator[None]:
    """``ray.init`` of a new local Ray without a nap of up to a second.

    Once it has started the raylet, ``ray.init`` waits 0.1 s and asks the GCS for the new node
    (``ray._private.services.get_node``), and the C++ side of that question sleeps one whole
    second each time the node is not registered yet. On two busy cores it never is by then: the
    raylet registers once its two agents are up, ~0.6 s later with Ray's own (:func:`_agent_stand_ins`
    are up sooner), so every start lost ~0.4 s (1.1 s waited, 0.7 s needed) and more on a slower
    machine. Here the question is asked only once the GCS's node table lists the node alive,
    polled every :data:`NODE_POLL_S`. A Ray whose internals differ (or a failing poll) gets the
    question at once, as before.
    """
    found = _ray_internals({"services": ("get_node", "_get_gcs_client_options"), "state": ("GlobalState",)}) \
        if local else None
    if found is None:
        yield
        return
    services, ray_state = found["services"], found["state"]
    get_node = services.get_node

    def get_node_once_registered(gcs_address: str, node_id: str) -> Any:
        try:
            _wait_until_registered(ray_state.GlobalState(), services._get_gcs_client_options(gcs_address), node_id)
        except Exception as exc:  # noqa: BLE001 - Ray's own wait below says what is wrong, if anything
            log.debug("polling for the raylet's registration failed: %s", exc)
        return get_node(gcs_address, node_id)

    with _replaced((services, "get_node", get_node_once_registered)):
        yield


def _wait_until_registered(state: Any, gcs_options: Any, node_id: str) -> None:
    """Return once the GCS lists node ``node_id`` alive (or after :data:`NODE_WAIT_S`)."""
    state._initialize_global_state(gcs_options)
    try:
        deadline = time.monotonic() + NODE_WAIT_S
        while time.monotonic() < deadline:
            if any(n.get("NodeID") == node_id and n.get("Alive") for n in state.node_table()):
                return
            time.sleep(NODE_POLL_S)
    finally:
        state.disconnect()


@contextmanager
def _lean_head(lean: bool) -> Iterator[None]:
    """A new local Ray without the head processes a one-machine sweep never uses.

    ``ray.init`` always starts an API server (the dashboard's head, even with
    ``include_dashboard=False``: it waits up to a second for it to come up), an autoscaler monitor
    (one node never scales; at shutdown it ignores SIGTERM for a second) and a log monitor (it
    streams workers' output to the driver, which ``log_to_driver=False`` turns away). Each is a
    Python process importing Ray on the cores the sweep's workers start on: together ~2 s of the
    start on two cores. Its node agent runs ``--minimal``, as in a Ray installed without its
    dashboard: no metrics exporter (which the raylet waits for), HTTP or log services, and the
    driver skips importing aiohttp & co. to find out (~0.15 s of ``ray.init``); so minimal, it does
    nothing :func:`_agent_stand_ins` cannot do without importing Ray. Its workers start through
    :mod:`workers.ray_worker_boot`: Ray's worker without the imports of pyarrow, pydantic and
    starlette that only register serializers for them (~0.2 CPU-s each). Ray 2.60 has no
    public switch for any of them, so ``ray.init`` runs with the API server's start a no-op, its
    node parameters saying no monitors and that worker path, and its dashboard check saying "not
    installed"; a Ray whose internals differ gets the usual start (tests/integration/test_exposure.py
    then fails).
    """
    found = _ray_internals({"services": ("start_api_server",), "parameter": ("RayParams",),
                            "utils": ("get_dashboard_dependency_error",)}) if lean else None
    if found is None:
        yield
        return
    services, parameter, ray_utils = found["services"], found["parameter"], found["utils"]
    params = parameter.RayParams

    boot = str(WORKER_BOOT) if Path(ray_default_worker()).is_file() else None  # where the boot finds Ray's worker

    class LeanParams(params):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.no_monitor, self.include_log_monitor = True, False
            if boot and hasattr(self, "worker_path"):
                self.worker_path = self.worker_path or boot

    with _replaced((services, "start_api_server", lambda *args, **kwargs: (None, None)),
                   (parameter, "RayParams", LeanParams),
                   (ray_utils, "get_dashboard_dependency_error",
                    lambda: ImportError("mlpsweep: a one-machine sweep uses no dashboard"))):
        yield


AGENT_STAND_INS = Path(__file__).with_name("ray_agents.py")
WORKER_BOOT = Path(__file__).with_name("ray_worker_boot.py")


@contextmanager
def _agent_stand_ins(local: bool) -> Iterator[None]:
    """A new local Ray whose raylet starts :mod:`workers.ray_agents` for its two node agents.

    The raylet registers only once both agents have written their ports, and each first imports
    Ray, aiohttp and gRPC: on two cores ~1 CPU-second apiece, while the driver, the MLflow writer
    and (next) the workers start too. The dashboard agent of a lean head (:func:`_lean_head`)
    serves nothing; the runtime-env agent builds environments only for a job with a runtime
    env, which a local sweep's has not — unless Ray adds one (a driver inside a Ray job, a
    ``RAY_RUNTIME_ENV_HOOK``, ``uv run``): then Ray's own runtime-env agent starts. A Ray whose
    internals differ starts its own two (tests/integration/test_exposure.py then fails).
    """
    found = _ray_internals({"services": ("_build_python_executable_command_memory_profileable",),
                            "ray_constants": ("PROCESS_TYPE_DASHBOARD_AGENT", "PROCESS_TYPE_RUNTIME_ENV_AGENT")}) \
        if local else None
    ports = tuple(getattr(ray._raylet, name, None) for name in (
        "METRICS_AGENT_PORT_NAME", "METRICS_EXPORT_PORT_NAME", "DASHBOARD_AGENT_LISTEN_PORT_NAME",
        "RUNTIME_ENV_AGENT_PORT_NAME")) if found else (None,)
    if found is None or None in ports:
        yield
        return
    services, constants = found["services"], found["ray_constants"]
    python_command = services._build_python_executable_command_memory_profileable
    stand_ins = {constants.PROCESS_TYPE_DASHBOARD_AGENT: ("dashboard", ports[:3])}
    if not _job_may_have_runtime_env():
        stand_ins[constants.PROCESS_TYPE_RUNTIME_ENV_AGENT] = ("runtime_env", ports[3:])

    def command(component: str, *args: Any, **kwargs: Any) -> list[str]:
        if component not in stand_ins:
            return list(python_command(component, *args, **kwargs))
        kind, names = stand_ins[component]  # Ray appends its agent's script and options: read, not run
        return [sys.executable, "-u", str(AGENT_STAND_INS), f"--mlpsweep-agent={kind}",
                f"--mlpsweep-ports={','.join(names)}"]

    with _replaced((services, "_build_python_executable_command_memory_profileable", command)):
        yield


def _job_may_have_runtime_env() -> bool:
    """Whether ``ray.init`` could give this driver's job a runtime env though ``connect`` passes
    none: one injected by a Ray job's supervisor, a ``RAY_RUNTIME_ENV_HOOK``, or ``uv run``'s
    (Ray replicates its environment); True where that cannot be told."""
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ or "RAY_RUNTIME_ENV_HOOK" in os.environ:
        return True
    try:
        from ray._private import ray_constants
        from ray._private.runtime_env.uv_runtime_env_hook import _get_uv_run_cmdline

        return bool(ray_constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV) and _get_uv_run_cmdline() is not None
    except Exception:  # noqa: BLE001 - another Ray: assume it might
        return True
