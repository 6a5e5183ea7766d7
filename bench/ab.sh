#!/bin/bash
# One `mlpsweep run` of SPEC with the checkout REPO (its .venv), timed, then read back from
# Optuna and MLflow: wall, sweep (first ask -> last tell), overhead, best value, trials/s.
# Used for A/B runs between two checkouts:  bench/ab.sh /path/to/checkout bench/seed-1d-64.yaml seed-1d-64
repo=$1; spec=$(realpath $2); name=$3
d=$(mktemp -d /tmp/ab-XXXX); cp $spec $d/; cd $d
s=$(date +%s.%N)
$repo/.venv/bin/python -m sweeps.cli run $(basename $spec) --quiet > out.txt 2> err.txt
e=$(date +%s.%N)
$repo/.venv/bin/python - <<PY
import optuna
s = optuna.load_study(study_name="$name", storage="sqlite:///optuna.db"); t = s.trials
sweep = (max(x.datetime_complete for x in t) - min(x.datetime_start for x in t)).total_seconds()
from mlflow import MlflowClient
c = MlflowClient("sqlite:///mlflow.db"); exp = c.get_experiment_by_name("$name")
runs = c.search_runs([exp.experiment_id], "tags.\`mlpsweep.kind\` = 'trial'", max_results=5000)
math = sum(r.data.metrics.get("train_seconds", 0) for r in runs)
best = min((x.value for x in t if x.value is not None), default=float("nan"))
print(f"$repo $name wall {$e-$s:.1f} s sweep {sweep:.1f} s trials {len(t)} runs {len(runs)} overhead {1-(math/2)/sweep:.2f} best {best:.5f} rate_sweep {len(t)/sweep:.1f}/s rate_e2e {len(t)/($e-$s):.1f}/s")
PY
cd /; rm -rf $d
