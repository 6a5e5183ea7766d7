"""Stand-ins for the two node agents of the local Ray that ``mlpsweep run`` starts.

A Ray node's raylet starts two Python agents and registers with the GCS only once both have
written their ports: the *dashboard agent* — which, with the dashboard's dependencies reported
missing (:func:`workers.ray_connect._lean_head`), runs ``--minimal``: it serves nothing, writes
"not in use" (-1) as its metrics, metrics-export and HTTP ports and waits for the raylet to end —
and the *runtime-env agent*, an HTTP service that builds runtime environments (pip, conda,
working_dir …) for workers that ask for one, which no worker of a local sweep does. Each first
imports Ray, aiohttp and gRPC: ~1 CPU-second apiece on the two cores where the driver, the
MLflow writer and the workers start meanwhile (bench/README.md, session 23).

This file stands in for both with the standard library only. The raylet runs it by path (no
package import) as ``python -u ray_agents.py --mlpsweep-agent=KIND --mlpsweep-ports=NAMES``
followed by the agent's own command line, of which it reads ``--session-dir``, ``--node-id``,
``--node-ip-address`` and ``--runtime-env-agent-port``:

- ``dashboard``: writes -1 for each port in NAMES, as Ray's minimal agent does;
- ``runtime_env``: listens where Ray's would and writes that port; a request to build an
  environment is refused with a reply saying why (the task fails with Ray's
  ``RuntimeEnvSetupError`` naming it), one to delete or list environments answers "none".

Either lives as long as the raylet that started it. Given a command line without those options
(another Ray's), it runs the agent Ray asked for instead.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Callable

PARENT_POLL_S = 0.5  # how often a stand-in looks whether its raylet is still there
REFUSAL = ("mlpsweep's local Ray builds no runtime environments (pip, conda, working_dir, …): "
           "run the sweep on a Ray cluster (--ray-address, or mlpsweep submit) for one")


def options(argv: list[str]) -> dict[str, str]:
    """``--name=value`` arguments as a dict (the agents' own command lines use only that form)."""
    return dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


def persist_port(session_dir: str, node_id: str, name: str, port: int) -> None:
    """Write ``port`` where the raylet looks for port ``name`` of node ``node_id`` (as Ray's
    ``persist_port``: ``SESSION_DIR/NAME_NODEID``), atomically: a reader sees the number or no file."""
    path = os.path.join(session_dir, f"{name}_{node_id}")
    partial = f"{path}.{os.getpid()}.partial"
    with open(partial, "w") as out:
        out.write(str(port))
    os.replace(partial, path)


def exit_with_parent(poll_s: float = PARENT_POLL_S) -> None:
    """End this process once the process that started it (the raylet) has gone."""
    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(poll_s)
    os._exit(0)


def reply_to(path: str) -> tuple[int, bytes]:
    """The runtime-env agent's answer to a POST on ``path`` (Ray's protobuf messages, imported
    only here: a local sweep's raylet never asks)."""
    from ray.core.generated import runtime_env_agent_pb2 as pb

    failed, ok = pb.AgentRpcStatus.Value("AGENT_RPC_STATUS_FAILED"), pb.AgentRpcStatus.Value("AGENT_RPC_STATUS_OK")
    replies: dict[str, Callable[[], bytes]] = {
        "/get_or_create_runtime_env": lambda: pb.GetOrCreateRuntimeEnvReply(
            status=failed, error_message=REFUSAL).SerializeToString(),
        "/delete_runtime_env_if_possible": lambda: pb.DeleteRuntimeEnvIfPossibleReply(status=ok).SerializeToString(),
        "/get_runtime_envs_info": lambda: pb.GetRuntimeEnvsInfoReply(total=0).SerializeToString(),
    }
    answer = replies.get(path)
    return (404, b"") if answer is None else (200, answer())


class _RuntimeEnvRequests(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        status, body = reply_to(self.path)
        if self.path == "/get_or_create_runtime_env":
            print(f"mlpsweep: refused a runtime environment: {REFUSAL}", file=sys.stderr, flush=True)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


def serve_runtime_env(session_dir: str, node_id: str, name: str, host: str, port: int) -> None:
    """Listen on ``host:port`` (0: any free port) as the runtime-env agent and write the port."""
    class Server(HTTPServer):
        address_family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]

    server = Server((host, port), _RuntimeEnvRequests)
    persist_port(session_dir, node_id, name, server.server_address[1])
    server.serve_forever(poll_interval=PARENT_POLL_S)


def main(argv: list[str]) -> None:
    args = options(argv)
    needed = {"session-dir", "node-id"} | ({"node-ip-address"} if args.get("mlpsweep-agent") == "runtime_env" else set())
    if not needed <= args.keys():  # a Ray whose agents take other options: its own agent, as it asked
        ray_agent = [arg for arg in argv if not arg.startswith("--mlpsweep-")]
        os.execv(sys.executable, [sys.executable, "-u", *ray_agent])
    names = [n for n in args["mlpsweep-ports"].split(",") if n]
    session_dir, node_id = args["session-dir"], args["node-id"]
    if args["mlpsweep-agent"] == "dashboard":
        for name in names:
            persist_port(session_dir, node_id, name, -1)
        exit_with_parent()
        return
    threading.Thread(target=exit_with_parent, daemon=True).start()
    serve_runtime_env(session_dir, node_id, names[0], args["node-ip-address"], int(args.get("runtime-env-agent-port") or 0))


if __name__ == "__main__":
    main(sys.argv[1:])
