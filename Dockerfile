# syntax=docker/dockerfile:1
# One image, two entry points:
#   docker run IMAGE                               -> python -m directory_service
#   docker run IMAGE python -m event_service ...   -> the event service
# Build: docker build -t cti-middleware:0.1.0 .   (BuildKit, the default since Docker 23)

# ---------------------------------------------------------------------------------------
# Build stage: compilers, SWIG and grpcio-tools stay here.
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
RUN python -m venv /opt/build
ENV PATH=/opt/build/bin:$PATH

# Every Python package at the version tested (constraints.txt, as `make install` and CI).
COPY constraints.txt ./
ENV PIP_CONSTRAINT=/src/constraints.txt

# python-ESL 1.4.18 needs SWIG 3.x (4.x dropped -classic): PyPI's swig, then build the
# wheel (python-ESL==1.4.18 from its sdist, --no-build-isolation so that this swig is the
# one on PATH) with a libesl framing fix, as `make install` does: tools/build_python_esl.py.
COPY tools/build_python_esl.py ./tools/
RUN pip install --upgrade pip setuptools wheel \
    && pip install swig==3.0.12 \
    && python tools/build_python_esl.py /wheels

# Generated protobuf code is not committed: generate it into the client distribution
# (clients/python, cti-api) as `make proto` does, and build its wheel; the services' wheel
# depends on it (one source of generated code).
COPY protos ./protos
COPY clients/python ./clients/python
RUN pip install grpcio-tools mypy-protobuf \
    && cp protos/cti/v1/*.proto clients/python/src/cti/v1/ \
    && python -m grpc_tools.protoc -Iprotos \
        --python_out=clients/python/src --grpc_python_out=clients/python/src \
        --mypy_out=quiet:clients/python/src --mypy_grpc_out=quiet:clients/python/src \
        protos/cti/v1/*.proto \
    && pip wheel --no-deps --wheel-dir /wheels ./clients/python

COPY pyproject.toml ./
COPY cti ./cti
COPY directory_service ./directory_service
COPY event_service ./event_service
COPY ctictl ./ctictl
RUN pip wheel --find-links /wheels --wheel-dir /wheels .

# ---------------------------------------------------------------------------------------
# Runtime stage: the interpreter, the wheels installed into a venv, nothing else.
FROM python:3.11-slim AS runtime

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/cti/bin:$PATH

# The wheels are bind-mounted from the build stage, so they never become an image layer.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/cti \
    && /opt/cti/bin/pip install --no-index --find-links /wheels cti-middleware python-ESL \
    && /opt/cti/bin/python -c "import ESL, directory_service, event_service, cti.config, cti.v1.events_pb2" \
    && groupadd --system --gid 10001 cti \
    && useradd --system --uid 10001 --gid cti --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cti

# No config is baked in: pass one (Kubernetes mounts its ConfigMap at /etc/cti), e.g.
#   docker run -v ./cti.json:/etc/cti/cti.json:ro IMAGE \
#       python -m directory_service --config /etc/cti/cti.json
# and bind 0.0.0.0 in it (the built-in defaults listen on loopback only).
WORKDIR /opt/cti
USER 10001:10001

# xml_curl + /metrics, directory gRPC, events gRPC, events metrics.
EXPOSE 8080 50051 50052 9102

CMD ["python", "-m", "directory_service"]
