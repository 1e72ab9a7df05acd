"""Shared gRPC server plumbing for both services (sync ``grpc.server`` on a thread pool).

What every service gets from :func:`build_server`:

- **Bearer-token auth**: each call must carry ``authorization: Bearer <token>`` metadata
  matching one of ``GrpcSettings.tokens`` (constant-time compare); otherwise the call ends
  with ``UNAUTHENTICATED`` before the servicer runs. A read-only token (``TokenScope``)
  calling anything but Get/List/Watch ends with ``PERMISSION_DENIED`` (``READ_ONLY_TOKEN``);
  domain limits are the servicers' to check (:func:`caller_scope`, :func:`check_domain`).
  The standard health service and server reflection are exempt, so Kubernetes probes
  and ``grpcurl list`` work without a token.
  With *no* tokens configured the server is open, and therefore refuses to start
  (:class:`cti.config.ConfigError`) unless it listens on a loopback address only.
- **Health** (``grpc.health.v1``): overall status ``""`` and each named service SERVING
  once built; the returned :class:`ManagedServer`'s ``stop`` flips them to NOT_SERVING
  before draining (graceful shutdown on SIGTERM is the caller's ``server.stop(grace)``).
- **Reflection** (``grpc.reflection.v1alpha``), so ``grpcurl`` needs no proto files.
- **TLS** when ``tls_cert``/``tls_key`` are set (PEM files), plaintext otherwise.
- **Error mapping**: servicers raise :class:`cti.api_errors.ApiError` (or a subclass); the
  interceptor turns it into the status code plus a ``google.rpc.Status`` with an
  ``ErrorInfo`` (UPPER_SNAKE ``reason``, ``domain``, ``metadata``) and, for bad requests, a
  ``BadRequest`` listing field violations (:mod:`cti.api_errors`, the error model clients
  import without this module). Any other exception is logged and answered with
  ``INTERNAL`` without leaking its text.

Usage (one service)::

    server = build_server(settings.directory.grpc, ["cti.v1.DirectoryService"],
                          lambda s: directory_pb2_grpc.add_DirectoryServiceServicer_to_server(
                              servicer, s), error_domain="directory.cti")
    server.start(); ...; server.stop(grace=5).wait()   # health NOT_SERVING, then drain
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from pathlib import Path
from typing import Any, NoReturn

import grpc
import redis.exceptions
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from cti.addresses import is_loopback, split_address
from cti.api_errors import ApiError, abort
from cti.config import FULL_ACCESS, ConfigError, GrpcSettings, TokenScope
from cti.startup import ensure_port_free
from cti.text import display_text

log = logging.getLogger(__name__)

DEFAULT_MAX_WORKERS = 16
EXEMPT_SERVICES = (
    health.SERVICE_NAME,
    reflection.SERVICE_NAME,
    "grpc.reflection.v1.ServerReflection",
)
"""Services callable without a token (probes and tooling)."""


# ---------------------------------------------------------------------------------------
# Interceptors

Behaviour = Callable[[Any, grpc.ServicerContext], Any]


def _rewrap(handler: Any, wrap: Callable[[Behaviour, bool], Behaviour]) -> Any:
    """``handler`` with its behaviour replaced by ``wrap(behaviour, response_streaming)``,
    keeping its shape (unary/stream) and (de)serializers."""
    if handler.request_streaming and handler.response_streaming:
        factory, behaviour = grpc.stream_stream_rpc_method_handler, handler.stream_stream
    elif handler.request_streaming:
        factory, behaviour = grpc.stream_unary_rpc_method_handler, handler.stream_unary
    elif handler.response_streaming:
        factory, behaviour = grpc.unary_stream_rpc_method_handler, handler.unary_stream
    else:
        factory, behaviour = grpc.unary_unary_rpc_method_handler, handler.unary_unary
    return factory(
        wrap(behaviour, handler.response_streaming),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _service_of(method: str) -> str:
    """``/pkg.Service/Method`` -> ``pkg.Service``."""
    return method.strip("/").partition("/")[0]


READ_METHOD_PREFIXES = ("Get", "List", "Watch", "BatchGet", "Search")
"""AIP standard read methods: what a read-only token may call."""


def is_read_method(method: str) -> bool:
    """``/cti.v1.EventService/ListRegistrations`` -> True."""
    return method.rpartition("/")[2].startswith(READ_METHOD_PREFIXES)


class TokenTable:
    """The configured bearer tokens and their scopes (constant-time compare). With no
    tokens at all, everyone has full access (a loopback-only server)."""

    def __init__(self, tokens: Iterable[str], scopes: Mapping[str, TokenScope]) -> None:
        self.restricted = any(s.read_only or s.domains for s in scopes.values())
        self._tokens = tuple((t.encode(), scopes.get(t, FULL_ACCESS)) for t in tokens)

    def scope(self, metadata: Iterable[tuple[str, str | bytes]]) -> TokenScope | None:
        """The scope of the call's ``authorization: Bearer`` token, ``None`` if invalid."""
        if not self._tokens:
            return FULL_ACCESS
        for key, value in metadata:
            if key.lower() != "authorization":
                continue
            text = display_text(value)
            scheme, _, token = text.strip().partition(" ")
            if scheme.lower() != "bearer":
                continue
            offered = token.strip().encode()
            found = None
            for known, scope in self._tokens:  # compare with all: no early exit to time
                if hmac.compare_digest(offered, known):
                    found = scope
            if found is not None:
                return found
        return None


