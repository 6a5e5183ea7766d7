"""Reading runs in bulk with SQL returns what MLflow's own search_runs returns, on SQLite and on
PostgreSQL: the same runs (deleted ones and other tags left out), params, latest metrics
(NaN included), tags and run info."""
from __future__ import annotations

import math
import time

import pytest
from mlflow.entities import Metric, Param, RunTag

from conftest import postgres_databases
from tracking.bulk import sql_store
from tracking.client import ensure_experiment, make_client
from tracking.search import _search_pages, search_by_tags, tags_filter


def _store(client, tmp_path) -> tuple[str, str]:
    """Two experiments of runs that a filter on kind and parent must tell apart."""
    exp = ensure_experiment(client, "search", artifact_location=str(tmp_path / "a"))
    other = ensure_experiment(client, "other", artifact_location=str(tmp_path / "b"))
    parent = client.create_run(exp, tags={"kind": "sweep"}).info.run_id
    now = int(time.time() * 1000)
    for n in range(7):
        run = client.create_run(exp, run_name=f"trial-{n}" if n % 2 else None,
                                tags={"kind": "trial", "mlflow.parentRunId": parent, "note": "it's a\\b"})
        rid = run.info.run_id
        client.log_batch(rid, metrics=[Metric("val_mse", 1.0 / (n + 1), now, 0), Metric("val_mse", 0.5 / (n + 1), now, 3),
                                       Metric("curve", float(n), now + 5, 1), Metric("curve", 9.0, now, 1),
                                       Metric("odd", math.nan if n == 2 else 1.0, now, 0)],
                         params=[Param("width", str(8 * n)), Param("activation", "tanh")],
                         tags=[RunTag("trial", str(n))])
        client.set_terminated(rid, "FINISHED" if n != 4 else "FAILED")
        if n == 5:
            client.delete_run(rid)
    client.create_run(exp, tags={"kind": "trial"})  # another parent's (none)
    client.create_run(exp, tags={"kind": "verification", "mlflow.parentRunId": parent})
    client.create_run(other, tags={"kind": "trial", "mlflow.parentRunId": parent})
    return exp, parent


def _plain(runs) -> dict:
    out = {}
    for r in runs:
        i = r.info
        metrics = {k: ("nan" if math.isnan(v) else v) for k, v in r.data.metrics.items()}
        out[i.run_id] = ((i.run_name, i.experiment_id, i.user_id, i.status, i.start_time, i.end_time,
                          i.lifecycle_stage, i.artifact_uri), r.data.params, metrics, r.data.tags)
    return out


def _same_as_mlflow(client, tmp_path) -> None:
    exp, parent = _store(client, tmp_path)
    for tags, expected in (({"kind": "trial", "mlflow.parentRunId": parent}, 6),  # 7 trials, one deleted
                           ({"kind": "trial"}, 7), ({"kind": "verification"}, 1), ({"kind": "sweep"}, 1),
                           ({"note": "it's a\\b", "trial": "3"}, 1), ({"kind": "nothing"}, 0)):
        fast = search_by_tags(client, [exp], tags)
        assert sql_store(client) is not None and len(fast) == expected, tags
        assert _plain(fast) == _plain(_search_pages(client, [exp], tags)), tags
    light = search_by_tags(client, [exp], {"kind": "trial"}, tags_only=True)
    full = _plain(search_by_tags(client, [exp], {"kind": "trial"}))
    assert {r.info.run_id: r.data.tags for r in light} == {k: v[3] for k, v in full.items()}
    assert all(not r.data.params and not r.data.metrics for r in light)
    trials = _plain(search_by_tags(client, [exp], {"kind": "trial", "mlflow.parentRunId": parent}))
    assert any(m["odd"] == "nan" for _, _, m, _ in trials.values())
    assert all(m["val_mse"] < 0.6 and m["curve"] != 9.0 for _, _, m, _ in trials.values())  # the latest values


def test_sql_search_returns_what_mlflow_returns_on_sqlite(tmp_path):
    _same_as_mlflow(make_client(f"sqlite:///{tmp_path}/mlflow.db"), tmp_path)


@pytest.mark.integration
def test_sql_search_returns_what_mlflow_returns_on_postgresql(tmp_path):
    with postgres_databases("mlpsweep_search", "mlflow") as urls:
        client = make_client(urls["mlflow"])
        _same_as_mlflow(client, tmp_path)
        sql_store(client).engine.dispose()


def test_the_filter_quotes_values_as_mlflow_reads_them():
    assert tags_filter({"a": "it's", "b": "x\\y"}) == "tags.`a` = \"it's\" and tags.`b` = 'x\\y'"
    with pytest.raises(ValueError):
        tags_filter({"a": "both ' and \""})
    with pytest.raises(ValueError):
        search_by_tags(None, ["1"], {})
