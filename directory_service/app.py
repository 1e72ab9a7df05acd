"""The directory service's composition root: every client, store, servicer and server is
built here from the settings, and nowhere else.

Two kinds of process run it:

- the supervisor (``python -m directory_service``): :func:`run` builds the gRPC API
  (:func:`create_grpc_server`) and granian's HTTP process manager (:func:`http_server`),
  serves until SIGTERM/SIGINT (granian returns), then stops HTTP first and drains gRPC
  (:func:`cti.lifecycle.serving`). Ready = both ports answer.
- each HTTP worker: granian imports :func:`create_app` (``directory_service.app:create_app``)
  in a spawned process, so nothing of the supervisor's gRPC server is inherited; the worker
  builds its own Redis clients, cache and invalidation listener on its own event loop in
  ``__rsgi_init__``.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
from typing import Any

import grpc
from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian.constants import Interfaces
from granian.log import LogLevels
from granian.rsgi import Scope
from granian.server import MPServer

from cti import redis_client
from cti.addresses import split_address
from cti.config import Settings, load_settings
from cti.grpc_server import TokenTable, build_server
from cti.lifecycle import serving
from cti.logs import configure_logging, granian_log_config
from cti.startup import ensure_port_free, report_redis
from cti.v1 import directory_pb2_grpc
from directory_service.api.servicer import (
    ERROR_DOMAIN,
    MAX_MESSAGE_BYTES,
    SERVICE_NAME,
    DirectoryApi,
)
from directory_service.api.store import DirectoryStore
from directory_service.lookup.cache import DirectoryCache
from directory_service.lookup.http import DirectoryHttp
from directory_service.lookup.invalidation import InvalidationListener
from directory_service.lookup.metrics import DirectoryMetrics
from directory_service.lookup.notify_nodes import notify_nodes
from directory_service.unusable import report_unusable

log = logging.getLogger("directory_service")

GRPC_GRACE_SECONDS = 5.0
APP_FACTORY = "directory_service.app:create_app"
"""What granian imports in each HTTP worker."""


# ---------------------------------------------------------------------------------------
# The gRPC API (supervisor process)


def create_grpc_server(settings: Settings, **options: Any) -> grpc.Server:
    """The directory gRPC server, bound to ``settings.directory.grpc.listen``, not started.
    ``server.stop(grace)`` reports NOT_SERVING, then drains (see :mod:`cti.grpc_server`).
    Options go to :func:`cti.grpc_server.build_server` (``max_workers``, ``options``)."""
    store = DirectoryStore(redis_client.connect(settings.redis_url))
    grpc_settings = settings.directory.grpc
    api = DirectoryApi(
        store,
        settings.directory.store_a1_hash,
        TokenTable(grpc_settings.tokens, grpc_settings.scopes),
        settings.directory.tenant_writes,
    )
    options.setdefault(
        "options",
        [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ],
    )
    return build_server(
        grpc_settings,
        [SERVICE_NAME],
        lambda server: directory_pb2_grpc.add_DirectoryServiceServicer_to_server(api, server),
        error_domain=ERROR_DOMAIN,
        **options,
    )


# ---------------------------------------------------------------------------------------
# The xml_curl lookups (each HTTP worker process)


class DirectoryApp:
    """The RSGI application object granian serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http: DirectoryHttp | None = None
        self._listener: asyncio.Task[None] | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        directory = self.settings.directory
        cache = DirectoryCache(
            redis_client.connect_async(self.settings.redis_url),
            directory.default_domain_params,
            on_error=report_unusable,
            enabled=directory.cache,
        )
        self._http = DirectoryHttp(directory.http, cache, DirectoryMetrics(cache))
        if directory.cache:
            listener = InvalidationListener(notify_nodes(self.settings.redis_url), cache)
            self._listener = loop.create_task(listener.run())

    async def __rsgi__(self, scope: Scope, proto: HTTPProtocol) -> None:
        assert self._http is not None, "__rsgi_init__ not called"
        await self._http(scope, proto)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._listener is not None:
            self._listener.cancel()


def create_app() -> DirectoryApp:
    """granian factory (:data:`APP_FACTORY`): settings from ``CTI_CONFIG`` and the
    environment, as the supervisor saw them."""
    configure_logging("directory")
    return DirectoryApp(load_settings(service="directory"))


def http_server(settings: Settings) -> MPServer:
    """granian's process manager for the HTTP workers (each runs :func:`create_app`)."""
    host, port = split_address(settings.directory.http.listen)
    return MPServer(
        APP_FACTORY,
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=settings.directory.http.workers,
        websockets=False,
        log_level=LogLevels.warning,
        log_dictconfig=granian_log_config("directory"),
    )


# ---------------------------------------------------------------------------------------
# The service


def run(settings: Settings) -> int:
    """Serve xml_curl and the gRPC API until SIGTERM / SIGINT; HTTP stops first, then
    gRPC drains."""
    # granian's workers share their port among themselves (SO_REUSEPORT), so a second
    # copy of this service would share it too: refuse while anything holds it.
    ensure_port_free(settings.directory.http.listen, "HTTP listen")
    # Workers must not fork a process that already runs gRPC threads.
    multiprocessing.set_start_method("spawn", force=True)
    grpc_server = create_grpc_server(settings)
    report_redis(settings.redis_url, "xml_curl lookups answer 503 and the API UNAVAILABLE")
    with serving([grpc_server], GRPC_GRACE_SECONDS, "directory service"):
        log.info(
            "directory service starting",
            extra={
                "http": settings.directory.http.listen,
                "grpc": settings.directory.grpc.listen,
                "cache": settings.directory.cache,
            },
        )
        http_server(settings).serve()  # returns on SIGTERM / SIGINT
    return 0
