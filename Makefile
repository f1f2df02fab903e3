# Two commands do all the set-up: `make train` and `make test` each create .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
ARGS   ?=
PYTEST_ARGS ?=

.PHONY: train test install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev,reports,loggers,export]"
	touch $(STAMP)

install: $(STAMP)

## Train the default recipe (recipes/mlp-digits.yaml); pass ARGS="recipes/x.yaml key=value" for others.
train: $(STAMP)
	$(BIN)/zoo train $(ARGS)

## Run the whole test suite.
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache
