"""`mlpsweep submit` without a cluster: what is refused before any connection, what travels with
the job, how the token is found, and how --wait maps the job's outcome to the exit code."""
from __future__ import annotations

import shlex
import socket
from pathlib import Path

import pytest

from conftest import write_spec
from sweeps import cluster, cmd_submit
from sweeps.cli import main

SERVER = ["--tracking-uri", "http://mlflow:5000", "--storage", "postgresql+psycopg2://u:pw@postgres:5432/optuna"]


def _dead_address() -> str:
    """An http address on which nobody listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def no_cluster(monkeypatch):
    """Fail the test if submit tries to reach a cluster."""
    def refuse(address):
        raise AssertionError(f"submit connected to {address} although the input was bad")

    monkeypatch.setattr(cmd_submit, "_connect", refuse)


@pytest.mark.parametrize("mutation, expected", [
    (lambda t: t.replace("run_cap: 6", "run_cap: 0"), "run_cap: must be >= 1"),
    (lambda t: t.replace("  depth:", "  dpeth:"), "parameters.dpeth"),
    (lambda t: t.replace("{value: adam}", "{value: adamw}"), "parameters.optimizer"),
    (lambda t: t.replace("min: 0.005", "min: 0"), "parameters.lr.min"),
])
def test_bad_spec_is_refused_before_any_connection(tmp_path, capsys, no_cluster, mutation, expected):
    text = mutation(write_spec(tmp_path, name="s", run_cap=6).read_text())
    spec = write_spec(tmp_path, name="bad", text=text)
    rc = main(["submit", str(spec), "--address", _dead_address(), *SERVER, "--wait"])
    err = capsys.readouterr().err
    assert rc == 2
    assert expected in err
    assert "--address" not in err and "Traceback" not in err


def test_every_store_and_address_problem_is_listed_at_once(tmp_path, capsys, no_cluster, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    spec = write_spec(tmp_path)
    assert main(["submit", str(spec), "--address", "127.0.0.1:6379", "--tracking-uri", "sqlite:///mlflow.db"]) == 2
    err = capsys.readouterr().err
    assert "--address: must be the head's dashboard URL" in err
    assert "--tracking-uri: 'sqlite:///mlflow.db' is a relative path" in err
    assert "--storage: required" in err
    assert main(["submit", str(spec)]) == 2
    err = capsys.readouterr().err
    assert "--address: required" in err and "--tracking-uri: required" in err


def test_unreachable_cluster_is_a_clear_usage_error(tmp_path, capsys):
    spec = write_spec(tmp_path)
    address = _dead_address()
    assert main(["submit", str(spec), "--address", address, *SERVER]) == 2
    err = capsys.readouterr().err
    assert f"cannot reach the Ray Jobs API at {address}" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- what travels
def test_working_dir_is_small_and_carries_the_packages(tmp_path):
    spec = write_spec(tmp_path)
    staging = tmp_path / "job"
    staging.mkdir()
    name = cluster.stage_working_dir(staging, spec)
    assert name == spec.name and (staging / name).read_text() == spec.read_text()
    for package in cluster.PACKAGES:
        assert (staging / package / "__init__.py").is_file(), package
    assert (staging / "models" / "data" / "iris.csv").is_file()  # package data the loader needs
    assert (staging / "workers" / "ray_backend.py").is_file()
    assert not list(staging.rglob("__pycache__")) and not list(staging.rglob("*.db"))
    files, size = cluster.tree_size(staging)
    assert files < 200 and size < 2 * 2**20, (files, size)


def test_runtime_env_carries_no_secrets():
    environ = {"RAY_AUTH_TOKEN": "secret", "MLFLOW_TRACKING_PASSWORD": "pw", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"}
    env = cluster.runtime_env("/tmp/x", environ)
    assert env["working_dir"] == "/tmp/x"
    assert env["env_vars"]["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert "secret" not in str(env) and "pw" not in str(env)


def test_entrypoint_attaches_the_driver_to_the_cluster():
    storage = "postgresql+psycopg2://u:p@db:5432/optuna?sslmode=require&x=1"
    argv = shlex.split(cluster.entrypoint("my spec.yaml", "http://mlflow:5000", storage, run_cap=8))
    assert argv[:5] == ["python", "-m", "sweeps.cli", "run", "my spec.yaml"]
    assert argv[argv.index("--ray-address") + 1] == "auto"
    assert argv[argv.index("--storage") + 1] == storage
    assert argv[argv.index("--run-cap") + 1] == "8" and "--quiet" in argv and "--concurrency" not in argv
    assert "--allow-changed-spec" not in argv
    assert shlex.split(cluster.entrypoint("s.yaml", "http://mlflow:5000", storage, allow_changed_spec=True))[-1] == \
        "--allow-changed-spec"  # the job's driver checks the stored spec: the flag travels with it


def test_relative_data_files_travel_and_outside_ones_are_refused(tmp_path, monkeypatch, capsys, no_cluster):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "points.csv").write_text("x,y\n" + "".join(f"{i},{i * 0.5}\n" for i in range(20)))
    text = write_spec(tmp_path, name="f").read_text().replace("dataset: seed-1d", "dataset: data/points.csv")
    spec = write_spec(tmp_path, name="f", text=text)
    from sweeps.cmd_run import prepare

    ship, problems, warnings = cmd_submit._data_files(prepare(str(spec))[0])
    assert (ship, problems, warnings) == (["data/points.csv"], [], [])
    staging = tmp_path / "job"
    staging.mkdir()
    cluster.stage_working_dir(staging, spec, ship)
    assert (staging / "data" / "points.csv").read_text() == (tmp_path / "data" / "points.csv").read_text()

    inner = tmp_path / "inner"
    inner.mkdir()
    monkeypatch.chdir(inner)
    outside = write_spec(inner, name="o", text=text.replace("data/points.csv", "../data/points.csv"))
    assert main(["submit", str(outside), "--address", _dead_address(), *SERVER]) == 2
    assert "data.dataset: '../data/points.csv' leaves the current directory" in capsys.readouterr().err


# ----------------------------------------------------------------------------- stores
def test_store_checks():
    uri, storage, check = cluster.check_stores("http://mlflow:5000", "postgresql://u@postgres/optuna")
    assert (uri, storage, check.problems, check.warnings) == ("http://mlflow:5000", "postgresql://u@postgres/optuna", [], [])
    _, _, check = cluster.check_stores("http://127.0.0.1:5000", "postgresql+psycopg2://u:secret@localhost/o")
    assert not check.problems and len(check.warnings) == 2
    assert "secret" not in " ".join(check.warnings)
    _, storage, check = cluster.check_stores("sqlite:////srv/sweeps/mlflow.db", None)
    assert storage == "sqlite:////srv/sweeps/optuna.db" and not check.problems
    assert "head node" in check.warnings[0]
    _, _, check = cluster.check_stores("http://mlflow:5000", "sqlite:///optuna.db")
    assert check.problems and "relative path" in check.problems[0]
    _, _, check = cluster.check_stores("http://mlflow:5000", "sqlite+pysqlite:////srv/sweeps/optuna.db?timeout=30")
    assert not check.problems and "head node" in check.warnings[0]  # an absolute path, with a driver and a query
    _, _, check = cluster.check_stores("http://mlflow:5000", "/srv/sweeps/optuna.journal")  # a journal on the head node
    assert not check.problems and "head node" in check.warnings[0]
    _, _, check = cluster.check_stores("http://mlflow:5000", "optuna")
    assert len(check.problems) == 1 and check.problems[0].startswith("--storage: ") and ".journal" in check.problems[0]


# ----------------------------------------------------------------------------- token
def test_token_from_env_file_or_default_path(tmp_path):
    assert cluster.auth_headers({"RAY_AUTH_TOKEN": "abc"}, home=tmp_path) == {"Authorization": "Bearer abc"}
    path = tmp_path / "tok"
    path.write_text("fromfile\n")
    assert cluster.auth_headers({"RAY_AUTH_TOKEN_PATH": str(path)}, home=tmp_path) == {
        "Authorization": "Bearer fromfile"}
    assert cluster.auth_headers({}, home=tmp_path) == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("default")
    assert cluster.auth_headers({}, home=tmp_path) == {"Authorization": "Bearer default"}
    # An explicit RAY_AUTH_MODE leaves it to Ray (token: Ray adds the header; disabled: none).
    assert cluster.auth_headers({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}, home=tmp_path) == {}
    assert cluster.auth_headers({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "abc"}, home=tmp_path) == {}


# ----------------------------------------------------------------------------- a fake Jobs API
class FakeJobs:
    def __init__(self, final: str, message: str = "") -> None:
        self.final, self.message = final, message
        self.submitted: dict = {}
        self.shipped: set[str] = set()

    def submit_job(self, **kwargs):
        self.submitted = kwargs
        root = Path(kwargs["runtime_env"]["working_dir"])
        self.shipped = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        return kwargs["submission_id"]

    async def tail_job_logs(self, job_id):
        for line in ("driver: 6 trials\n", "done\n"):
            yield line

    def get_job_info(self, job_id):
        from types import SimpleNamespace

        return SimpleNamespace(status=self.final, message=self.message)

    def get_job_logs(self, job_id):
        return "driver: 6 trials\ndone\n"

    def get_address(self):
        return "http://fake:8265"


@pytest.mark.parametrize("final, rc", [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)])
def test_wait_follows_logs_and_exits_with_the_jobs_outcome(tmp_path, capsys, monkeypatch, final, rc):
    jobs = FakeJobs(final, message="driver exited with 1" if final == "FAILED" else "")
    monkeypatch.setattr(cmd_submit, "_connect", lambda address: jobs)
    spec = write_spec(tmp_path, name="demo")
    assert main(["submit", str(spec), "--address", "http://fake:8265", *SERVER, "--run-cap", "3", "--wait"]) == rc
    out, err = capsys.readouterr()
    job_id = out.splitlines()[0]
    assert job_id.startswith("mlpsweep-demo-") and job_id == jobs.submitted["submission_id"]
    assert out.count("driver: 6 trials") == 1 and "done" in out  # streamed once, nothing fetched twice
    assert f"job {job_id} {final}" in err
    if final == "FAILED":
        assert "driver exited with 1" in err
    argv = shlex.split(jobs.submitted["entrypoint"])
    assert argv[4] == "demo.yaml" and argv[argv.index("--run-cap") + 1] == "3"
    assert {"demo.yaml", "sweeps/cli.py", "workers/ray_backend.py", "models/mlp.py", "tracking/sweep.py"} <= jobs.shipped


def test_without_wait_prints_the_job_id_and_returns(tmp_path, capsys, monkeypatch):
    jobs = FakeJobs("RUNNING")
    monkeypatch.setattr(cmd_submit, "_connect", lambda address: jobs)
    spec = write_spec(tmp_path, name="demo")
    assert main(["submit", str(spec), "--address", "http://fake:8265", *SERVER, "--allow-changed-spec"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == jobs.submitted["submission_id"]
    assert "Dashboard: http://fake:8265/#/jobs/" in err
    assert shlex.split(jobs.submitted["entrypoint"])[-1] == "--allow-changed-spec"


def test_printed_ray_job_commands_carry_the_auth_mode_where_a_token_was_sent(tmp_path):
    """Ray's CLI sends a token only with RAY_AUTH_MODE=token set: the pasted hint must say so
    wherever mlpsweep sent one without it, or it is refused by the cluster the job runs on."""
    address = "http://head:8265"
    assert cluster.ray_job_command("logs -f", "j1", address, {"RAY_AUTH_TOKEN": "abc"}, home=tmp_path) == \
        "RAY_AUTH_MODE=token ray job logs -f j1 --address http://head:8265"
    assert cluster.ray_job_command("stop", "j1", address, {}, home=tmp_path) == "ray job stop j1 --address http://head:8265"
    assert cluster.ray_job_command("status", "j1", address, {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"},
                                   home=tmp_path) == "ray job status j1 --address http://head:8265"


def _stored_sweep(tmp_path):
    """A journal at an absolute path (the head's, seen here) holding sweep 's' as this spec made it."""
    from sweeps import optuna_adapter as oa
    from sweeps.spec import load_spec, spec_digest

    spec_file = write_spec(tmp_path, name="s", run_cap=6)
    spec = load_spec(spec_file)
    journal = tmp_path / "optuna.journal"
    oa.open_study(spec, str(journal), spec_digest(spec))
    edited = write_spec(tmp_path, name="s", text=spec_file.read_text().replace("max: 0.1}", "max: 0.3}"))
    return edited, ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage", str(journal)]


def test_an_edited_spec_of_a_stored_sweep_is_refused_before_any_connection(tmp_path, capsys, no_cluster):
    edited, stores = _stored_sweep(tmp_path)
    assert main(["submit", str(edited), "--address", _dead_address(), *stores, "--wait"]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert len(errors) == 1, err
    assert "parameters.lr.max: 0.1 -> 0.3" in errors[0] and "--allow-changed-spec" in errors[0]
    assert f"(read in {tmp_path / 'optuna.journal'} on this machine, the head at http://127.0.0.1:" in errors[0]


def test_allow_changed_spec_passes_the_check_on_to_the_job(tmp_path, capsys):
    edited, stores = _stored_sweep(tmp_path)
    address = _dead_address()
    assert main(["submit", str(edited), "--address", address, *stores, "--allow-changed-spec"]) == 2
    err = capsys.readouterr().err
    assert f"--address: cannot reach the Ray Jobs API at {address}" in err  # past the check, at the cluster
    assert "parameters.lr.max" not in err


def test_a_storage_server_this_machine_cannot_reach_is_left_for_the_job_to_check(tmp_path, capsys):
    import time

    spec = write_spec(tmp_path, name="s", run_cap=6)
    dead = _dead_address().rsplit(":", 1)[1]
    address = _dead_address()
    started = time.monotonic()
    assert main(["submit", str(spec), "--address", address, "--tracking-uri", "http://mlflow:5000",
                 "--storage", f"postgresql+psycopg2://u@127.0.0.1:{dead}/optuna"]) == 2
    err = capsys.readouterr().err
    assert time.monotonic() - started < 30
    warning = [line for line in err.splitlines() if "--storage: cannot connect" in line]
    assert len(warning) == 1 and "the job checks the stored sweep's spec" in warning[0], err
    assert f"--address: cannot reach the Ray Jobs API at {address}" in err  # submit went on


def test_the_check_writes_nothing_to_a_database_without_optuna_s_tables(tmp_path, capsys):
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE mine (x)")
    spec = write_spec(tmp_path, name="s", run_cap=6)
    address = _dead_address()
    assert main(["submit", str(spec), "--address", address, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
                 "--storage", f"sqlite:///{db}"]) == 2
    assert f"--address: cannot reach the Ray Jobs API at {address}" in capsys.readouterr().err  # went on
    with sqlite3.connect(db) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert tables == ["mine"]  # Optuna's storage would have added its tables and its schema version


def test_a_storage_file_is_the_head_s_when_the_head_is_another_machine(tmp_path, no_cluster):
    # the same path here may be another file: the job checks the head's
    edited, stores = _stored_sweep(tmp_path)
    with pytest.raises(AssertionError, match="submit connected to http://10.9.8.7:8265"):
        main(["submit", str(edited), "--address", "http://10.9.8.7:8265", *stores])


def test_a_local_socket_server_is_the_head_s_when_the_head_is_another_machine(tmp_path, capsys, no_cluster):
    spec = write_spec(tmp_path, name="s", run_cap=6)
    with pytest.raises(AssertionError, match="submit connected to http://10.9.8.7:8265"):
        main(["submit", str(spec), "--address", "http://10.9.8.7:8265", "--tracking-uri", "http://mlflow:5000",
              "--storage", "postgresql://u@/optuna?host=/var/run/postgresql"])
    assert "--storage" not in capsys.readouterr().err  # no connection tried from here, so no warning


def test_connect_args_name_each_driver_s_timeout():
    from sweeps.stores import connect_args

    assert connect_args("postgresql://u@h/db", 3) == {"connect_timeout": 3}
    assert connect_args("PostgreSQL+psycopg2://u@h/db", 2.5) == {"connect_timeout": 2}
    assert connect_args("postgresql+pg8000://u@h/db", 3) == {"timeout": 3}
    assert connect_args("mysql+pymysql://u@h/db", application_name="x") == {"connect_timeout": 10,
                                                                             "application_name": "x"}
    assert connect_args("sqlite:////tmp/x.db", 3) == {}


def test_an_address_where_something_else_answers_is_a_clear_usage_error(tmp_path, capsys, web_server):
    # Ray's client raised its version check's RuntimeError: a traceback, exit 1
    spec = write_spec(tmp_path)
    address = f"http://127.0.0.1:{web_server}"
    assert main(["submit", str(spec), "--address", address, *SERVER]) == 2
    err = capsys.readouterr().err
    assert f"mlpsweep submit: error: --address: {address} answers, but not as a Ray cluster's Jobs API" in err
    assert "http://HOST:8265" in err and "Traceback" not in err
