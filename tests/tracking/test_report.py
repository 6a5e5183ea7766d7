"""The insight report: the HTML page on its own, then a real tiny sweep drawn, logged and opened in Chromium."""
from __future__ import annotations

import base64
import logging
import math
import os
import re
import shutil
import struct
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tracking import plots
from tracking.client import make_client
from tracking.report import (
    PICTURES,
    REPORT_DIR,
    Picture,
    SweepRecord,
    TrialRecord,
    VerdictRecord,
    fmt_mse,
    log_report_artifacts,
    render_html,
)

ROOT = Path(__file__).resolve().parents[2]
VENV_CLI = ROOT / ".venv" / "bin" / "mlpsweep"
MLPSWEEP = [str(VENV_CLI)] if VENV_CLI.exists() else [sys.executable, "-m", "sweeps.cli"]
PNG_NAMES = [f"{name}.png" for name, *_ in PICTURES]

SPEC = """\
name: {name}
method: tpe
metric: {{name: val_mse, goal: minimize}}
run_cap: {run_cap}
concurrency: 2
seed: 0
data: {{dataset: {dataset}, validation_fraction: 0.2}}
parameters:
  depth: {{values: [1, 2]}}
  width: {{distribution: int_uniform, min: 2, max: 20}}
  activation: {{values: [tanh, sigmoid]}}
  optimizer: {{value: adam}}
  lr: {{distribution: log_uniform_values, min: 0.005, max: 0.05}}
  restarts: {{value: {restarts}}}
  epochs: {{value: {epochs}}}
verify: gate
"""


# ----------------------------------------------------------------------------- helpers
def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def assert_png(data: bytes, min_px: int = 300) -> None:
    width, height = png_size(data)
    assert width >= min_px and height >= min_px, (width, height)


