# Two commands do everything on a fresh machine with Python 3.11 and make:
#   make demo   – fake providers in three regions, a proxy, a scripted workload, a region outage
#   make test   – installs what the tests need (venv, Debian packages, helm) and runs them all
# Nothing here assumes anything installed beyond python3 and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.deps-installed
TOOLS  := .tools

.PHONY: demo test lint typecheck unit bench install tools clean crds dashboard classifier-docs help

help:
	@echo "make demo   – run the embedded demo (no keys, no cluster)"
	@echo "make test   – install test dependencies and run lint, types and every test"
	@echo "make bench  – side-by-side benchmarks (writes bench/results/latest.md)"
	@echo "make crds   – regenerate crds/ and charts/modelroute/crds/ from the pydantic models"
	@echo "make dashboard – regenerate charts/modelroute/dashboards/modelroute.json from its builder"
	@echo "make classifier-docs – regenerate docs/classifier.md's keyword lists from their data file"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel

# A plain editable install: the package is read from the working tree, so new
# modules need no re-install; dependencies are reinstalled when pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

tools:
	@bash scripts/install-test-tools.sh

demo: install
	$(BIN)/modelroute demo

lint: install
	$(BIN)/ruff check src proxy operator tests bench
	$(BIN)/ruff format --check src proxy operator tests bench
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

crds: install
	$(BIN)/modelroute crds --write

dashboard: install
	$(BIN)/python -m modelroute.devtools.dashboard --write

classifier-docs: install
	$(BIN)/python -m modelroute.devtools.classifier_docs --write

test: install tools lint typecheck
	PATH="$(CURDIR)/$(TOOLS)/bin:$$PATH" $(BIN)/pytest -q -ra

bench: install
	bash bench/run.sh

clean:
	rm -rf $(VENV) build $(TOOLS) src/*.egg-info
