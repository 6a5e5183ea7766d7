"""A sweep submitted as a Ray job to a real two-node cluster, tracked by a real MLflow server.

On loopback: a Ray head and a second node (each `ray start` with its own raylet, temp dir and
ports, token authentication on), an `mlflow server` on a fresh PostgreSQL database with served
artifacts, and the Optuna study in another fresh PostgreSQL database. `mlpsweep submit --wait`
goes through the Jobs API; everything is then checked through MlflowClient and Optuna alone.
Every process started here is stopped by PID: the processes of the sessions it started and their
descendants (never `ray stop`, which would end every Ray on the machine); the databases are dropped.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient

from conftest import ROOT, postgres_databases
from models import load_checkpoint

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process-group bookkeeping reads /proc"),
]

pytest.importorskip("psycopg2")  # the cluster's stores live in PostgreSQL

BIN = Path(sys.executable).parent
NAME = "cluster"
SPEC = f"""\
name: {NAME}
method: tpe
metric: {{name: val_mse, goal: minimize}}
run_cap: 6
concurrency: 2
seed: 0
data: {{dataset: seed-1d, validation_fraction: 0.2}}
parameters:
  depth: {{value: 1}}
  width: {{min: 2, max: 8}}
  activation: {{values: [tanh, sigmoid]}}
  optimizer: {{value: adam}}
  lr: {{distribution: log_uniform_values, min: 0.005, max: 0.1}}
  restarts: {{value: 2}}
  epochs: {{value: 50}}
