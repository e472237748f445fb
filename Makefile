# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
LONG_STEPS ?= 6500

.PHONY: install test lint demo demo-long clean

install: $(STAMP)

# torch is installed first and pinned, so that nothing else can pull a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev,diffusers]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest

demo: $(STAMP)
	$(BIN)/difflab demo

# The same recipe for 5x the steps (about an hour of training on 2 CPU cores).
demo-long: $(STAMP)
	$(BIN)/difflab demo --out runs/demo-long --override schedule.steps=$(LONG_STEPS)

clean:
	rm -rf $(VENV) runs
