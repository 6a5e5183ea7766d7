"""The stand-ins for a local Ray's node agents (:mod:`workers.ray_agents`), run as the raylet runs
them: by file path, with Ray's own agent command line after their options."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from workers import ray_agents
from workers.ray_connect import AGENT_STAND_INS

NODE = "ab" * 28


def launch_under_parent(args: list[str], session: Path) -> subprocess.Popen[bytes]:
    """A shell (the raylet's part) that starts the stand-in, reports its pid and waits for stdin
    to close: closing it ends the parent."""
    command = [sys.executable, "-u", str(AGENT_STAND_INS), *args, "/ray/agent.py",
               f"--node-id={NODE}", f"--session-dir={session}", "--node-ip-address=127.0.0.1"]
    script = f'{subprocess.list2cmdline(command)} & echo $!; read _'
    return subprocess.Popen(["sh", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def wait_for(path: Path, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path.name} was never written"
        time.sleep(0.02)
    return path.read_text()


def gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]:
            return True
        time.sleep(0.05)
    return False


pytestmark = pytest.mark.skipif(not Path("/proc/self").exists(), reason="reads /proc to see the stand-in end (Linux)")


def test_the_dashboard_stand_in_writes_its_ports_not_in_use_and_ends_with_its_raylet(tmp_path):
    parent = launch_under_parent(["--mlpsweep-agent=dashboard", "--mlpsweep-ports=metrics_agent_port,x_port"], tmp_path)
    assert parent.stdout is not None and parent.stdin is not None
    pid = int(parent.stdout.readline())
    try:
        assert wait_for(tmp_path / f"metrics_agent_port_{NODE}") == "-1"
        assert wait_for(tmp_path / f"x_port_{NODE}") == "-1"
        assert not list(tmp_path.glob("*.partial"))
        assert not gone(pid, 0.3)  # it stays while its raylet does
    finally:
        parent.stdin.close()
        parent.wait(10)
    assert gone(pid), "the stand-in outlived its raylet"


def test_the_runtime_env_stand_in_listens_where_it_says_and_refuses_to_build_an_environment(tmp_path):
    from ray.core.generated import runtime_env_agent_pb2 as pb

    parent = launch_under_parent(["--mlpsweep-agent=runtime_env", "--mlpsweep-ports=runtime_env_agent_port",
                                  "--runtime-env-agent-port=0"], tmp_path)
    assert parent.stdout is not None and parent.stdin is not None
    pid = int(parent.stdout.readline())
    try:
        port = int(wait_for(tmp_path / f"runtime_env_agent_port_{NODE}"))
        assert port > 0

        def post(path: str, message: object) -> bytes:
            request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=message.SerializeToString())  # type: ignore[attr-defined]
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.read()

        built = pb.GetOrCreateRuntimeEnvReply.FromString(
            post("/get_or_create_runtime_env", pb.GetOrCreateRuntimeEnvRequest(serialized_runtime_env='{"pip": ["x"]}')))
        assert built.status == pb.AgentRpcStatus.Value("AGENT_RPC_STATUS_FAILED")
        assert built.error_message == ray_agents.REFUSAL
        deleted = pb.DeleteRuntimeEnvIfPossibleReply.FromString(
            post("/delete_runtime_env_if_possible", pb.DeleteRuntimeEnvIfPossibleRequest()))
        assert deleted.status == pb.AgentRpcStatus.Value("AGENT_RPC_STATUS_OK")
        assert pb.GetRuntimeEnvsInfoReply.FromString(
            post("/get_runtime_envs_info", pb.GetRuntimeEnvsInfoRequest())).total == 0
    finally:
        parent.stdin.close()
        parent.wait(10)
    assert gone(pid), "the stand-in outlived its raylet"


def test_a_port_is_written_whole_under_ray_s_name_for_it(tmp_path):
    ray_agents.persist_port(str(tmp_path), NODE, "metrics_export_port", 4321)
    assert [p.name for p in tmp_path.iterdir()] == [f"metrics_export_port_{NODE}"]
    assert (tmp_path / f"metrics_export_port_{NODE}").read_text() == "4321"


def test_only_the_agent_options_are_read():
    assert ray_agents.options(["/ray/agent.py", "--node-id=n", "--minimal", "--a=b=c"]) == {"node-id": "n", "a": "b=c"}


def test_a_job_gets_ray_s_runtime_env_agent_where_ray_may_give_it_an_environment(monkeypatch):
    from ray._private.runtime_env import uv_runtime_env_hook

    from workers.ray_connect import _job_may_have_runtime_env

    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    monkeypatch.delenv("RAY_RUNTIME_ENV_HOOK", raising=False)
    monkeypatch.setattr(uv_runtime_env_hook, "_get_uv_run_cmdline", lambda: None)
    assert not _job_may_have_runtime_env()
    monkeypatch.setattr(uv_runtime_env_hook, "_get_uv_run_cmdline", lambda: ["uv", "run", "mlpsweep"])
    assert _job_may_have_runtime_env()  # Ray replicates uv's environment in a runtime env
    monkeypatch.setattr(uv_runtime_env_hook, "_get_uv_run_cmdline", lambda: None)
    monkeypatch.setenv("RAY_RUNTIME_ENV_HOOK", "my.hook")
    assert _job_may_have_runtime_env()
    monkeypatch.delenv("RAY_RUNTIME_ENV_HOOK")
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")
    assert _job_may_have_runtime_env()


def test_a_command_line_it_cannot_read_runs_the_agent_ray_asked_for(tmp_path):
    """Another Ray's agent options (no --session-dir here): the stand-in runs Ray's own agent."""
    agent = tmp_path / "agent.py"
    agent.write_text("import sys; print('ray agent', *sys.argv[1:])")
    done = subprocess.run([sys.executable, "-u", str(AGENT_STAND_INS), "--mlpsweep-agent=dashboard",
                           "--mlpsweep-ports=metrics_agent_port", str(agent), "--node-id=n", "--other=1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ray agent --node-id=n --other=1"
    assert not list(tmp_path.glob("metrics_agent_port*"))
