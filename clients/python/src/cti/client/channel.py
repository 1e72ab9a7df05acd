"""A channel to a CTI service: TLS or plaintext, and ``authorization: Bearer <token>`` on
every call (the services answer UNAUTHENTICATED without it, except health and reflection)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

DEFAULT_OPTIONS: tuple[tuple[str, Any], ...] = (
    # A large batch's answer (generated passwords) is several MB; gRPC's default is 4 MB.
    ("grpc.max_receive_message_length", 64 << 20),
)


def connect(
    address: str,
    *,
    token: str = "",
    tls: bool = False,
    root_certificates: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.Channel:
    """A channel to ``address`` (``host:port``).

    ``token`` is sent as a bearer token with every call. ``tls`` (implied by
    ``root_certificates``, PEM bytes of the CA to trust; default: the system's roots)
    encrypts the connection; without it the token travels in clear text, which is only
    reasonable on loopback or inside an encrypted mesh. ``options`` are gRPC channel
    options, added to (and overriding) :data:`DEFAULT_OPTIONS`.
    """
    merged = list({**dict(DEFAULT_OPTIONS), **dict(options)}.items())
    if tls or root_certificates is not None:
        credentials = grpc.ssl_channel_credentials(root_certificates=root_certificates)
        channel = grpc.secure_channel(address, credentials, options=merged)
    else:
        channel = grpc.insecure_channel(address, options=merged)
    if not token:
        return channel
    return grpc.intercept_channel(channel, _BearerToken(token))


class _BearerToken(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    """Adds the ``authorization`` metadata to every call (kept if the caller set one)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        if not any(key.lower() == "authorization" for key, _ in metadata):
            metadata.append(self._header)
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(
        self, continuation: Callable[..., Any], details: Any, requests: Any
    ) -> Any:
        return continuation(self._with_token(details), requests)


class _CallDetails(grpc.ClientCallDetails):  # type: ignore[misc]
    """``grpc.ClientCallDetails`` is abstract: the one concrete shape interceptors pass on."""

    def __init__(
        self,
        method: str,
        timeout: float | None,
        metadata: list[tuple[str, str | bytes]],
        credentials: Any,
        wait_for_ready: bool | None,
        compression: Any,
    ) -> None:
        self.method = method
        self.timeout = timeout
        self.metadata = metadata
        self.credentials = credentials
        self.wait_for_ready = wait_for_ready
        self.compression = compression
