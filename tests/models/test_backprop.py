"""The hand-written backward pass against autograd, written independently of the verifier."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from models.activations import ACTIVATIONS
from models.backprop import (
    BackwardError,
    BackwardSteps,
    backward,
    forward_cache,
    manual_gradients,
    output_delta,
    parameters_of,
)
from models.mlp import MLP

DTYPE = torch.float64
HIDDEN = {"ones": (1, 1, 1, 1), "mixed": (4, 3, 5, 2)}


def _sizes(depth: int, widths: str) -> list[int]:
    return [2, *HIDDEN[widths][:depth], 3]


def _autograd(model: MLP, X: torch.Tensor, y: torch.Tensor, loss: str):
    X = X.clone().requires_grad_(True)
    model.zero_grad()
    r = model(X) - y
    value = (r**2).mean() if loss == "mse" else (r**2).sum()
    value.backward()
    return value.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}, X.grad


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs().clamp(min=1e-12)).max())


@pytest.mark.parametrize("loss", ["mse", "sse"])
@pytest.mark.parametrize("single", [False, True], ids=["batch", "single"])
@pytest.mark.parametrize("widths", list(HIDDEN))
@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_matches_autograd(activation: str, depth: int, widths: str, single: bool, loss: str) -> None:
    g = torch.Generator().manual_seed(depth * 7 + len(activation))
    sizes = _sizes(depth, widths)
    model = MLP(sizes, activation, generator=g, dtype=DTYPE)
    X = torch.randn(sizes[0] if single else (6, sizes[0]), generator=g, dtype=DTYPE)
    y = torch.randn(sizes[-1] if single else (6, sizes[-1]), generator=g, dtype=DTYPE)

    got = manual_gradients(model, X, y, loss=loss)
    value, grads, dX = _autograd(model, X, y, loss)

    assert list(got.grads) == [n for n, _ in model.named_parameters()]
    assert got.loss.shape == () and _rel(got.loss, value) < 1e-12
    assert got.dX.shape == X.shape and _rel(got.dX, dX) < 1e-10
    for name, grad in grads.items():
        assert got.grads[name].shape == grad.shape
        assert _rel(got.grads[name], grad) < 1e-10, name


def test_uses_no_autograd() -> None:
    model = MLP([2, 4, 1], "tanh", generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    X = torch.randn(5, 2, dtype=DTYPE, requires_grad=True)
    got = manual_gradients(model, X, torch.zeros(5, 1, dtype=DTYPE))
    tensors = [got.loss, got.dX, *got.grads.values()]
    assert all(t.grad_fn is None and not t.requires_grad for t in tensors)
    assert all(p.grad is None for p in model.parameters()) and X.grad is None


def test_mse_output_delta_is_mean_over_samples_and_outputs() -> None:
    y_hat = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=DTYPE)
    y = torch.zeros_like(y_hat)
    assert torch.equal(output_delta(y_hat, y, "mse"), 2 * y_hat / 6)
    assert torch.equal(output_delta(y_hat, y, "sse"), 2 * y_hat)


def test_by_hand_one_neuron() -> None:
    # y_hat = w*x + b = 2*3 + 1 = 7, y = 4: L = 9, dL/dy_hat = 6, dw = 6*3, db = 6, dx = 6*2
    model = MLP([1, 1], "sigmoid", dtype=DTYPE)
    with torch.no_grad():
        model.weight(0).fill_(2.0)
        model.bias(0).fill_(1.0)
    got = manual_gradients(model, torch.tensor([3.0], dtype=DTYPE), torch.tensor([4.0], dtype=DTYPE))
    assert float(got.loss) == 9.0
    assert float(got.grads["0_weight"]) == 18.0 and float(got.grads["0_bias"]) == 6.0
    assert float(got.dX) == 12.0


def test_forward_cache_keeps_every_z_and_a() -> None:
    model = MLP([2, 4, 3, 1], "relu", generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    X = torch.randn(5, 2, dtype=DTYPE)
    cache = forward_cache(model, X)
    assert [tuple(z.shape) for z in cache.z] == [(5, 4), (5, 3), (5, 1)]
    assert [tuple(a.shape) for a in cache.a] == [(5, 2), (5, 4), (5, 3), (5, 1)]
    assert torch.equal(cache.a[1], torch.relu(cache.z[0]))
    assert torch.equal(cache.a[-1], cache.z[-1])  # linear output
    torch.testing.assert_close(cache.prediction, model(X).detach(), rtol=0, atol=1e-15)
    params = parameters_of(model)
    assert torch.equal(forward_cache(params, X, "relu").prediction, cache.prediction)
    assert forward_cache(model, X[0]).single


@pytest.mark.parametrize(
    "X_shape, y_shape, loss, match",
    [
        ((5, 3), (5, 1), "mse", "X: expected"),
        ((5, 2), (5,), "mse", "y: expected"),
        ((2,), (1, 1), "mse", "y: expected"),
        ((5, 2), (5, 1), "mae", "loss: unknown 'mae'"),
    ],
)
def test_bad_input_is_rejected(X_shape, y_shape, loss, match) -> None:
    model = MLP([2, 3, 1], "tanh", dtype=DTYPE)
    with pytest.raises(ValueError, match=match):
        manual_gradients(model, torch.zeros(X_shape, dtype=DTYPE), torch.zeros(y_shape, dtype=DTYPE), loss)


def test_a_failing_step_is_blamed_on_the_gradient_it_was_computing() -> None:
    model = MLP([2, 4, 3, 1], "tanh", generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    params = parameters_of(model)
    cache = forward_cache(model, torch.randn(5, 2, dtype=DTYPE))

    def untransposed(l, delta_next, W_next, z, activation):
        return (delta_next @ W_next) * activation.derivative(z)  # shape error: W_next is not square

    steps = BackwardSteps(layer_delta=untransposed)
    with pytest.raises(BackwardError) as info:
        backward(cache, params, torch.zeros(5, 1, dtype=DTYPE), model.activation, "mse", steps=steps)
    # the output layer's gradients were finished; the hidden layer below it is where it broke
    assert info.value.parameter == "1_weight"
    assert set(info.value.partial) == {"2_weight", "2_bias"}


def test_core_imports_without_ray_or_mlflow() -> None:
    code = (
        "import sys; sys.modules['ray'] = None; sys.modules['mlflow'] = None\n"
        "import models.backprop, models.verify, workers.verification\n"
        "assert 'torch._dynamo' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
