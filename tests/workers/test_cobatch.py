"""Co-batched trials: several same-shape trials in one job give each trial exactly the result it
gets alone (per-member learning rates, momenta and optimizer states), to the last bit — on the CPU,
and on a CUDA GPU where this runs on a machine with one (there the device is a parameter more)."""
from __future__ import annotations

import pytest
import torch
from conftest import bits

from models.training import TrainConfig
from workers.backend import Finished, WorkerState
from workers.records import DataConfig, TrialConfig


NETS = {  # (dataset, sizes, activation): one output and 80 rows; two outputs, 40 rows and sigmoid
    "1d-tanh": ("seed-1d", (1, 6, 6, 1), "tanh"),
    "iris-sigmoid": ("iris-petal", (2, 9, 2), "sigmoid"),
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])  # no GPU: not collected, not skipped


def _trial(number: int, lr: float, momentum: float = 0.9, optimizer: str = "sgd", restarts: int = 3,
           net: str = "1d-tanh", device: str = "cpu") -> TrialConfig:
    dataset, sizes, activation = NETS[net]
    train = TrainConfig(sizes, activation, optimizer, lr=lr, momentum=momentum if optimizer != "adam" else 0.0,
                        max_epochs=80, restarts=restarts, tol=0.0, seed=1000 + number)
    return TrialConfig(number=number, params={"lr": lr}, train=train, data=DataConfig(dataset), device=device)


def _results(state: WorkerState, job: int, configs):
    update = state.start(job, configs)
    assert update.done
    return {e.result.number: e.result for e in update.events if isinstance(e, Finished)}


# one row: the stack's one-row kernels must round as the batched ones; 13: alone under 16 rows, together
# over 64 (on an H200 a per-row mean rounds otherwise from 16 rows on, a one-column product from 64)
@pytest.mark.parametrize("restarts", [3, 1, 13])
@pytest.mark.parametrize("optimizer", ["sgd", "adam", "rmsprop"])
@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("device", DEVICES)
def test_cobatched_trials_equal_trials_alone(optimizer, restarts, net, device):
    # 5 trials: each sits at another offset of the stack than alone (odd ones too)
    configs = [_trial(n, lr, optimizer=optimizer, restarts=restarts, net=net, device=device)
               for n, lr in enumerate([0.003, 0.03, 0.1, 50.0, 0.01])]
    state = WorkerState("test")
    together = _results(state, 0, configs)
    assert set(together) == {0, 1, 2, 3, 4}
    for i, config in enumerate(configs):
        alone = _results(state, 10 + i, [config])[config.number]
        mine = together[config.number]
        assert mine.state == alone.state and mine.restart_status == alone.restart_status
        for field in ("restart_train_mse", "restart_val_mse", "train_curve", "val_curve"):
            assert bits(getattr(mine, field)) == bits(getattr(alone, field)), (config.number, field)
        assert mine.extra.get("cobatched") == 5


def test_cobatch_is_a_spec_key():
    from sweeps.spec import SpecError, parse_spec

    spec = parse_spec("name: x\ndata: {dataset: seed-1d}\nparameters: {}\ncobatch: 8\n")
    assert spec.cobatch == 8
    with pytest.raises(SpecError, match="cobatch"):
        parse_spec("name: x\ndata: {dataset: seed-1d}\nparameters: {}\ncobatch: 0\n")


@pytest.mark.parametrize("every", [20, 30])  # dividing the 80 epochs, and not
def test_reporting_to_a_pruner_every_k_epochs_changes_no_number(every):
    from dataclasses import replace

    from workers.trial import DatasetCache, TrialResult, TrialSession, run_trial

    configs = [replace(_trial(n, lr, optimizer="adam"), report_every=every) for n, lr in enumerate([0.003, 0.01, 0.03, 0.1])]
    data = DatasetCache().get(configs[0].data)
    session = TrialSession(configs, data)
    finished: dict[int, TrialResult] = {}
    steps = []
    while len(finished) < len(configs):
        for out in session.advance():
            if isinstance(out, TrialResult):
                finished[out.number] = out
            else:
                steps.append(out[1])
    assert steps and max(steps) < 80 and all(s % every == 0 for s in steps)
    for config in configs:
        alone = run_trial(config, data)
        mine = finished[config.number]
        assert len(mine.train_curve) == 81 and mine.state == alone.state == "COMPLETE"
        for field in ("restart_train_mse", "restart_val_mse", "restart_status", "train_curve", "val_curve"):
            assert bits(getattr(mine, field)) == bits(getattr(alone, field)), (config.number, field)


@pytest.mark.parametrize("every", [1, 20, 30])
def test_an_intermediate_value_at_step_e_is_the_curve_at_step_e(every):
    """What the pruner (and optuna-dashboard) sees at step e is the MSE after e updates: the
    MLflow curve's point e, not the one before it."""
    from dataclasses import replace

    from workers.trial import DatasetCache, TrialResult, TrialSession

    configs = [replace(_trial(n, lr, optimizer="adam", restarts=1), report_every=every)
               for n, lr in enumerate([0.003, 0.03])]
    session = TrialSession(configs, DatasetCache().get(configs[0].data))
    finished: dict[int, TrialResult] = {}
    while len(finished) < len(configs):
        finished.update((out.number, out) for out in session.advance() if isinstance(out, TrialResult))
    for result in finished.values():
        steps = [step for step, _ in result.intermediate]
        assert steps == list(range(every, 80, every))
        assert bits([v for _, v in result.intermediate]) == bits([result.val_curve[s] for s in steps])
