"""tracking.bulk writes the same rows as MLflow's own client calls, on SQLite and on PostgreSQL."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from sqlalchemy import text

from conftest import postgres_databases
from tracking.bulk import RunRecord, sql_store, write_run, write_runs
from tracking.client import ensure_experiment, make_client

PARAMS = [Param("width", "8"), Param("lr", "0.01"), Param("hidden_sizes", "8-8"), Param("empty", "")]


def metrics() -> list[Metric]:
    """Every case MLflow's metric rules treat specially."""
    ts = 1_700_000_000_000
    out = [Metric("train_mse", 0.5, ts, 0), Metric("val_mse", 0.25, ts, 0)]
    out += [Metric("curve", 1.0 / (e + 1), ts + e % 3, e) for e in (0, 5, 2, 9, 7)]  # steps out of order
    out += [Metric("curve", 0.125, ts, 9)]  # same step as the latest, earlier timestamp: not latest
    out += [Metric("tie", 3.0, ts, 4), Metric("tie", 2.0, ts, 4), Metric("tie", 5.0, ts, 4)]  # value breaks the tie
    out += [Metric("later_ts", 9.0, ts + 5, 1), Metric("later_ts", 1.0, ts + 6, 1)]
    out += [Metric("dup", 7.0, ts, 3), Metric("dup", 7.0, ts, 3)]  # an exact duplicate is written once
    out += [Metric("nan", math.nan, ts, 0), Metric("inf", math.inf, ts, 0), Metric("ninf", -math.inf, ts, 1)]
    out += [Metric("restart_mse", 0.1 * r, ts, r) for r in range(10)]
    return out


TAGS = {"mlpsweep.kind": "trial", "mlflow.parentRunId": "abc", "mlflow.user": "ada", "note": "x" * 7000}


def rows(client: MlflowClient, table: str, run_id: str) -> list[tuple]:
    store = sql_store(client)
    columns = {"params": "key, value", "tags": "key, value",
               "runs": "name, source_type, source_name, entry_point_name, user_id, status, deleted_time, "
                       "source_version, lifecycle_stage, experiment_id"}.get(table, "key, value, timestamp, step, is_nan")
    with store.engine.connect() as db:
        found = db.execute(text(f"SELECT {columns} FROM {table} WHERE run_uuid = :r"), {"r": run_id}).fetchall()
    return sorted(tuple(r) for r in found)


def with_mlflow(client: MlflowClient, experiment_id: str, params: list[Param], values: list[Metric],
                folder: Path) -> str:
    """The same run through MLflow's own client calls: the reference."""
    run = client.create_run(experiment_id, run_name="trial-1", tags=TAGS).info
    if params or values:
        client.log_batch(run.run_id, metrics=values[:1000], params=params)
        for i in range(1000, len(values), 1000):
            client.log_batch(run.run_id, metrics=values[i:i + 1000])
    client.log_artifacts(run.run_id, str(folder))
    client.set_terminated(run.run_id, "FINISHED")
    return run.run_id


def assert_same_runs(client: MlflowClient, experiment_id: str, params: list[Param], values: list[Metric],
                     folder: Path) -> None:
    (folder / "checkpoint").mkdir(parents=True, exist_ok=True)
    (folder / "checkpoint" / "weights.bin").write_bytes(b"w" * 100)
    (folder / "curves.json").write_text("{}")
    reference = with_mlflow(client, experiment_id, params, values, folder)
    bulk = write_run(client, experiment_id, run_name="trial-1", tags=TAGS, params=params, metrics=values,
                     status="FINISHED", artifacts=folder)
    for table in ("runs", "tags", "params", "metrics", "latest_metrics"):
        assert rows(client, table, bulk) == rows(client, table, reference), table
    assert len(rows(client, "params", bulk)) == len(params)
    assert len(rows(client, "metrics", bulk)) == len(set(values))  # exact duplicates once
    ref, got = client.get_run(reference), client.get_run(bulk)
    same = lambda values: {k: repr(v) for k, v in values.items()}  # noqa: E731  (NaN != NaN)
    assert got.data.params == ref.data.params and same(got.data.metrics) == same(ref.data.metrics)
    assert got.data.tags == ref.data.tags
    assert (got.info.status, got.info.run_name, got.info.user_id, got.info.lifecycle_stage) == \
        (ref.info.status, ref.info.run_name, ref.info.user_id, ref.info.lifecycle_stage)
    assert got.info.artifact_uri == ref.info.artifact_uri.replace(reference, bulk)
    assert got.info.end_time >= got.info.start_time > 0
    listing = lambda run: sorted((a.path, a.file_size) for a in client.list_artifacts(run, "checkpoint"))  # noqa: E731
    assert listing(bulk) == listing(reference) == [("checkpoint/weights.bin", 100)]
    for key in {m.key for m in values}:
        history = lambda run: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run, key))  # noqa: E731
        assert history(bulk) == history(reference), key
    found = client.search_runs([experiment_id], "tags.`mlpsweep.kind` = 'trial' and attributes.status = 'FINISHED'")
    assert {r.info.run_id for r in found} >= {bulk, reference}


