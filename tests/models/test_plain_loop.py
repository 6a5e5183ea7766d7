"""The training engine rounds as a plain PyTorch loop does: each restart of a stack ends on the
numbers that :class:`models.MLP`, autograd and torch.optim give it trained alone, bit for bit."""
from __future__ import annotations

import math

import pytest
import torch
from conftest import bits

from models import load_dataset
from models.activations import get_activation
from models.reference import plain_restart
from models.training import StackTrainer, TrainConfig


@pytest.fixture(scope="module")
def seed1d():
    return load_dataset("seed-1d", validation_fraction=0.2, seed=0)


def _assert_like_plain(configs: list[TrainConfig], data) -> None:
    trainer = StackTrainer(configs, data)
    trainer.advance()
    finished = 0
    for config, result in zip(configs, trainer.results()):
        for r in range(config.restarts):
            plain = plain_restart(config, data, r)
            assert bits(result.train_curves[r]) == bits(plain.curve), (config, r)
            if math.isnan(plain.train_mse):  # stopped on a blow-up: the same epochs, the same curve
                assert result.status[r].startswith("diverged")
                continue
            finished += 1
            assert bits([result.train_mse[r], result.val_mse[r]]) == bits([plain.train_mse, plain.val_mse]), (config, r)
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
