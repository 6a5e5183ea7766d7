"""A new SQLite MLflow store appears all at once: a process killed while MLflow builds its schema
(dozens of migrations, seconds) leaves no half-migrated mlflow.db that later runs would refuse."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from tracking.client import ensure_experiment, make_client

CREATE = "from tracking.client import make_client; make_client('sqlite:///mlflow.db').search_experiments()"


def test_a_new_store_is_complete_and_leaves_no_side_files(tmp_path):
    client = make_client(f"sqlite:///{tmp_path}/mlflow.db")
    assert ensure_experiment(client, "x")
    names = {p.name for p in tmp_path.iterdir()}
    assert "mlflow.db" in names and not [n for n in names if "creating" in n]  # (-wal/-shm with WAL on)


@pytest.mark.parametrize("kill_after", [1.5, 2.5, 3.5, 4.5])
def test_a_creator_killed_at_any_point_leaves_a_usable_store(tmp_path, kill_after):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", CREATE], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    client = make_client(f"sqlite:///{tmp_path}/mlflow.db")
    assert ensure_experiment(client, "after-the-kill")  # the old code: "table _alembic_tmp_… already exists"
