# Set-up and everyday commands. `make test` and `make demo` work on a fresh clone with only
# Python >= 3.10 installed: they create .venv, install glacimap into it and run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch that this project's machines hold on disk; elsewhere pip resolves the
# normal wheel for the platform from pyproject's `torch>=2.4` range.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: venv install test demo docs bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,docs]"
	touch $@

venv: $(VENV)/.installed
install: venv

test: $(VENV)/.installed
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(BIN)/glacimap demo

docs: $(VENV)/.installed
	$(BIN)/python -m mkdocs build --strict

bench: $(VENV)/.installed
	# MONAI is the peer in bench_predict; --no-deps keeps the installed torch as it is.
	$(BIN)/python -m pip install --quiet --no-deps monai
	$(BIN)/python benchmarks/run_all.py --update-docs

clean:
	rm -rf $(VENV) site build *.egg-info
