"""``ctictl extensions|templates|domains ...``: the directory API's commands."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2

from cti.v1 import directory_pb2 as pb
from ctictl import export, importer
from ctictl.args import page_all, sections_of, update_mask
from ctictl.bulk import IdRange, Selection, delete_extensions
from ctictl.client import (
    ApiClient,
    ApiFailure,
)
from ctictl.output import Output

# ---------------------------------------------------------------------------------------
# extensions


def ext_list(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.ListExtensionsRequest(
        parent=f"domains/{args.domain or '-'}",
        page_size=args.page_size,
        template=args.template or "",
        id_prefix=args.prefix or "",
    )
    found = page_all(client, "ListExtensions", request, "extensions", args.limit)
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
    sections = sections_of(args)
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
    sections = sections_of(args)
    if args.alias:
        sections["attributes"]["number-alias"] = args.alias
    elif args.alias == "":
        args.unset_attr.append("number-alias")
    paths = update_mask(args, sections)
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
    prototype = pb.Extension(**sections_of(args), template=args.template or "")
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
    return page_all(client, "ListExtensions", request, "extensions", 0)


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
    sections = sections_of(args)
    if not attributes:
        sections.pop("attributes")
    return sections


def tpl_list(client: ApiClient, args: argparse.Namespace, out: Output) -> int:
    request = pb.ListExtensionTemplatesRequest(page_size=1000)
    out.templates(page_all(client, "ListExtensionTemplates", request, "extension_templates", 0))
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
    paths = update_mask(args, sections)
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
        page_all(client, "ListDomains", pb.ListDomainsRequest(page_size=1000), "domains", 0)
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
    paths = update_mask(args, sections)
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
