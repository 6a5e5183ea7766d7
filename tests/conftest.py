"""Shared fixtures: tiny sweep specs and a way to run the real CLI."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
MLPSWEEP = [sys.executable, "-m", "sweeps.cli"]

TINY_SPEC = """\
name: {name}
method: tpe
metric: {{name: val_mse, goal: minimize}}
run_cap: {run_cap}
concurrency: 2
seed: {seed}
data: {{dataset: seed-1d, validation_fraction: 0.2}}
parameters:
  width: {{min: 2, max: 12}}
  depth: {{values: [1, 2]}}
  activation: {{values: [tanh, sigmoid]}}
  optimizer: {{value: adam}}
  lr: {{distribution: log_uniform_values, min: 0.005, max: 0.1}}
  restarts: {{value: 3}}
  epochs: {{value: {epochs}}}
verify: gate
"""


def bits(values) -> list[str]:
    """Floats compared exactly, NaN equal to NaN (for "the same to the last bit" checks)."""
    return [v.hex() if isinstance(v, float) and v == v else repr(v) for v in values]


def write_spec(folder: Path, name: str = "tiny", run_cap: int = 8, seed: int = 0, epochs: int = 60,
               text: str | None = None) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(text or TINY_SPEC.format(name=name, run_cap=run_cap, seed=seed, epochs=epochs))
    return path


# MLflow 3's server also starts a job runner (seven huey consumers) for its GenAI jobs; a sweep's
# store needs none of it, and on two cores it slows every test that starts a server.
MLFLOW_SERVER_ENV = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def fresh_python(code: str, timeout: float = 120) -> str:
    """Run ``code`` (dedented) in a new interpreter in the checkout's root, so that its packages
    import; asserts it exits 0 and returns its stdout, stripped."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def run_cli(*args: str, cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    proc = subprocess.run([*MLPSWEEP, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mlpsweep {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def spec_factory(tmp_path):
    return lambda **kw: write_spec(tmp_path, **kw)


def process_ended(pid: int, within: float = 20.0) -> bool:
    """Whether process ``pid`` is gone (or a zombie, ended but not yet reaped) within ``within`` s."""
    import time

    import psutil

    deadline = time.monotonic() + within
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MlflowServer:
    """A real ``mlflow server`` process on 127.0.0.1, stopped by the PID it was started with."""

    def __init__(self, backend_uri: str, artifacts: Path, port: int | None = None) -> None:
        self.backend_uri, self.artifacts = backend_uri, artifacts
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> "MlflowServer":
        import time
        import urllib.request

        mlflow = str(Path(sys.executable).with_name("mlflow"))
        self.proc = subprocess.Popen(
            [mlflow, "server", "--backend-store-uri", self.backend_uri, "--artifacts-destination", str(self.artifacts),
             "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=MLFLOW_SERVER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server did not answer on {self.uri} within {timeout} s")

    def stop(self) -> None:
        import signal

        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the server's own process group: uvicorn and workers
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
        self.proc = None


def stored_study(folder: Path, name: str):
    """The Optuna study that ``mlpsweep run`` (default stores) wrote in ``folder``."""
    from sweeps.optuna_adapter import load_study
    from tracking.sweep import default_storage

    return load_study(name, default_storage(f"sqlite:///{folder}/mlflow.db"))


PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}  # the machine's server, trust auth


@contextmanager
def postgres_databases(stem: str, *kinds: str) -> Iterator[dict[str, str]]:
    """Fresh databases on the machine's PostgreSQL, one per kind (``{kind: SQLAlchemy URL}``),
    dropped afterwards; the test skips, saying why, when the server is not reachable."""
    psycopg2 = pytest.importorskip("psycopg2")
    try:
        admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        pytest.skip(f"PostgreSQL is not reachable at {PG['host']}:{PG['port']} as {PG['user']}: {exc}")
    admin.autocommit = True
    stem = f"{stem}_{secrets.token_hex(4)}"
    names = {kind: f"{stem}_{kind}" for kind in kinds}
    with admin.cursor() as cur:
        for db in names.values():
            cur.execute(f'CREATE DATABASE "{db}"')
    # SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3; the project installs psycopg2.
    url = f"postgresql+psycopg2://{PG['user']}@{PG['host']}:{PG['port']}"
    try:
        yield {kind: f"{url}/{db}" for kind, db in names.items()}
    finally:
        with admin.cursor() as cur:
            for db in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def web_server():
    """The port of an HTTP/1 server that is not Ray (every GET: 404), as a web page or another
    service's port is where a Ray address was meant."""
    import http.server
    import threading

    class NotRay(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):  # tests read stderr
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotRay)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
