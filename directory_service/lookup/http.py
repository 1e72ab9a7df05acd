"""The RSGI edge (granian): who may ask, how much they may send, how long they may wait.

The request path is deliberately short: allow-list -> basic auth -> bounded body -> parse ->
cache answer, under the configured deadline. Any failure to reach Redis answers 503 at
once; mod_xml_curl treats every non-200 as "no answer" and FreeSWITCH then refuses the
registration or call rather than trusting stale data.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import ipaddress
import logging
import time
from typing import Protocol

import redis.exceptions
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian._granian import RSGIProtocolClosed, RSGIProtocolError
from granian.rsgi import Scope

from cti.config import HttpSettings
from directory_service.lookup import render
from directory_service.lookup.metrics import DirectoryMetrics
from directory_service.lookup.request import DirectoryRequest, parse_request

log = logging.getLogger(__name__)


class Answerer(Protocol):
    """What the edge needs from the cache
    (:class:`~directory_service.lookup.cache.DirectoryCache`)."""

    def cached_answer(self, request: DirectoryRequest) -> bytes | None: ...
    async def answer(self, request: DirectoryRequest) -> bytes: ...
    async def can_answer(self, timeout: float) -> bool: ...


READY_PATH = "/ready"
READY_TIMEOUT = 1.0
"""Seconds a readiness PING may take (less than the probe's own timeoutSeconds)."""

_XML = [("content-type", "text/xml; charset=utf-8")]
_TEXT = [("content-type", "text/plain; charset=utf-8")]
_METRICS = [("content-type", "text/plain; version=0.0.4; charset=utf-8")]


def client_ip(client: str) -> str:
    """``"127.0.0.1:5000"`` / ``"[::1]:5000"`` / ``"::1:5000"`` -> the address part."""
    host = client.rpartition(":")[0] if ":" in client else client
    return host.strip("[]")


class AccessPolicy:
    """Source allow-list and basic-auth check; decisions per address are memoized."""

    def __init__(self, settings: HttpSettings) -> None:
        self.networks = tuple(ipaddress.ip_network(n) for n in settings.allow)
        self.expected_auth = ""
        if settings.username or settings.password:
            token = f"{settings.username}:{settings.password}".encode()
            self.expected_auth = "Basic " + base64.b64encode(token).decode()
        self._allowed: dict[str, bool] = {}

    def address_allowed(self, client: str) -> bool:
        if not self.networks:
            return True
        host = client_ip(client)
        allowed = self._allowed.get(host)
        if allowed is None:
            try:
                address = ipaddress.ip_address(host)
            except ValueError:
                return False
            # On a dual-stack listener an IPv4 client is ``::ffff:a.b.c.d``.
            mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
            allowed = any(
                address in network or (mapped is not None and mapped in network)
                for network in self.networks
            )
            if len(self._allowed) > 4096:
                self._allowed.clear()
            self._allowed[host] = allowed
        return allowed

    def authorized(self, header: str | None) -> bool:
        if not self.expected_auth:
            return True
        return header is not None and hmac.compare_digest(
            header.encode(), self.expected_auth.encode()
        )


class DirectoryHttp:
    """Routes one HTTP request; the xml_curl path answers through ``cache``."""

    def __init__(self, settings: HttpSettings, cache: Answerer, metrics: DirectoryMetrics) -> None:
        self.settings = settings
        self.path = settings.path
        self.cache = cache
        self.metrics = metrics
        self.policy = AccessPolicy(settings)
        self.deadline = settings.deadline_ms / 1000
        self._last_warning = -1.0

    async def __call__(self, scope: Scope, proto: HTTPProtocol) -> None:
        if scope.proto != "http":
            return
        if scope.path == self.path:
            if scope.method != "POST":
                proto.response_bytes(405, [*_TEXT, ("allow", "POST")], b"POST only\n")
                return
            await self._lookup(scope, proto)
        elif scope.path == "/metrics" and scope.method == "GET":
            proto.response_bytes(200, _METRICS, self.metrics.render())
        elif scope.path == READY_PATH and scope.method == "GET":
            await self._ready(proto)
        else:
            proto.response_bytes(404, _TEXT, b"not found\n")

    async def _lookup(self, scope: Scope, proto: HTTPProtocol) -> None:
        started = time.perf_counter()
        if not self.policy.address_allowed(scope.client):
            self.metrics.count("-", "refused")
            proto.response_bytes(403, _TEXT, b"forbidden\n")
            return
        headers = scope.headers
        if self.policy.expected_auth and not self.policy.authorized(headers.get("authorization")):
            self.metrics.count("-", "refused")
            proto.response_bytes(
                401, [*_TEXT, ("www-authenticate", 'Basic realm="cti"')], b"unauthorized\n"
            )
            return
        try:
            body = await self._body(headers.get("content-length"), proto)
        except IncompleteBody:
            self.metrics.count("-", "refused")
            proto.response_bytes(400, _TEXT, b"incomplete body\n")
            return
        if body is None:
            self.metrics.count("-", "refused")
            proto.response_bytes(413, _TEXT, b"body too large\n")
            return
        request = parse_request(body)
        document = self.cache.cached_answer(request)
        if document is None:
            try:
                async with asyncio.timeout(self.deadline):
                    document = await self.cache.answer(request)
            except (TimeoutError, redis.exceptions.RedisError, OSError) as exc:
                self.metrics.redis_errors.inc()
                self.metrics.count(request.action_label, "unavailable")
                self._warn_unavailable(exc)
                proto.response_bytes(503, _TEXT, b"directory unavailable\n")
                return
        result = "not_found" if document is render.NOT_FOUND else "found"
        self.metrics.count(request.action_label, result)
        self.metrics.latency.observe(time.perf_counter() - started)
        proto.response_bytes(200, _XML, document)

    async def _ready(self, proto: HTTPProtocol) -> None:
        """Readiness probe: 200 only while a lookup can be answered (cache live, or Redis
        answering), so FreeSWITCH's lookups go to replicas that can serve them. Liveness
        is gRPC health on the other port: a Redis outage must not restart the pods."""
        if await self.cache.can_answer(min(self.deadline, READY_TIMEOUT)):
            proto.response_bytes(200, _TEXT, b"ready\n")
        else:
            proto.response_bytes(503, _TEXT, b"not ready: Redis unreachable, cache not live\n")

    def _warn_unavailable(self, exc: BaseException) -> None:
        """At most one warning per second: an outage must not flood the logs."""
        now = time.monotonic()
        if now - self._last_warning >= 1.0:
            self._last_warning = now
            log.warning("directory lookups failing: Redis unavailable (%s)", type(exc).__name__)

    async def _body(self, length: str | None, proto: HTTPProtocol) -> bytes | None:
        """The body, or ``None`` when it is larger than allowed (never read past that).
        :class:`IncompleteBody` when the client stopped sending before its end."""
        limit = self.settings.max_body_bytes
        try:
            if length is not None:
                if not length.isdigit() or int(length) > limit:
                    return None
                body = await proto()
                if len(body) > limit:
                    return None
                if len(body) != int(length):
                    raise IncompleteBody
                return body
            chunks, size = [], 0
            async for chunk in proto:
                size += len(chunk)
                if size > limit:
                    return None
                chunks.append(chunk)
            return b"".join(chunks)
        except (RSGIProtocolClosed, RSGIProtocolError):
            # Shorter than its Content-Length, then half-closed: granian's transport is
            # closed for reading (the answer may still reach the client).
            raise IncompleteBody from None


class IncompleteBody(Exception):
    """The request body ended before the length it announced."""