class TableParser(HTMLParser):
    """Rows of the tables of a page: {table id: [{data-key: text, "_run_id": ...}, ...]}, plus img sources."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.images: list[str] = []
        self.scripts = 0
        self._table: str | None = None
        self._row: dict[str, str] | None = None
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self._row = {"_run_id": a.get("data-run-id") or ""}
        elif tag == "td" and self._row is not None:
            self._key = a.get("data-key") or ""
            self._row[self._key] = ""
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._key = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            if len(self._row) > 1:
                self.tables[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._key is not None:
            self._row[self._key] += data


def parse(page: str) -> TableParser:
    parser = TableParser()
    parser.feed(page)
    return parser


def chromium_binary() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None)
    if found is None:
        pytest.skip("Chromium is not installed; tests/setup_system_deps.sh installs Debian's chromium package "
                    "(needs root and the package mirror)")
    return found


def open_in_chromium(page: Path, profile: Path, *extra: str) -> tuple[str, list[str]]:
    """Load ``page`` headless; returns (stdout, console lines). Chromium logs every console
    message (errors, uncaught exceptions) to stderr as ``...:CONSOLE...`` with --enable-logging.
    ``extra`` must hold --dump-dom or --screenshot: without one, headless Chromium never exits."""
    assert any(e == "--dump-dom" or e.startswith("--screenshot") for e in extra)
    cmd = [chromium_binary(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--enable-logging=stderr", "--v=0", *extra, page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console


# ----------------------------------------------------------------------------- the page alone
def _record(**overrides) -> SweepRecord:
    trials = tuple(
        TrialRecord(number=i, run_id=f"run{i}", state="COMPLETE" if i < 3 else "FAIL",
                    params={"width": str(3 + i), "depth": "1", "activation": "tanh", "optimizer": "adam",
                            "lr": "0.0123456", "hidden_sizes": str(3 + i)},
                    metrics={"train_mse": 0.1 / (i + 1), "val_mse": 0.2 / (i + 1), "test_mse": 0.3 / (i + 1)} if i < 3 else {},
                    architecture=f"1-{3 + i}-1:tanh", verified="pass", reason="" if i < 3 else "all restarts diverged")
        for i in range(4))
    base = dict(name="demo", tracking_uri="sqlite:///x.db", storage="sqlite:///o.db", experiment_id="1",
                parent_run_id="p", metric="val_mse", spec_yaml="name: demo\n", parent_params={"method": "tpe"},
                parent_metrics={}, trials=trials,
                verdicts=(VerdictRecord("1-3-1:tanh", "pass", "v1", 1e-12, 3e-7, 0.0, 1),),
                importances={"width": 1.0}, search_space={})
    base.update(overrides)
    return SweepRecord(**base)  # type: ignore[arg-type]


def test_html_is_escaped_self_contained_and_says_why_a_plot_is_missing() -> None:
    evil = "<script>alert('x')</script>"
    rec = _record(name=f"x{evil}", spec_yaml=f"name: {evil}\n", parent_params={"method": evil})
    pics = [Picture("history", "History", f"caption {evil}", png=plots.plot_importances({"a": 1.0})),
            Picture("fit", "Fit", "c", skipped=f"the inputs have 5 features {evil}")]
    page = render_html(rec, pics)
    parsed = parse(page)
    assert parsed.scripts == 0 and "<script>" not in page
    assert "&lt;script&gt;" in page
    assert "Not drawn: the inputs have 5 features" in page
    assert all(src.startswith("data:image/png;base64,") for src in parsed.images) and len(parsed.images) == 1
    assert_png(base64.b64decode(parsed.images[0].split(",", 1)[1]))
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)


def test_html_top_table_is_best_first_with_printed_numbers() -> None:
    parsed = parse(render_html(_record(), []))
    rows = parsed.tables["top-trials"]
    assert [r["trial"] for r in rows] == ["2", "1", "0"]  # by val_mse, the failed trial left out
    assert rows[0]["val_mse"] == fmt_mse(0.2 / 3) and float(rows[0]["val_mse"]) == pytest.approx(0.2 / 3, rel=1e-5)
    assert rows[0]["lr"] == "0.01235"
    assert [r["trial"] for r in parsed.tables["other-trials"]] == ["3"]
    assert parsed.tables["other-trials"][0]["reason"] == "all restarts diverged"
    assert parsed.tables["verification"][0]["verdict"] == "pass"


def test_mse_against_width_needs_two_widths() -> None:
    from dataclasses import replace

    from tracking.report import render_pictures

    rec = _record()  # widths 3, 4, 5 among the complete trials
    drawn = render_pictures(rec, client=object(), names=["mse_vs_width"])[0]  # type: ignore[arg-type]
    assert drawn.png is not None and not drawn.skipped
    one = _record(trials=tuple(replace(t, params={**t.params, "width": "8"}) for t in rec.trials))
    skipped = render_pictures(one, client=object(), names=["mse_vs_width"])[0]  # type: ignore[arg-type]
    assert skipped.png is None and "every complete trial has width 8" in (skipped.skipped or "")


def test_html_without_complete_trials() -> None:
    rec = _record(trials=())
    page = render_html(rec, [Picture("history", "History", "c", skipped="no complete trial yet")])
    assert "No complete trial yet" in page and "top-trials" not in page


def test_param_importances_guards(monkeypatch) -> None:
    import optuna

    from sweeps import optuna_adapter as oa

    def study(values: list[tuple[dict, float]]) -> optuna.Study:
        s = optuna.create_study()
        dists = {"width": optuna.distributions.IntDistribution(1, 50),
                 "act": optuna.distributions.CategoricalDistribution(["tanh", "relu"])}
        for params, v in values:
            s.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=v))
        return s

    assert oa.param_importances(study([])) == {}
    assert oa.param_importances(study([({"width": 3, "act": "tanh"}, 0.1)])) == {}
    assert oa.param_importances(study([({"width": 3, "act": "tanh"}, 0.1), ({"width": 3, "act": "tanh"}, 0.2)])) == {}
    found = oa.param_importances(study([({"width": w, "act": "tanh" if w % 2 else "relu"}, 0.01 * w) for w in range(1, 12)]))
    assert set(found) == {"width", "act"} and sum(found.values()) == pytest.approx(1.0)
    assert found["width"] > found["act"]
    alone = study([({"width": w, "act": "tanh"}, 0.01 * w) for w in range(1, 12)])
    real = optuna.importance.get_param_importances(
        alone, evaluator=optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0), params=["width"])
    monkeypatch.setattr(optuna.importance, "FanovaImportanceEvaluator", None)  # not needed for one parameter
    assert oa.param_importances(alone) == {"width": pytest.approx(real["width"])} == {"width": 1.0}
    space = oa.search_space(study([({"width": 3, "act": "tanh"}, 0.1)]))
    assert space == {"width": {"kind": "int", "low": 1, "high": 50, "log": False},
                     "act": {"kind": "categorical", "choices": ["tanh", "relu"]}}


def test_log_report_artifacts_never_raises(tmp_path, caplog) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with caplog.at_level(logging.WARNING, logger="tracking.report"):
        assert log_report_artifacts(uri, "no-such-sweep") == []  # no store: a reader does not create one
    assert "no MLflow store at" in caplog.text and not (tmp_path / "mlflow.db").exists()
    make_client(uri)
    with caplog.at_level(logging.WARNING, logger="tracking.report"):
        assert log_report_artifacts(uri, "no-such-sweep") == []
    assert "no sweep named 'no-such-sweep'" in caplog.text


def test_console_check_catches_a_planted_error(tmp_path) -> None:
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body><table id="t"></table>'
                    '<script>console.error("planted"); notDefined();</script></body></html>')
    _, console = open_in_chromium(page, tmp_path / "profile", "--dump-dom")
    assert any("planted" in line for line in console)
    assert any("Uncaught ReferenceError" in line for line in console)


# ----------------------------------------------------------------------------- a real sweep
def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", "PYTHONPATH": str(ROOT)}
    return subprocess.run([*MLPSWEEP, *args], capture_output=True, text=True, timeout=600, cwd=cwd, env=env)


def _sweep(folder: Path, name: str, dataset: str, run_cap: int, restarts: int, epochs: int) -> str:
    spec = folder / f"{name}.yaml"
    spec.write_text(SPEC.format(name=name, dataset=dataset, run_cap=run_cap, restarts=restarts, epochs=epochs))
    uri = f"sqlite:///{folder}/mlflow.db"
    done = _run("run", str(spec), "--ray-address", "none", "--tracking-uri", uri, "--quiet", cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return uri


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A real 6-trial sweep on seed-1d, then `mlpsweep report` on it."""
    folder = tmp_path_factory.mktemp("report")
    uri = _sweep(folder, "tiny", "seed-1d", run_cap=6, restarts=2, epochs=60)
    out = folder / "out"
    done = _run("report", "tiny", "--out", str(out), "--tracking-uri", uri, cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    from tracking.client import make_client

    client = make_client(uri)
    experiment = client.get_experiment_by_name("tiny")
    parent = client.search_runs([experiment.experiment_id], "tags.`mlpsweep.kind` = 'sweep'")[0]
    return {"folder": folder, "uri": uri, "out": out, "stdout": done.stdout, "client": client,
            "experiment_id": experiment.experiment_id, "parent": parent}


@pytest.mark.integration
def test_report_command_writes_and_logs_every_png(swept) -> None:
    client, parent_id, out = swept["client"], swept["parent"].info.run_id, swept["out"]
    assert str(out / "report.html") in swept["stdout"].replace("\n", "")
    logged = {a.path: a for a in client.list_artifacts(parent_id, REPORT_DIR)}
    assert set(logged) == {f"{REPORT_DIR}/{n}" for n in PNG_NAMES} | {f"{REPORT_DIR}/report.html"}
    download = swept["folder"] / "downloaded"
    for name in PNG_NAMES:
        assert 5_000 < logged[f"{REPORT_DIR}/{name}"].file_size < 3_000_000, name
        path = Path(client.download_artifacts(parent_id, f"{REPORT_DIR}/{name}", str(download)))
        data = path.read_bytes()
        assert_png(data)
        assert data == (out / name).read_bytes(), f"{name}: the logged PNG differs from the written one"


@pytest.mark.integration
def test_html_numbers_equal_mlflow(swept) -> None:
    client, parent = swept["client"], swept["parent"]
    parsed = parse((swept["out"] / "report.html").read_text(encoding="utf-8"))
    rows = parsed.tables["top-trials"]
    trials = client.search_runs([swept["experiment_id"]], "tags.`mlpsweep.kind` = 'trial'")
    complete = [r for r in trials if r.data.tags["mlpsweep.state"] == "COMPLETE"]
    assert len(rows) == min(10, len(complete)) > 0
    assert int(rows[0]["trial"]) == int(parent.data.metrics["best_trial"])
    vals = []
    for row in rows:
        run = client.get_run(row["_run_id"])
        assert row["trial"] == run.data.tags["mlpsweep.trial"]
        for key in ("train_mse", "val_mse", "test_mse"):
            assert row[key] == fmt_mse(run.data.metrics[key]), (row["trial"], key)
            assert math.isclose(float(row[key]), run.data.metrics[key], rel_tol=1e-5)
        assert math.isclose(float(row["lr"]), float(run.data.params["lr"]), rel_tol=1e-3)
        assert row["hidden_sizes"] == run.data.params["hidden_sizes"]
        assert row["activation"] == run.data.params["activation"]
        assert row["optimizer"] == run.data.params["optimizer"]
        vals.append(run.data.metrics["val_mse"])
    assert vals == sorted(vals)
    assert float(rows[0]["val_mse"]) == pytest.approx(parent.data.metrics["best_val_mse"], rel=1e-5)
    verdicts = {r["architecture"]: r["verdict"] for r in parsed.tables["verification"]}
    for run in trials:
        assert verdicts[run.data.tags["mlpsweep.architecture"]] == run.data.tags["mlpsweep.verified"]
    assert len(parsed.images) == len(PNG_NAMES)
    assert parsed.scripts == 0


@pytest.mark.integration
def test_html_renders_in_chromium_without_console_errors(swept) -> None:
    page = swept["out"] / "report.html"
    dom, console = open_in_chromium(page, swept["folder"] / "profile", "--dump-dom")
    assert console == [], console
    assert '<table id="top-trials">' in dom and "<tbody><tr" in dom
    assert dom.count('<img src="data:image/png;base64,') == len(PNG_NAMES)
    shot = swept["folder"] / "page.png"
    _, console = open_in_chromium(page, swept["folder"] / "profile2", f"--screenshot={shot}",
                                  "--window-size=1280,2400", "--hide-scrollbars")
    assert console == [], console
    assert_png(shot.read_bytes(), min_px=1000)


@pytest.mark.integration
def test_unknown_sweep_is_a_usage_error_listing_the_sweeps(swept) -> None:
    done = _run("report", "nope", "--tracking-uri", swept["uri"], "--out", str(swept["folder"] / "nope"),
                cwd=swept["folder"])
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["mlpsweep report: error: no sweep named 'nope' in the tracking store; "
                                        "sweeps found: tiny"]  # not also a warning of its missing study
    assert not (swept["folder"] / "nope").exists()


@pytest.mark.integration
def test_a_failing_plot_is_a_warning_not_a_failure(swept, monkeypatch, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("planted plot failure")

    monkeypatch.setattr(plots, "plot_history", broken)
    with caplog.at_level(logging.WARNING, logger="tracking.report"):
        logged = log_report_artifacts(swept["uri"], "tiny")
    assert "planted plot failure" in caplog.text
    assert f"{REPORT_DIR}/history.png" not in logged
    assert f"{REPORT_DIR}/fit.png" in logged and f"{REPORT_DIR}/report.html" in logged


@pytest.mark.integration
def test_the_report_drawn_by_forked_children_equals_the_one_drawn_here(swept, monkeypatch) -> None:
    """fANOVA and half the pictures run in forked children: the same pictures, byte for byte, as
    drawing everything in this process (what happens where fork is not available)."""
    from tracking import forked as forked_module
    from tracking.report import CHILD_PICTURES, build_report

    forked = build_report(swept["uri"], "tiny")
    monkeypatch.setattr(forked_module, "FORK", False)
    here = build_report(swept["uri"], "tiny")
    assert [p.name for p in forked.pictures] == [p.name for p in here.pictures] == [n for n, *_ in PICTURES]
    assert set(CHILD_PICTURES) < {p.name for p in forked.pictures}
    for a, b in zip(forked.pictures, here.pictures):
        assert a.png is not None and a.png == b.png, a.name
    assert forked.record.importances == here.record.importances and forked.record.importances


@pytest.mark.integration
def test_a_report_without_its_study_says_so_once(swept, tmp_path) -> None:
    """The study is read by this process and by the fANOVA child: one warning, not one each."""
    done = _run("report", "tiny", "--out", str(tmp_path / "out"), "--tracking-uri", swept["uri"],
                "--storage", str(tmp_path / "elsewhere.journal"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.count("cannot load Optuna study 'tiny'") == 1, done.stderr
    assert (tmp_path / "out" / "report.html").exists() and not (tmp_path / "elsewhere.journal").exists()


@pytest.mark.integration
def test_children_that_die_cost_the_importances_never_the_report(swept, monkeypatch) -> None:
    import tracking.report as report_module

    monkeypatch.setattr(report_module, "_render_forked", lambda *args: os._exit(1))
    monkeypatch.setattr(report_module, "_importances_of", lambda *args: os._exit(1))
    report = report_module.build_report(swept["uri"], "tiny")
    assert [p.name for p in report.pictures] == [n for n, *_ in PICTURES]
    missing = {p.name: p.skipped for p in report.pictures if p.png is None}
    assert set(missing) == {"importances"} and "fANOVA failed" in missing["importances"], missing


@pytest.mark.integration
def test_two_input_sweep_draws_a_contour_per_output(tmp_path) -> None:
    uri = _sweep(tmp_path, "rot", "seed-rotation", run_cap=3, restarts=2, epochs=30)
    from tracking.report import build_report

    report = build_report(uri, "rot")
    pictures = {p.name: p for p in report.pictures}
    assert pictures["fit"].png is not None, pictures["fit"].skipped
    width, height = png_size(pictures["fit"].png)
    assert width > height  # one panel per output, side by side
    page = report.write(tmp_path / "out")
    assert (tmp_path / "out" / "fit.png").read_bytes() == pictures["fit"].png and page.exists()


def test_the_fit_reads_weights_npz_and_still_reads_checkpoints_without_it(tmp_path) -> None:
    """The fit picture's weights: from weights.npz when MLflow records its digest (no torch in
    the report's process), from model.pt for a trial logged before weights.npz existed; the
    same values either way, each checked against its recorded digest."""
    import json
    from dataclasses import replace

    import numpy as np
    import torch

    from models import MLP
    from models.checkpoint import CheckpointError, WEIGHTS_FILE, save_checkpoint
    from tracking.report import TrialRecord, _best_weights

    model = MLP([1, 4, 1], "tanh", generator=torch.Generator().manual_seed(3))
    folder = save_checkpoint(tmp_path, model.state_dict(), model.sizes, "tanh")
    meta = json.loads((folder / "architecture.json").read_text())
    record = TrialRecord(number=0, run_id="r", state="COMPLETE", params={}, metrics={},
                         checkpoint_sha256=meta["sha256"], weights_sha256=meta["weights_sha256"])
    from_npz, _ = _best_weights(record, str(folder))
    with pytest.raises(CheckpointError):
        _best_weights(replace(record, weights_sha256="0" * 64), str(folder))
    (folder / WEIGHTS_FILE).unlink()
    older = replace(record, weights_sha256=None)
    from_model, _ = _best_weights(older, str(folder))
    assert set(from_npz) == set(from_model) == set(model.state_dict())
    for name in from_npz:
        assert np.array_equal(from_npz[name].astype(np.float64), from_model[name])


def test_pictures_place_values_at_their_logged_steps(tmp_path, monkeypatch) -> None:
    # a trial whose restarts 0 and 3 diverged (no value logged) kept restart 4; its 300-epoch curve
    # is logged as 100 points: the spread stars restart 4's value and the curves run to epoch 300
    from tracking import report

    client = make_client(f"sqlite:///{tmp_path}/mlflow.db", create=True)
    run = client.create_run(client.create_experiment("steps")).info.run_id
    restart_val = {1: 0.5, 2: 0.4, 4: 0.3, 5: 0.2}
    epochs = list(range(0, 300, 4)) + [300]
    for r, v in restart_val.items():
        client.log_metric(run, "restart_val_mse", v, step=r)
    for e in epochs:
        client.log_metric(run, "curve_train_mse", 1.0 / (e + 1), step=e)
        client.log_metric(run, "curve_val_mse", 2.0 / (e + 1), step=e)
    trial = TrialRecord(number=0, run_id=run, state="COMPLETE", params={"activation": "tanh"},
                        metrics={"val_mse": 0.3, "best_restart": 4.0})
    seen: dict[str, object] = {}
    monkeypatch.setattr(report.plots, "plot_restart_spread", lambda spreads, key: seen.setdefault("spread", spreads))
    monkeypatch.setattr(report.plots, "plot_learning_curves", lambda curves: seen.setdefault("curves", curves))
    rec = _record(trials=(trial,))
    report._spread(rec, client)
    report._curves(rec, client)
    (spread,) = seen["spread"]
    assert spread.chosen == 4 and spread.values[spread.chosen] == 0.3
    assert [r for r, v in enumerate(spread.values) if math.isnan(v)] == [0, 3] and len(spread.values) == 6
    (curve,) = seen["curves"]
    assert list(curve.train_epochs) == list(curve.val_epochs) == epochs
    assert list(curve.train) == [1.0 / (e + 1) for e in epochs]


@pytest.mark.parametrize("spec_yaml, params, standard", [
    ("name: d\ndata: {dataset: seed-1d}\nparameters: {}\n", {"dataset": "seed-1d"}, False),
    ("name: d\ndata: {dataset: seed-1d, standardize: true}\nparameters: {}\n", {"dataset": "seed-1d"}, True),
    ("name: d\ndata: {dataset: iris-petal}\nparameters: {}\n", {"dataset": "iris-petal"}, True),  # by its recipe
    ("", {"dataset": "iris-petal"}, True),  # no spec artifact: the dataset param
])
def test_the_page_says_when_its_mses_are_in_standard_units(spec_yaml, params, standard) -> None:
    page = render_html(_record(spec_yaml=spec_yaml, parent_params={"method": "tpe", **params}), [])
    assert ("(standardised: every MSE in standard units)" in page) == standard
