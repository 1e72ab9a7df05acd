# Everything runs from .venv; `make install` builds it (idempotent).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
# The contracts: protos/cti/v1/*.proto is the source; `make proto` generates the Python
# code into the client distribution (clients/python, `cti-api`), which the venv has
# installed in editable mode, so the services and any client import `cti.v1` from there.
PROTOS := $(wildcard protos/cti/v1/*.proto)
CLIENT := clients/python
CLIENT_V1 := $(CLIENT)/src/cti/v1
PROTO_STAMP := $(CLIENT_V1)/.generated
# Pinned, tested versions of every Python package: `make install`, CI and the Dockerfile.
CONSTRAINTS := constraints.txt
PIP_INSTALL := $(PY) -m pip install -q --constraint $(CONSTRAINTS)
# buf (proto lint + breaking-change check), pinned in tools/buf/package-lock.json.
BUF := tools/buf/node_modules/.bin/buf
# The last released contracts (a buf image): `make proto-breaking` compares protos/ to it.
PROTO_SNAPSHOT := protos/descriptor.json

.PHONY: install proto run test fuzz lint bench clean system-deps bench-deps build-deps demo \
	proto-tools proto-lint proto-breaking proto-snapshot

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

# buf comes from the npm registry (@bufbuild/buf ships the binary); npm from Debian if absent.
proto-tools: $(BUF)

$(BUF): tools/buf/package.json tools/buf/package-lock.json
	@command -v npm >/dev/null 2>&1 || { $(APT_INSTALL) nodejs npm >/dev/null; }
	cd tools/buf && npm ci --no-audit --no-fund --loglevel=error
	test -x $(BUF) && touch $(BUF)

bench-deps: system-deps
	@command -v wrk >/dev/null 2>&1 && command -v nginx >/dev/null 2>&1 || \
		{ $(APT_INSTALL) wrk nginx-light >/dev/null; }

install: build-deps $(STAMP) $(PROTO_STAMP)

$(STAMP): pyproject.toml $(CLIENT)/pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip setuptools wheel
	# python-ESL 1.4.18 needs SWIG 3.x (Debian's 4.x dropped -classic): PyPI's swig into the venv.
	# Built from its sdist with one libesl framing bug fixed (see tools/build_python_esl.py).
	$(PIP_INSTALL) swig==3.0.12
	PATH="$(CURDIR)/$(BIN):$$PATH" $(PY) tools/build_python_esl.py $(VENV)/wheels
	$(PY) -m pip install -q --force-reinstall --no-deps $(VENV)/wheels/python_esl-1.4.18-*.whl
	# The client distribution first: the services depend on it (cti-api is not on PyPI).
	$(PIP_INSTALL) -e $(CLIENT)
	$(PIP_INSTALL) -e '.[dev]'
	touch $(STAMP)

proto: $(PROTO_STAMP)

# The .proto files travel with the generated code (in the wheel and sdist), so a client
# needs nothing of this repository.
$(PROTO_STAMP): $(PROTOS) $(STAMP)
	rm -f $(CLIENT_V1)/*.proto $(CLIENT_V1)/*_pb2*.py $(CLIENT_V1)/*_pb2*.pyi
	cp $(PROTOS) $(CLIENT_V1)/
	$(PY) -m grpc_tools.protoc -Iprotos \
		--plugin=protoc-gen-mypy=$(BIN)/protoc-gen-mypy \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		--python_out=$(CLIENT)/src --grpc_python_out=$(CLIENT)/src \
		--mypy_out=quiet:$(CLIENT)/src --mypy_grpc_out=quiet:$(CLIENT)/src $(PROTOS)
	touch $(PROTO_STAMP)

# Style rules for the contracts (protos/buf.yaml says which and why).
proto-lint: $(BUF)
	cd protos && ../$(BUF) lint

# Fails on an incompatible change (wire, JSON or generated code) against the last released
# contracts (protos/buf.yaml says which rules).
proto-breaking: $(BUF)
	cd protos && ../$(BUF) breaking --against ../$(PROTO_SNAPSHOT)

# Deliberately, when releasing a new cti-api version: the current contracts become the
# baseline that later changes must stay compatible with.
proto-snapshot: $(BUF) $(STAMP)
	cd protos && ../$(BUF) build --exclude-source-info -o ../$(PROTO_SNAPSHOT)
	$(PY) -m json.tool --indent 1 $(PROTO_SNAPSHOT) $(PROTO_SNAPSHOT).tmp
	mv $(PROTO_SNAPSHOT).tmp $(PROTO_SNAPSHOT)

run: install system-deps
	$(BIN)/python -m cti.devrun $(if $(CONFIG),--config $(CONFIG))

# The services against a FreeSWITCH simulator replaying captured traffic (tools/demo.py).
demo: install system-deps
	$(PY) -m tools.demo

test: install system-deps proto-tools
	$(BIN)/pytest -q

# The hypothesis fuzz suite at full size (>= 10,000 cases; `make test` runs it small).
fuzz: install system-deps
	CTI_FUZZ_PROFILE=fuzz $(BIN)/pytest -q tests/fuzz

lint: install proto-lint proto-breaking
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy cti directory_service event_service ctictl tests bench tools
	$(BIN)/mypy -p cti.client

bench: install bench-deps
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(CLIENT_V1)/*.proto $(CLIENT_V1)/*_pb2*.py* $(PROTO_STAMP) tools/buf/node_modules
