"""Start-up checks shared by both services: one way to refuse to start, one way to say so.

A service that cannot do its job as configured (bad config, a port already taken, an
unauthenticated public API) exits 2 with one JSON log line naming the cause, within a
second, instead of a traceback or, worse, starting and sharing a port with another
process.
"""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable

import redis

from cti import redis_client
from cti.addresses import split_address
from cti.config import ConfigError

log = logging.getLogger("cti.startup")

EXIT_STARTUP_ERROR = 2


def refuse_to_start(service: str, run: Callable[[], int]) -> int:
    """``run()``, turning a :class:`ConfigError` raised at any point of start-up into
    one ERROR line and exit status 2."""
    try:
        return run()
    except ConfigError as exc:
        log.error("%s cannot start: %s", service, exc, extra={"reason": str(exc)})
        return EXIT_STARTUP_ERROR


def ensure_port_free(address: str, what: str) -> None:
    """Raise :class:`ConfigError` when something already listens on ``address``.

    Binding without ``SO_REUSEPORT`` fails while any socket holds the port, even one
    bound with it (as granian's workers and gRPC are): the probe catches the second copy
    of a service that would otherwise start silently and take half the traffic.
    """
    host, port = split_address(address)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"{what} {address}: address already in use") from None
            raise ConfigError(f"{what} {address}: cannot bind ({exc.strerror})") from None


def report_redis(url: str, consequence: str) -> bool:
    """Say at once whether Redis answers, rather than at the first request that needs it.
    The services start either way (they recover when Redis comes back); ``consequence``
    tells the operator what does not work meanwhile."""
    try:
        client = redis_client.connect(url)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        log.warning(
            "Redis at %s is unreachable (%s); %s until it answers",
            redis_client.redacted(url),
            exc,
            consequence,
            extra={"redis": redis_client.redacted(url)},
        )
        return False
    log.info("Redis at %s answers", redis_client.redacted(url))
    return True
