"""``--storage``: a database URL or a journal file; the local default is the journal beside mlflow.db."""
from __future__ import annotations

import pytest

from conftest import write_spec
from sweeps import optuna_adapter as oa
from sweeps.cli import main
from sweeps.spec import load_spec
from tracking.sweep import default_storage


def test_default_is_a_journal_beside_a_sqlite_mlflow_store(tmp_path):
    assert default_storage(f"sqlite:///{tmp_path}/mlflow.db") == f"{tmp_path}/optuna.journal"


def test_an_older_optuna_db_there_is_kept_so_its_sweeps_continue(tmp_path):
    (tmp_path / "optuna.db").write_bytes(b"")
    assert default_storage(f"sqlite:///{tmp_path}/mlflow.db") == f"sqlite:///{tmp_path}/optuna.db"
    (tmp_path / "optuna.journal").write_bytes(b"")
    assert default_storage(f"sqlite:///{tmp_path}/mlflow.db") == f"{tmp_path}/optuna.journal"


def test_a_journal_study_is_created_then_found_by_name(tmp_path):
    spec = load_spec(write_spec(tmp_path, name="j"))
    path = str(tmp_path / "s.journal")
    study = oa.open_study(spec, path, "digest")
    trial = study.ask()
    study.tell(trial, 0.5)
    again = oa.load_study("j", path)
    assert [t.value for t in again.trials] == [0.5] and oa.study_names(path) == ["j"]


def test_reading_a_missing_journal_creates_nothing(tmp_path):
    path = tmp_path / "none.journal"
    with pytest.raises(KeyError):
        oa.load_study("j", str(path))
    assert oa.study_names(str(path)) == [] and not path.exists()


@pytest.mark.parametrize("value", ["optuna", "optuna.db", "runs/study.json"])
def test_anything_else_is_a_one_line_usage_error(value, tmp_path, capsys):
    spec = write_spec(tmp_path, name="j")
    assert main(["run", str(spec), "--storage", value, "--ray-address", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mlpsweep run: error: --storage: ") and ".journal" in err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["j.yaml"]  # nothing started, nothing written


def test_the_journal_is_appended_without_fsync_and_read_by_stock_optuna(tmp_path, monkeypatch):
    import os

    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    path = str(tmp_path / "s.journal")
    study = optuna.create_study(study_name="s", storage=oa.storage_for(path))
    for value in (0.3, 0.2, 0.1):
        trial = study.ask()
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("config", {"width": 8})
        study.tell(trial, value)
    assert synced == []  # Optuna's own backend syncs after every entry
    stock = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(path)))
    assert [(t.params, t.user_attrs, t.value) for t in stock.trials] == \
        [(t.params, t.user_attrs, t.value) for t in study.trials]
    assert [t.value for t in stock.trials] == [0.3, 0.2, 0.1]


def test_the_journal_is_appended_under_an_flock_on_the_file_itself(tmp_path):
    """Appends wait for an ``flock`` on the journal (not Optuna's symlink lock, which costs
    three folder changes per entry) and leave no lock file behind."""
    import fcntl
    import threading

    path = tmp_path / "s.journal"
    backend = oa.journal_backend(str(path))
    holder = open(path, "ab")
    fcntl.flock(holder.fileno(), fcntl.LOCK_EX)
    writer = threading.Thread(target=backend.append_logs, args=([{"op_code": 0, "worker_id": "w"}],))
    writer.start()
    writer.join(0.3)
    assert writer.is_alive() and path.read_bytes() == b""  # waits for the holder
    holder.close()  # releases the lock
    writer.join(5)
    assert not writer.is_alive() and path.read_bytes() == b'{"op_code":0,"worker_id":"w"}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.journal"]