verify: gate
"""


# --------------------------------------------------------------------------- processes
def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _process_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, ppid, session id) of every process, from /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()  # state ppid pgrp session ...
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[3]))
    return table


def _members(sessions: set[int]) -> set[int]:
    """Live processes of our sessions, and their descendants wherever they went.

    Each `ray start` (and the MLflow server) is started in a session of its own: the daemons it
    leaves behind keep that session id even after they are re-parented, and Ray's workers, in
    process groups of their own, keep it too. A job's driver gets a new session from its
    supervisor, so descendants are followed through parent ids as well.
    """
    table = _process_table()
    ours = {pid for pid, (state, _, sid) in table.items() if sid in sessions}
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    stack = list(ours)
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in ours:
                ours.add(child)
                stack.append(child)
    return {pid for pid in ours if table.get(pid, ("X",))[0] not in ("Z", "X")}


def _kill(pids: set[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


class Processes:
    """The sessions this test started: each `ray start` and the MLflow server lead one."""

    def __init__(self) -> None:
        self.sessions: dict[str, int] = {}

    def stop_all(self, grace_s: float = 8.0) -> set[int]:
        """SIGTERM every process of ours, SIGKILL what is left after ``grace_s``; returns PIDs still alive."""
        sessions = set(self.sessions.values())
        for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            deadline = time.monotonic() + wait_s
            signalled: set[int] = set()
            while (alive := _members(sessions)) and time.monotonic() < deadline:
                _kill(alive - signalled, sig)  # including any started meanwhile
                signalled |= alive
                time.sleep(0.2)
            if not alive:
                return set()
        return _members(sessions)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------- services
@pytest.fixture(scope="module")
def databases():
    with postgres_databases("mlpsweep_it", "mlflow", "optuna") as urls:
        yield urls


@pytest.fixture(scope="module")
def cluster(databases, tmp_path_factory):
    """Start the MLflow server and the two Ray nodes; stop them all at the end."""
    work = tmp_path_factory.mktemp("cluster")
    # Short temp dirs: Ray's Unix socket paths live under them (108-byte limit).
    ray_dirs = [Path(tempfile.mkdtemp(prefix="mlps-head-", dir="/tmp")),
                Path(tempfile.mkdtemp(prefix="mlps-node-", dir="/tmp"))]
    token = secrets.token_hex(32)
    gcs, dashboard, agent_head, client_port, agent_node, mlflow_port = _free_ports(6)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RAY_", "MLFLOW_")) and k not in ("PYTHONPATH",)}
    env.update(PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token,
               RAY_USAGE_STATS_ENABLED="0", OMP_NUM_THREADS="1")
    procs = Processes()
    info = {"work": work, "token": token, "dashboard": f"http://127.0.0.1:{dashboard}",
            "tracking": f"http://127.0.0.1:{mlflow_port}", "storage": databases["optuna"],
            "artifacts": work / "artifacts", "env": env}
    try:
        mlflow_log = work / "mlflow.log"
        with open(mlflow_log, "wb") as log:
            server = subprocess.Popen(
                [str(BIN / "mlflow"), "server", "--backend-store-uri", databases["mlflow"],
                 "--serve-artifacts", "--artifacts-destination", str(info["artifacts"]),
                 "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"],
                cwd=work, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        procs.sessions["mlflow server"] = server.pid
        common = ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--object-store-memory", str(150 * 2**20),
                  "--disable-usage-stats"]
        _ray_start(procs, "ray head", env, work, [
            "--head", "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
            "--dashboard-agent-listen-port", str(agent_head), "--ray-client-server-port", str(client_port),
            "--temp-dir", str(ray_dirs[0]), *common])
        _ray_start(procs, "ray node", env, work, [
            "--address", f"127.0.0.1:{gcs}", "--dashboard-agent-listen-port", str(agent_node),
            "--temp-dir", str(ray_dirs[1]), *common])
        _wait_http(f"{info['tracking']}/health", 120, server, mlflow_log)
        yield info
    finally:
        left = procs.stop_all()
        for d in ray_dirs:
            shutil.rmtree(d, ignore_errors=True)
        assert not left, f"processes this test started are still running after SIGKILL: {sorted(left)}"


def _ray_start(procs: Processes, name: str, env: dict[str, str], cwd: Path, args: list[str]) -> None:
    # `ray start` daemonises the node and exits; started in a session of its own, every process
    # of the node (GCS, raylet, dashboard, agents, workers) keeps that session id.
    proc = subprocess.Popen([str(BIN / "ray"), "start", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    procs.sessions[name] = proc.pid
    try:
        out, _ = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        pytest.fail(f"`ray start` for the {name} did not finish in 120 s:\n{out[-3000:]}")
    if proc.returncode != 0:
        pytest.fail(f"`ray start` for the {name} exited {proc.returncode}:\n{out[-3000:]}")


def _wait_http(url: str, timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the MLflow server exited {proc.returncode}:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"the MLflow server did not answer {url} within {timeout_s:.0f} s:\n{_tail(log)}")


# --------------------------------------------------------------------------- helpers
def _mlpsweep(info, *args: str, auth: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, outside the cluster's environment (only the token is shared)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env["PYTHONPATH"] = str(ROOT)
    env.update(auth if auth is not None else {"RAY_AUTH_TOKEN": info["token"]})
    try:
        return subprocess.run([sys.executable, "-m", "sweeps.cli", *args], cwd=info["work"], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        def text(b: bytes | str | None) -> str:  # TimeoutExpired keeps bytes even with text=True
            return (b.decode(errors="replace") if isinstance(b, bytes) else b or "")[-4000:]

        pytest.fail(f"mlpsweep {' '.join(args)} did not finish in {timeout:.0f} s\n"
                    f"stdout:\n{text(exc.stdout)}\nstderr:\n{text(exc.stderr)}")


def _submit(info, *extra: str, auth: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    spec = info["work"] / f"{NAME}.yaml"
    spec.write_text(SPEC)
    return _mlpsweep(info, "submit", spec.name, "--address", info["dashboard"], "--tracking-uri", info["tracking"],
                     "--storage", info["storage"], "--wait", *extra, auth=auth)


def _ok(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, (f"{what} exited {proc.returncode}\nstdout:\n{proc.stdout[-6000:]}\n"
                                  f"stderr:\n{proc.stderr[-4000:]}")
    return proc


def _jobs(info):
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(info["dashboard"], headers={"Authorization": f"Bearer {info['token']}"})
    return client.list_jobs()


def _runs(client: MlflowClient, kind: str):
    exp = client.get_experiment_by_name(NAME)
    assert exp is not None, f"no MLflow experiment {NAME!r} on the server"
    return client.search_runs([exp.experiment_id], f"tags.`mlpsweep.kind` = '{kind}'", max_results=1000)


def _study_trials(info):
    assert optuna.get_all_study_names(info["storage"]) == [NAME]
    study = optuna.load_study(study_name=NAME, storage=info["storage"])
    return study.trials


# --------------------------------------------------------------------------- tests
def test_submit_without_the_token_is_refused_before_any_job(cluster):
    proc = _mlpsweep(cluster, "submit", "/dev/null", "--address", cluster["dashboard"], auth={}, timeout=60)
    assert proc.returncode == 2  # /dev/null is not a spec: refused on the client
    spec = cluster["work"] / "first.yaml"
    spec.write_text(SPEC)
    proc = _mlpsweep(cluster, "submit", spec.name, "--address", cluster["dashboard"], "--tracking-uri",
                     cluster["tracking"], "--storage", cluster["storage"], auth={"RAY_AUTH_MODE": "disabled"},
                     timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "token" in proc.stderr and "RAY_AUTH_TOKEN" in proc.stderr, proc.stderr
    assert _jobs(cluster) == []


def test_submit_of_a_cuda_sweep_to_a_cluster_without_gpus_is_refused_before_any_job(cluster):
    spec = cluster["work"] / "gpu.yaml"
    spec.write_text(SPEC + "device: cuda\n")
    proc = _mlpsweep(cluster, "submit", spec.name, "--address", cluster["dashboard"], "--tracking-uri",
                     cluster["tracking"], "--storage", cluster["storage"], timeout=60)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "device: cuda" in errors[0] and "no GPU" in errors[0], proc.stderr
    assert _jobs(cluster) == []  # nothing submitted: the job would only have stopped at its start


@pytest.fixture(scope="module")
def first(cluster):
    started = time.monotonic()
    proc = _ok(_submit(cluster), "mlpsweep submit --wait (6 trials)")
    return proc, time.monotonic() - started


def test_first_submit_runs_six_trials_over_both_nodes(cluster, first):
    proc, _ = first
    job_id = proc.stdout.splitlines()[0]
    assert job_id.startswith(f"mlpsweep-{NAME}-"), proc.stdout[:500]
    assert "top trials" in proc.stdout  # the driver's closing table came through the log stream
    client = MlflowClient(tracking_uri=cluster["tracking"])
    trials = _runs(client, "trial")
    assert sorted(int(r.data.tags["mlpsweep.trial"]) for r in trials) == list(range(6))
    assert all(r.info.status == "FINISHED" for r in trials)
    nodes = {r.data.tags["mlpsweep.node"] for r in trials}
    assert len(nodes) == 2, f"trials ran on {len(nodes)} node(s), expected both: {nodes}"
    assert len(_runs(client, "sweep")) == 1


def test_checkpoints_are_served_by_the_tracking_server(cluster, first, tmp_path):
    client = MlflowClient(tracking_uri=cluster["tracking"])
    for run in _runs(client, "trial"):
        assert run.info.artifact_uri.startswith("mlflow-artifacts:"), run.info.artifact_uri
        local = client.download_artifacts(run.info.run_id, "checkpoint", str(tmp_path / run.info.run_id))
        model = load_checkpoint(local, expected_sha256=run.data.tags["mlpsweep.checkpoint_sha256"])
        assert model is not None
    stored = list(cluster["artifacts"].rglob("model.pt"))
    assert len(stored) == 6, f"expected 6 checkpoints in the server's artifact store, found {len(stored)}"


def test_study_is_stored_in_postgresql(cluster, first):
    trials = _study_trials(cluster)
    assert len(trials) == 6
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)


def test_status_reads_the_same_server_and_storage(cluster, first):
    proc = _ok(_mlpsweep(cluster, "status", NAME, "--tracking-uri", cluster["tracking"], "--storage",
                         cluster["storage"], timeout=120), "mlpsweep status")
    assert "6 complete" in proc.stdout


def test_resubmitting_the_spec_continues_the_same_study(cluster, first):
    # Ray's own switch this time: RAY_AUTH_MODE=token with the token in a file.
    token_file = cluster["work"] / "token"
    token_file.write_text(cluster["token"])
    _ok(_submit(cluster, "--run-cap", "8",
                auth={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}),
        "mlpsweep submit --run-cap 8 --wait")
    trials = _study_trials(cluster)  # one study
    assert [t.number for t in trials] == list(range(8))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    client = MlflowClient(tracking_uri=cluster["tracking"])
    assert len(_runs(client, "sweep")) == 1  # one parent run, reused
    runs = _runs(client, "trial")
    assert sorted(int(r.data.tags["mlpsweep.trial"]) for r in runs) == list(range(8))
    jobs = _jobs(cluster)
    assert [str(j.status) for j in jobs] == ["SUCCEEDED", "SUCCEEDED"]


def test_an_edited_spec_is_refused_before_any_job_where_the_storage_answers(cluster, first):
    spec = cluster["work"] / "edited.yaml"
    spec.write_text(SPEC.replace("max: 0.1}", "max: 0.3}"))
    jobs = len(_jobs(cluster))
    proc = _mlpsweep(cluster, "submit", spec.name, "--address", cluster["dashboard"], "--tracking-uri",
                     cluster["tracking"], "--storage", cluster["storage"], "--wait", timeout=120)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "parameters.lr.max: 0.1 -> 0.3" in errors[0], proc.stderr
    assert "--allow-changed-spec" in errors[0]
    assert len(_jobs(cluster)) == jobs  # nothing submitted


def test_best_exports_the_best_checkpoint_from_the_server(cluster, tmp_path):
    out = tmp_path / "best"
    _ok(_mlpsweep(cluster, "best", NAME, "--out", str(out), "--tracking-uri", cluster["tracking"], "--storage",
                  cluster["storage"], timeout=120), "mlpsweep best")
    study = optuna.load_study(study_name=NAME, storage=cluster["storage"])
    assert load_checkpoint(out) is not None
    assert json.loads((out / "config.json").read_text())["trial"] == study.best_trial.number
