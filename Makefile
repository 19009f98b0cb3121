# The two commands:  `make up` runs the whole mesh locally;  `make test` runs every test.
# Both set up what they need first (virtual environment, pinned dependencies, Redis and
# PostgreSQL found or started embedded).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
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
	$(PY) scripts/run_mesh.py --state-dir $(STATE)

# Run the whole test suite (unit, transport, contract, e2e) against real processes.
test: install
	$(PY) scripts/run_tests.py --state-dir $(STATE)

# Regenerate gen/ (Python code and descriptor set) from proto/.
proto: install
	$(PY) scripts/gen_proto.py

lint: install
	PATH=$(VENV)/bin:$$PATH buf lint
	$(PY) scripts/gen_proto.py --check

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf build $(STATE)
