"""``python -m event_service [--config PATH]``: FreeSWITCH registration and call state ->
Redis, plus its gRPC API (built and run by :mod:`event_service.app`)."""

from __future__ import annotations

import argparse
import sys

from cti.config import load_settings
from cti.logs import configure_logging
from cti.startup import refuse_to_start
from event_service import app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m event_service",
        description="FreeSWITCH registration and call state -> Redis (and gRPC).",
    )
    parser.add_argument(
        "--config", metavar="PATH", help="cti.json (default: $CTI_CONFIG, else ./cti.json)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging("events")
    return refuse_to_start(
        "event service", lambda: app.run(load_settings(args.config, service="events"))
    )


if __name__ == "__main__":
    sys.exit(main())
