# The two commands:  `make up` runs the whole mesh locally;  `make test` runs every test.
# Both set up what they need first (virtual environment, pinned dependencies, Redis and
# PostgreSQL found or started embedded). The tools are console scripts of the
# ml_serving_tools package (tools/), installed into the virtual environment.

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
STATE  ?= .run

.PHONY: up test install proto lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Run the whole mesh (all five services + Envoy) in the foreground; Ctrl-C stops it.
up: install
	$(BIN)/mesh-up --state-dir $(STATE)

# Run the whole test suite (unit, transport, contract, e2e) against real processes.
test: install
	$(BIN)/mesh-test --state-dir $(STATE)

# Regenerate gen/ (Python code, descriptor set, service catalog) from proto/, and the
# Kubernetes gateway's Envoy config that transcodes from them (k8s/gateway).
proto: install
	$(BIN)/mesh-proto
	$(PY) k8s/gateway/render.py

# buf lint, then check gen/ is fresh (both materialise build/third_party first).
lint: install
	$(BIN)/mesh-proto --lint --check

bench: install
	$(PY) bench/run_all.py --state-dir $(STATE)

clean:
	rm -rf build $(STATE)
