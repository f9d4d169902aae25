# dockershim-py: `make run` starts the shim, `make test` runs the whole suite; both set up what is missing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ENDPOINT ?= unix:///var/run/dockershim.sock
ARGS ?=
PYTEST_ARGS ?=

.PHONY: venv env run test unit bench soak proto clean

venv: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "dockershim-py needs Python 3.11 or newer")'
	@$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Docker Engine, registries on 127.0.0.1 and the test images (idempotent, seconds when all is there).
env:
	bash tests/env/setup.sh

run: venv env
	$(VENV)/bin/dockershim-py --container-runtime-endpoint $(ENDPOINT) $(ARGS)

test: venv env
	$(PY) -m pytest $(PYTEST_ARGS)

# Benchmarks against the real daemon (not part of `make test`); figures on stdout, JSON beside.
BENCH_ARGS ?=
bench: venv env
	$(PY) bench/kubelet_bench.py --json bench-kubelet.json $(BENCH_ARGS)
	$(PY) bench/stats_bench.py --json bench-stats.json
	$(PY) bench/streaming_bench.py --json bench-streaming.json

# 30 minutes of churn at 110 pods: does the shim's memory settle? (not in CI)
SOAK_ARGS ?=
soak: venv env
	$(PY) bench/soak.py --json bench-soak.json $(SOAK_ARGS)

# Tests that need neither Docker nor root.
unit: venv
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

proto: venv
	$(PY) tools/genproto.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
