# Everything runs from .venv; `make install` builds it (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
PROTOS := $(wildcard protos/cti/v1/*.proto)
PROTO_STAMP := cti/v1/.generated

.PHONY: install proto run test lint bench clean system-deps bench-deps build-deps demo

# Debian packages, installed with apt-get when their command is missing (as root, else
# through sudo): redis-server for tests and `make run` (each starts its own on loopback),
# promtool (Debian package prometheus, only the tool is used: no server is started) for the
# alert-rule tests, wrk and nginx for the benchmarks.
APT_INSTALL = SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); $$SUDO apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq

system-deps:
	@command -v redis-server >/dev/null 2>&1 || { $(APT_INSTALL) redis-server redis-tools >/dev/null; }
	@command -v promtool >/dev/null 2>&1 || \
		{ $(APT_INSTALL) --no-install-recommends prometheus >/dev/null; }

# What building python-ESL (a C++ extension) and the venv need, from Debian when missing:
# a C++ compiler, make, the Python headers and venv with pip.
HAVE_PY_HEADERS = $(PYTHON) -c "import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"
HAVE_VENV = $(PYTHON) -c "import ensurepip, venv"
build-deps:
	@command -v g++ >/dev/null 2>&1 && command -v make >/dev/null 2>&1 && \
		$(HAVE_PY_HEADERS) 2>/dev/null && $(HAVE_VENV) 2>/dev/null || \
		{ echo "installing build tools (g++, make, python3-dev, python3-venv)"; \
		  $(APT_INSTALL) g++ make python3-dev python3-venv >/dev/null; }

bench-deps: system-deps
	@command -v wrk >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1 || \
		{ $(APT_INSTALL) wrk nginx-light >/dev/null; }

install: build-deps $(STAMP) $(PROTO_STAMP)

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
	$(BIN)/python -m cti.devrun $(if $(CONFIG),--config $(CONFIG))

# The services against a FreeSWITCH simulator replaying captured traffic (tools/demo.py).
demo: install system-deps
	$(PY) -m tools.demo

test: install system-deps
	$(BIN)/pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cti directory_service event_service ctictl tests bench tools

bench: install bench-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) cti/v1/*_pb2*.py* $(PROTO_STAMP)
