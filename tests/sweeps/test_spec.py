"""The sweep spec: examples load, defaults fill in, every rule speaks with its path."""
from __future__ import annotations

import argparse
import json
import math
import textwrap
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import fresh_python
from sweeps import cmd_validate
from sweeps.space import Categorical, Constant, FloatRange, IntRange, grid_size, grid_values, is_discrete
from sweeps.spec import (
    ACTIVATION_NAMES,
    KNOB_DEFAULTS,
    KNOBS,
    OPTIMIZERS,
    SpecError,
    SweepSpec,
    hidden_widths,
    is_active,
    load_spec,
    parse_spec,
    spec_digest,
    spec_from_dict,
    spec_to_dict,
    spec_to_yaml,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "sweeps" / "examples").glob("*.yaml"))

ISSUE_EXAMPLE = """\
name: seed-1d-demo                 # study, MLflow experiment and parent-run name
method: tpe                        # tpe (alias bayes) | random | grid | cmaes | gp | qmc
metric: {name: val_mse, goal: minimize}
run_cap: 64                        # number of trials
concurrency: 2                     # trials at once
seed: 0
data: {dataset: seed-1d, validation_fraction: 0.2}
parameters:
  width: {min: 1, max: 100, distribution: q_log_uniform_values, q: 1}
  depth: {values: [1, 2, 3]}
  activation: {values: [sigmoid, tanh, relu]}
  optimizer: {values: [adam, sgd, bfgs]}
  lr: {distribution: log_uniform_values, min: 1.0e-3, max: 1.0e-1}
  restarts: {value: 10}
  epochs: {value: 500}
early_terminate: {type: hyperband, min_iter: 50}   # optional: median | sha | hyperband
verify: gate                       # gate (default) | record | off
"""


def minimal(**overrides: object) -> dict:
    spec: dict = {"name": "t", "data": {"dataset": "seed-1d"}, "parameters": {}}
    spec.update(overrides)
    return spec


def problems_of(data: object) -> list[str]:
    with pytest.raises(SpecError) as info:
        if isinstance(data, (str, bytes)):
            parse_spec(data)
        else:
            spec_from_dict(data)
    return info.value.problems


# ---------------------------------------------------------------------------- good specs


