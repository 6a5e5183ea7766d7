"""The pure core imports no engines: models/ (and the worker-side trial code) load with Ray,
MLflow and Optuna made unimportable; the spec loads without torch too."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, fresh_python

BLOCK = "import sys\nfor name in {names!r}:\n    sys.modules[name] = None\n"


@pytest.mark.parametrize("modules,blocked", [
    (["models", "models.backprop", "models.verify", "models.training", "models.checkpoint", "models.data"],
     ["ray", "mlflow", "optuna"]),
    (["workers.trial", "workers.records", "workers.backend"], ["ray", "mlflow", "optuna"]),
    (["sweeps.spec", "sweeps.space"], ["ray", "mlflow", "optuna", "torch"]),
    # the sweep driver and the MLflow writer: torch's import is a CPU-second at a run's start
    (["models", "models.config", "models.data", "models.verdict", "models.checkpoint", "workers.records",
      "workers.backend", "workers.ray_backend", "sweeps.driver", "sweeps.cmd_run", "tracking.sweep",
      "tracking.writer", "tracking.verification", "tracking.bulk"], ["torch"]),
])
def test_core_imports_without_engines(modules, blocked):
    code = BLOCK.format(names=blocked) + "".join(f"import {m}\n" for m in modules)
    code += "print('ok')\n"
    assert fresh_python(code) == "ok"


def test_the_check_can_fail():
    """Blocking works: a module that needs Ray does not import with Ray blocked."""
    code = BLOCK.format(names=["ray"]) + "import workers.ray_backend\n"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "ray" in proc.stderr


def test_the_driver_checks_data_and_builds_trials_without_torch():
    code = BLOCK.format(names=["torch"]) + (
        "from models.config import TrainConfig, canonical_architecture, stack_key\n"
        "from models.data import load_arrays\n"
        "data = load_arrays('iris-petal', 0.2, 0)\n"
        "assert (data.n_features, data.n_targets) == (2, 2) and data.standardization is not None\n"
        "config = TrainConfig((2, 5, 2), 'tanh', 'adam', lr=0.01)\n"
        "assert canonical_architecture(config.sizes, config.activation) == '2-5-2:tanh' and stack_key(config)\n"
        "print('ok')\n")
    assert fresh_python(code) == "ok"


def test_the_driver_imports_sqlalchemy_only_for_optuna_on_a_sqlite_file():
    """With the default journal storage the driver never needs SQLAlchemy (0.1 CPU-s of the start);
    with Optuna on a SQLite file it sets the no-fsync pragmas before opening it."""
    code = ("import sys\n"
            "import tracking.client as client\n"
            "from sweeps.cmd_run import _import_and_load, load_run_spec\n"
            "spec = load_run_spec('sweeps/examples/seed-1d.yaml')\n"
            "_import_and_load(spec, 'optuna.journal')\n"
            "print('sqlalchemy' in sys.modules, client._FAST_SQLITE)\n"
            "_import_and_load(spec, 'sqlite:///optuna.db')\n"
            "print('sqlalchemy' in sys.modules, client._FAST_SQLITE)\n")
    assert fresh_python(code).split() == ["False", "False", "True", "True"]


def test_run_checks_its_stores_before_ray_starts_without_optuna(tmp_path):
    """What ``run`` does before Ray's start (the spec, the stores, a new sweep's continuation
    check) imports neither Optuna nor NumPy: their ~0.4 CPU-s belong beside Ray's start."""
    code = ("import sys\n"
            "from sweeps.cmd_run import check_continuation, load_run_spec\n"
            "from sweeps.stores import resolve_stores\n"
            f"spec = load_run_spec({str(ROOT / 'sweeps/examples/seed-1d.yaml')!r})\n"
            "uri, storage = resolve_stores(None, None, create=True)\n"
            "check_continuation(spec, storage)\n"
            "print(storage, 'optuna' in sys.modules, 'numpy' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["optuna.journal", "False", "False"]
