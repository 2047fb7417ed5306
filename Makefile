# Bluesky firehose appliance. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV   ?= .venv
BIN    := $(VENV)/bin
PYTHON := $(BIN)/python
PY_SYS ?= python3

API_PORT       ?= 8080
REDIS_PORT     ?= 6390
SIM_PORT       ?= 6008
SIM_DNS_PORT   ?= 6053
INGEST_METRICS_PORT ?= 9101
FLUSH_INTERVAL ?= 300
JETSTREAM_URL  ?=
SIM_RATE       ?= 200
LOAD_RUNS      ?= 3

APT_PACKAGES := redis-server python3-venv
APT_MISSING   = $(shell for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done)

.PHONY: help deps venv venv-runtime run test test-unit test-under-load lint lint-python bench config-doc clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

deps: ## install the Debian packages the pipeline needs (redis-server)
	@if [ -n "$(strip $(APT_MISSING))" ]; then \
	  echo "installing Debian packages: $(APT_MISSING)"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $(APT_MISSING); \
	fi

# One virtualenv in two layers. The runtime layer (requirements.txt, the pins the appliance installs, and the app)
# is all `make run` needs; the first development target (test, lint, validation, appliance: everything that depends
# on `venv`) adds the tools of requirements-dev.txt. Each step says what it does; pip lists what it installs.
PIP          = $(BIN)/pip install --disable-pip-version-check
VENV_RUNTIME = $(VENV)/.runtime-installed
VENV_DEV     = $(VENV)/.dev-installed

$(VENV_RUNTIME): requirements.txt app/pyproject.toml
	@echo "== creating the virtualenv $(VENV)"
	$(PY_SYS) -m venv $(VENV)
	@echo "== upgrading pip"
	$(PIP) -q --upgrade pip
	@echo "== installing the runtime packages (requirements.txt)"
	$(PIP) -r requirements.txt
	@echo "== installing the app (app/, editable: your edits take effect without reinstalling)"
	@# PYTHONWARNINGS: setuptools prints a boxed warning for every editable install ("be careful with folders
	@# named like the package"); it is advice for src-less layouts in general, not a problem here, so it is hidden.
	PYTHONWARNINGS=ignore $(PIP) -q --no-deps -e app
	@touch $@

$(VENV_DEV): $(VENV_RUNTIME) requirements-dev.txt
	@echo "== installing the development tools (requirements-dev.txt: pytest, ruff, ansible, matplotlib, ...)"
	$(PIP) -r requirements-dev.txt
	@touch $@

venv-runtime: $(VENV_RUNTIME) ## the virtualenv with the app and its runtime packages only (what make run needs)

venv: $(VENV_DEV) ## the virtualenv with the app, its runtime packages and the dev tools (tests, lint, appliance)

run: deps venv-runtime ## run the whole pipeline here: Redis, simulator, ingester, flush, API on localhost:$(API_PORT)
	$(BIN)/firehose dev --stop-with-parent --api-port $(API_PORT) --redis-port $(REDIS_PORT) --sim-port $(SIM_PORT) \
	  --sim-dns-port $(SIM_DNS_PORT) \
	  --ingest-metrics-port $(INGEST_METRICS_PORT) --flush-interval $(FLUSH_INTERVAL) --sim-rate $(SIM_RATE) \
	  $(if $(JETSTREAM_URL),--jetstream-url '$(JETSTREAM_URL)')

test: deps venv ## unit and integration tests (real redis-server, websockets, Parquet, Gunicorn)
	$(BIN)/pytest -q tests/unit tests/integration

test-unit: venv ## unit tests only
	$(BIN)/pytest -q tests/unit

test-under-load: deps venv ## make test LOAD_RUNS times (3) while stress-ng keeps every core busy; prints each summary
	@command -v stress-ng >/dev/null || { echo "installing Debian's stress-ng"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq stress-ng; }
	@set -o pipefail; log=$$(mktemp); status=0; summaries=""; \
	stress-ng --cpu "$$(nproc)" --timeout 0 --quiet & load=$$!; \
	trap 'kill "$$load" 2>/dev/null; wait "$$load" 2>/dev/null; rm -f "$$log"' EXIT; \
	for run in $$(seq $(LOAD_RUNS)); do \
	  echo "== make test under load ($$(nproc) stress-ng CPU workers), run $$run of $(LOAD_RUNS)"; \
	  $(MAKE) --no-print-directory test 2>&1 | tee "$$log" || status=1; \
	  summaries="$$summaries"$$'\n'"  run $$run: $$(grep -E '[0-9]+ (passed|failed|errors?)' "$$log" | tail -n 1)"; \
	done; \
	echo "== make test under load:$$summaries"; exit $$status

lint-python: venv ## ruff (app, tests), mypy (app; mypy.ini)
	$(BIN)/ruff check app tests
	$(BIN)/mypy

lint: lint-python lint-appliance ## everything: ruff, mypy, ansible-lint, yamllint, packer and caddy validate, promtool

bench: deps venv ## throughput, storage ratio and search latency on generated data (prints figures)
	$(PYTHON) tests/bench/run.py $(BENCH_ARGS)

config-doc: venv-runtime ## regenerate docs/configuration.md from app/firehose/config.py
	$(PYTHON) -m firehose.config --markdown > docs/configuration.md

clean: ## remove local state (var/) and caches; keeps the venv
	rm -rf var .pytest_cache .ruff_cache

-include mk/*.mk
