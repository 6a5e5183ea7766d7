# mlpsweep — the two commands a user needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	$(PY) -m compileall -q sweeps workers models tracking  # see README: where bytecode is not written
	touch $(STAMP)

demo: install
	$(VENV)/bin/mlpsweep run sweeps/examples/seed-1d.yaml

test: install
	sh tests/setup_system_deps.sh
	$(PY) -m pytest -q --durations=15  # the slowest tests, for whoever trims the suite

test-fast: install
	$(PY) -m pytest -q -m 'not integration'

bench: install
	$(PY) bench/restarts.py
	$(PY) bench/shapes.py
	$(PY) bench/sweep.py --json bench/last-run.json
	$(PY) bench/timeline.py bench/seed-1d-64.yaml

clean:
	rm -rf $(VENV) *.egg-info mlflow.db mlflow.db-wal mlflow.db-shm optuna.journal optuna.journal.*.lock mlruns mlartifacts
