"""One driver per sweep on a local storage: a second ``mlpsweep run`` of a running sweep is
refused before it starts anything (it would have queued the first one's trials in flight
again as a stopped driver's orphans); a killed driver leaves no lock behind."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, postgres_databases, process_ended, run_cli, write_spec
from sweeps.runlock import UNKNOWN, SweepRunning, lock_path, sweep_driver, sweep_lock

HOLD = """\
import sys, time
sys.path.insert(0, {root!r})
from sweeps.runlock import sweep_lock
with sweep_lock({storage!r}, {sweep!r}) as path:
    print(path, flush=True)
    time.sleep(120)
"""


def _holder(storage: str, sweep: str) -> subprocess.Popen:
    """A process holding ``sweep``'s lock on ``storage`` (once it printed the lock's path)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD.format(root=str(ROOT), storage=storage, sweep=sweep)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip()
    return proc


def test_lock_files_sit_beside_a_local_storage_only(tmp_path):
    assert lock_path(f"{tmp_path}/optuna.journal", "s1") == tmp_path / "optuna.journal.s1.lock"
    assert lock_path(f"sqlite:///{tmp_path}/optuna.db", "s1") == tmp_path / "optuna.db.s1.lock"
    assert lock_path(f"sqlite+pysqlite:///{tmp_path}/optuna.db", "s1") == tmp_path / "optuna.db.s1.lock"
    assert lock_path("postgresql://postgres@127.0.0.1/db", "s1") is None
    with sweep_lock("postgresql://postgres@127.0.0.1/db", "s1") as path:
        assert path is None


def test_a_second_driver_of_a_running_sweep_is_refused_until_the_first_is_gone(tmp_path):
    storage = str(tmp_path / "optuna.journal")
    holder = _holder(storage, "s1")
    try:
        with pytest.raises(SweepRunning, match=f"sweep s1 is already running in process {holder.pid}"):
            with sweep_lock(storage, "s1"):
                pass
        with sweep_lock(storage, "other") as path:  # another sweep in the same storage runs alongside
            assert path == tmp_path / "optuna.journal.other.lock" and path.exists()
        assert not path.exists()  # a run that ends removes its lock file
    finally:
        os.kill(holder.pid, signal.SIGKILL)  # killed: the kernel releases its lock; its file stays
        holder.wait()
    assert (tmp_path / "optuna.journal.s1.lock").exists()
    with sweep_lock(storage, "s1") as path:
        assert path is not None
    assert not path.exists()


def test_status_is_told_whether_a_driver_runs_the_sweep_without_taking_its_lock(tmp_path):
    storage = str(tmp_path / "optuna.journal")
    assert sweep_driver(storage, "s1") is None  # never run
    holder = _holder(storage, "s1")
    try:
        for _ in range(2):  # asking twice: the first ask took nothing the driver holds
            assert sweep_driver(storage, "s1") == f"process {holder.pid}"
        assert sweep_driver(storage, "other") is None
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "optuna.journal.s1.lock").exists() and sweep_driver(storage, "s1") is None  # killed
    assert sweep_driver("mysql://u@db/optuna", "s1") == UNKNOWN


def test_a_driver_starting_while_status_asks_waits_for_the_answer(tmp_path):
    """status takes the lock shared for an instant: a run starting in that instant is not refused."""
    import fcntl
    import threading

    storage = str(tmp_path / "optuna.journal")
    path = lock_path(storage, "s1")
    path.write_text("")
    fd = os.open(path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.1, os.close, [fd]).start()
    with sweep_lock(storage, "s1") as held:
        assert held == path and sweep_driver(storage, "s1") == f"process {os.getpid()}"


def test_a_lock_file_status_may_not_read_is_unknown_not_a_crash(tmp_path, monkeypatch):
    storage = str(tmp_path / "optuna.journal")
    lock_path(storage, "s1").write_text("123\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", refuse)
    assert sweep_driver(storage, "s1") == UNKNOWN


def test_status_says_who_runs_a_sweep_or_that_its_running_trials_were_left(tmp_path, capsys, monkeypatch):
    from sweeps import optuna_adapter as oa
    from sweeps.cli import main
    from sweeps.spec import load_spec, spec_digest

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = load_spec(write_spec(tmp_path, name="left"))
    storage = str(tmp_path / "optuna.journal")
    oa.open_study(spec, storage, spec_digest(spec)).ask()  # a trial a driver asked for and never told
    (tmp_path / "mlflow.db").touch()
    assert main(["status", "left"]) == 0
    assert "driver: none is running this sweep; its 1 running trial(s) were left by a stopped driver" in \
        capsys.readouterr().out
    holder = _holder(storage, "left")
    try:
        assert main(["status", "left"]) == 0
        assert f"driver: process {holder.pid} is running this sweep" in capsys.readouterr().out
    finally:
        holder.kill()
        holder.wait()


def test_mlpsweep_run_of_a_running_sweep_exits_2_and_starts_nothing(tmp_path):
    spec = write_spec(tmp_path, name="busy", run_cap=2, epochs=5)
    holder = _holder(str(tmp_path / "optuna.journal"), "busy")
    try:
        proc = run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path, check=False)
    finally:
        holder.kill()
        holder.wait()
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"sweep busy is already running in process {holder.pid}" in lines[0], proc.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.journal").exists()
    assert process_ended(holder.pid)


@pytest.mark.integration
def test_on_postgresql_a_second_driver_is_refused_until_the_first_connection_is_gone():
    """Cluster runs keep the study on PostgreSQL, their drivers on any machine: the lock is the
    server's (a session advisory lock), dropped with a killed driver's connection."""
    with postgres_databases("mlpsweep_lock", "optuna") as urls:
        holder = _holder(urls["optuna"], "s1")
        try:
            with pytest.raises(SweepRunning, match=f"sweep s1 is already running .*pid {holder.pid}"):
                with sweep_lock(urls["optuna"], "s1"):
                    pass
            with sweep_lock(urls["optuna"], "other"):  # another sweep on the same database
                pass
            assert sweep_driver(urls["optuna"], "s1") == f"mlpsweep driver {socket.gethostname()} pid {holder.pid}"
            assert sweep_driver(urls["optuna"], "other") is None
        finally:
            os.kill(holder.pid, signal.SIGKILL)
            holder.wait()
        deadline = time.monotonic() + 20
        while True:  # the server notices the dead connection at once; allow it a moment
            try:
                with sweep_lock(urls["optuna"], "s1"):
                    break
            except SweepRunning:
                assert time.monotonic() < deadline, "the killed driver's lock stayed"
                time.sleep(0.2)
