# affectsynth — developer commands. `make install` then `make demo`; `make test` runs the suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
WARMUP ?= 1

.PHONY: install warmup test test-fast lint format bench bench-latency demo figures second-classifier clean

install: $(PY)
	$(PY) -m pip install --disable-pip-version-check -q -r requirements.lock
	$(PY) -m pip install --disable-pip-version-check -q --no-deps -e .
	@if [ "$(WARMUP)" != "0" ]; then $(MAKE) --no-print-directory warmup; fi
	@echo "installed: run '. $(BIN)/activate' or use $(BIN)/affectsynth"

# builds the default model and compiles synth's program into the user cache (skip: make install WARMUP=0)
warmup:
	$(BIN)/affectsynth warmup

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

bench-latency:
	$(PY) scripts/bench_latency.py

demo:
	$(BIN)/affectsynth demo --output out/ --overwrite

figures:
	$(PY) scripts/plot_expressions.py

# evaluation only: the second expression classifier of scripts/eval_second_classifier.py (Node.js 18+, npm)
second-classifier:
	cd scripts/second_classifier && npm ci --no-audit --no-fund

clean:
	rm -rf out build dist .pytest_cache .ruff_cache src/*.egg-info scripts/second_classifier/node_modules
