"""``ctictl``: the operator CLI over the directory and call-control gRPC APIs.

    ctictl [--address HOST:PORT] [--events-address HOST:PORT] [--token T] [--tls]
           [--ca-file PEM] [--json] GROUP COMMAND ...

Groups: ``extensions`` (``ext``), ``templates``, ``domains`` (the directory API at
``--address``), ``call`` (the event service's call control at ``--events-address``).
Extensions are named ``ID@DOMAIN`` (or by their resource name), channels by their uuid.
Human tables by default, ``--json`` for scripts. Exit status: 0 success; 1 the server
refused something, could not be reached or is not the service the group needs, or a bulk
command (import, bulk-delete) had failures; 2 a usage error (nothing was changed). The full
reference is docs/ctictl.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from ctictl.args import add_section_flags, add_unset_flags, channel_name, extension_name, pair
from ctictl.call_commands import (
    LISTEN_MODES,
    TRANSFER_LEGS,
    call_dial,
    call_dtmf,
    call_hangup,
    call_hold,
    call_listen,
    call_record,
    call_transfer,
    call_unhold,
)
from ctictl.client import (
    CALL_CONTROL,
    DEFAULT_CONNECT_TIMEOUT,
    DIRECTORY,
    ApiClient,
    ApiFailure,
    Target,
)
from ctictl.directory_commands import (
    dom_add,
    dom_delete,
    dom_get,
    dom_list,
    dom_update,
    ext_add,
    ext_batch,
    ext_bulk_delete,
    ext_delete,
    ext_export,
    ext_get,
    ext_import,
    ext_list,
    ext_update,
    tpl_add,
    tpl_delete,
    tpl_get,
    tpl_list,
    tpl_update,
)
from ctictl.output import Output

Handler = Callable[[ApiClient, argparse.Namespace, Output], int]


# ---------------------------------------------------------------------------------------
# Parser


class Parser(argparse.ArgumentParser):
    """argparse whose errors follow ``--json`` (one JSON error on stderr, exit 2)."""

    json_errors = False

    def error(self, message: str) -> NoReturn:
        if not self.json_errors:
            super().error(message)
        Output(json_mode=True).usage_error(f"{self.prog}: {message}")
        sys.exit(2)


def build_parser(json_errors: bool = False) -> argparse.ArgumentParser:
    Parser.json_errors = json_errors
    parser = Parser(
        prog="ctictl",
        description="Provision FreeSWITCH extensions, templates and domains through the "
        "directory gRPC API; control calls through the event service.",
        epilog="Environment: CTI_API_ADDRESS, CTI_EVENTS_ADDRESS, CTI_API_TOKEN, CTI_API_CA.",
    )
    parser.add_argument("--address", help="HOST:PORT of the directory gRPC API")
    parser.add_argument(
        "--events-address", help="HOST:PORT of the event service's gRPC API (call commands)"
    )
    parser.add_argument("--token", help="bearer token (default: $CTI_API_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="use TLS (system CA roots)")
    parser.add_argument("--ca-file", help="PEM CA bundle for TLS (implies --tls)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds to reach the server and check it serves what the command needs",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")
    parser.set_defaults(service=DIRECTORY)

    ext = groups.add_parser("extensions", aliases=["ext"], help="SIP users")
    commands = ext.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser("list", help="list extensions (all domains by default)")
    sub.add_argument("--domain")
    sub.add_argument("--template")
    sub.add_argument("--prefix", help="only ids starting with this")
    sub.add_argument("--page-size", type=int, default=1000)
    sub.add_argument("--limit", type=int, default=0, help="stop after this many")
    sub.set_defaults(handler=ext_list)
    sub = commands.add_parser("get", help="show one extension")
    sub.add_argument("extension", type=extension_name, metavar="ID@DOMAIN")
    sub.set_defaults(handler=ext_get)
    sub = commands.add_parser("add", help="create one extension (password generated if absent)")
    sub.add_argument("extension", type=extension_name, metavar="ID@DOMAIN")
    sub.add_argument("--password")
    sub.add_argument("--template")
    sub.add_argument("--alias", help="number-alias")
    add_section_flags(sub)
    sub.set_defaults(handler=ext_add)
    sub = commands.add_parser("update", help="change keys of one extension")
    sub.add_argument("extension", type=extension_name, metavar="ID@DOMAIN")
    sub.add_argument("--password")
    sub.add_argument("--template")
    sub.add_argument("--no-template", action="store_true")
    sub.add_argument("--alias", help="number-alias ('' removes it)")
    sub.add_argument("--etag", help="fail if the extension changed since this etag")
    add_section_flags(sub)
    add_unset_flags(sub)
    sub.set_defaults(handler=ext_update)
    sub = commands.add_parser("delete", help="delete one extension")
    sub.add_argument("extension", type=extension_name, metavar="ID@DOMAIN")
    sub.add_argument("--etag", default="")
    sub.set_defaults(handler=ext_delete)
    sub = commands.add_parser("batch", help="create a numeric range, e.g. 1000-1999")
    sub.add_argument("domain")
    sub.add_argument("range", metavar="FIRST-LAST")
    sub.add_argument("--template")
    add_section_flags(sub)
    sub.set_defaults(handler=ext_batch)
    sub = commands.add_parser("import", help="create extensions from a CSV or JSON file")
    sub.add_argument("file")
    sub.add_argument("--domain", help="for rows without a domain")
    sub.add_argument("--format", choices=["csv", "json"], help="default: by file extension")
    sub.add_argument("--batch-size", type=int, default=500)
    sub.set_defaults(handler=ext_import)
    sub = commands.add_parser(
        "export", help="write extensions as a CSV or JSON file that import reads back"
    )
    sub.add_argument("--domain", help="one domain (default: all)")
    sub.add_argument("--template", help="only extensions using this template")
    sub.add_argument("--prefix", help="only ids starting with this")
    sub.add_argument("--format", choices=["csv", "json"], help="default: by --output, else json")
    sub.add_argument("-o", "--output", help="file to write (default: stdout)")
    sub.set_defaults(handler=ext_export)
    sub = commands.add_parser(
        "bulk-delete", help="delete the extensions of a range, template, prefix or domain"
    )
    sub.add_argument("--domain", help="one domain (default: all, except with --all)")
    sub.add_argument("--range", metavar="FIRST-LAST", help="numeric ids, e.g. 1000-1999")
    sub.add_argument("--template", help="extensions using this template")
    sub.add_argument("--prefix", help="ids starting with this")
    sub.add_argument("--all", action="store_true", help="every extension of --domain")
    sub.add_argument("--yes", action="store_true", help="really delete (required)")
    sub.add_argument("--dry-run", action="store_true", help="only list what would go")
    sub.set_defaults(handler=ext_bulk_delete)

    tpl = groups.add_parser("templates", aliases=["tpl"], help="extension templates")
    commands = tpl.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list").set_defaults(handler=tpl_list)
    for command, handler in (
        ("get", tpl_get),
        ("add", tpl_add),
        ("update", tpl_update),
        ("delete", tpl_delete),
    ):
        sub = commands.add_parser(command)
        sub.add_argument("template")
        if command in ("add", "update"):
            add_section_flags(sub)
        if command == "update":
            add_unset_flags(sub)
        if command in ("update", "delete"):
            sub.add_argument("--etag", default="")
        sub.set_defaults(handler=handler)

    dom = groups.add_parser("domains", aliases=["dom"], help="domain-level settings")
    commands = dom.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("list").set_defaults(handler=dom_list)
    for command, handler in (
        ("get", dom_get),
        ("add", dom_add),
        ("update", dom_update),
        ("delete", dom_delete),
    ):
        sub = commands.add_parser(command)
        sub.add_argument("domain")
        if command in ("add", "update"):
            add_section_flags(sub, attributes=False)
        if command == "update":
            add_unset_flags(sub, attributes=False)
        if command in ("update", "delete"):
            sub.add_argument("--etag", default="")
        sub.set_defaults(handler=handler)

    call = groups.add_parser("call", help="control live calls (the event service)")
    call.set_defaults(service=CALL_CONTROL)
    commands = call.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub = commands.add_parser("dial", help="ring an extension, then connect it to DESTINATION")
    sub.add_argument("extension", type=extension_name, metavar="EXT@DOMAIN")
    sub.add_argument(
        "destination", metavar="DESTINATION", help="dialplan extension, e.g. 1002 or +4930123456"
    )
    sub.add_argument("--context", help="dialplan context (default: the server's)")
    sub.add_argument("--caller-id-name", metavar="NAME")
    sub.add_argument("--caller-id-number", metavar="NUMBER")
    sub.add_argument(
        "--timeout",
        dest="ring_timeout",
        type=int,
        default=0,
        metavar="S",
        help="seconds to ring the extension (default 30, at most 300)",
    )
    _add_placing_flags(sub)
    sub.add_argument("--var", action="append", type=pair, metavar="NAME=VALUE")
    sub.set_defaults(handler=call_dial)
    sub = commands.add_parser("hangup", help="end a channel")
    sub.add_argument("channel", type=channel_name, metavar="UUID")
    sub.add_argument("--cause", help="hangup cause (default NORMAL_CLEARING)")
    sub.set_defaults(handler=call_hangup)
    sub = commands.add_parser("transfer", help="blind transfer to a dialplan destination")
    sub.add_argument("channel", type=channel_name, metavar="UUID")
    sub.add_argument("destination", metavar="DEST")
    sub.add_argument("--context", help="dialplan context (default: the server's)")
    sub.add_argument(
        "--leg",
        choices=list(TRANSFER_LEGS),
        default="this",
        help="this channel, the other (bridged) leg, or both",
    )
    sub.set_defaults(handler=call_transfer)
    for command, handler, text in (
        ("hold", call_hold, "put a channel's far end on hold"),
        ("unhold", call_unhold, "take it off hold"),
    ):
        sub = commands.add_parser(command, help=text)
        sub.add_argument("channel", type=channel_name, metavar="UUID")
        sub.set_defaults(handler=handler)
    sub = commands.add_parser("record", help="start or stop recording a channel")
    sub.add_argument("channel", type=channel_name, metavar="UUID")
    sub.add_argument("action", choices=["start", "stop"])
    sub.add_argument(
        "--path",
        help="file under the recordings directory (start: default <uuid>.wav; "
        "stop: default every recording)",
    )
    sub.add_argument("--max-seconds", type=int, default=0, help="start: stop after S seconds")
    sub.set_defaults(handler=call_record)
    sub = commands.add_parser("dtmf", help="send DTMF digits to a channel")
    sub.add_argument("channel", type=channel_name, metavar="UUID")
    sub.add_argument("digits", help="0-9 * # A-D, w/W for a 0.5 s / 1 s pause")
    sub.set_defaults(handler=call_dtmf)
    sub = commands.add_parser(
        "listen", help="call a supervisor who then listens to (or whispers to, barges into) UUID"
    )
    sub.add_argument("channel", type=channel_name, metavar="UUID")
    sub.add_argument("supervisor", type=extension_name, metavar="SUPERVISOR@DOMAIN")
    sub.add_argument("--mode", choices=list(LISTEN_MODES), default="listen")
    _add_placing_flags(sub)
    sub.set_defaults(handler=call_listen)
    return parser


def _add_placing_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of the commands that place a call (dial, listen)."""
    parser.add_argument(
        "--auto-answer", action="store_true", help="ask the phone to answer by itself"
    )
    parser.add_argument(
        "--request-id",
        metavar="ID",
        help="retry-safe id: the same id within 10 minutes dials nothing new",
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(json_errors="--json" in argv).parse_args(argv)
    out = Output(json_mode=args.json)
    service = args.service
    target = Target.from_flags(
        service,
        args.events_address if service is CALL_CONTROL else args.address,
        args.token,
        args.tls,
        args.ca_file,
        args.timeout,
        connect_timeout=args.connect_timeout,
    )
    try:
        client = ApiClient(target, service)
    except OSError as exc:
        out.usage_error(f"--ca-file: {exc.strerror or exc}")
        return 2
    try:
        client.connect()
        handler: Handler = args.handler
        return handler(client, args, out)
    except ApiFailure as failure:
        out.failure(failure)
        return 1
    finally:
        client.close()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
