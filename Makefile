# railnet: the targets people expect. `make test` and `make demo` set everything up on a
# fresh Debian machine (as root): system packages, a virtual environment, the package.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
APT_PACKAGES := wireguard-go wireguard-tools iproute2 iputils-ping util-linux iperf3 dnsperf dnsmasq-base etcd-server etcd-client
NEEDED_COMMANDS := wireguard-go wg ip ping nsenter setsid iperf3 dnsperf dnsmasq etcd etcdctl
PROTO := provider/proto/railnet/agent/v1/agent.proto

.PHONY: setup system test test-floor test-unit test-agent test-linux test-provider test-examples lint format typecheck proto proto-check schema bench bench-self-heal demo lab-up lab-down clean

setup: system $(STAMP)

system:
	@missing=""; for c in $(NEEDED_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing system packages (missing:$$missing)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(APT_PACKAGES); \
	fi

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

test: setup
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-floor

# The dependency floor: railnet installed with the oldest pulumi pyproject.toml allows (and
# whatever pip resolves around it), in a venv of its own, then the provider tier on it.
PULUMI_FLOOR := $(shell sed -n 's/^ *"pulumi>=\([0-9.]*\),.*/\1/p' pyproject.toml)
FLOOR_VENV := .venv-floor
FLOOR_STAMP := $(FLOOR_VENV)/.pulumi-$(PULUMI_FLOOR)

$(FLOOR_STAMP): pyproject.toml
	rm -rf $(FLOOR_VENV)
	$(PYTHON) -m venv $(FLOOR_VENV)
	@if $(FLOOR_VENV)/bin/pip install -q -e '.[test]' "pulumi==$(PULUMI_FLOOR).*"; then \
	  touch $@; \
	else \
	  echo "test-floor: SKIPPED, not passed: railnet with pulumi==$(PULUMI_FLOOR) could not be installed"; \
	fi

test-floor: system $(FLOOR_STAMP)
	@if [ -f $(FLOOR_STAMP) ]; then \
	  $(FLOOR_VENV)/bin/python -c 'from importlib.metadata import version; print("test-floor: pulumi", version("pulumi"))'; \
	  $(FLOOR_VENV)/bin/python -m pytest -m provider -q; \
	else \
	  echo "test-floor: SKIPPED, not passed: no venv with pulumi==$(PULUMI_FLOOR)"; \
	fi

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: setup
	$(VENV)/bin/mypy

proto: setup
	$(PY) -m grpc_tools.protoc -Iprovider/proto --python_out=provider --pyi_out=provider \
	  --grpc_python_out=provider $(PROTO)

schema: setup
	$(PY) -m railnet.engine.schema > schema.json

proto-check: setup
	$(PY) -m pytest -q tests/unit/test_proto_fresh.py

bench: setup
	$(PY) -m bench.run

# One benchmark alone, e.g. after a change to the self-healer: prints its section.
bench-self-heal: setup
	$(PY) -m bench.self_heal

demo: setup
	$(VENV)/bin/railnet demo

lab-up: setup
	$(VENV)/bin/railnet lab up

lab-down: setup
	$(VENV)/bin/railnet lab down

clean:
	rm -rf $(VENV) $(FLOOR_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
