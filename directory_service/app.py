"""Composition root of the xml_curl side: settings in, a running RSGI application out.

granian imports :func:`create_app` in each HTTP worker process (spawned, so nothing of the
supervisor's gRPC server is inherited); the worker builds its own Redis clients, cache and
invalidation listener on its own event loop in ``__rsgi_init__``.
"""

from __future__ import annotations

import asyncio
import logging

from granian._granian import RSGIHTTPProtocol as HTTPProtocol
from granian.rsgi import Scope

from cti.config import Settings, load_settings
from cti.logs import configure_logging
from cti.redis_client import connect_async
from directory_service.lookup.cache import DirectoryCache
from directory_service.lookup.http import DirectoryHttp
from directory_service.lookup.invalidation import InvalidationListener
from directory_service.lookup.metrics import DirectoryMetrics
from directory_service.lookup.notify_nodes import notify_nodes
from directory_service.unusable import report_unusable

log = logging.getLogger("directory_service")


class DirectoryApp:
    """The RSGI application object granian serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._http: DirectoryHttp | None = None
        self._listener: asyncio.Task[None] | None = None

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        directory = self.settings.directory
        cache = DirectoryCache(
            connect_async(self.settings.redis_url),
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
    """granian factory (``directory_service.app:create_app``): settings from
    ``CTI_CONFIG`` and the environment, as the supervisor saw them."""
    configure_logging("directory")
    return DirectoryApp(load_settings(service="directory"))
