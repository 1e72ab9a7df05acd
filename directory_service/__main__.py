"""``python -m directory_service [--config PATH]``: the xml_curl HTTP server and the
directory gRPC API in one service.

The supervisor process runs the gRPC server and granian's process manager; granian spawns
the HTTP worker(s), each with its own cache. SIGTERM (or Ctrl-C) stops HTTP first, then
drains gRPC. Ready = both ports answer.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import sys

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server import MPServer

from cti.addresses import split_address
from cti.config import Settings, load_settings
from cti.logs import configure_logging, granian_log_config
from cti.startup import ensure_port_free, refuse_to_start, report_redis
from directory_service.api.servicer import create_grpc_server

log = logging.getLogger("directory_service")
GRPC_GRACE_SECONDS = 5.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m directory_service",
        description="FreeSWITCH mod_xml_curl directory from Redis, plus its gRPC API.",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="cti.json (default: $CTI_CONFIG, else ./cti.json)"
    )
    return parser.parse_args(argv)


def http_server(settings: Settings) -> MPServer:
    host, port = split_address(settings.directory.http.listen)
    return MPServer(
        "directory_service.app:create_app",
        factory=True,
        address=host,
        port=port,
        interface=Interfaces.RSGI,
        workers=settings.directory.http.workers,
        websockets=False,
        log_level=LogLevels.warning,
        log_dictconfig=granian_log_config("directory"),
    )


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config, service="directory")
    # granian's workers share their port among themselves (SO_REUSEPORT), so a second
    # copy of this service would share it too: refuse while anything holds it.
    ensure_port_free(settings.directory.http.listen, "HTTP listen")
    # Workers must not fork a process that already runs gRPC threads.
    multiprocessing.set_start_method("spawn", force=True)
    grpc_server = create_grpc_server(settings)
    report_redis(settings.redis_url, "xml_curl lookups answer 503 and the API UNAVAILABLE")
    grpc_server.start()
    log.info(
        "directory service starting",
        extra={
            "http": settings.directory.http.listen,
            "grpc": settings.directory.grpc.listen,
            "cache": settings.directory.cache,
        },
    )
    try:
        http_server(settings).serve()  # returns on SIGTERM / SIGINT
    finally:
        grpc_server.stop(GRPC_GRACE_SECONDS).wait()
        log.info("directory service stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("directory")
    if args.config:
        os.environ["CTI_CONFIG"] = args.config  # the HTTP workers read the same file
    return refuse_to_start("directory service", lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
