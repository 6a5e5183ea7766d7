"""Attaching to Ray — a new local instance or a running cluster — importing Ray only.

Kept apart from :mod:`workers.ray_backend` (which imports torch with the trial code) so that
``mlpsweep run`` can start Ray while another thread imports torch and loads the data.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

import ray

__all__ = ["connect", "disconnect", "cluster_gpus", "LOCAL_SYSTEM_CONFIG"]

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
    with _lean_head(address in (None, "local")), _quiet_auth_notice():
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
    driver skips importing aiohttp & co. to find out (~0.15 s of ``ray.init``). Ray 2.60 has no
    public switch for any of them, so ``ray.init`` runs with the API server's start a no-op, its
    node parameters saying no monitors and its dashboard check saying "not installed"; a Ray
    whose internals differ gets the usual start (tests/integration/test_exposure.py then fails).
    """
    try:
        from ray._private import parameter, services
        from ray._private import utils as ray_utils
    except ImportError:
        lean = False
    if not lean or not (hasattr(services, "start_api_server") and hasattr(parameter, "RayParams")
                        and hasattr(ray_utils, "get_dashboard_dependency_error")):
        yield
        return
    api_server, params, dashboard_check = services.start_api_server, parameter.RayParams, \
        ray_utils.get_dashboard_dependency_error

    class LeanParams(params):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.no_monitor, self.include_log_monitor = True, False

    services.start_api_server = lambda *args, **kwargs: (None, None)
    parameter.RayParams = LeanParams
    ray_utils.get_dashboard_dependency_error = lambda: ImportError("mlpsweep: a one-machine sweep uses no dashboard")
    try:
        yield
    finally:
        services.start_api_server, parameter.RayParams = api_server, params
        ray_utils.get_dashboard_dependency_error = dashboard_check
