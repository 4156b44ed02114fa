# Two commands on a fresh machine with Python >= 3.10:
#   make demo   install into .venv, pretrain SimCLR on built-in digits, print kNN learned vs random init
#   make test   install into .venv, run ruff and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
DEMO_BUDGET ?= 3m

.PHONY: install demo test lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m selfsup.demo --budget $(DEMO_BUDGET)

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
