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
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from google.protobuf import field_mask_pb2

from cti.v1 import call_control_pb2 as call_pb
from cti.v1 import directory_pb2 as pb
from ctictl import export, importer
from ctictl.bulk import IdRange, Selection, delete_extensions
from ctictl.client import (
    CALL_CONTROL,
    DEFAULT_CONNECT_TIMEOUT,
    DIRECTORY,
    ApiClient,
    ApiFailure,
    Target,
)
from ctictl.output import Output

Handler = Callable[[ApiClient, argparse.Namespace, Output], int]


# ---------------------------------------------------------------------------------------
# Argument helpers


def extension_name(reference: str) -> str:
    """``1001@example.com`` -> ``domains/example.com/extensions/1001``."""
    if reference.startswith("domains/"):
        return reference
    extension_id, sep, domain = reference.rpartition("@")
    if not sep or not extension_id or not domain:
        raise argparse.ArgumentTypeError(f"{reference!r}: expected ID@DOMAIN")
    return f"domains/{domain}/extensions/{extension_id}"


def channel_name(reference: str) -> str:
    """``<uuid>`` -> ``channels/<uuid>`` (the server checks the uuid)."""
    if reference.startswith("channels/"):
        return reference
    if not reference or "/" in reference:
        raise argparse.ArgumentTypeError(f"{reference!r}: expected a channel uuid")
    return f"channels/{reference}"


def pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return key, value


def _sections(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "params": dict(args.param or ()),
        "variables": dict(args.var or ()),
        "attributes": dict(getattr(args, "attr", None) or ()),
    }


def _add_section_flags(parser: argparse.ArgumentParser, attributes: bool = True) -> None:
    parser.add_argument("--param", action="append", type=pair, metavar="NAME=VALUE")
    parser.add_argument("--var", action="append", type=pair, metavar="NAME=VALUE")
    if attributes:
        parser.add_argument("--attr", action="append", type=pair, metavar="NAME=VALUE")


def _add_unset_flags(parser: argparse.ArgumentParser, attributes: bool = True) -> None:
    parser.add_argument("--unset-param", action="append", default=[], metavar="NAME")
    parser.add_argument("--unset-var", action="append", default=[], metavar="NAME")
    if attributes:
        parser.add_argument("--unset-attr", action="append", default=[], metavar="NAME")


def _mask(args: argparse.Namespace, sections: dict[str, Any]) -> list[str]:
    """Each key set or unset on the command line, as a single-key mask path."""
    unset = {
        "params": args.unset_param,
        "variables": args.unset_var,
        "attributes": getattr(args, "unset_attr", []),
    }
    paths = [f"{name}.{key}" for name, values in sections.items() for key in values]
    paths += [f"{name}.{key}" for name, keys in unset.items() for key in keys]
    return paths


def _page_all(client: ApiClient, method: str, request: Any, items: str, limit: int) -> list[Any]:
    found: list[Any] = []
    while True:
        response = client.call(method, request)
        found += list(getattr(response, items))
        if not response.next_page_token or (limit and len(found) >= limit):
            return found[:limit] if limit else found
        request.page_token = response.next_page_token


# ---------------------------------------------------------------------------------------
# extensions


