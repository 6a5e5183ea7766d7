"""The docker/ deployment, checked without a Docker engine: the compose file's structure (YAML),
and `docker compose config` / `docker-compose config` where such a CLI is installed."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from sweeps.cluster import PACKAGES

DOCKER = Path(__file__).resolve().parents[1] / "docker"
SERVICES = {"postgres", "mlflow", "ray-head", "ray-worker"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _ports(service: dict) -> list:
    return service.get("ports", [])


def _host_ip(port) -> str:
    if isinstance(port, dict):  # long syntax
        return str(port.get("host_ip", ""))
    text = str(port)
    # HOST_IP:HOST_PORT:CONTAINER_PORT; variables such as ${X:-5000} may hold colons themselves.
    match = re.match(r"^(\d+\.\d+\.\d+\.\d+|\[[^\]]+\]):", text)
    return match.group(1) if match else ""


def _flag(command: list[str], name: str) -> str | None:
    """Value of ``--name=value`` or ``--name value`` in an argv list."""
    for i, arg in enumerate(command):
        if arg == name:
            return command[i + 1] if i + 1 < len(command) else ""
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def test_services_are_all_there(compose):
    assert SERVICES <= set(compose["services"])


def test_every_published_port_binds_localhost(compose):
    published = 0
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name
        for port in _ports(service):
            published += 1
            assert _host_ip(port) == "127.0.0.1", f"{name} publishes {port!r} beyond 127.0.0.1"
    assert published >= 3  # postgres (for status/best from the host), mlflow, the Ray dashboard


def test_ray_token_auth_is_on_and_the_token_is_required(compose):
    for name in ("ray-head", "ray-worker"):
        env = compose["services"][name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token", name
        # Taken from the user's environment, required, never a default written in the file.
        assert re.fullmatch(r"\$\{RAY_AUTH_TOKEN:\?[^}]+\}", env["RAY_AUTH_TOKEN"]), env["RAY_AUTH_TOKEN"]


def test_head_serves_the_jobs_api_on_8265_only_to_localhost(compose):
    head = compose["services"]["ray-head"]
    command = head["command"]
    assert command[:2] == ["ray", "start"] and "--head" in command and "--block" in command
    assert _flag(command, "--dashboard-host") == "0.0.0.0"  # inside the container; published on 127.0.0.1
    assert _flag(command, "--port") != "6379"  # Redis' port on many machines
    assert any(str(p).endswith(":8265") for p in _ports(head))
    assert "healthcheck" in head


def test_workers_are_scalable_and_join_the_head(compose):
    worker = compose["services"]["ray-worker"]
    assert "container_name" not in worker and not _ports(worker)
    command = worker["command"]
    head_port = _flag(compose["services"]["ray-head"]["command"], "--port")
    assert _flag(command, "--address") == f"ray-head:{head_port}"
    assert "--block" in command and "--head" not in command
    assert worker["depends_on"]["ray-head"]["condition"] == "service_healthy"


def test_mlflow_serves_artifacts_from_postgresql(compose):
    mlflow = compose["services"]["mlflow"]
    command = mlflow["command"]
    assert command[:2] == ["mlflow", "server"] and "--serve-artifacts" in command
    assert _flag(command, "--backend-store-uri").startswith("postgresql")
    assert _flag(command, "--artifacts-destination") == "/artifacts"
    assert any(v.startswith("artifacts:/artifacts") for v in mlflow["volumes"])
    # The cluster reaches MLflow as http://mlflow:5000: that Host header must be allowed.
    assert "mlflow:5000" in _flag(command, "--allowed-hosts").split(",")
    assert mlflow["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_postgres_has_a_volume_a_healthcheck_and_the_optuna_database(compose):
    pg = compose["services"]["postgres"]
    assert any(v.startswith("pgdata:") for v in pg["volumes"]) and "pgdata" in compose["volumes"]
    assert "healthcheck" in pg
    assert "CREATE DATABASE optuna" in (DOCKER / "initdb" / "10-optuna.sql").read_text()


def test_dockerfile_installs_cpu_torch_and_the_project():
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert "--index-url https://download.pytorch.org/whl/cpu" in text
    assert "pip install -c constraints.txt ." in text
    for package in PACKAGES:
        assert re.search(rf"^COPY {package} {package}$", text, re.M), package
    # The build context is the repository root: send only what the image copies (no .venv).
    rules = [line for line in (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
             if line and not line.startswith("#")]
    assert rules[0] == "*" and {f"!{p}" for p in PACKAGES} <= set(rules)


def _compose_cli() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def test_compose_cli_accepts_the_file():
    cli = _compose_cli()
    if cli is None:
        pytest.skip("no `docker compose` plugin or `docker-compose` here: the structural checks above stand alone")
    env = {**os.environ, "RAY_AUTH_TOKEN": "test-token"}
    proc = subprocess.run([*cli, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    rendered = yaml.safe_load(proc.stdout)
    assert SERVICES <= set(rendered["services"])
    for name, service in rendered["services"].items():
        for port in service.get("ports", []):
            assert _host_ip(port) == "127.0.0.1", (name, port)
    env.pop("RAY_AUTH_TOKEN")
    proc = subprocess.run([*cli, "-f", str(DOCKER / "compose.yaml"), "config"], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode != 0 and "RAY_AUTH_TOKEN" in proc.stderr
