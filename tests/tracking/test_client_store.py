"""A new SQLite MLflow store appears all at once: a process killed while MLflow builds its schema
(dozens of migrations, seconds) leaves no half-migrated mlflow.db that later runs would refuse;
the next new store is a copy of the schema kept as a template, equal to what MLflow builds."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import sqlite3

import pytest

from conftest import ROOT
from tracking.client import ensure_experiment, make_client, schema_template

CREATE = "from tracking.client import make_client; make_client('sqlite:///mlflow.db').search_experiments()"


def test_a_new_store_is_complete_and_leaves_no_side_files(tmp_path):
    client = make_client(f"sqlite:///{tmp_path}/mlflow.db")
    assert ensure_experiment(client, "x")
    names = {p.name for p in tmp_path.iterdir()}
    assert "mlflow.db" in names and not [n for n in names if "creating" in n]  # (-wal/-shm with WAL on)


@pytest.mark.parametrize("kill_after", [1.5, 2.5, 3.5, 4.5])
def test_a_creator_killed_at_any_point_leaves_a_usable_store(tmp_path, kill_after):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}  # no template: migrations
    proc = subprocess.Popen([sys.executable, "-c", CREATE], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    client = make_client(f"sqlite:///{tmp_path}/mlflow.db")
    assert ensure_experiment(client, "after-the-kill")  # the old code: "table _alembic_tmp_… already exists"


def _rows(path) -> list[tuple]:
    """Schema and every row of a SQLite file (experiment times left out)."""
    with sqlite3.connect(path) as db:
        out: list[tuple] = []
        for name, sql in db.execute("SELECT name, sql FROM sqlite_master ORDER BY name").fetchall():
            out.append((name, sql))
            if sql and sql.startswith("CREATE TABLE"):
                rows = db.execute(f'SELECT * FROM "{name}"').fetchall()
                out += [(name, r[:4] if name == "experiments" else r) for r in rows]
    db.close()
    return out


def test_a_store_copied_from_the_schema_template_equals_one_mlflow_migrates(tmp_path, monkeypatch):
    import mlflow.store.db.utils

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # the default experiment's artifact path is MLflow's ./mlruns
    template = schema_template()
    assert template is not None and not template.exists()
    make_client("sqlite:///migrated.db").search_experiments()
    with sqlite3.connect(template) as db:  # kept, without the default experiment of that store
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    db.close()

    def no_migrations(engine):  # the copy must not need them
        raise AssertionError("MLflow's migrations ran although a schema template was there")

    monkeypatch.setattr(mlflow.store.db.utils, "_initialize_tables", no_migrations)
    client = make_client("sqlite:///copied.db")
    assert [e.name for e in client.search_experiments()] == ["Default"]
    assert _rows("copied.db") == _rows("migrated.db")
    assert ensure_experiment(client, "x")


REBUILD = """
import sys, time
from tracking.client import enable_fast_sqlite, ensure_experiment, make_client, schema_template
enable_fast_sqlite()  # as every sweep's processes do
schema_template().write_bytes(b"SQLite format 3\\x00" + b"damaged " * 200 if sys.argv[2] == "damaged" else b"no db")
started = time.monotonic()
assert ensure_experiment(make_client(f"sqlite:///{sys.argv[1]}/mlflow.db"), "x")
print(time.monotonic() - started)
"""


@pytest.mark.parametrize("junk", ["no database", "damaged"])
def test_an_unusable_schema_template_is_rebuilt(tmp_path, junk):
    # with WAL's pragmas on every connection, a template that is no database (or a damaged one)
    # failed MLflow's engine creation, which it retried for ~100 s before the rebuild
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", REBUILD, str(tmp_path), junk], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert float(proc.stdout.split()[-1]) < 30
    assert "is unusable; building the schema anew" in proc.stderr
    template = tmp_path / "cache" / "mlpsweep"
    (kept,) = template.glob("mlflow-schema-*.db")
    with sqlite3.connect(kept) as db:
        assert db.execute("SELECT COUNT(*) FROM experiments").fetchone() == (0,)
    db.close()


ORPHAN = """
import os, sqlite3, sys
db = sys.argv[1]
keep = sqlite3.connect(db)
keep.execute("PRAGMA journal_mode=WAL")
keep.execute("PRAGMA wal_autocheckpoint=0")
keep.execute("CREATE TABLE stale_notes(x TEXT)")
keep.executemany("INSERT INTO stale_notes VALUES (?)", [("x" * 200,)] * 200)
keep.commit()
os.remove(db)
os.kill(os.getpid(), 9)
"""


def _orphan_log(db) -> None:
    """What ``rm mlflow.db`` leaves when the sweep that had it open is then killed: the store's
    write-ahead log, with frames not yet folded into the file, and its index, beside no file."""
    subprocess.run([sys.executable, "-c", ORPHAN, str(db)], timeout=60)
    assert not db.exists() and os.path.getsize(f"{db}-wal") > 0


def _tables(db) -> set[str]:
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_new_store_beside_a_deleted_ones_log_is_not_damaged_by_it(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    _orphan_log(db)
    client = make_client(f"sqlite:///{db}")
    experiment = ensure_experiment(client, "fresh")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "width", "8")
    assert client.get_run(run.info.run_id).data.params == {"width": "8"}
    tables = _tables(db)
    # the old code: SQLite replayed the deleted store's log into the new file (its first page, the
    # schema, came from the log: "stale_notes" and no MLflow table until MLflow migrated it again;
    # with more in the log than a first page: "database disk image is malformed")
    assert "stale_notes" not in tables and {"runs", "experiments", "params"} <= tables
    assert "write-ahead log of a deleted MLflow store" in caplog.text