def ext_list(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.ListExtensionsRequest(
        parent=f"domains/{args.domain or '-'}",
        page_size=args.page_size,
        template=args.template or "",
        id_prefix=args.prefix or "",
    )
    found = _page_all(client, "ListExtensions", request, "extensions", args.limit)
    out.extensions(sorted(found, key=lambda e: export.natural_key(e.name)))
    return 0


def ext_get(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.extension(client.call("GetExtension", pb.GetExtensionRequest(name=args.extension)))
    return 0


def ext_add(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    parts = args.extension.split("/")
    if len(parts) != 4:
        out.usage_error(f"{args.extension!r}: expected ID@DOMAIN")
        return 2
    domain, extension_id = parts[1], parts[3]
    sections = _sections(args)
    if args.alias:
        sections["attributes"]["number-alias"] = args.alias
    request = pb.CreateExtensionRequest(
        parent=f"domains/{domain}",
        extension_id=extension_id,
        extension=pb.Extension(
            **sections, template=args.template or "", password=args.password or ""
        ),
    )
    out.extension(client.call("CreateExtension", request))
    return 0


def ext_update(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    sections = _sections(args)
    if args.alias:
        sections["attributes"]["number-alias"] = args.alias
    elif args.alias == "":
        args.unset_attr.append("number-alias")
    paths = _mask(args, sections)
    template = ""
    if args.template is not None or args.no_template:
        paths.append("template")
        template = args.template or ""
    if args.password:
        paths.append("password")
    if not paths:
        out.usage_error("nothing to update (give --param/--var/--attr/--unset-*/--template/...)")
        return 2
    extension = pb.Extension(
        name=args.extension,
        **sections,
        template=template,
        password=args.password or "",
        etag=args.etag or "",
    )
    request = pb.UpdateExtensionRequest(
        extension=extension, update_mask=field_mask_pb2.FieldMask(paths=paths)
    )
    out.extension(client.call("UpdateExtension", request))
    return 0


def ext_delete(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    client.call("DeleteExtension", pb.DeleteExtensionRequest(name=args.extension, etag=args.etag))
    out.done(f"deleted {args.extension}", {"deleted": args.extension})
    return 0


def ext_batch(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    first, sep, last = args.range.partition("-")
    if not sep:
        out.usage_error(f"{args.range!r}: expected FIRST-LAST, e.g. 1000-1999")
        return 2
    prototype = pb.Extension(**_sections(args), template=args.template or "")
    request = pb.BatchCreateExtensionsRequest(
        parent=f"domains/{args.domain}",
        range=pb.ExtensionRange(first=first, last=last, prototype=prototype),
    )
    out.created(client.call("BatchCreateExtensions", request).extensions)
    return 0


def _list_extensions(
    client: ApiClient, domain: str | None, template: str | None, prefix: str
) -> list[Any]:
    request = pb.ListExtensionsRequest(
        parent=f"domains/{domain or '-'}",
        page_size=1000,
        template=template or "",
        id_prefix=prefix,
    )
    return _page_all(client, "ListExtensions", request, "extensions", 0)


def ext_export(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    output = Path(args.output) if args.output and args.output != "-" else None
    kind = args.format or ("csv" if output and output.suffix.lower() == ".csv" else "json")
    found = _list_extensions(client, args.domain, args.template, args.prefix or "")
    items = export.records(found)
    try:
        text = export.to_csv(items) if kind == "csv" else export.to_json(items)
    except export.ExportError as exc:
        out.failure(ApiFailure("FAILED_PRECONDITION", str(exc), "NOT_REPRESENTABLE"))
        return 1
    if output is None:
        sys.stdout.write(text)
        return 0
    try:
        _write_whole(output, text)
    except OSError as exc:
        out.usage_error(f"{output}: {exc.strerror or exc}")
        return 2
    out.export_summary(len(items), str(output))
    return 0


def _write_whole(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing (a temporary file renamed over it)."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def ext_bulk_delete(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    try:
        id_range = IdRange.parse(args.range) if args.range else None
    except ValueError as exc:
        out.usage_error(str(exc))
        return 2
    if not (id_range or args.template or args.prefix or args.all):
        out.usage_error("say what to delete: --range, --template, --prefix or --all")
        return 2
    if args.all and not args.domain:
        out.usage_error("--all deletes every extension of one domain: give --domain")
        return 2
    selection = Selection(id_range, args.prefix or "")
    found = _list_extensions(client, args.domain, args.template, selection.server_prefix())
    chosen = sorted(
        (e for e in found if selection.matches(e)), key=lambda e: export.natural_key(e.name)
    )
    if args.dry_run:
        out.delete_plan([e.name for e in chosen])
        return 0
    if not args.yes:
        out.usage_error(
            f"this would delete {len(chosen)} extension(s); add --yes to delete them "
            "(or --dry-run to list them)"
        )
        return 2
    with out.progress("deleting", len(chosen)) as advance:
        result = delete_extensions(client, chosen, advance)
    out.delete_summary(result)
    return 1 if result.failed or result.not_attempted else 0


def ext_import(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    try:
        rows, bad = importer.read_rows(Path(args.file), args.domain or "", args.format or "")
    except (OSError, UnicodeDecodeError, importer.RowError) as exc:
        out.usage_error(f"{args.file}: {exc}")
        return 2
    with out.progress("importing", len(rows)) as advance:
        result = importer.run_import(client, rows, args.batch_size, advance)
    result.failed = bad + result.failed
    out.import_summary(result)
    return 1 if result.failed else 0


# ---------------------------------------------------------------------------------------
# templates and domains


def _settings(args: argparse.Namespace, attributes: bool) -> dict[str, Any]:
    sections = _sections(args)
    if not attributes:
        sections.pop("attributes")
    return sections


def tpl_list(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.ListExtensionTemplatesRequest(page_size=1000)
    out.templates(_page_all(client, "ListExtensionTemplates", request, "extension_templates", 0))
    return 0


def tpl_get(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    name = f"templates/{args.template}"
    out.template(client.call("GetExtensionTemplate", pb.GetExtensionTemplateRequest(name=name)))
    return 0


def tpl_add(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.CreateExtensionTemplateRequest(
        extension_template_id=args.template,
        extension_template=pb.ExtensionTemplate(**_settings(args, True)),
    )
    out.template(client.call("CreateExtensionTemplate", request))
    return 0


def tpl_update(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    sections = _settings(args, True)
    paths = _mask(args, sections)
    if not paths:
        out.usage_error("nothing to update (give --param/--var/--attr/--unset-*)")
        return 2
    request = pb.UpdateExtensionTemplateRequest(
        extension_template=pb.ExtensionTemplate(
            name=f"templates/{args.template}", etag=args.etag or "", **sections
        ),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    out.template(client.call("UpdateExtensionTemplate", request))
    return 0


def tpl_delete(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    name = f"templates/{args.template}"
    client.call(
        "DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name=name, etag=args.etag)
    )
    out.done(f"deleted {name}", {"deleted": name})
    return 0


def dom_list(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.domains(
        _page_all(client, "ListDomains", pb.ListDomainsRequest(page_size=1000), "domains", 0)
    )
    return 0


def dom_get(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.domain(client.call("GetDomain", pb.GetDomainRequest(name=f"domains/{args.domain}")))
    return 0


def dom_add(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.CreateDomainRequest(
        domain_id=args.domain, domain=pb.Domain(**_settings(args, False))
    )
    out.domain(client.call("CreateDomain", request))
    return 0


def dom_update(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    sections = _settings(args, False)
    paths = _mask(args, sections)
    if not paths:
        out.usage_error("nothing to update (give --param/--var/--unset-*)")
        return 2
    request = pb.UpdateDomainRequest(
        domain=pb.Domain(name=f"domains/{args.domain}", etag=args.etag or "", **sections),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )
    out.domain(client.call("UpdateDomain", request))
    return 0


def dom_delete(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    name = f"domains/{args.domain}"
    client.call("DeleteDomain", pb.DeleteDomainRequest(name=name, etag=args.etag))
    out.done(f"deleted {name}", {"deleted": name})
    return 0


# ---------------------------------------------------------------------------------------
# call (the event service's CallControlService)

TRANSFER_LEGS = {
    "this": call_pb.TransferRequest.LEG_UNSPECIFIED,
    "other": call_pb.TransferRequest.LEG_BRIDGED,
    "both": call_pb.TransferRequest.LEG_BOTH,
}
LISTEN_MODES = {
    "listen": call_pb.EavesdropRequest.MODE_LISTEN,
    "whisper": call_pb.EavesdropRequest.MODE_WHISPER,
    "barge": call_pb.EavesdropRequest.MODE_BARGE,
}


def call_dial(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.OriginateRequest(
        extension=args.extension,
        destination=args.destination,
        context=args.context or "",
        caller_id_name=args.caller_id_name or "",
        caller_id_number=args.caller_id_number or "",
        ring_timeout_seconds=args.ring_timeout,
        auto_answer=args.auto_answer,
        variables=dict(args.var or ()),
        request_id=args.request_id or "",
    )
    out.call_placed(client.call("Originate", request))
    return 0


def call_listen(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.EavesdropRequest(
        channel=args.channel,
        supervisor=args.supervisor,
        mode=LISTEN_MODES[args.mode],
        request_id=args.request_id or "",
        auto_answer=args.auto_answer,
    )
    out.call_placed(client.call("Eavesdrop", request))
    return 0


def call_hangup(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.HangupRequest(channel=args.channel, cause=args.cause or "")
    out.call_done("hangup", client.call("Hangup", request))
    return 0


def call_transfer(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.TransferRequest(
        channel=args.channel,
        destination=args.destination,
        context=args.context or "",
        leg=TRANSFER_LEGS[args.leg],
    )
    out.call_done("transfer", client.call("Transfer", request))
    return 0


def call_hold(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.call_done("hold", client.call("Hold", call_pb.HoldRequest(channel=args.channel)))
    return 0


def call_unhold(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    out.call_done("unhold", client.call("Unhold", call_pb.UnholdRequest(channel=args.channel)))
    return 0


def call_record(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    path = args.path or ""
    if args.action == "start":
        request: Any = call_pb.StartRecordingRequest(
            channel=args.channel, path=path, max_seconds=args.max_seconds
        )
        out.call_done("record start", client.call("StartRecording", request))
        return 0
    if args.max_seconds:
        out.usage_error("--max-seconds is for 'record start'")
        return 2
    request = call_pb.StopRecordingRequest(channel=args.channel, path=path)
    out.call_done("record stop", client.call("StopRecording", request))
    return 0


def call_dtmf(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = call_pb.SendDtmfRequest(channel=args.channel, digits=args.digits)
    out.call_done("dtmf", client.call("SendDtmf", request))
    return 0


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
    _add_section_flags(sub)
    sub.set_defaults(handler=ext_add)
    sub = commands.add_parser("update", help="change keys of one extension")
    sub.add_argument("extension", type=extension_name, metavar="ID@DOMAIN")
    sub.add_argument("--password")
    sub.add_argument("--template")
    sub.add_argument("--no-template", action="store_true")
    sub.add_argument("--alias", help="number-alias ('' removes it)")
    sub.add_argument("--etag", help="fail if the extension changed since this etag")
    _add_section_flags(sub)
    _add_unset_flags(sub)
    sub.set_defaults(handler=ext_update)
    sub = commands.add_parser("delete", help="delete one extension")
    sub.add_argument("extension", type=extension_name, metavar="ID@DOMAIN")
    sub.add_argument("--etag", default="")
    sub.set_defaults(handler=ext_delete)
    sub = commands.add_parser("batch", help="create a numeric range, e.g. 1000-1999")
    sub.add_argument("domain")
    sub.add_argument("range", metavar="FIRST-LAST")
    sub.add_argument("--template")
    _add_section_flags(sub)
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
            _add_section_flags(sub)
        if command == "update":
            _add_unset_flags(sub)
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
            _add_section_flags(sub, attributes=False)
        if command == "update":
            _add_unset_flags(sub, attributes=False)
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
