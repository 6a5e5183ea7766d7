"""What the tool starts: the local Ray has no dashboard, and requires Ray's auth token."""
from __future__ import annotations

from pathlib import Path

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



def test_a_local_ray_starts_no_head_process_a_one_machine_sweep_never_uses():
    """No dashboard head (API server), autoscaler monitor or log monitor: each costs a Python
    process's start on the cores the workers start on, and the monitor delays shutdown."""
    import psutil
    import ray

    from workers.ray_connect import connect, disconnect

    connect(None, num_cpus=1)
    try:
        started = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
        assert any("raylet" in c for c in started)  # the list is Ray's: else this test proves nothing
        unused = [c for c in started if any(name in c for name in ("dashboard.py", "monitor.py", "log_monitor.py"))]
        assert not unused, unused
        agents = [c for c in started if "dashboard/agent.py" in c]
        assert agents and all("--minimal" in c for c in agents), agents  # no metrics, HTTP or log services
        assert ray.get(ray.remote(lambda x: x + 1).remote(1)) == 2
    finally:
        disconnect()
    assert not ray.is_initialized()


def test_a_local_ray_runs_stand_ins_for_its_node_agents_and_refuses_runtime_envs(monkeypatch):
    """The raylet's two node agents are :mod:`workers.ray_agents` (no Ray, aiohttp or gRPC to
    import before the node registers); the work runs, and a task asking for a runtime env fails
    with the reason, not a hang."""
    import psutil
    import ray

    from workers import ray_connect
    from workers.ray_agents import REFUSAL

    monkeypatch.setattr(ray_connect, "_job_may_have_runtime_env", lambda: False)  # also under `uv run`
    ray_connect.connect(None, num_cpus=1)
    try:
        started = [p.cmdline() for p in psutil.Process().children(recursive=True)]
        scripts = [c[2] if len(c) > 2 and c[1] == "-u" else "" for c in started]
        assert sorted(Path(s).name for s in scripts if s.endswith(("agent.py", "main.py", "ray_agents.py"))) \
            == ["ray_agents.py", "ray_agents.py"], started
        assert ray.get(ray.remote(lambda x: x + 1).remote(1)) == 2
        with pytest.raises(ray.exceptions.RuntimeEnvSetupError, match="builds no runtime environments") as refused:
            ray.get(ray.remote(lambda: 1).options(runtime_env={"env_vars": {"A": "1"}}).remote(), timeout=120)
        assert REFUSAL in str(refused.value)
    finally:
        ray_connect.disconnect()


def test_a_local_ray_s_workers_start_without_ray_s_optional_serializer_imports():
    """pyarrow, pydantic and starlette (installed with MLflow) are not imported into a local
    Ray's workers for Ray's serializers (~0.4 s of two workers' start), and a task that wants
    them imports them as usual."""
    import ray

    from workers.ray_connect import connect, disconnect

    connect(None, num_cpus=1)
    try:
        def modules() -> tuple[list[str], list[str], str]:
            import sys

            finders = [type(f).__name__ for f in sys.meta_path]
            before = [m for m in ("pyarrow", "pydantic", "starlette") if m in sys.modules]
            import pyarrow

            return before, finders, pyarrow.__name__

        before, finders, imported = ray.get(ray.remote(modules).remote())
        assert before == [] and imported == "pyarrow"
        assert "SkipRaySerializerImports" in finders  # else the workers were not ours, and this proves nothing
    finally:
        disconnect()


def test_where_ray_may_give_the_job_a_runtime_env_ray_s_own_agent_builds_it(monkeypatch):
    """A driver inside a Ray job, a ``RAY_RUNTIME_ENV_HOOK`` or ``uv run`` give the job an
    environment: then the raylet starts Ray's runtime-env agent, and environments work."""
    import psutil
    import ray

    from workers import ray_connect

    monkeypatch.setattr(ray_connect, "_job_may_have_runtime_env", lambda: True)
    ray_connect.connect(None, num_cpus=1)
    try:
        started = [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)]
        assert any("RuntimeEnvAgent" in c for c in started), started  # Ray's names itself so once up
        task = ray.remote(lambda: __import__("os").environ.get("MLPSWEEP_PROBE"))
        assert ray.get(task.options(runtime_env={"env_vars": {"MLPSWEEP_PROBE": "built"}}).remote(), timeout=120) == "built"
    finally:
        ray_connect.disconnect()


def test_a_local_ray_keeps_token_authentication_without_announcing_it(monkeypatch):
    """Ray's "token authentication is enabled … to opt out" notice is dropped, not the
    authentication: the instance still requires the token."""
    import logging

    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode

    from workers.ray_connect import connect, disconnect

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    seen: list[str] = []
    catch = logging.Handler()
    catch.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("ray._private.authentication.authentication_token_setup")
    logger.addHandler(catch)  # Ray's loggers may not propagate to pytest's
    monkeypatch.setattr(logger, "level", logging.INFO)
    connect(None, num_cpus=1)
    try:
        assert get_authentication_mode() == AuthenticationMode.TOKEN
        assert ray.get(ray.remote(lambda x: x * 2).remote(21)) == 42
    finally:
        disconnect()
        logger.removeHandler(catch)
    assert not [m for m in seen if "enabled" in m], seen


def test_a_local_start_asks_for_its_node_once_the_raylet_has_registered(monkeypatch):
    """``ray.init`` asks the GCS for its new node 0.1 s after starting the raylet, and Ray's C++
    sleeps a whole second whenever the raylet has not registered by then (on two busy cores it
    has not: it waits for its agents). ``connect`` asks only once the GCS lists the node, and
    puts Ray's function back afterwards."""
    import ray
    from ray._private import services
    from ray._private import state as ray_state

    from workers.ray_connect import connect, disconnect

    registered_when_asked: list[bool] = []
    original = services.get_node

    def spy(gcs_address, node_id):
        state = ray_state.GlobalState()
        state._initialize_global_state(services._get_gcs_client_options(gcs_address))
        registered_when_asked.append(any(n["NodeID"] == node_id and n["Alive"] for n in state.node_table()))
        state.disconnect()
        return original(gcs_address, node_id)

    monkeypatch.setattr(services, "get_node", spy)
    connect(None, num_cpus=1)
    try:
        assert ray.get(ray.remote(lambda x: x + 1).remote(1)) == 2
    finally:
        disconnect()
    assert registered_when_asked and all(registered_when_asked), registered_when_asked
    assert services.get_node is spy
