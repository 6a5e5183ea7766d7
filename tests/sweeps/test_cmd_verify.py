"""``mlpsweep verify`` end to end: the real CLI in a subprocess, and ``main()`` in-process."""
from __future__ import annotations

import functools
import json
import subprocess
import sys

import pytest

import models.verify
from models.backprop import BackwardSteps, backward
from sweeps.cli import main

# what the installed ``mlpsweep`` console script runs
CLI = [sys.executable, "-c", "import sys; from sweeps.cli import main; sys.exit(main())"]


def _cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def test_passing_architecture_prints_the_table_and_exits_0() -> None:
    done = _cli("verify", "--sizes", "2,10,10,1", "--activation", "sigmoid")
    assert done.returncode == 0, done.stderr
    for row in ("0_weight", "1_bias", "2_weight", "input", "update", "PASS"):
        assert row in done.stdout
    assert "2-10-10-1:sigmoid" in done.stdout and done.stderr == ""


def test_json_report(capsys) -> None:
    assert main(["verify", "--sizes", "1,5,1", "--activation", "relu", "--json", "--seed", "4"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["architecture"] == "1-5-1:relu" and report["verdict"] == "pass" and report["seed"] == 4
    assert {t["name"] for t in report["tensors"]} == {"0_weight", "0_bias", "1_weight", "1_bias", "input"}


def test_failing_verification_exits_1(monkeypatch, capsys) -> None:
    doubled = BackwardSteps(output_delta=lambda y_hat, y, loss: 4 * (y_hat - y) / y.numel())
    monkeypatch.setattr(models.verify, "default_backward", functools.partial(backward, steps=doubled))
    assert main(["verify", "--sizes", "2,3,1", "--activation", "tanh"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "0_weight" in out


@pytest.mark.parametrize(
    "args, flag, hint",
    [
        (["--sizes", "2,,1"], "--sizes", "positive integers like 2,10,10,1"),
        (["--sizes", "2,0,1"], "--sizes", "positive integers like 2,10,10,1"),
        (["--sizes", "abc"], "--sizes", "not an integer"),
        (["--sizes", "7"], "--sizes", "an input and an output size"),
        (["--sizes", "2,3,1", "--activation", "swish"], "--activation", "choose one of sigmoid, tanh, relu"),
        (["--sizes", "2,3,1", "--loss", "mae"], "--loss", "choose one of mse, sse"),
        (["--sizes", "2,3,1", "--samples", "0"], "--samples", "integer >= 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, flag, hint, capsys) -> None:
    assert main(["verify", *args]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlpsweep verify: error: {flag}: ") and hint in lines[0]
    assert captured.out == ""


def test_every_problem_is_reported_at_once(capsys) -> None:
    assert main(["verify", "--sizes", "2,,1", "--activation", "swish", "--seed", "x"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert [line.split(":")[2].strip() for line in lines] == ["--sizes", "--activation", "--seed"]


@pytest.mark.parametrize("sizes", ["2,,1", "2,0,1"])
def test_bad_input_through_the_real_cli_has_no_traceback(sizes) -> None:
    done = _cli("verify", "--sizes", sizes)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.integration  # two CLI processes importing MLflow and creating its schema: ~10 s
def test_tracking_records_once_and_reuses_the_verdict(tmp_path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = ("verify", "--sizes", "2,4,1", "--activation", "elu", "--tracking-uri", uri, "--experiment", "checks")
    first = _cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "recorded: run" in first.stdout
    second = _cli(*args, "--json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout)["architecture"] == "2-4-1:elu"
    assert "already verified" in second.stderr

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("checks").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["mlpsweep.verified"] == "pass"
    assert (tmp_path / "mlruns").is_dir()  # artifacts land next to the store, in the cwd


def test_registering_the_command_imports_no_engines() -> None:
    code = (
        "import argparse, sys\n"
        "import sweeps.cmd_verify as m\n"
        "m.register(argparse.ArgumentParser().add_subparsers())\n"
        "heavy = [n for n in ('torch', 'mlflow', 'ray') if n in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