NO_ACCESS = TokenScope("unauthenticated", read_only=True, domains=("-",))


def caller_scope(context: grpc.ServicerContext, table: TokenTable) -> TokenScope:
    """The scope of the token this call came with (the interceptor already checked it)."""
    return table.scope(context.invocation_metadata() or ()) or NO_ACCESS


def domain_denied(scope: TokenScope, domain: str) -> ApiError:
    return ApiError(
        grpc.StatusCode.PERMISSION_DENIED,
        "DOMAIN_NOT_ALLOWED",
        f"this token ({scope.name}) is not allowed on domain {domain!r}",
        metadata={"domain": domain},
    )


def check_domain(scope: TokenScope, domain: str) -> None:
    """PERMISSION_DENIED unless ``scope`` covers ``domain``."""
    if not scope.allows_domain(domain):
        raise domain_denied(scope, domain)


class BearerTokenInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Rejects calls without a valid ``authorization: Bearer <token>`` (UNAUTHENTICATED),
    except to ``exempt`` services. With no tokens, every call passes (loopback-only use)."""

    def __init__(
        self,
        tokens: Iterable[str],
        domain: str,
        exempt: Sequence[str] = EXEMPT_SERVICES,
        scopes: Mapping[str, TokenScope] | None = None,
    ) -> None:
        self._table = TokenTable(tokens, scopes or {})
        self._domain = domain
        self._exempt = frozenset(exempt)

    def accepts(self, metadata: Iterable[tuple[str, str | bytes]]) -> bool:
        return self._table.scope(metadata) is not None

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or _service_of(details.method) in self._exempt:
            return handler
        scope = self._table.scope(details.invocation_metadata or ())
        if scope is not None and (not scope.read_only or is_read_method(details.method)):
            return handler
        if scope is None:
            error = ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                "INVALID_TOKEN",
                "missing or invalid bearer token (metadata 'authorization: Bearer <token>')",
            )
        else:
            error = ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "READ_ONLY_TOKEN",
                f"this token ({scope.name}) may only read (Get/List/Watch)",
            )
        domain = self._domain

        def deny(behaviour: Behaviour, streaming: bool) -> Behaviour:
            def denied(request: Any, context: grpc.ServicerContext) -> Any:
                abort(context, error, domain)

            return denied

        return _rewrap(handler, deny)


class ErrorMappingInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    """Turns :class:`ApiError` raised by a servicer into a rich status; Redis unreachable
    into UNAVAILABLE; anything else into INTERNAL (logged with its traceback, never sent
    to the client)."""

    def __init__(self, domain: str) -> None:
        self._domain = domain

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        domain, method = self._domain, details.method

        def client_left(context: grpc.ServicerContext, exc: Exception) -> bool:
            """The client went away (cancelled, disconnected): nothing failed here and
            nobody is left to answer, so no error to log."""
            if context.is_active():
                return False
            log.info("client left %s", method, extra={"error": type(exc).__name__})
            return True

        def fail(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
            if isinstance(exc, ApiError):
                abort(context, exc, domain)
            if isinstance(exc, REDIS_DOWN):
                abort(context, redis_unavailable(exc, method), domain)
            log.exception("unexpected error in %s", method)
            abort(context, ApiError(grpc.StatusCode.INTERNAL, "INTERNAL", "internal error"), domain)

        def guard(behaviour: Behaviour, streaming: bool) -> Behaviour:
            if streaming:

                def guarded_stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                    try:
                        yield from behaviour(request, context)
                    except Exception as exc:
                        if client_left(context, exc) or context.code() is not None:
                            raise
                        if _is_abort(exc):
                            raise
                        fail(context, exc)

                return guarded_stream

            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    return behaviour(request, context)
                except Exception as exc:
                    if client_left(context, exc) or context.code() is not None:
                        raise
                    if _is_abort(exc):
                        raise
                    fail(context, exc)

            return guarded

        return _rewrap(handler, guard)


REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""What the interceptor answers UNAVAILABLE: Redis could not be reached or did not answer."""


