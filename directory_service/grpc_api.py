"""The directory gRPC API: ``cti.v1.DirectoryService`` over :mod:`directory_service.store`.

Servicer methods are thin: parse the request (:mod:`directory_service.messages`), call the
store, convert back. Domain errors are :class:`cti.grpc_server.ApiError`s, mapped to
status codes by the shared interceptor.
"""

from __future__ import annotations

from typing import Any

import grpc

from cti.config import Settings
from cti.grpc_server import build_server
from cti.v1 import directory_pb2_grpc

SERVICE_NAME = "cti.v1.DirectoryService"
ERROR_DOMAIN = "directory.cti"


class DirectoryApi(directory_pb2_grpc.DirectoryServiceServicer):  # type: ignore[misc]
    """Placeholder until the methods land: every call answers UNIMPLEMENTED."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


def create_grpc_server(settings: Settings, **options: Any) -> grpc.Server:
    """The directory gRPC server, bound to ``settings.directory.grpc.listen``, not started.
    ``server.stop(grace)`` reports NOT_SERVING, then drains (see :mod:`cti.grpc_server`)."""
    api = DirectoryApi(settings)
    return build_server(
        settings.directory.grpc,
        [SERVICE_NAME],
        lambda server: directory_pb2_grpc.add_DirectoryServiceServicer_to_server(api, server),
        error_domain=ERROR_DOMAIN,
        **options,
    )
