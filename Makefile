# Two commands set everything up on a fresh machine:
#   make run    creates .venv, installs memwarden and runs `memwarden status`
#   make test   creates .venv, installs memwarden with its test extras and runs the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: run test lint bench clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test,llamacpp]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/memwarden status

# The dashboard test drives Debian's chromium through Playwright (tests/test_serve_dashboard.py);
# it skips, saying why, where chromium cannot be installed.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		{ command -v apt-get >/dev/null 2>&1 && \
		  $(SUDO) apt-get update -q && \
		  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium; } || \
		echo "warning: chromium could not be installed; the dashboard test will skip"

test: $(VENV)/.installed-test chromium
	$(BIN)/ruff check memwarden tests benchmarks
	$(BIN)/ruff format --check memwarden tests benchmarks
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/run.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
