# Everything runs from .venv; `make install` builds it (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/cti/v1/*.proto)
PROTO_STAMP := cti/v1/.generated

.PHONY: install proto run test fuzz lint bench clean system-deps bench-deps

# Debian packages, installed with apt-get when their command is missing (as root, else
# through sudo): redis-server for tests and `make run` (each starts its own on loopback),
# wrk and nginx for the benchmarks.
APT_INSTALL = SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq

system-deps:
	@command -v redis-server >/dev/null 2>&1 || { $(APT_INSTALL) redis-server redis-tools >/dev/null; }

bench-deps: system-deps
	@command -v wrk >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1 || \
		{ $(APT_INSTALL) wrk nginx-light >/dev/null; }

install: $(STAMP) $(PROTO_STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# python-ESL 1.4.18 needs SWIG 3.x (Debian's 4.x dropped -classic): PyPI's swig into the venv.
	# Built from its sdist with one libesl framing bug fixed (see tools/build_python_esl.py).
	$(PY) -m pip install -q swig==3.0.12
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) tools/build_python_esl.py $(VENV)/wheels
	$(PY) -m pip install -q --force-reinstall --no-deps $(VENV)/wheels/python_esl-1.4.18-*.whl
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

proto: $(PROTO_STAMP)

$(PROTO_STAMP): $(PROTOS) $(STAMP)
	mkdir -p cti/v1
	$(if $(PROTOS),$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. $(PROTOS))
	touch cti/v1/__init__.py $(PROTO_STAMP)

run: install system-deps
	$(BIN)/python -m cti.devrun

test: install system-deps
	$(BIN)/pytest -q

# The hypothesis fuzz suite at full size (>= 10,000 cases; `make test` runs it small).
fuzz: install system-deps
	CTI_FUZZ_PROFILE=fuzz $(BIN)/pytest -q tests/fuzz

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cti directory_service event_service ctictl tests bench tools

bench: install bench-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) cti/v1/*_pb2*.py* $(PROTO_STAMP)
