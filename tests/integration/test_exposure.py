"""What the tool starts: the local Ray has no dashboard, and requires Ray's auth token."""
from __future__ import annotations

import pytest

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
