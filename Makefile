# Two entry points for a fresh machine with Python and make: `make demo` and `make test`.
# Set-up is idempotent: the venv is (re)built only when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint clean

setup: $(STAMP)

# torch first, pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: train the gpt-char recipe on Shakespeare (about 5 minutes on 2 CPU cores).
demo: setup
	$(VENV)/bin/attnlab train gpt-char

test: setup
	HF_HUB_OFFLINE=1 $(PY) -m pytest
	$(VENV)/bin/ruff check .

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
