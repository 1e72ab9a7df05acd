"""``ctictl``: the operator CLI over the directory gRPC API.

    ctictl [--address HOST:PORT] [--token T] [--tls] [--ca-file PEM] [--json] GROUP COMMAND ...

Groups: ``extensions`` (``ext``), ``templates``, ``domains``. Extensions are named
``ID@DOMAIN`` (or by their resource name). Human tables by default, ``--json`` for
scripts. Exit status: 0 success; 1 the server refused something, could not be reached or
is not a directory service, or a bulk command (import, bulk-delete) had failures; 2 a
usage error (nothing was changed). The full reference is docs/ctictl.md.
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

from cti.v1 import directory_pb2 as pb
from ctictl import export, importer
from ctictl.bulk import IdRange, Selection, delete_extensions
from ctictl.client import DEFAULT_CONNECT_TIMEOUT, ApiFailure, DirectoryClient, Target
from ctictl.output import Output

Handler = Callable[[DirectoryClient, argparse.Namespace, Output], int]


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


def _page_all(
    client: DirectoryClient, method: str, request: Any, items: str, limit: int
) -> list[Any]:
    found: list[Any] = []
    while True:
        response = client.call(method, request)
        found += list(getattr(response, items))
        if not response.next_page_token or (limit and len(found) >= limit):
            return found[:limit] if limit else found
        request.page_token = response.next_page_token


# ---------------------------------------------------------------------------------------
# extensions


def ext_list(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.ListExtensionsRequest(
        parent=f"domains/{args.domain or '-'}",
        page_size=args.page_size,
        template=args.template or "",
        id_prefix=args.prefix or "",
    )
    found = _page_all(client, "ListExtensions", request, "extensions", args.limit)
    out.extensions(sorted(found, key=lambda e: export.natural_key(e.name)))
    return 0


def ext_get(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    out.extension(client.call("GetExtension", pb.GetExtensionRequest(name=args.extension)))
    return 0


def ext_add(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def ext_update(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def ext_delete(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    client.call("DeleteExtension", pb.DeleteExtensionRequest(name=args.extension, etag=args.etag))
    out.done(f"deleted {args.extension}", {"deleted": args.extension})
    return 0


def ext_batch(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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
    client: DirectoryClient, domain: str | None, template: str | None, prefix: str
) -> list[Any]:
    request = pb.ListExtensionsRequest(
        parent=f"domains/{domain or '-'}",
        page_size=1000,
        template=template or "",
        id_prefix=prefix,
    )
    return _page_all(client, "ListExtensions", request, "extensions", 0)


def ext_export(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def ext_bulk_delete(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def ext_import(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def tpl_list(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.ListExtensionTemplatesRequest(page_size=1000)
    out.templates(_page_all(client, "ListExtensionTemplates", request, "extension_templates", 0))
    return 0


def tpl_get(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    name = f"templates/{args.template}"
    out.template(client.call("GetExtensionTemplate", pb.GetExtensionTemplateRequest(name=name)))
    return 0


def tpl_add(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.CreateExtensionTemplateRequest(
        extension_template_id=args.template,
        extension_template=pb.ExtensionTemplate(**_settings(args, True)),
    )
    out.template(client.call("CreateExtensionTemplate", request))
    return 0


def tpl_update(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def tpl_delete(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    name = f"templates/{args.template}"
    client.call(
        "DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name=name, etag=args.etag)
    )
    out.done(f"deleted {name}", {"deleted": name})
    return 0


def dom_list(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    out.domains(
        _page_all(client, "ListDomains", pb.ListDomainsRequest(page_size=1000), "domains", 0)
    )
    return 0


def dom_get(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    out.domain(client.call("GetDomain", pb.GetDomainRequest(name=f"domains/{args.domain}")))
    return 0


def dom_add(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.CreateDomainRequest(
        domain_id=args.domain, domain=pb.Domain(**_settings(args, False))
    )
    out.domain(client.call("CreateDomain", request))
    return 0


def dom_update(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
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


def dom_delete(client: DirectoryClient, args: argparse.Namespace, out: Output) -> int:
    name = f"domains/{args.domain}"
    client.call("DeleteDomain", pb.DeleteDomainRequest(name=name, etag=args.etag))
    out.done(f"deleted {name}", {"deleted": name})
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
        "directory gRPC API.",
        epilog="Environment: CTI_API_ADDRESS, CTI_API_TOKEN, CTI_API_CA.",
    )
    parser.add_argument("--address", help="HOST:PORT of the directory gRPC API")
    parser.add_argument("--token", help="bearer token (default: $CTI_API_TOKEN)")
    parser.add_argument("--tls", action="store_true", help="use TLS (system CA roots)")
    parser.add_argument("--ca-file", help="PEM CA bundle for TLS (implies --tls)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call")
    parser.add_argument(
        "--connect-timeout",
        type=float,
        default=DEFAULT_CONNECT_TIMEOUT,
        help="seconds to reach the server and check it is a directory service",
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    groups = parser.add_subparsers(dest="group", required=True, metavar="GROUP")

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(json_errors="--json" in argv).parse_args(argv)
    out = Output(json_mode=args.json)
    target = Target.from_flags(
        args.address,
        args.token,
        args.tls,
        args.ca_file,
        args.timeout,
        connect_timeout=args.connect_timeout,
    )
    try:
        client = DirectoryClient(target)
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
