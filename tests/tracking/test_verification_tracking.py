"""Verification runs in a real SQLite MLflow store under tmp_path."""
from __future__ import annotations

import functools
import json

import pytest

from models.backprop import BackwardSteps, backward, output_delta
from models.verify import GradCheckReport, verify_backprop
from tracking.client import DEFAULT_TRACKING_URI, ensure_experiment, make_client, resolve_tracking_uri
from tracking.verification import (
    REPORT_ARTIFACT,
    find_verification,
    known_verdicts,
    load_verification_report,
    record_verification,
    verify_and_record,
)


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # one store per module: creating MLflow's SQLite schema takes seconds; tests use their own experiments
    return make_client(f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db")


@pytest.fixture
def experiment_id(client, tmp_path, request):
    return ensure_experiment(client, request.node.name, artifact_location=(tmp_path / "artifacts").as_uri())


def _runs(client, experiment_id):
    return client.search_runs([experiment_id])


def test_tracking_uri_resolution(monkeypatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None) == DEFAULT_TRACKING_URI == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///from-env.db")
    assert resolve_tracking_uri(None) == "sqlite:///from-env.db"
    assert resolve_tracking_uri("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_ensure_experiment_gets_creates_and_restores(client, tmp_path) -> None:
    assert client.get_experiment_by_name("exp") is None
    first = ensure_experiment(client, "exp", artifact_location=(tmp_path / "a").as_uri())
    assert ensure_experiment(client, "exp") == first
    client.delete_experiment(first)
    assert ensure_experiment(client, "exp") == first
    assert client.get_experiment(first).lifecycle_stage == "active"


def test_ensure_experiment_survives_losing_the_creation_race(client, tmp_path, monkeypatch) -> None:
    real_get = client.get_experiment_by_name
    calls = []

    def racing_get(name):
        calls.append(name)
        if len(calls) == 1:  # we look, see nothing; a rival creates it before we do
            client.create_experiment(name, artifact_location=(tmp_path / "rival").as_uri())
            return None
        return real_get(name)

    monkeypatch.setattr(client, "get_experiment_by_name", racing_get)
    winner = ensure_experiment(client, "raced")
    assert winner == real_get("raced").experiment_id and len(calls) == 2


def test_record_verification_writes_tags_metrics_params_and_report(client, experiment_id, monkeypatch) -> None:
    report = verify_backprop([2, 5, 1], "sigmoid")
    parent = client.create_run(experiment_id, run_name="sweep parent").info.run_id
    calls = []
    for name in ("create_run", "log_batch", "set_terminated"):  # watched, not replaced
        real = getattr(client, name)
        monkeypatch.setattr(client, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))

    run_id = record_verification(client, experiment_id, report, parent_run_id=parent, sweep="seed-1d")

    run = client.get_run(run_id)
    assert calls == []  # on a SQL store the run goes in whole, in one transaction (tracking.bulk)
    assert run.info.status == "FINISHED" and run.info.run_name == "verify 2-5-1:sigmoid"
    tags = run.data.tags
    assert tags["mlpsweep.kind"] == "verification"
    assert tags["mlpsweep.architecture"] == "2-5-1:sigmoid"
    assert tags["mlpsweep.verified"] == "pass"
    assert tags["mlflow.parentRunId"] == parent and tags["mlpsweep.sweep"] == "seed-1d"
    metrics = run.data.metrics
    assert metrics["max_rel_err_autograd"] == report.max_rel_err_autograd
    assert metrics["max_rel_err_fd"] == report.max_rel_err_fd
    for name in ("0_weight", "0_bias", "1_weight", "1_bias", "input"):
        assert f"rel_err_autograd.{name}" in metrics and f"rel_err_fd.{name}" in metrics
    assert run.data.params["sizes"] == "2,5,1" and run.data.params["rtol"] == "1e-06"
    assert [a.path for a in client.list_artifacts(run_id)] == [REPORT_ARTIFACT]
    assert load_verification_report(client, run_id) == report


def test_a_failing_report_is_recorded_as_fail(client, experiment_id, tmp_path) -> None:
    mutant = functools.partial(
        backward, steps=BackwardSteps(output_delta=lambda y_hat, y, loss: 2 * output_delta(y_hat, y, loss))
    )
    report = verify_backprop([2, 5, 1], "tanh", backward=mutant)
    run_id = record_verification(client, experiment_id, report)
    run = client.get_run(run_id)
    assert run.data.tags["mlpsweep.verified"] == "fail" and run.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in run.data.tags
    stored = json.loads(
        (tmp_path / "artifacts" / run_id / "artifacts" / REPORT_ARTIFACT).read_text()
    )
    assert stored["verdict"] == "fail" and "1_weight" in stored["failing_parameters"]
    assert find_verification(client, experiment_id, "2-5-1:tanh") == (run_id, "fail")


def test_find_verification_by_tag(client, experiment_id) -> None:
    assert find_verification(client, experiment_id, "2-5-1:relu") is None
    run_id = record_verification(client, experiment_id, verify_backprop([2, 5, 1], "relu"))
    assert find_verification(client, experiment_id, "2-5-1:relu") == (run_id, "pass")
    assert find_verification(client, None, "2-5-1:relu") == (run_id, "pass")  # whole store
    assert find_verification(client, experiment_id, "2-5-1:tanh") is None
    assert find_verification(client, experiment_id, "2-5-5-1:relu") is None


def test_unfinished_runs_are_not_verdicts(client, experiment_id) -> None:
    client.create_run(
        experiment_id,
        tags={"mlpsweep.kind": "verification", "mlpsweep.architecture": "2-3-1:tanh", "mlpsweep.verified": "pass"},
    )  # still RUNNING: e.g. a worker that died mid-way
    assert find_verification(client, experiment_id, "2-3-1:tanh") is None


def test_known_verdicts_holds_the_newest_finished_verdict_of_each_architecture(tmp_path) -> None:
    client = make_client(f"sqlite:///{tmp_path}/mlflow.db")
    a = ensure_experiment(client, "a", artifact_location=(tmp_path / "a").as_uri())
    b = ensure_experiment(client, "b", artifact_location=(tmp_path / "b").as_uri())
    assert known_verdicts(client) == {}
    mutant = functools.partial(
        backward, steps=BackwardSteps(output_delta=lambda y_hat, y, loss: 2 * output_delta(y_hat, y, loss))
    )
    record_verification(client, a, verify_backprop([2, 5, 1], "tanh", backward=mutant))
    record_verification(client, b, verify_backprop([2, 5, 1], "tanh"))  # newer, other experiment: pass
    record_verification(client, a, verify_backprop([2, 4, 1], "relu", backward=mutant))
    client.create_run(b, tags={"mlpsweep.kind": "verification", "mlpsweep.architecture": "2-3-1:tanh",
                               "mlpsweep.verified": "pass"})  # still RUNNING: no verdict
    assert known_verdicts(client) == {"2-5-1:tanh": "pass", "2-4-1:relu": "fail"}


def test_verify_and_record_does_not_verify_twice(client, experiment_id) -> None:
    calls = []

    def counting_runner(sizes, activation, **kwargs) -> GradCheckReport:
        calls.append((tuple(sizes), activation, kwargs))
        return verify_backprop(sizes, activation, **kwargs)

    first = verify_and_record(client, experiment_id, [1, 10, 10, 1], "sigmoid", runner=counting_runner, seed=3)
    second = verify_and_record(client, experiment_id, [1, 10, 10, 1], "sigmoid", runner=counting_runner, seed=3)

    assert first.passed and not first.reused and first.report is not None
    assert second.reused and second.run_id == first.run_id and second.verdict == "pass"
    assert len(calls) == 1 and calls[0][2] == {"seed": 3}
    assert len(_runs(client, experiment_id)) == 1

    other = verify_and_record(client, experiment_id, [1, 10, 10, 1], "tanh", runner=counting_runner)
    forced = verify_and_record(client, experiment_id, [1, 10, 10, 1], "sigmoid", force=True)
    assert not other.reused and not forced.reused and forced.run_id != first.run_id
    assert len(_runs(client, experiment_id)) == 3


@pytest.mark.integration
def test_verification_job_on_ray_is_recorded(client, experiment_id) -> None:
    ray = pytest.importorskip("ray")
    import workers.verification
    from workers.verification import remote_verification, run_remote

    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        record = verify_and_record(client, experiment_id, [2, 8, 1], "relu", runner=run_remote, seed=1)
        assert record.passed and not record.reused
        assert record.report == GradCheckReport.from_dict(load_verification_report(client, record.run_id).to_dict())
        assert workers.verification.verification_task is remote_verification()
        again = ray.get(workers.verification.verification_task.remote([2, 8, 1], "relu", seed=1))
        assert again.passed and again.max_rel_err_autograd == record.report.max_rel_err_autograd
    finally:
        ray.shutdown()
