"""Early termination: intermediate validation MSE reaches Optuna during training and the pruner
stops hopeless trials; pruned trials are recorded as PRUNED in Optuna and MLflow."""
from __future__ import annotations

import optuna
import pytest
from mlflow import MlflowClient

from conftest import run_cli, write_spec, stored_study

pytestmark = pytest.mark.integration

SPEC = """\
name: prune
method: random
run_cap: 14
concurrency: 1
seed: 3
data: {dataset: seed-1d, validation_fraction: 0.2}
parameters:
  width: {min: 2, max: 12}
  activation: {values: [tanh, sigmoid]}
  optimizer: {value: sgd}
  lr: {distribution: log_uniform_values, min: 0.0001, max: 0.1}
  restarts: {value: 2}
  epochs: {value: 200}
  tol: {value: 0.0}
early_terminate: {type: median, min_iter: 20}
verify: record
"""


def test_median_pruner_prunes_with_intermediate_values(tmp_path):
    spec = write_spec(tmp_path, text=SPEC)
    run_cli("run", str(spec), "--quiet", "--ray-address", "none", cwd=tmp_path)
    study = stored_study(tmp_path, "prune")
    states = [t.state for t in study.trials]
    assert len(states) == 14
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "no trial was pruned"
    for t in study.trials:
        assert t.intermediate_values, f"trial {t.number} reported nothing"
        assert all(step % 10 == 0 for step in t.intermediate_values)  # report_every = 10 epochs
    for t in pruned:
        assert max(t.intermediate_values) < 200  # stopped before the end
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    exp = client.get_experiment_by_name("prune")
    runs = client.search_runs([exp.experiment_id], "tags.`mlpsweep.state` = 'PRUNED'")
    assert sorted(int(r.data.tags["mlpsweep.trial"]) for r in runs) == sorted(t.number for t in pruned)
    for run in runs:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "intermediate_value")]
        assert steps and max(steps) < 200
