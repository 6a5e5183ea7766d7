"""Trials that reach the writer together (a co-batched job's) are written in one transaction;
one the store refuses costs only its own run: the rest are then written one by one."""
from __future__ import annotations

import torch
from mlflow import MlflowClient

from models.training import TrainConfig
from tracking.writer import RunWriter
from workers.records import Checkpoint, DataConfig, TrialConfig, TrialResult


def _item(number: int, params: dict | None = None, share: int = 1) -> tuple[TrialConfig, TrialResult, str, str]:
    config = TrialConfig(number=number, params=params or {"width": 4, "lr": 0.01 * (number + 1)},
                         train=TrainConfig(sizes=(1, 4, 1), activation="tanh", max_epochs=5, restarts=1),
                         data=DataConfig("seed-1d"))
    state = {"0_weight": torch.full((1, 4), float(number)), "0_bias": torch.zeros(4),
             "1_weight": torch.zeros(4, 1), "1_bias": torch.zeros(1)}
    curve = tuple(1.0 / (e + 1 + number) for e in range(5))
    result = TrialResult(number=number, state="COMPLETE", train_mse=curve[-1], val_mse=curve[-1], test_mse=None,
                         best_restart=0, restart_train_mse=(curve[-1],), train_curve=curve, val_curve=curve,
                         checkpoint=Checkpoint.of(state, (1, 4, 1), "tanh"), node="n1",
                         extra={"cobatched": share} if share > 1 else {})
    return config, result, "pass", "1-4-1:tanh"


def _writer(tmp_path) -> RunWriter:
    writer = RunWriter(f"sqlite:///{tmp_path}/mlflow.db", "batch", None, retry_seconds=1.0)
    writer.parent_run_id, writer.study_uid = "p" * 32, "uid"
    return writer


def _trial_runs(writer: RunWriter) -> dict[int, object]:
    runs = MlflowClient(writer.client.tracking_uri).search_runs([writer.experiment_id], max_results=100)
    return {int(r.data.tags["mlpsweep.trial"]): r for r in runs}


def test_trials_together_are_written_whole_each_with_its_checkpoint(tmp_path):
    writer = _writer(tmp_path)
    assert writer.trials([_item(n, share=3) for n in range(3)]) == [None, None, None]
    runs = _trial_runs(writer)
    assert sorted(runs) == [0, 1, 2]
    digests = {r.data.tags["mlpsweep.checkpoint_sha256"] for r in runs.values()}
    assert len(digests) == 3  # each its own checkpoint, its digest in its own tags
    for number, run in runs.items():
        assert run.data.params["lr"] == str(0.01 * (number + 1)) and run.data.metrics["train_mse"] > 0
        assert "mlpsweep.weights_sha256" in run.data.tags and run.info.status == "FINISHED"
        assert run.data.tags["mlpsweep.cobatched"] == "3"  # its train_seconds is a third of the job's


def test_a_refused_trial_fails_alone_and_nothing_is_written_twice(tmp_path):
    writer = _writer(tmp_path)
    errors = writer.trials([_item(0), _item(1, {"bad key!": 1}), _item(2)])
    assert errors[0] is None and errors[2] is None
    assert errors[1] is not None and "Invalid" in errors[1]
    runs = _trial_runs(writer)
    assert sorted(runs) == [0, 2]  # one run each: the one-by-one writes looked for them first
    assert "mlpsweep.cobatched" not in runs[0].data.tags  # trained alone