def redis_unavailable(exc: BaseException, where: str) -> ApiError:
    """The one status for "Redis cannot answer": UNAVAILABLE ``REDIS_UNAVAILABLE``, which
    clients retry later (INTERNAL would say "do not"). Logged with the error's type only."""
    log.warning("Redis unavailable in %s: %s", where, type(exc).__name__)
    return ApiError(grpc.StatusCode.UNAVAILABLE, "REDIS_UNAVAILABLE", "state store unavailable")


def _is_abort(exc: Exception) -> bool:
    """``context.abort`` raises a bare ``Exception``; let it through untouched."""
    return type(exc) is Exception


# ---------------------------------------------------------------------------------------
# Server construction


def check_open_listen(settings: GrpcSettings) -> None:
    """No tokens is fine only on loopback: refuse an open server reachable from outside."""
    host, _ = split_address(settings.listen)
    if not settings.tokens and not is_loopback(host):
        raise ConfigError(
            f"gRPC listen {settings.listen}: no API tokens configured (grpc.tokens or "
            "CTI_API_TOKEN); refusing to serve an unauthenticated API on a non-loopback address"
        )


def server_credentials(settings: GrpcSettings) -> grpc.ServerCredentials | None:
    if not settings.tls_cert:
        return None
    try:
        key = Path(settings.tls_key).read_bytes()
        cert = Path(settings.tls_cert).read_bytes()
    except OSError as exc:
        raise ConfigError(f"gRPC TLS: cannot read {exc.filename}: {exc.strerror}") from None
    return grpc.ssl_server_credentials([(key, cert)])


def build_server(
    settings: GrpcSettings,
    service_names: Sequence[str],
    register: Callable[[grpc.Server], None],
    *,
    error_domain: str,
    max_workers: int = DEFAULT_MAX_WORKERS,
    options: Sequence[tuple[str, Any]] = (),
    before_stop: Callable[[], None] | None = None,
) -> grpc.Server:
    """A bound, not yet started server with auth, error mapping, health and reflection.

    ``service_names`` are the full names (``cti.v1.DirectoryService``) that ``register``
    adds; they are reported by health and reflection. ``before_stop`` runs at the start
    of ``stop`` (e.g. to end endless streams so the grace period can drain). Raises
    :class:`ConfigError` for an open non-loopback listen, unreadable TLS files, or an
    address that cannot be bound.
    """
    check_open_listen(settings)
    ensure_port_free(settings.listen, "gRPC listen")
    credentials = server_credentials(settings)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[
            BearerTokenInterceptor(settings.tokens, error_domain, scopes=settings.scopes),
            ErrorMappingInterceptor(error_domain),
        ],
        # No SO_REUSEPORT: a second process on the same port must fail to bind, not
        # silently receive half the connections.
        options=[("grpc.so_reuseport", 0), *options],
    )
    register(server)
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for name in ("", *service_names):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    try:
        if credentials is None:
            port = server.add_insecure_port(settings.listen)
        else:
            port = server.add_secure_port(settings.listen, credentials)
    except RuntimeError as exc:
        raise ConfigError(f"gRPC listen {settings.listen}: cannot bind ({exc})") from None
    if port == 0:
        raise ConfigError(f"gRPC listen {settings.listen}: cannot bind")
    log.info("gRPC server bound", extra={"listen": settings.listen, "tls": credentials is not None})
    return ManagedServer(server, health_servicer, port, before_stop)


class ManagedServer(grpc.Server):  # type: ignore[misc]
    """A ``grpc.Server`` whose ``stop`` first reports NOT_SERVING on the health service
    (so load balancers stop routing new calls) and then drains for ``grace`` seconds.
    ``port`` is the bound port (useful with ``listen`` port 0)."""

    def __init__(
        self,
        inner: grpc.Server,
        health_servicer: Any,
        port: int,
        before_stop: Callable[[], None] | None = None,
    ) -> None:
        self._inner = inner
        self.health = health_servicer
        self.port = port
        self._before_stop = before_stop

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Any) -> None:
        self._inner.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._inner.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return int(self._inner.add_insecure_port(address))

    def add_secure_port(self, address: str, server_credentials: Any) -> int:
        return int(self._inner.add_secure_port(address, server_credentials))

    def start(self) -> None:
        self._inner.start()

    def stop(self, grace: float | None) -> Any:
        self.health.enter_graceful_shutdown()
        if self._before_stop is not None:
            self._before_stop()
        return self._inner.stop(grace)

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return bool(self._inner.wait_for_termination(timeout))
