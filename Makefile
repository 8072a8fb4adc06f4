# Two set-up commands on a fresh Debian machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= policy.toml

.PHONY: run test lint unit interop demo bench bench-parser clean venv deps

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

run: venv
	mkdir -p var
	$(VENV)/bin/recorder serve --config $(CONFIG)

deps:
	bash scripts/install-test-deps.sh

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest -q -m "not interop"

interop: venv deps
	$(VENV)/bin/pytest -q -m interop

test: venv deps lint
	$(VENV)/bin/pytest -q

demo: venv deps
	$(PY) scripts/demo.py

# Run by hand on a quiet machine (root: installs kamailio, rtpengine and nftables for the
# reference system); results go to bench/results/.
bench: venv deps
	$(PY) -m pip install --quiet -e '.[test,bench]'
	if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends kamailio kamailio-extra-modules rtpengine-daemon nftables >/dev/null; fi
	$(PY) bench/bench_parser.py
	$(PY) bench/bench_relay.py
	$(PY) bench/bench_writer.py
	$(PY) bench/bench_callpath.py
	$(PY) bench/bench_scale.py

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
