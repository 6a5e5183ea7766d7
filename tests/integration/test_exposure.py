"""What the tool starts: the local Ray has no dashboard, and requires Ray's auth token."""
from __future__ import annotations

import pytest

from conftest import process_ended

pytestmark = pytest.mark.integration


def test_local_ray_starts_no_dashboard_and_uses_loopback():
    import psutil
    import ray

    from workers.ray_backend import connect

    connect(None, num_cpus=1)
    try:
        node = ray._private.worker.global_worker.node
        assert not node.address_info.get("webui_url")
        ours = {p.pid for p in psutil.Process().children(recursive=True)}
        http = [c for c in psutil.net_connections(kind="tcp")
                if c.status == psutil.CONN_LISTEN and c.pid in ours and c.laddr.port in (8265, 8266)]
        assert not http, f"a Ray dashboard port is open: {http}"
    finally:
        ray.shutdown()



def test_a_local_ray_stops_without_waiting_on_its_autoscaler_monitor(monkeypatch):
    """Ray's shutdown gives its autoscaler monitor a second to obey SIGTERM, which it never does
    (its handler reports to the GCS stopped just before): disconnect kills it before that."""
    import ray

    from workers.ray_connect import autoscaler_monitors, connect, disconnect

    connect(None, num_cpus=1)
    monitors = autoscaler_monitors()
    ended_before_shutdown = []
    real_shutdown = ray.shutdown

    def shutdown(*args, **kwargs):
        ended_before_shutdown.extend(process_ended(pid, within=0.5) for pid in monitors)
        return real_shutdown(*args, **kwargs)

    monkeypatch.setattr(ray, "shutdown", shutdown)
    try:
        assert len(monitors) == 1  # found: else the kill silently stops working
    finally:
        disconnect()
    assert not ray.is_initialized() and autoscaler_monitors() == []
    assert ended_before_shutdown == [True]
