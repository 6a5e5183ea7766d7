"""The verifier: passes the correct backward everywhere, and catches planted bugs by name."""
from __future__ import annotations

import copy
import dataclasses
import functools
import json
import math

import pytest
import torch

from models.activations import ACTIVATIONS
from models.backprop import (
    DEFAULT_STEPS,
    BackwardResult,
    backward,
    bias_grad,
    input_grad,
    layer_delta,
    output_delta,
    weight_grad,
)
from models.mlp import MLP
from models.verify import GradCheckReport, verify_backprop

HIDDEN = {"ones": (1, 1, 1, 1), "mixed": (4, 3, 5, 2)}
ALL_TENSORS = {"0_weight", "0_bias", "1_weight", "1_bias", "2_weight", "2_bias", "3_weight", "3_bias", "input"}


def _mutant(**steps) -> functools.partial:
    """The project's backward pass with some steps replaced."""
    return functools.partial(backward, steps=dataclasses.replace(DEFAULT_STEPS, **steps))


# --- the correct implementation passes ----------------------------------------------------------


@pytest.mark.parametrize("samples", [None, 5], ids=["single", "batch"])
@pytest.mark.parametrize("widths", list(HIDDEN))
@pytest.mark.parametrize("depth", [1, 2, 3, 4])
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_correct_backprop_passes(activation: str, depth: int, widths: str, samples: int | None) -> None:
    sizes = [2, *HIDDEN[widths][:depth], 3]
    report = verify_backprop(sizes, activation, seed=depth, samples=samples)
    assert report.passed, report.format_table()
    assert report.failing_parameters == ()
    assert report.max_rel_err_autograd < 1e-10  # float64 round-off, not "close enough"
    assert report.max_rel_err_fd < report.tolerances.fd_rtol
    assert report.update_check.passed and report.update_check.max_abs_err < 1e-12
    assert [t.name for t in report.tensors] == [n for l in range(depth + 1) for n in (f"{l}_weight", f"{l}_bias")] + [
        "input"
    ]


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_sum_of_squares_loss_and_linear_network(activation: str) -> None:
    assert verify_backprop([3, 4, 2], activation, loss="sse").passed
    assert verify_backprop([3, 2], activation).passed  # no hidden layer at all


@pytest.mark.parametrize("activation", [a for a, act in ACTIVATIONS.items() if act.kinks])
def test_kinks_give_no_false_failures(activation: str) -> None:
    for seed in range(10):
        report = verify_backprop([3, 30, 30, 2], activation, seed=seed, samples=16)
        assert report.passed, report.format_table()
        guard = report.kink_guard
        assert guard.min_distance is not None and guard.min_distance >= guard.margin
        assert "from a kink" in guard.note and f"{guard.margin:g}" in guard.note


def test_a_wide_margin_forces_shifts_and_is_recorded() -> None:
    report = verify_backprop([2, 20, 20, 1], "relu", kink_margin=0.3)
    assert report.passed
    assert report.kink_guard.units_shifted > 0 and report.kink_guard.min_distance >= 0.3
    assert report.to_dict()["kink_guard"]["margin"] == 0.3


def test_smooth_activation_needs_no_guard() -> None:
    guard = verify_backprop([2, 3, 1], "tanh").kink_guard
    assert guard.kinks == () and guard.min_distance is None and guard.units_shifted == 0


def test_large_tensors_are_sampled_and_small_ones_checked_fully() -> None:
    report = verify_backprop([1, 100, 100, 100, 1], "tanh", max_fd_coords=64)
    assert report.passed
    by_name = {t.name: t for t in report.tensors}
    assert by_name["1_weight"].fd_coords_checked == 64 and by_name["1_weight"].numel == 10_000
    assert by_name["0_bias"].fd_coords_checked == 64  # 100 entries > 64: sampled too
    assert by_name["input"].fd_coords_checked == 8 == by_name["input"].numel
    full = verify_backprop([2, 10, 10, 1], "sigmoid", max_fd_coords=None)
    assert all(t.fd_coords_checked == t.numel for t in full.tensors)


def test_same_seed_same_report() -> None:
    a = verify_backprop([3, 40, 40, 1], "elu", seed=3, max_fd_coords=50).to_dict()
    b = verify_backprop([3, 40, 40, 1], "elu", seed=3, max_fd_coords=50).to_dict()
    a.pop("seconds"), b.pop("seconds")
    assert a == b


