# moqsrt: `make run` serves with embedded defaults, `make test` runs the whole suite.
# Both install what is missing first (Debian packages as root, then a virtual environment).

SHELL := /bin/bash
# The first Python 3 >= 3.11 on PATH (Debian ships python3 at 3.11 on bookworm, newer later).
# Recursive (`?=`, never `:=`): the venv rule looks again after system-deps installed python3.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The gateway's libsrt and the clients the integration tests run (README recipes): ffmpeg,
# srt-live-transmit, VLC (TS demux/mux and the dummy interface are in plugin-base, its SRT input
# in access-extra) and GStreamer (srtsrc/srtsink and tsparse are in plugins-bad).
DEB_PACKAGES := libsrt1.5-openssl srt-tools ffmpeg vlc-bin vlc-plugin-base vlc-plugin-access-extra \
  gstreamer1.0-tools gstreamer1.0-plugins-bad
# Root (a container image, usually without sudo) runs apt-get itself; anyone else goes through sudo.
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)

# Steps must run in order (packages before the venv, lint before tests), even under -j.
.NOTPARALLEL:
.PHONY: deps system-deps run test lint typecheck unit integration bench fixtures clean

deps: system-deps $(STAMP)

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$(PYTHON)" ] || ! $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null; then \
	  missing="$$missing python3 python3-venv"; \
	fi; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ] && [ -z "$(SUDO)" ]; then \
	    echo "need root or sudo to install Debian packages:$$missing" >&2; exit 1; \
	  fi; \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): pyproject.toml
	@py="$(PYTHON)"; [ -n "$$py" ] || py=python3; \
	$$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "need Python >= 3.11 (found $$($$py --version 2>&1))"; exit 1; }; \
	$$py -m venv $(VENV)
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

# Two xdist workers (tests/conftest.py starts them with -X dev too).
unit: deps
	$(PY) -X dev -m pytest -q -n 2 tests/unit

# Real-time sessions, mostly waiting: two at a time (an `xdist_group` stays on one worker), then
# the tests marked `serial` alone (they measure the gateway's memory and rates).
integration: deps
	$(PY) -m pytest -q -n 2 --dist loadgroup -m "not serial" tests/integration
	$(PY) -m pytest -q -m serial tests/integration

test: deps lint typecheck unit integration

bench: deps
	$(PY) tests/bench/run.py $(BENCH)

fixtures: deps
	$(PY) fixtures/make_fixtures.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