def test_examples_exist() -> None:
    names = {p.name for p in EXAMPLES}
    assert {"seed-1d.yaml", "seed-2d-quadratic.yaml", "seed-rotation.yaml", "iris-petal.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_validates(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem
    assert spec.data.dataset == path.stem  # each example sweeps its own built-in dataset
    assert spec.searched(), "an example should search something"


def test_seed_1d_example_fits_the_demo_budget() -> None:
    spec = load_spec(ROOT / "sweeps" / "examples" / "seed-1d.yaml")
    assert 16 <= spec.run_cap <= 24 and spec.concurrency == 2
    assert spec.max_epochs <= 500
    assert spec.parameters["restarts"] == Constant(10)
    assert spec.metric.name == "val_mse"


def test_issue_example_resolves_to_the_expected_space() -> None:
    spec = parse_spec(ISSUE_EXAMPLE)
    assert spec.name == "seed-1d-demo" and spec.method == "tpe"
    assert (spec.run_cap, spec.concurrency, spec.seed, spec.device, spec.verify) == (64, 2, 0, "cpu", "gate")
    assert spec.data.validation_fraction == 0.2 and spec.data.seed == 0
    assert spec.search_space() == {
        "depth": Categorical((1, 2, 3)),
        "width": IntRange(1, 100, log=True),
        "activation": Categorical(("sigmoid", "tanh", "relu")),
        "optimizer": Categorical(("adam", "sgd", "bfgs")),
        "lr": FloatRange(1e-3, 1e-1, log=True),
        "momentum": Constant(0.0),
        "nesterov": Constant(False),
        "weight_decay": Constant(0.0),
        "batch_size": Constant("full"),
        "epochs": Constant(500),
        "restarts": Constant(10),
        "tol": Constant(1e-6),
    }
    assert list(spec.search_space())[0] == "depth"  # sampled before the widths that depend on it
    et = spec.early_terminate
    assert et is not None and (et.type, et.min_iter, et.max_iter, et.eta) == ("hyperband", 50, 500, 3)
    assert spec.user_parameters["width"] == {"min": 1, "max": 100, "distribution": "q_log_uniform_values", "q": 1}


def test_bayes_is_stored_as_tpe() -> None:
    assert spec_from_dict(minimal(method="bayes")).method == "tpe"


def test_defaults_fill_every_knob() -> None:
    spec = spec_from_dict(minimal())
    assert {k: d.value for k, d in spec.search_space().items()} == dict(KNOB_DEFAULTS)
    assert all(isinstance(d, Constant) for d in spec.search_space().values())
    assert (spec.method, spec.run_cap, spec.concurrency, spec.seed, spec.device, spec.verify) == (
        "tpe", 20, 1, 0, "cpu", "gate")
    assert spec.metric.name == "val_mse" and spec.metric.goal == "minimize" and spec.metric.target is None
    assert spec.early_terminate is None and spec.user_parameters == {}


def test_knob_defaults_are_the_documented_ones() -> None:
    assert dict(KNOB_DEFAULTS) == {
        "depth": 1, "width": 10, "activation": "sigmoid", "optimizer": "adam", "lr": 0.01,
        "momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "batch_size": "full",
        "epochs": 500, "restarts": 10, "tol": 1e-6,
    }
    assert [k for k in KNOBS if k.startswith("width_")] == [f"width_{k}" for k in range(1, 9)]


def test_data_seed_defaults_to_spec_seed() -> None:
    assert spec_from_dict(minimal(seed=7)).data.seed == 7
    assert spec_from_dict(minimal(seed=7, data={"dataset": "seed-1d", "seed": 3})).data.seed == 3


def test_parameter_forms() -> None:
    spec = spec_from_dict(minimal(parameters={
        "width": {"min": 2, "max": 64},                                   # int bounds: int range
        "lr": {"min": 0.001, "max": 1},                                   # float knob: float range
        "weight_decay": {"distribution": "q_uniform", "min": 0, "max": 0.1, "q": 0.01},
        "epochs": {"distribution": "q_uniform", "min": 100, "max": 1000, "q": 100},
        "restarts": {"distribution": "constant", "value": 3},
        "activation": {"distribution": "categorical", "values": ["relu", "gelu"]},
        "batch_size": {"values": [1, 32, "full"]},
        "momentum": {"distribution": "uniform", "min": 0.5, "max": 0.99},
        "nesterov": {"values": [True, False]},
        "tol": {"distribution": "log_uniform_values", "min": 1e-8, "max": 1e-4},
        "depth": {"distribution": "int_uniform", "min": 1, "max": 3},
        "width_3": {"distribution": "q_log_uniform_values", "min": 1, "max": 8},  # q defaults to 1
    }))
    p = spec.parameters
    assert p["width"] == IntRange(2, 64)
    assert p["lr"] == FloatRange(0.001, 1.0)
    assert p["weight_decay"] == FloatRange(0.0, 0.1, step=0.01)
    assert p["epochs"] == IntRange(100, 1000, step=100)
    assert p["restarts"] == Constant(3)
    assert p["activation"] == Categorical(("relu", "gelu"))
    assert p["batch_size"] == Categorical((1, 32, "full"))
    assert p["momentum"] == FloatRange(0.5, 0.99)
    assert p["nesterov"] == Categorical((True, False))
    assert p["tol"] == FloatRange(1e-8, 1e-4, log=True)
    assert p["depth"] == IntRange(1, 3)
    assert p["width_3"] == IntRange(1, 8, log=True)
    assert "width_1" not in p and "width_2" not in p  # per-layer widths only where given
    assert isinstance(p["lr"].low, float)


def test_yaml_1_2_floats_are_numbers() -> None:
    text = "name: t\ndata: {dataset: seed-1d}\nparameters:\n  lr: {distribution: log_uniform_values, min: 1e-4, max: 1E-1}\n"
    assert parse_spec(text).parameters["lr"] == FloatRange(1e-4, 0.1, log=True)


def test_conditional_widths() -> None:
    assert hidden_widths({"depth": 3, "width": 10, "width_2": 4}) == (10, 4, 10)
    assert hidden_widths({"depth": 1, "width": 7, "width_2": 4}) == (7,)
    assert is_active("width_2", {"depth": 2}) and not is_active("width_3", {"depth": 2})
    assert is_active("lr", {"depth": 1})


def test_spec_is_frozen() -> None:
    spec = spec_from_dict(minimal())
    with pytest.raises(Exception):
        spec.run_cap = 5  # type: ignore[misc]
    with pytest.raises(Exception):
        spec.data.dataset = "x"  # type: ignore[misc]


def test_canonical_yaml_round_trips() -> None:
    spec = parse_spec(ISSUE_EXAMPLE)
    again = parse_spec(spec_to_yaml(spec))
    assert again == spec and hash(again) == hash(spec)
    assert spec_to_dict(again) == spec_to_dict(spec)
    assert spec_digest(again) == spec_digest(spec)
    assert spec_to_dict(spec)["method"] == "tpe"
    assert "momentum" in spec_to_dict(spec)["parameters"]  # defaults are spelled out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_round_trip(path: Path) -> None:
    spec = load_spec(path)
    assert parse_spec(spec_to_yaml(spec)) == spec


def test_digest_follows_what_defines_trials() -> None:
    base = parse_spec(ISSUE_EXAMPLE)
    d = spec_to_dict(base)
    assert len(spec_digest(base)) == 64
    same = dict(d, run_cap=999, concurrency=8, description="more trials", device="auto")
    assert spec_digest(spec_from_dict(same)) == spec_digest(base)
    changed = dict(d, parameters={**d["parameters"], "epochs": {"value": 400}})
    assert spec_digest(spec_from_dict(changed)) != spec_digest(base)
    assert spec_digest(spec_from_dict(dict(d, seed=1))) != spec_digest(base)


def test_load_spec_reads_files(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + ISSUE_EXAMPLE.encode())  # a BOM is fine
    assert load_spec(path) == parse_spec(ISSUE_EXAMPLE)
    assert load_spec(str(path)).name == "seed-1d-demo"


# ---------------------------------------------------------------------------- bad specs


BAD = [
    ("top-level typo", minimal(nmae="x"), ["nmae: unknown key; did you mean 'name'? allowed: name,"]),
    ("knob typo", minimal(parameters={"optimzer": {"value": "adam"}}),
     ["parameters.optimzer: unknown knob; did you mean 'optimizer'? allowed: width, width_1..width_8, depth"]),
    ("parameter key typo", minimal(parameters={"lr": {"vale": 0.1}}),
     ["parameters.lr.vale: unknown key; did you mean 'value'? allowed: value, values, min, max"]),
    ("log range from 0", minimal(parameters={"lr": {"distribution": "log_uniform_values", "min": 0, "max": 0.1}}),
     ["parameters.lr.min: must be > 0 for a log distribution, got 0"]),
    ("uniform from 0", minimal(parameters={"lr": {"min": 0, "max": 0.1}}), ["parameters.lr.min: must be > 0, got 0"]),
    ("log weight decay from 0",
     minimal(parameters={"weight_decay": {"distribution": "log_uniform_values", "min": 0.0, "max": 0.1}}),
     ["parameters.weight_decay.min: must be > 0 for a log distribution, got 0.0"]),
    ("int log from 0", minimal(parameters={"width": {"distribution": "q_log_uniform_values", "min": 0, "max": 9}}),
     ["parameters.width.min: must be >= 1 for a log distribution, got 0"]),
    ("unknown optimizer", minimal(parameters={"optimizer": {"values": ["adam", "sgd", "adamw"]}}),
     ["parameters.optimizer.values[2]: unknown optimizer 'adamw'; did you mean 'adam'? choose one of adam, sgd,"]),
    ("unknown activation", minimal(parameters={"activation": {"value": "swish"}}),
     ["parameters.activation.value: unknown activation 'swish'; choose one of sigmoid, tanh,"]),
    ("run_cap 0", minimal(run_cap=0), ["run_cap: must be >= 1, got 0"]),
    ("run_cap huge", minimal(run_cap=10**9), ["run_cap: must be <= 100000, got 1000000000"]),
    ("inverted range", minimal(parameters={"width": {"min": 400, "max": 100}}),
     ["parameters.width.min: must be <= max (100), got 400"]),
    ("empty values", minimal(parameters={"depth": {"values": []}}), ["parameters.depth.values: must not be empty"]),
    ("duplicate values", minimal(parameters={"depth": {"values": [1, 2, 1]}}),
     ["parameters.depth.values[2]: repeats values[0], got 1"]),
    ("duplicate float values", minimal(parameters={"lr": {"values": [0.1, 1, 1.0]}}),
     ["parameters.lr.values[2]: repeats values[1], got 1.0"]),
    ("q not dividing the range", minimal(parameters={"epochs": {"distribution": "q_uniform", "min": 100, "max": 1050, "q": 100}}),
     ["parameters.epochs.max: must be min plus a whole number of q (100) steps, e.g. 1000"]),
    ("run_cap text", minimal(run_cap="20"), ["run_cap: must be an integer, got '20'"]),
    ("concurrency bool", minimal(concurrency=True), ["concurrency: must be an integer, got True"]),
    ("seed float", minimal(seed=1.5), ["seed: must be an integer, got 1.5"]),
    ("width fraction", minimal(parameters={"width": {"value": 10.5}}),
     ["parameters.width.value: must be an integer, got 10.5"]),
    ("epochs fraction in values", minimal(parameters={"epochs": {"values": [1e3, 2.5e2, 1e-1]}}),
     ["parameters.epochs.values[2]: must be an integer, got 0.1"]),
    ("run_cap fraction", minimal(run_cap=2.5), ["run_cap: must be an integer, got 2.5"]),
    ("int knob float bounds", minimal(parameters={"width": {"min": 1.5, "max": 10}}),
     ["parameters.width.min: must be an integer, got 1.5"]),
    ("bool knob number", minimal(parameters={"nesterov": {"value": 1}}),
     ["parameters.nesterov.value: must be true or false, got 1"]),
    ("metric not a mapping", minimal(metric="val_mse"), ["metric: must be a mapping, got 'val_mse'"]),
    ("parameters not a mapping", minimal(parameters=["lr"]), ["parameters: must be a mapping of knob names"]),
    ("parameter not a mapping", minimal(parameters={"lr": 0.1}),
     ["parameters.lr: must be a mapping: {value: x}, {values: [..]}, {min: a, max: b} or "
      "{distribution: name, ..} (write {value: 0.1}), got 0.1"]),
    ("maximize", minimal(metric={"name": "val_mse", "goal": "maximize"}),
     ["metric.goal: must be minimize for val_mse (an error: lower is better), got 'maximize'"]),
    ("test metric", minimal(metric={"name": "test_mse"}), ["metric.name: must be val_mse or train_mse: the test set never"]),
    ("grid with continuous range", minimal(method="grid", parameters={"lr": {"min": 0.001, "max": 0.1}}),
     ["parameters.lr: method grid needs values or an int range without log, got float in [0.001, 0.1]"]),
    ("grid with log int range", minimal(method="grid", parameters={"width": {"distribution": "q_log_uniform_values", "min": 1, "max": 9}}),
     ["parameters.width: method grid needs values or an int range without log"]),
    ("grid too large", minimal(method="grid", parameters={"width": {"min": 1, "max": 4096}}),
     ["parameters.width: method grid would expand this range to 4096 values; the limit is 1000"]),
    ("width_9", minimal(parameters={"depth": {"value": 9}, "width_9": {"value": 3}}),
     ["parameters.width_9: unknown knob; per-layer widths stop at width_8"]),
    ("width_k beyond depth", minimal(parameters={"depth": {"values": [1, 2]}, "width_3": {"value": 3}}),
     ["parameters.width_3: layer 3 exceeds the largest depth (2)"]),
    ("q with log", minimal(parameters={"width": {"distribution": "q_log_uniform_values", "min": 1, "max": 64, "q": 2}}),
     ["parameters.width.q: must be 1 with q_log_uniform_values: Optuna does not combine a step with a log scale"]),
    ("q_log on float knob", minimal(parameters={"lr": {"distribution": "q_log_uniform_values", "min": 0.1, "max": 1, "q": 1}}),
     ["parameters.lr.distribution: q_log_uniform_values needs an integer knob"]),
    ("int_uniform on float knob", minimal(parameters={"lr": {"distribution": "int_uniform", "min": 1, "max": 2}}),
     ["parameters.lr.distribution: int_uniform needs an integer knob; lr is a float, use uniform"]),
    ("normal", minimal(parameters={"lr": {"distribution": "normal", "mu": 0.1, "sigma": 0.01}}),
     ["parameters.lr.distribution: W&B's normal has no one-to-one Optuna distribution"]),
    ("inv_log_uniform_values", minimal(parameters={"lr": {"distribution": "inv_log_uniform_values", "min": 1, "max": 10}}),
     ["parameters.lr.distribution: W&B's inv_log_uniform_values has no one-to-one Optuna distribution"]),
    ("unknown distribution", minimal(parameters={"lr": {"distribution": "unifrom", "min": 0.1, "max": 1}}),
     ["parameters.lr.distribution: unknown distribution 'unifrom'; did you mean 'uniform'?"]),
    ("two forms", minimal(parameters={"lr": {"value": 0.1, "values": [0.1]}}),
     ["parameters.lr: give exactly one of value, values or min/max, got value and values"]),
    ("range without max", minimal(parameters={"lr": {"min": 0.1}}), ["parameters.lr.max: required with a range"]),
    ("range on a choice knob", minimal(parameters={"optimizer": {"min": 1, "max": 2}}),
     ["parameters.optimizer: optimizer is a choice (one of adam, sgd,"]),
    ("full as a range bound", minimal(parameters={"batch_size": {"min": 1, "max": "full"}}),
     ["parameters.batch_size.max: 'full' can only be a value or one of values, not a range bound"]),
    ("validation_fraction 0 with val_mse", minimal(data={"dataset": "seed-1d", "validation_fraction": 0}),
     ["data.validation_fraction: must be > 0 when metric.name is val_mse (use train_mse"]),
    ("validation_fraction 1", minimal(data={"dataset": "seed-1d", "validation_fraction": 1}),
     ["data.validation_fraction: must be < 1.0, got 1"]),
    ("unknown dataset", minimal(data={"dataset": "seed1d"}), ["data.dataset: unknown dataset 'seed1d'; did you mean 'seed-1d'?"]),
    ("columns for a built-in", minimal(data={"dataset": "seed-1d", "features": ["x"]}),
     ["data.features: only for a .csv/.npz dataset"]),
    ("missing data", {"name": "t", "parameters": {}}, ["data: required"]),
    ("bad name", minimal(name="my sweep!"), ["name: must be 1-100 letters, digits"]),
    ("unknown method", minimal(method="bayesian"), ["method: must be one of tpe (alias bayes), random, grid, cmaes, gp, qmc, got 'bayesian' (did you mean 'bayes'?)"]),
    ("device gpu", minimal(device="gpu"), ["device: must be one of auto, cpu, cuda, got 'gpu' (did you mean 'cuda'?)"]),
    ("early stop type", minimal(early_terminate={"type": "asha"}), ["early_terminate.type: must be one of median, sha, hyperband"]),
    ("min_iter beyond epochs", minimal(early_terminate={"type": "hyperband", "min_iter": 600}),
     ["early_terminate.min_iter: must be <= the largest epochs (500), got 600"]),
    ("min_iter beyond max_iter", minimal(early_terminate={"type": "sha", "min_iter": 50, "max_iter": 10}),
     ["early_terminate.min_iter: must be <= max_iter (10), got 50"]),
    ("eta 1", minimal(early_terminate={"type": "hyperband", "eta": 1}), ["early_terminate.eta: must be >= 2, got 1"]),
    ("nesterov without momentum", minimal(parameters={"nesterov": {"value": True}}),
     ["parameters.nesterov: needs momentum > 0, but momentum can be 0.0"]),
    ("momentum 1", minimal(parameters={"momentum": {"value": 1.0}}), ["parameters.momentum.value: must be < 1, got 1.0"]),
    ("lr nan", minimal(parameters={"lr": {"value": float("nan")}}), ["parameters.lr.value: must be finite, got nan"]),
    ("wandb program key", minimal(program="train.py"), ["program: unknown key: W&B runs a program per trial"]),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_spec_is_reported(data: dict, expected: list[str]) -> None:
    problems = problems_of(data)
    for want in expected:
        assert any(p.startswith(want) for p in problems), f"{want!r} not in {problems}"
    assert len(problems) == len(expected), problems


def test_whole_numbers_written_as_floats_are_integers() -> None:
    """YAML reads 1e3 as a float: an integer key or knob takes it as the integer it is."""
    text = ("name: t\nrun_cap: 1e2\nconcurrency: 2.0\nseed: 7.0\ndata: {dataset: seed-1d}\n"
            "early_terminate: {type: hyperband, min_iter: 1e1, eta: 3.0}\n"
            "parameters:\n  epochs: {value: 1e3}\n  width: {values: [8.0, 1.6e1]}\n"
            "  depth: {min: 1.0, max: 3e0}\n"
            "  restarts: {distribution: q_uniform, min: 2.0, max: 1e1, q: 2.0}\n")
    spec = parse_spec(text)
    same = parse_spec(text.replace("1e2", "100").replace("2.0\n", "2\n").replace("7.0", "7")
                      .replace("1e1, eta: 3.0", "10, eta: 3").replace("1e3", "1000")
                      .replace("[8.0, 1.6e1]", "[8, 16]").replace("1.0, max: 3e0", "1, max: 3")
                      .replace("min: 2.0, max: 1e1, q: 2.0", "min: 2, max: 10, q: 2"))
    assert spec == same and spec_digest(spec) == spec_digest(same)
    assert (spec.run_cap, spec.concurrency, spec.seed, spec.early_terminate.min_iter) == (100, 2, 7, 10)
    space = spec.search_space()
    assert space["epochs"].value == 1000 and type(space["epochs"].value) is int
    assert space["width"].choices == (8, 16) and all(type(c) is int for c in space["width"].choices)
    assert (space["restarts"].low, space["restarts"].high, space["restarts"].step) == (2, 10, 2)


def test_a_misspelled_required_key_is_one_problem() -> None:
    assert problems_of({"name": "t", "dat": {"dataset": "seed-1d"}, "paramters": {}}) == [
        "dat: unknown key; did you mean 'data'? allowed: " + ", ".join(SweepSpec.model_fields),
        "paramters: unknown key; did you mean 'parameters'? allowed: " + ", ".join(SweepSpec.model_fields),
    ]
    # a key that resembles none still leaves the required one missing
    assert problems_of({"name": "t", "data": {"dataset": "seed-1d"}, "knobs": {}})[0] == "parameters: required"


def test_issue_must_show_problems_all_at_once() -> None:
    text = ISSUE_EXAMPLE.replace("run_cap: 64", "run_cap: 0").replace(
        "restarts: {value: 10}", "restrats: {value: 10}").replace(
        "min: 1.0e-3", "min: 0").replace("[adam, sgd, bfgs]", "[adam, sgd, adamw]")
    problems = problems_of(text)
    assert problems == [
        "run_cap: must be >= 1, got 0",
        "parameters.optimizer.values[2]: unknown optimizer 'adamw'; did you mean 'adam'? "
        "choose one of adam, sgd, rmsprop, lbfgs, bfgs, lbfgsb",
        "parameters.lr.min: must be > 0 for a log distribution, got 0",
        "parameters.restrats: unknown knob; did you mean 'restarts'? allowed: width, width_1..width_8, "
        "depth, activation, optimizer, lr, momentum, nesterov, weight_decay, batch_size, epochs, "
        "restarts, tol",
    ]


def test_many_problems_are_all_reported() -> None:
    data = minimal(
        nmae="x", run_cap=0, concurrency=0, device="gpu",
        metric={"name": "val_mse", "goal": "maximize"},
        parameters={"optimzer": {"value": "adam"}, "width": {"min": 400, "max": 100},
                    "lr": {"distribution": "log_uniform_values", "min": 0, "max": 0.1},
                    "depth": {"values": []}},
    )
    problems = problems_of(data)
    assert len(problems) == 9, problems
    assert len(set(problems)) == len(problems)


def test_values_in_messages_are_short() -> None:
    problems = problems_of(minimal(run_cap="x" * 10_000, parameters={"lr": {"value": list(range(1000))}}))
    assert all(len(p) < 200 for p in problems), problems


def test_model_validate_gives_the_same_rules() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        SweepSpec.model_validate(minimal(run_cap=0))


# ---------------------------------------------------------------------------- the CLI command


def _run_validate(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    parser = argparse.ArgumentParser(prog="mlpsweep")
    cmd_validate.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    assert args.handler(args) == 0
    return capsys.readouterr().out


def test_validate_prints_one_line_per_knob(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(ISSUE_EXAMPLE)
    out = _run_validate(["validate", str(path)], capsys)
    assert f"{path}: valid" in out
    knob_lines = [line.split() for line in out.splitlines() if line.startswith("    ")]
    assert [w[0] for w in knob_lines] == list(parse_spec(ISSUE_EXAMPLE).search_space())
    assert "    width         int in [1, 100], log" in out
    assert "    lr            float in [0.001, 0.1], log" in out
    assert "    epochs        500\n" in out
    assert "    tol           1e-06  (default)" in out


def test_validate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(ISSUE_EXAMPLE)
    out = json.loads(_run_validate(["validate", str(path), "--json"], capsys))
    spec = parse_spec(ISSUE_EXAMPLE)
    assert out["digest"] == spec_digest(spec) and out["spec"] == spec_to_dict(spec)
    assert out["search_space"]["width"] == {"kind": "int", "low": 1, "high": 100, "log": True, "step": 1}


def test_validate_bad_spec_is_a_usage_error(tmp_path: Path) -> None:
    from sweeps.cli import UsageError

    path = tmp_path / "s.yaml"
    path.write_text("name: t\nrun_cap: 0\n")
    parser = argparse.ArgumentParser()
    cmd_validate.register(parser.add_subparsers())
    args = parser.parse_args(["validate", str(path)])
    with pytest.raises(UsageError) as info:
        args.handler(args)
    assert str(info.value).splitlines() == ["run_cap: must be >= 1, got 0", "data: required", "parameters: required"]


def test_validate_json_of_a_bad_spec_is_json_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from sweeps.cli import main

    path = tmp_path / "s.yaml"
    path.write_text("name: t\nrun_cap: 0\n")
    assert main(["validate", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    problems = ["run_cap: must be >= 1, got 0", "data: required", "parameters: required"]
    assert json.loads(captured.out) == {"spec_file": str(path), "valid": False, "errors": problems}
    assert captured.err.splitlines() == [f"mlpsweep validate: error: {p}" for p in problems]


# ---------------------------------------------------------------------------- boundaries


def test_spec_and_space_import_without_engines(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(ISSUE_EXAMPLE)
    code = textwrap.dedent(f"""
        import sys
        for name in ("ray", "mlflow", "optuna", "torch"):
            sys.modules[name] = None
        import sweeps.space, sweeps.spec, sweeps.cmd_validate
        spec = sweeps.spec.load_spec({str(path)!r})
        print(sweeps.spec.spec_digest(spec))
        assert not any(m.split(".")[0] in ("ray", "mlflow", "optuna", "torch") and sys.modules[m] is not None
                       for m in sys.modules)
    """)
    assert fresh_python(code) == spec_digest(parse_spec(ISSUE_EXAMPLE))


def test_registries_match_the_engine() -> None:
    pytest.importorskip("torch")
    from models.activations import ACTIVATIONS
    from models.data import BUILTIN_DATASETS as DATASETS
    from models.training import OPTIMIZERS as ENGINE_OPTIMIZERS
    from sweeps.spec import BUILTIN_DATASETS

    assert ACTIVATION_NAMES == tuple(ACTIVATIONS)
    assert OPTIMIZERS == tuple(ENGINE_OPTIMIZERS)
    assert BUILTIN_DATASETS == DATASETS


# ---------------------------------------------------------------------------- the search space


def test_dimensions_enforce_optunas_rules() -> None:
    for bad in (lambda: IntRange(5, 1), lambda: IntRange(0, 5, log=True), lambda: IntRange(1, 9, log=True, step=2),
                lambda: IntRange(1, 9, step=0), lambda: FloatRange(1.0, 0.5), lambda: FloatRange(0.0, 1.0, log=True),
                lambda: FloatRange(0.1, 1.0, log=True, step=0.1), lambda: FloatRange(0.0, 1.0, step=0.0),
                lambda: FloatRange(0.0, math.inf), lambda: Categorical(()), lambda: Categorical((1, 1)),
                lambda: Constant([1])):  # type: ignore[arg-type]
        with pytest.raises((TypeError, ValueError)):
            bad()
    assert Categorical((True, 1, 1.0, "1")).choices == (True, 1, 1.0, "1")  # distinct as choices


def test_grid_helpers() -> None:
    assert list(grid_values(IntRange(1, 10, step=3))) == [1, 4, 7, 10]
    assert grid_size(IntRange(1, 10, step=4)) == 3 and grid_size(FloatRange(0.0, 1.0)) is None
    assert is_discrete(Categorical(("a",))) and not is_discrete(IntRange(1, 8, log=True))
    assert 7 in IntRange(1, 10, step=3) and 8 not in IntRange(1, 10, step=3)
    assert 0.3 in FloatRange(0.0, 1.0, step=0.1) and 0.35 not in FloatRange(0.0, 1.0, step=0.1)


_ints = st.integers(-5, 20)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(low=_ints, high=_ints, log=st.booleans(), step=st.integers(-1, 4))
def test_int_range_accepts_exactly_what_optuna_accepts(low: int, high: int, log: bool, step: int) -> None:
    distributions = pytest.importorskip("optuna.distributions")
    try:
        with warnings.catch_warnings():  # "range is not divisible by step": Optuna cuts it, fine
            warnings.simplefilter("ignore")
            distributions.IntDistribution(low, high, log=log, step=step)
        optuna_ok = True
    except ValueError:
        optuna_ok = False
    try:
        IntRange(low, high, log=log, step=step)
        ours_ok = True
    except ValueError:
        ours_ok = False
    assert ours_ok == optuna_ok


_floats = st.sampled_from([-1.0, 0.0, 1e-3, 0.5, 1.0, 2.0])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(low=_floats, high=_floats, log=st.booleans(), step=st.sampled_from([None, -0.5, 0.0, 0.25]))
def test_float_range_accepts_exactly_what_optuna_accepts(low: float, high: float, log: bool, step: float | None) -> None:
    distributions = pytest.importorskip("optuna.distributions")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            distributions.FloatDistribution(low, high, log=log, step=step)
        optuna_ok = True
    except ValueError:
        optuna_ok = False
    try:
        FloatRange(low, high, log=log, step=step)
        ours_ok = True
    except ValueError:
        ours_ok = False
    assert ours_ok == optuna_ok


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_dimension_builds_an_optuna_distribution(path: Path) -> None:
    distributions = pytest.importorskip("optuna.distributions")
    for name, dim in load_spec(path).search_space().items():
        if isinstance(dim, Constant):
            dist = distributions.CategoricalDistribution((dim.value,))
        elif isinstance(dim, Categorical):
            dist = distributions.CategoricalDistribution(dim.choices)
        elif isinstance(dim, IntRange):
            dist = distributions.IntDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
        else:
            dist = distributions.FloatDistribution(dim.low, dim.high, log=dim.log, step=dim.step)
        assert dist is not None, name


# ---------------------------------------------------------------------------- advice

BIG_BFGS = """\
name: big
method: tpe
run_cap: 4
data: {{dataset: {dataset}}}
parameters:
  depth: {{values: [1, 3, 2]}}
  width: {{min: 2, max: 60}}
  width_2: {{values: [7, 90]}}
  optimizer: {{{optimizer}}}
"""


@pytest.mark.parametrize("optimizer, inputs, outputs, expected", [
    ("value: bfgs", 1, 1, (1, 60, 90, 60, 1)),  # depth 3, each layer at its largest
    ("values: [adam, bfgs]", 2, 2, (2, 60, 90, 60, 2)),
    ("value: adam", 1, 1, None),  # no trial uses bfgs
])
def test_largest_network_of_an_optimizer(optimizer: str, inputs: int, outputs: int, expected: tuple | None) -> None:
    spec = parse_spec(BIG_BFGS.format(dataset="seed-1d", optimizer=optimizer))
    assert spec.largest_network("bfgs", inputs, outputs) == expected
    if expected is not None:
        assert spec.largest_network("lbfgsb", inputs, outputs) is None


def test_largest_network_follows_the_depths_a_trial_can_have() -> None:
    # depth 1 or 2: two hidden layers at most, width_2's largest choice the second's
    text = BIG_BFGS.format(dataset="seed-1d", optimizer="value: bfgs").replace("[1, 3, 2]", "[1, 2]")
    assert parse_spec(text).largest_network("bfgs", 1, 1) == (1, 60, 90, 1)
    assert parse_spec(text.replace("{values: [1, 2]}", "{min: 1, max: 4}")).largest_network("bfgs", 3, 1) == \
        (3, 60, 90, 60, 60, 1)


def test_validate_and_run_warn_of_bfgs_on_a_large_network(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from sweeps.cli import main

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "big.yaml"
    path.write_text(BIG_BFGS.format(dataset="seed-rotation", optimizer="values: [adam, bfgs]"))
    out = _run_validate(["validate", str(path)], capsys)
    warning = [line for line in out.splitlines() if line.startswith("  warning   ")]
    assert len(warning) == 1 and "bfgs trials reach 11,252 parameters (2-60-90-60-2)" in warning[0]
    assert "lbfgsb" in warning[0] and "(966 MiB each" in warning[0]  # 11,252^2 x 8 bytes
    assert json.loads(_run_validate(["validate", str(path), "--json"], capsys))["warnings"] == [warning[0][12:]]
    # run says it before anything starts (here a refused store stops it right after)
    assert main(["run", str(path), "--tracking-uri", "ftp://nowhere"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"mlpsweep run: warning: {warning[0][12:]}" and err[1].startswith("mlpsweep run: error: --tracking-uri")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.yaml"]  # nothing made


def test_a_small_bfgs_sweep_gets_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "small.yaml"
    path.write_text(BIG_BFGS.format(dataset="seed-1d", optimizer="value: bfgs").replace("max: 60", "max: 20")
                    .replace("[7, 90]", "[7, 20]"))  # 1-20-20-20-1: 901 parameters
    assert parse_spec(path.read_text()).largest_network("bfgs", 1, 1) == (1, 20, 20, 20, 1)
    assert "warning" not in _run_validate(["validate", str(path)], capsys)
    assert json.loads(_run_validate(["validate", str(path), "--json"], capsys))["warnings"] == []


def test_advice_reads_the_data_only_for_a_spec_with_bfgs_trials() -> None:
    from sweeps.cmd_run import advice

    def unread() -> None:
        raise AssertionError("the data was loaded")  # run loads a built-in set only where bfgs needs its shape

    assert advice(parse_spec(BIG_BFGS.format(dataset="seed-1d", optimizer="value: adam")), unread) == []
    with pytest.raises(AssertionError, match="loaded"):
        advice(parse_spec(BIG_BFGS.format(dataset="seed-1d", optimizer="value: bfgs")), unread)
