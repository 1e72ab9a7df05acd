"""How a service starts and stops its gRPC servers: the one graceful exit of both
services."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

log = logging.getLogger(__name__)


@contextmanager
def serving(servers: Sequence[grpc.Server], grace: float, name: str) -> Iterator[None]:
    """Start ``servers`` and run the block; however it ends (returns, raises, Ctrl-C),
    stop them all together: each reports NOT_SERVING on its health service, then drains
    in-flight calls for up to ``grace`` seconds (:class:`cti.grpc_server.ManagedServer`)."""
    for server in servers:
        server.start()
    try:
        yield
    finally:
        stopping = [server.stop(grace) for server in servers]
        for done in stopping:
            done.wait()
        log.info("%s stopped", name)
