"""The training engine rounds as a plain PyTorch loop does: each restart of a stack ends on the
numbers that :class:`models.MLP`, autograd and torch.optim give it trained alone, bit for bit."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import bits

from models import MLP, load_dataset
from models.activations import get_activation
from models.training import RMSPROP_ALPHA, RMSPROP_EPS, StackTrainer, TrainConfig, restart_seed


@pytest.fixture(scope="module")
def seed1d():
    return load_dataset("seed-1d", validation_fraction=0.2, seed=0)


def _optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    lr = config.learning_rate
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=config.momentum, nesterov=config.nesterov)
    return torch.optim.RMSprop(params, lr=lr, alpha=RMSPROP_ALPHA, eps=RMSPROP_EPS, momentum=config.momentum)


def _plain(config: TrainConfig, data, restart: int) -> tuple[list[float], float, float]:
    """One restart as a notebook trains it: its training MSE at each epoch's start (and at the
    end), then its final training and validation MSE; the engine's stopping rule (a blow-up to
    more than twice the last objective, or a non-finite one) ends it."""
    generator = torch.Generator().manual_seed(restart_seed(config.seed, restart))
    model = MLP(config.sizes, config.activation, generator=generator)
    opt = _optimizer(config, model.parameters())
    weights = [model.weight(l) for l in range(model.n_layers)]
    n = data.X_train.shape[0]

    def objective(X, y):
        mse = ((model(X) - y) ** 2).mean()
        return mse, (mse + config.weight_decay * sum((W**2).sum() for W in weights) if config.weight_decay else mse)

    curve, prev = [], math.inf
    for _ in range(config.max_epochs):
        mse, loss = objective(data.X_train, data.y_train)
        curve.append(mse.item())
        if not math.isfinite(loss.item()) or loss.item() > 2 * prev:
            return curve, math.nan, math.nan
        prev = loss.item()
        if config.batch_size is None:
            opt.zero_grad()
            loss.backward()
            opt.step()
            continue
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            opt.zero_grad()
            objective(data.X_train[idx], data.y_train[idx])[1].backward()
            opt.step()
    with torch.no_grad():
        train = ((model(data.X_train) - data.y_train) ** 2).mean().item()
        val = ((model(data.X_val) - data.y_val) ** 2).mean().item()
    return curve + [train], train, val


def _assert_like_plain(configs: list[TrainConfig], data) -> None:
    trainer = StackTrainer(configs, data)
    trainer.advance()
    finished = 0
    for config, result in zip(configs, trainer.results()):
        for r in range(config.restarts):
            curve, train, val = _plain(config, data, r)
            if math.isnan(train):  # stopped: the same epochs, the engine's curve ends where the blow-up showed
                assert result.status[r].startswith("diverged")
                assert bits(result.train_curves[r]) == bits(curve)
                continue
            finished += 1
            assert bits(result.train_curves[r]) == bits(curve), (config, r)
            assert bits([result.train_mse[r], result.val_mse[r]]) == bits([train, val]), (config, r)
    assert finished, "every restart diverged: the case checks nothing"


OPTIMIZERS = [("adam", 0.0, False), ("sgd", 0.9, False), ("sgd", 0.9, True), ("sgd", 0.0, False),
              ("rmsprop", 0.0, False), ("rmsprop", 0.5, False)]


@pytest.mark.parametrize("optimizer,momentum,nesterov", OPTIMIZERS)
@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("sizes", [(1, 1, 1), (1, 9, 1), (1, 30, 1), (1, 5, 5, 1), (1, 3, 3, 3, 1)])
def test_each_restart_ends_as_a_plain_torch_loop(seed1d, optimizer, momentum, nesterov, activation, sizes):
    # 3 restarts × 30 epochs of each recipe; widths 1 (one-column products everywhere) to 30,
    # depths 1 to 3; the output layer's products are one-column ones (torch's matrix-vector path)
    lr = (0.02 if optimizer == "adam" else 0.005) / (10 if activation == "relu" else 1)  # relu nets blow up sooner
    config = TrainConfig(sizes, activation, optimizer, lr=lr, momentum=momentum,
                         nesterov=nesterov, max_epochs=30, restarts=3, tol=0.0, seed=len(sizes) * 10 + sizes[1])
    _assert_like_plain([config], seed1d)


@pytest.mark.parametrize("optimizer,momentum", [("adam", 0.0), ("sgd", 0.9), ("rmsprop", 0.5)])
def test_co_batched_trials_each_end_as_their_plain_loop(seed1d, optimizer, momentum):
    # 4 trials of one shape in one stack (12 rows): their own learning rates, two without
    # momentum (sgd, rmsprop: torch.optim's other branch), one with an L2 penalty; then one with
    # mini-batches of 16 (its own stack: batch size is part of the shape)
    lrs = [0.002, 0.01, 0.05, 0.2]
    configs = [TrainConfig((1, 12, 12, 1), "tanh", optimizer, lr=lr, momentum=momentum * (i % 2), max_epochs=40, restarts=3,
                           tol=0.0, weight_decay=1e-3 if i == 1 else 0.0, seed=90 + i) for i, lr in enumerate(lrs)]
    _assert_like_plain(configs, seed1d)
    _assert_like_plain([TrainConfig((1, 12, 12, 1), "sigmoid", optimizer, lr=0.01, momentum=momentum, batch_size=16,
                                    max_epochs=10, restarts=2, tol=0.0, seed=5)], seed1d)


@pytest.mark.parametrize("name", ["sigmoid", "tanh", "relu"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activation_backward_is_autograd_s_own(name, dtype):
    # every element of odd-sized tensors (a vector body and a scalar tail), beyond the clamps of
    # sigmoid (-88 / -709) and tanh (±10 / ±20) too, and exactly at relu's kink
    act = get_activation(name)
    generator = torch.Generator().manual_seed(3)
    for shape, scale in [((7, 13), 1.0), ((3, 80, 9), 6.0), ((2, 41), 40.0), ((5, 33), 1000.0)]:
        z = (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype)
        z.view(-1)[:3] = torch.tensor([0.0, -0.0, 10.0])
        grad = torch.randn(*shape, generator=generator, dtype=torch.float64).to(dtype)
        leaf = z.clone().requires_grad_()
        a = act.fn(leaf)
        (expected,) = torch.autograd.grad(a, leaf, grad)
        ours, saved = act.forward_saving(z)
        assert torch.equal(ours, a.detach())
        assert torch.equal(act.backward(grad, saved), expected), (shape, scale)
        assert not act.backward(grad, saved).isnan().any()  # no 0 · inf where e^-z would overflow
