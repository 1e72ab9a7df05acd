"""``python -m directory_service [--config PATH]``: the xml_curl HTTP server and the
directory gRPC API in one service (built and run by :mod:`directory_service.app`)."""

from __future__ import annotations

import argparse
import os
import sys

from cti.config import load_settings
from cti.logs import configure_logging
from cti.startup import refuse_to_start
from directory_service import app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m directory_service",
        description="FreeSWITCH mod_xml_curl directory from Redis, plus its gRPC API.",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="cti.json (default: $CTI_CONFIG, else ./cti.json)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("directory")
    if args.config:
        os.environ["CTI_CONFIG"] = args.config  # the HTTP workers read the same file
    return refuse_to_start(
        "directory service",
        lambda: app.run(load_settings(args.config, service="directory")),
    )


if __name__ == "__main__":
    sys.exit(main())