@pytest.fixture
def sqlite_client(tmp_path):
    client = make_client(f"sqlite:///{tmp_path}/mlflow.db")
    return client, ensure_experiment(client, "bulk", artifact_location=str(tmp_path / "artifacts"))


def test_same_rows_as_mlflow_writes_on_sqlite(sqlite_client, tmp_path):
    client, experiment_id = sqlite_client
    assert sql_store(client) is not None
    assert_same_runs(client, experiment_id, PARAMS, metrics(), tmp_path / "files")


def test_more_than_one_batch_of_values(sqlite_client, tmp_path):
    client, experiment_id = sqlite_client
    many = [Metric("curve", float(e), 1_700_000_000_000, e) for e in range(2500)]  # log_batch's cap is 1000
    assert_same_runs(client, experiment_id, PARAMS, many, tmp_path / "files")


def test_no_params_no_metrics(sqlite_client, tmp_path):
    client, experiment_id = sqlite_client
    assert_same_runs(client, experiment_id, [], [], tmp_path / "files")


def test_a_failed_run_without_artifacts(sqlite_client, tmp_path):
    client, experiment_id = sqlite_client
    empty = tmp_path / "empty"
    empty.mkdir()
    for artifacts in (None, empty):
        run = client.get_run(write_run(client, experiment_id, run_name="trial-2", tags={}, params=PARAMS,
                                       metrics=[], status="FAILED", artifacts=artifacts))
        assert run.info.status == "FAILED" and run.data.tags["mlflow.runName"] == "trial-2"
        assert client.list_artifacts(run.info.run_id) == []


def runs_in(client: MlflowClient, experiment_id: str) -> int:
    return len(client.search_runs([experiment_id], run_view_type=3))


@pytest.mark.parametrize("params, values, message", [
    ([Param("a", "1"), Param("a", "2")], [], "Duplicate parameter keys"),
    ([Param("bad key!", "1")], [], "Invalid"),
    ([], [Metric("m", 1.0, 0, 0), Metric("bad/../key", 1.0, 0, 0)], "Invalid"),
    ([Param("p", "x" * 6001)], [], None),  # MLflow truncates a long param value: not an error
])
def test_refuses_what_mlflow_refuses_and_leaves_no_run(sqlite_client, tmp_path, params, values, message):
    client, experiment_id = sqlite_client
    if message is None:
        run_id = write_run(client, experiment_id, run_name="r", tags={}, params=params, metrics=values, status="FINISHED")
        assert client.get_run(run_id).data.params["p"] == "x" * 6000
        return
    run_id = client.create_run(experiment_id).info.run_id
    with pytest.raises(MlflowException, match=message):
        client.log_batch(run_id, metrics=values, params=params)
    before = runs_in(client, experiment_id)
    location = Path(client.get_experiment(experiment_id).artifact_location.removeprefix("file://"))
    folders = set(location.iterdir()) if location.exists() else set()
    made: list[Path] = []
    with pytest.raises(MlflowException, match=message):
        write_run(client, experiment_id, run_name="r", tags={}, params=params, metrics=values, status="FINISHED",
                  artifacts=_files(made))
    assert runs_in(client, experiment_id) == before
    assert made and not made[0].exists()  # the checkpoint written before the refusal is gone with its run folder
    assert set(location.iterdir()) == folders


def test_a_deleted_experiment_gets_no_run(sqlite_client):
    client, experiment_id = sqlite_client
    client.delete_experiment(experiment_id)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        write_run(client, experiment_id, run_name="r", tags={}, params=PARAMS, metrics=metrics(), status="FINISHED")
    assert runs_in(client, experiment_id) == 0


