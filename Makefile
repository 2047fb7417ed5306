# Bluesky firehose appliance. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
BIN    := $(VENV)/bin
PYTHON := $(BIN)/python
PY_SYS ?= python3

API_PORT       ?= 8080
FLUSH_INTERVAL ?= 300
JETSTREAM_URL  ?=
SIM_RATE       ?= 200

APT_PACKAGES := redis-server python3-venv
APT_MISSING   = $(shell for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done)

.PHONY: help deps venv run test test-unit lint lint-python bench config-doc clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## install the Debian packages the pipeline needs (redis-server)
	@if [ -n "$(strip $(APT_MISSING))" ]; then \
	  echo "installing Debian packages: $(APT_MISSING)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_MISSING); \
	fi

$(VENV)/.installed: requirements.txt app/pyproject.toml
	$(PY_SYS) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps -e app
	touch $@

venv: $(VENV)/.installed ## create the virtualenv with the app and the dev tools

run: deps venv ## run the whole pipeline here: Redis, simulator, ingester, flush, API on localhost:$(API_PORT)
	$(BIN)/firehose dev --api-port $(API_PORT) --flush-interval $(FLUSH_INTERVAL) --sim-rate $(SIM_RATE) \
	  $(if $(JETSTREAM_URL),--jetstream-url '$(JETSTREAM_URL)')

test: deps venv ## unit and integration tests (real redis-server, websockets, Parquet, Gunicorn)
	$(BIN)/pytest -q tests/unit tests/integration

test-unit: venv ## unit tests only
	$(BIN)/pytest -q tests/unit

lint-python: venv ## ruff
	$(BIN)/ruff check app tests

lint: lint-python lint-appliance ## everything: ruff, ansible-lint, yamllint, packer validate, promtool

bench: deps venv ## throughput, storage ratio and search latency on generated data (prints figures)
	$(PYTHON) tests/bench/run.py $(BENCH_ARGS)

config-doc: venv ## regenerate docs/configuration.md from app/firehose/config.py
	$(PYTHON) -m firehose.config --markdown > docs/configuration.md

clean: ## remove local state (var/) and caches; keeps the venv
	rm -rf var .pytest_cache .ruff_cache

-include mk/*.mk
