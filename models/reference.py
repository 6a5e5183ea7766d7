"""One restart trained the way a notebook would: :class:`models.MLP`, autograd and torch.optim.

The reference that the training engine equals on the CPU, to the last bit
(``tests/models/test_plain_loop.py``), and the "plain loop" that ``bench/sweep.py`` times.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from models.config import TrainConfig, restart_seed
from models.data import Dataset
from models.mlp import MLP
from models.training import RMSPROP_ALPHA, RMSPROP_EPS

__all__ = ["PlainRun", "plain_restart"]


@dataclass(frozen=True)
class PlainRun:
    """A restart's training MSE at each epoch's start (and at the end, if it finished), then its
    final training and validation MSE (NaN where it stopped on a blow-up)."""

    curve: list[float]
    train_mse: float
    val_mse: float


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    lr = config.learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov)
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, alpha=RMSPROP_ALPHA, eps=RMSPROP_EPS, momentum=config.momentum)
    raise ValueError(f"optimizer: the plain loop takes adam, sgd or rmsprop, not {config.optimizer!r}")


def plain_restart(config: TrainConfig, data: Dataset, restart: int) -> PlainRun:
    """Restart ``restart`` of ``config`` alone, with the engine's stopping rule (a non-finite
    objective, or one more than twice the last, judged on the full training set at each epoch's
    start) and, with a ``batch_size``, its mini-batches."""
    generator = torch.Generator().manual_seed(restart_seed(config.seed, restart))
    model = MLP(config.sizes, config.activation, generator=generator)
    opt = _optimizer(config, model.parameters())
    weights = [model.weight(l) for l in range(model.n_layers)]
    n = data.X_train.shape[0]
    batch = int(config.batch_size or n)
    full_batch = batch >= n

    def objective(X, y):
        mse = ((model(X) - y) ** 2).mean()
        return mse, (mse + config.weight_decay * sum((W**2).sum() for W in weights) if config.weight_decay else mse)

    curve, prev = [], math.inf
    for _ in range(config.max_epochs):
        with torch.set_grad_enabled(full_batch):
            mse, loss = objective(data.X_train, data.y_train)
        curve.append(mse.item())
        value = loss.item()
        if not math.isfinite(value) or value > 2 * prev:
            return PlainRun(curve, math.nan, math.nan)
        prev = value
        if full_batch:
            opt.zero_grad()
            loss.backward()
            opt.step()
            continue
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch):
            idx = order[start : start + batch]
            opt.zero_grad()
            objective(data.X_train[idx], data.y_train[idx])[1].backward()
            opt.step()
    with torch.no_grad():
        train = ((model(data.X_train) - data.y_train) ** 2).mean().item()
        val = ((model(data.X_val) - data.y_val) ** 2).mean().item()
    return PlainRun(curve + [train], train, val)