def test_other_stores_get_mlflow_client_calls(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file://{tmp_path}/mlruns")  # MLflow's file store: not SQL
    assert sql_store(client) is None
    experiment_id = client.create_experiment("bulk")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.txt").write_text("a")
    values = [Metric("curve", float(e), 1_700_000_000_000, e) for e in range(1500)]
    run_id = write_run(client, experiment_id, run_name="trial-3", tags=TAGS, params=PARAMS, metrics=values,
                       status="FINISHED", artifacts=tmp_path / "files")
    run = client.get_run(run_id)
    assert run.data.params == {p.key: p.value for p in PARAMS} and run.info.status == "FINISHED"
    assert run.data.tags["mlpsweep.kind"] == "trial" and run.info.run_name == "trial-3"
    assert sorted(m.step for m in client.get_metric_history(run_id, "curve")) == list(range(1500))
    assert [a.path for a in client.list_artifacts(run_id)] == ["a.txt"]
    with pytest.raises(MlflowException):  # a refused value: the half-made run is deleted
        write_run(client, experiment_id, run_name="r", tags={}, params=[Param("bad key!", "1")], metrics=[],
                  status="FINISHED")
    assert [r.info.run_id for r in client.search_runs([experiment_id])] == [run_id]


@pytest.mark.integration
def test_same_rows_as_mlflow_writes_on_postgresql(tmp_path):
    with postgres_databases("mlpsweep_bulk", "mlflow") as urls:
        client = make_client(urls["mlflow"])
        experiment_id = ensure_experiment(client, "bulk", artifact_location=str(tmp_path / "artifacts"))
        assert_same_runs(client, experiment_id, PARAMS, metrics(), tmp_path / "files")
        sql_store(client).engine.dispose()


def _files(made: list[Path]):
    """An artifacts function: a file in a subfolder and a tag, noting the folder it was given."""
    def write(folder: Path) -> None:
        made.append(folder)
        (folder / "checkpoint").mkdir(parents=True)
        (folder / "checkpoint" / "model.pt").write_bytes(b"weights")
    return write


def test_an_artifacts_function_writes_into_the_runs_own_local_folder(sqlite_client):
    client, experiment_id = sqlite_client
    made: list[Path] = []
    run_id = write_run(client, experiment_id, run_name="r", tags={}, params=PARAMS, metrics=metrics(),
                       status="FINISHED", artifacts=_files(made))
    run = client.get_run(run_id)
    assert made == [Path(run.info.artifact_uri.removeprefix("file://"))]  # no temporary copy
    assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/model.pt"]
    nothing = write_run(client, experiment_id, run_name="r", tags={}, params=PARAMS, metrics=[],
                        status="FINISHED", artifacts=lambda folder: None)
    assert client.list_artifacts(nothing) == []


def test_an_artifacts_function_on_another_store_is_uploaded(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=f"file://{tmp_path}/mlruns")
    experiment_id = client.create_experiment("bulk")
    made: list[Path] = []
    run_id = write_run(client, experiment_id, run_name="r", tags={}, params=PARAMS, metrics=[],
                       status="FINISHED", artifacts=_files(made))
    assert [a.path for a in client.list_artifacts(run_id, "checkpoint")] == ["checkpoint/model.pt"]
    assert not made[0].exists()  # a temporary folder, copied then removed


def test_runs_written_together_equal_runs_written_alone(sqlite_client):
    """write_runs: one transaction for several runs, each run's rows as write_run writes them."""
    client, experiment_id = sqlite_client
    records = [RunRecord(f"trial-{i}", {**TAGS, "n": str(i)}, PARAMS, metrics(), "FINISHED", _files([]))
               for i in range(3)]
    together = write_runs(client, experiment_id, records)
    alone = [write_run(client, experiment_id, run_name=r.run_name, tags=r.tags, params=r.params, metrics=r.metrics,
                       status=r.status, artifacts=_files([])) for r in records]
    assert len(set(together)) == 3
    for a, b in zip(together, alone):
        for table in ("runs", "tags", "params", "metrics", "latest_metrics"):
            assert rows(client, table, a) == rows(client, table, b), table
        assert [f.path for f in client.list_artifacts(a, "checkpoint")] == ["checkpoint/model.pt"]


def test_one_refused_run_leaves_none_of_its_batch(sqlite_client):
    client, experiment_id = sqlite_client
    made: list[Path] = []
    good = RunRecord("good", {}, PARAMS, metrics(), "FINISHED", _files(made))
    bad = RunRecord("bad", {}, [Param("bad key!", "1")], [], "FINISHED", _files(made))
    location = Path(client.get_experiment(experiment_id).artifact_location.removeprefix("file://"))
    with pytest.raises(MlflowException, match="Invalid"):
        write_runs(client, experiment_id, [good, bad])
    assert runs_in(client, experiment_id) == 0
    assert len(made) == 2 and not any(folder.exists() for folder in made)
    assert not location.exists() or list(location.iterdir()) == []
