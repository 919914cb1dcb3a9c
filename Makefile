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
# The in-browser player: @moq/watch and esbuild as pinned by web/package-lock.json, installed into
# web/node_modules and bundled into web/dist/player.js (both git-ignored), redone only when the
# lock file, package.json or web/src change.
NPM ?= npm
WEB_STAMP ?= web/.built
WEB_SOURCES := web/package.json web/package-lock.json $(wildcard web/src/*)
# The gateway's libsrt and the clients the integration tests run (README recipes): ffmpeg,
# srt-live-transmit, VLC (TS demux/mux and the dummy interface are in plugin-base, its SRT input
# in access-extra) and GStreamer (srtsrc/srtsink and tsparse are in plugins-bad). nodejs (and npm,
# below) build the in-browser player (web/); chromium plays it in the player's end-to-end test.
# gcc builds the compiled TS packet path (mux/_fast.pyx, at pip install); its Python headers come
# from python3-dev unless the chosen Python has its own (a pyenv or source build).
DEB_PACKAGES := libsrt1.5-openssl srt-tools ffmpeg vlc-bin vlc-plugin-base vlc-plugin-access-extra \
  gstreamer1.0-tools gstreamer1.0-plugins-bad nodejs chromium gcc
# Debian packages installed only when the command of the same name is missing: NodeSource's nodejs
# package ships npm itself (and conflicts with Debian's npm package), so the command is checked.
DEB_COMMANDS := npm
# Root (a container image, usually without sudo) runs apt-get itself; anyone else goes through sudo.
SUDO := $(shell if [ "$$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1; then echo sudo; fi)

# Steps must run in order (packages before the venv, lint before tests), even under -j.
.NOTPARALLEL:
.PHONY: deps system-deps web run test lint typecheck unit integration bench fixtures clean

deps: system-deps $(STAMP) web

system-deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	for c in $(DEB_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -z "$(PYTHON)" ] || ! $(PYTHON) -c 'import os, sysconfig, sys; \
	  sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' 2>/dev/null; then \
	  missing="$$missing python3-dev"; \
	fi; \
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

# setup.py and the .pyx files too: pip install -e rebuilds the compiled packet path when they change.
$(STAMP): pyproject.toml setup.py $(wildcard mux/*.pyx mux/*.pxd)
	@py="$(PYTHON)"; [ -n "$$py" ] || py=python3; \
	$$py -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "need Python >= 3.11 (found $$($$py --version 2>&1))"; exit 1; }; \
	$$py -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

web: $(WEB_STAMP)

# --ignore-scripts: no package runs code at install (esbuild finds its binary without its
# postinstall); npm ci never prompts, so this runs with no stdin.
$(WEB_STAMP): $(WEB_SOURCES)
	cd web && $(NPM) ci --no-audit --no-fund --ignore-scripts --loglevel=error
	cd web && $(NPM) run --silent build
	touch $(WEB_STAMP)

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
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache web/node_modules web/dist $(WEB_STAMP)
