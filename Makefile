# The verbs people type. `make run` and `make test` work on a fresh machine.
SHELL := /bin/bash
PY    ?= python3
VENV  := .venv
BIN   := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml Makefile | sha1sum | cut -c1-12)
export RAGLINE_HOME ?= $(CURDIR)/.ragline
export POWERTOOLS_TRACE_DISABLED := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
PORT ?= 8080
TENANT ?= demo

.PHONY: setup browser run demo serve test test-fast lint synth bench bench-scifact clean

setup: $(STAMP)

# torch first, from the CPU wheel: anything else pulls a multi-GB CUDA build
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[aws,local,infra,dev]'
	$(BIN)/python -m ragline.adapters.local.onnx_minilm --export --if-missing
	rm -f $(VENV)/.installed-*
	touch $@

# Ingest the sample corpus, start the local API and say how to ask it something.
run: setup
	$(BIN)/ragline ingest samples --tenant $(TENANT)
	@echo
	@echo "Ask from the command line:"
	@echo "  $(BIN)/ragline ask 'How long are invoices kept?' --tenant $(TENANT)"
	@echo "Or over HTTP (local API on 127.0.0.1:$(PORT)):"
	@echo "  TOKEN=\$$($(BIN)/ragline token --tenant $(TENANT) --user alice)"
	@echo "  curl -s -H \"Authorization: Bearer \$$TOKEN\" -H 'Content-Type: application/json' \\"
	@echo "       -d '{\"question\": \"How long are invoices kept?\"}' http://127.0.0.1:$(PORT)/v1/query"
	@echo
	$(BIN)/ragline serve --port $(PORT)

serve: setup
	$(BIN)/ragline serve --port $(PORT)

# Debian's chromium for the operator page's browser test (Playwright drives it; it never
# downloads a browser). Without apt (not root, no Debian) that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test will be skipped"; }

test: setup browser
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check layers functions infra_cdk tests bench

node_modules/.bin/cdk:
	npm install --no-save --no-audit --no-fund aws-cdk@^2.1148

synth: setup node_modules/.bin/cdk
	npx cdk synth --no-notices -q

bench: setup
	$(BIN)/python bench/run_all.py

bench-scifact: setup
	$(BIN)/python bench/retrieval_scifact.py

clean:
	rm -rf .ragline cdk.out .pytest_cache
