# moqsrt: `make run` serves with embedded defaults, `make test` runs the whole suite.
# Both install what is missing first (Debian packages as root, then a virtual environment).

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEB_PACKAGES := libsrt1.5-openssl srt-tools ffmpeg
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null && echo sudo)

.PHONY: deps system-deps run test lint typecheck unit integration bench fixtures clean

deps: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v $(PYTHON) >/dev/null || { \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3 python3-venv; }

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

run: deps
	$(VENV)/bin/moqsrt serve

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

unit: deps
	$(PY) -X dev -m pytest -q tests/unit

integration: deps
	$(PY) -m pytest -q tests/integration

test: deps lint typecheck unit integration

bench: deps
	$(PY) tests/bench/run.py $(BENCH)

fixtures: deps
	$(PY) fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
