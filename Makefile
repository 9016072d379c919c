# affectsynth — developer commands. `make install` then `make demo`; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python

.PHONY: install test test-fast lint format bench demo figures clean

install: $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.lock
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@echo "installed: run '. $(BIN)/activate' or use $(BIN)/affectsynth"

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade "pip>=24"

test:
	$(PY) -m pytest -q

test-fast:
	$(PY) -m pytest -q -m "not slow"

lint:
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts

format:
	$(BIN)/ruff format src tests scripts
	$(BIN)/ruff check --fix src tests scripts

bench:
	$(PY) scripts/bench.py

demo:
	$(BIN)/affectsynth demo --output out/ --overwrite

figures:
	$(PY) scripts/plot_expressions.py

clean:
	rm -rf out build dist .pytest_cache .ruff_cache src/*.egg-info