def test_functional_sgd_reference_equals_torch_optim_sgd() -> None:
    # the verifier drives torch.optim.sgd.sgd (SGD.step's kernel) to avoid importing torch._dynamo
    from torch.optim.sgd import sgd

    model = MLP([2, 5, 1], "tanh", generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    twin = copy.deepcopy(model)
    X, y = torch.randn(4, 2, dtype=torch.float64), torch.randn(4, 1, dtype=torch.float64)
    for net in (model, twin):
        ((net(X) - y) ** 2).mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    params = list(twin.parameters())
    with torch.no_grad():
        sgd(params, [p.grad for p in params], [None] * len(params), weight_decay=0.0, momentum=0.0, lr=0.1,
            dampening=0.0, nesterov=False, maximize=False)  # fmt: skip
    for p, q in zip(model.parameters(), params):
        assert torch.equal(p, q)


# --- the report ---------------------------------------------------------------------------------


def test_report_is_json_and_round_trips() -> None:
    report = verify_backprop([2, 4, 1], "relu")
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["architecture"] == "2-4-1:relu" and data["verdict"] == "pass"
    assert data["tolerances"] == {"atol": 1e-8, "rtol": 1e-6, "eps": 1e-6, "fd_atol": 1e-6, "fd_rtol": 1e-4}
    assert GradCheckReport.from_dict(data) == report


def test_table_names_every_tensor_and_the_verdict() -> None:
    table = verify_backprop([2, 4, 1], "sigmoid").format_table()
    for name in ("0_weight", "0_bias", "1_weight", "1_bias", "input", "update", "tolerance", "PASS"):
        assert name in table


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"loss": "mae"}, "loss: unknown"),
        ({"eps": 0.0}, "eps: must be a positive number"),
        ({"samples": 0}, "samples: must be a positive integer"),
        ({"max_fd_coords": 0}, "max_fd_coords"),
        ({"kink_margin": 1e-6}, "kink_margin: must be >= 100 [*] eps"),
    ],
)
def test_bad_settings_are_rejected(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        verify_backprop([2, 3, 1], "tanh", **kwargs)


def test_bad_architecture_is_rejected() -> None:
    with pytest.raises(ValueError, match="activation: unknown"):
        verify_backprop([2, 3, 1], "swish")
    with pytest.raises(ValueError, match="sizes"):
        verify_backprop([2, 0, 1], "tanh")


# --- planted bugs are caught and named ----------------------------------------------------------

SIZES = [3, 5, 4, 6, 2]  # every weight non-square; N=8 matches no width


def _check(report: GradCheckReport, guilty: set[str], innocent: set[str] = frozenset()) -> None:
    assert not report.passed
    failing = set(report.failing_parameters)
    assert guilty <= failing, report.format_table()
    assert not (innocent & failing), report.format_table()
    assert "FAIL" in report.format_table()
    json.dumps(report.to_dict(), allow_nan=False)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_doubled_loss_derivative_constant(activation: str) -> None:
    def doubled(y_hat, y, loss):
        return 2.0 * output_delta(y_hat, y, loss)  # 4(ŷ−y)/(N·D): the course's classic slip

    report = verify_backprop(SIZES, activation, backward=_mutant(output_delta=doubled))
    _check(report, ALL_TENSORS)
    for t in report.tensors:  # off by exactly 2x: the error is the gradient itself
        assert math.isclose(t.max_abs_err_autograd, t.max_abs_grad, rel_tol=1e-9)
    assert not report.update_check.passed


@pytest.mark.parametrize("activation", ["sigmoid", "tanh", "relu", "gelu", "softplus"])
def test_derivative_left_out_in_one_layer(activation: str) -> None:
    def no_dphi_in_layer_1(l, delta_next, W_next, z, act):
        if l == 1:
            return delta_next @ W_next.T
        return layer_delta(l, delta_next, W_next, z, act)

    report = verify_backprop(SIZES, activation, backward=_mutant(layer_delta=no_dphi_in_layer_1))
    _check(report, {"1_weight", "1_bias", "0_weight", "0_bias", "input"}, {"2_weight", "2_bias", "3_weight", "3_bias"})


def test_weight_not_transposed_raises_and_becomes_a_named_failure() -> None:
    def untransposed_in_layer_1(l, delta_next, W_next, z, act):
        if l == 1:
            return (delta_next @ W_next) * act.derivative(z)  # (N, 6) @ (4, 6): shape error
        return layer_delta(l, delta_next, W_next, z, act)

    report = verify_backprop(SIZES, "tanh", backward=_mutant(layer_delta=untransposed_in_layer_1))
    _check(report, {"1_weight"}, {"2_weight", "2_bias", "3_weight", "3_bias"})
    by_name = {t.name: t for t in report.tensors}
    assert "backward raised while computing this gradient" in by_name["1_weight"].reason
    assert by_name["0_weight"].reason == "not computed: backward raised while computing 1_weight"
    assert report.backward_error and "1_weight" in report.backward_error


def test_weight_gradient_not_transposed() -> None:
    def transposed(l, a_prev, delta):
        return delta.T @ a_prev  # (fan_out, fan_in)

    report = verify_backprop(SIZES, "sigmoid", backward=_mutant(weight_grad=transposed))
    _check(report, {"0_weight", "1_weight", "2_weight", "3_weight"}, {"0_bias", "1_bias", "2_bias", "3_bias", "input"})
    assert "shape" in {t.name: t for t in report.tensors}["2_weight"].reason


def test_square_weight_not_transposed_is_wrong_not_an_error() -> None:
    def untransposed(l, delta_next, W_next, z, act):
        if l == 1:
            return (delta_next @ W_next) * act.derivative(z)  # W_2 is (4, 4)
        return layer_delta(l, delta_next, W_next, z, act)

    report = verify_backprop([3, 4, 4, 4, 2], "tanh", backward=_mutant(layer_delta=untransposed))
    # δ_1 uses W_2 untransposed (square): layers 1 and 0 get wrong values, not a crash
    _check(report, {"1_weight", "1_bias", "0_weight", "0_bias"}, {"3_weight", "3_bias"})
    assert report.backward_error is None


@pytest.mark.parametrize("wrong", ["rows", "keepdim"])
def test_bias_gradient_summed_over_the_wrong_axis(wrong: str) -> None:
    def bad_bias(l, delta):
        if l != 1:
            return bias_grad(l, delta)
        return delta.sum(dim=1) if wrong == "rows" else delta.sum(dim=0, keepdim=True)

    report = verify_backprop(SIZES, "sigmoid", backward=_mutant(bias_grad=bad_bias))
    _check(report, {"1_bias"}, ALL_TENSORS - {"1_bias"})
    assert "shape" in {t.name: t for t in report.tensors}["1_bias"].reason
    assert not report.update_check.passed and "1_bias" in report.update_check.reason


def test_bias_gradient_wrong_axis_when_shapes_happen_to_match() -> None:
    def bad_bias(l, delta):
        return delta.sum(dim=1) if l == 1 else bias_grad(l, delta)

    report = verify_backprop([3, 5, 8, 2], "tanh", samples=8, backward=_mutant(bias_grad=bad_bias))
    _check(report, {"1_bias"}, {"0_weight", "0_bias", "1_weight", "2_weight", "2_bias", "input"})


def test_delta_taken_from_the_wrong_layer() -> None:
    def wrong_delta_for_layer_1(cache, params, y, activation, loss):
        # a correct δ chain, but layer 1's gradients use δ_2 (the layer above) instead of δ_1
        L = cache.n_layers
        deltas = {L - 1: output_delta(cache.prediction, y, loss)}
        for l in range(L - 2, -1, -1):
            deltas[l] = layer_delta(l, deltas[l + 1], params[f"{l + 1}_weight"], cache.z[l], activation)
        grads = {}
        for l in range(L):
            d = deltas[l + 1] if l == 1 else deltas[l]
            grads[f"{l}_weight"] = weight_grad(l, cache.a[l], d)
            grads[f"{l}_bias"] = bias_grad(l, d)
        return BackwardResult(grads, input_grad(deltas[0], params["0_weight"]))

    report = verify_backprop([3, 4, 4, 4, 2], "sigmoid", backward=wrong_delta_for_layer_1)
    _check(report, {"1_weight", "1_bias"}, {"0_weight", "0_bias", "2_weight", "2_bias", "3_weight", "3_bias", "input"})


def test_missing_and_nan_gradients_fail_without_crashing() -> None:
    def nan_in_layer_0(l, a_prev, delta):
        g = weight_grad(l, a_prev, delta)
        return torch.full_like(g, math.nan) if l == 0 else g

    report = verify_backprop(SIZES, "tanh", backward=_mutant(weight_grad=nan_in_layer_0))
    _check(report, {"0_weight"}, ALL_TENSORS - {"0_weight"})
    assert math.isnan(report.max_rel_err_autograd)

    def forgets_a_bias(cache, params, y, activation, loss):
        grads, dX = backward(cache, params, y, activation, loss)
        del grads["2_bias"]
        return grads, dX

    report = verify_backprop(SIZES, "tanh", backward=forgets_a_bias)
    _check(report, {"2_bias"}, ALL_TENSORS - {"2_bias"})


def test_a_backward_that_raises_outside_the_steps_fails_every_tensor() -> None:
    def broken(cache, params, y, activation, loss):
        raise RuntimeError("boom")

    report = verify_backprop([2, 3, 1], "tanh", backward=broken)
    assert not report.passed
    assert set(report.failing_parameters) == {"0_weight", "0_bias", "1_weight", "1_bias", "input"}
    assert "boom" in (report.backward_error or "") and all("boom" in t.reason for t in report.tensors)
