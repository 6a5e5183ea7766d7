"""Attaching to Ray — a new local instance or a running cluster — importing Ray only.

Kept apart from :mod:`workers.ray_backend` (which imports torch with the trial code) so that
``mlpsweep run`` can start Ray while another thread imports torch and loads the data.
"""
from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import Any

import ray

__all__ = ["connect", "disconnect", "autoscaler_monitors", "cluster_gpus", "LOCAL_SYSTEM_CONFIG"]

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
        # No dashboard (MLflow is the dashboard); if one is turned on, it binds to loopback.
        kwargs.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, dashboard_host="127.0.0.1",
                      _system_config=LOCAL_SYSTEM_CONFIG)
    else:
        kwargs["address"] = address
    info = ray.init(**kwargs)
    return {"address": getattr(info, "address_info", {}).get("gcs_address")}


def cluster_gpus() -> float:
    """GPUs the Ray this process is attached to has, over all its nodes (a local Ray: this
    machine's, as Ray detected them)."""
    return float(ray.cluster_resources().get("GPU", 0.0))


def disconnect() -> None:
    """Shut down the Ray this process started (or leave the cluster it joined).

    Ray's shutdown stops its processes one by one, each given a second to go after SIGTERM. Its
    autoscaler monitor (useless on one local node) never makes it: its SIGTERM handler reports to
    the GCS, stopped just before, and waits — a second lost at the end of every run. It is
    SIGKILLed first.
    """
    for pid in autoscaler_monitors():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:  # already gone
            pass
    ray.shutdown()


def autoscaler_monitors() -> list[int]:
    """Process ids of the autoscaler monitors this process started (a local Ray's head); none on
    a machine without /proc or when attached to a cluster."""
    me, found = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
            if int(stat[stat.rindex(")") + 2:].split()[1]) != me:
                continue
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if b"autoscaler/_private/monitor.py" in cmdline:
            found.append(int(entry.name))
    return found
