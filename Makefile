# Set-up, index, serve and test from a fresh clone. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: setup index run test eval fit bench loadtest soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch is pinned to 2.13.0 in pyproject.toml: the CPU build on this machine's disk, no CUDA download.
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP)

index: setup
	$(BIN)/qa index

run: index
	$(BIN)/qa serve

test: setup
	$(BIN)/python -m pytest -q

eval: setup
	$(BIN)/qa eval --all --work build/eval --report eval/reports

fit: setup
	$(BIN)/qa fit --work build/eval

bench: setup
	$(BIN)/qa bench

loadtest: setup
	QA_LOADTEST_FULL=1 $(BIN)/python -m pytest -q -s tests/test_load.py

# Mixed asks, rebuilds and source edits against 4 workers (not part of `make test`); SOAK_SECONDS=120 for a short run.
SOAK_SECONDS ?= 1200
soak: setup
	PYTHONPATH=$(CURDIR) $(BIN)/python -m tests.soak --seconds $(SOAK_SECONDS)

clean:
	rm -rf $(VENV) index/CURRENT index/versions index/.build.lock
