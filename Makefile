PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
STAMP  := $(VENV)/.installed
DEVSTAMP := $(VENV)/.installed-dev
RUN_DIR ?= runs/demo

.PHONY: demo test test-slow install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.cfg pyproject.toml constraints.txt
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e .
	touch $@

$(DEVSTAMP): $(STAMP)
	$(PIP) install --quiet -c constraints.txt -e ".[dev]"
	touch $@

install: $(STAMP)
install-dev: $(DEVSTAMP)

## make demo: install into .venv and train the default model (recipes/demo.yaml) on the built-in simulator
demo: $(STAMP)
	$(BIN)/grnvae train recipes/demo.yaml --out $(RUN_DIR) --overwrite

## make test: install with dev extras and run the default test suite
test: $(DEVSTAMP)
	$(BIN)/python -m pytest -q

test-slow: $(DEVSTAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) runs build *.egg-info
