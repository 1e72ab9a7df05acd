"""Extensions as the files ``ctictl ext import`` reads (pure: messages in, text out).

JSON is the import's list form, one object per extension with ``extension``, ``domain``,
``template`` (bare name) and the ``param``/``variable``/``attribute`` objects (the
number-alias stays an attribute). CSV has the columns ``extension``, ``domain``,
``template`` and one ``param:<name>`` / ``variable:<name>`` / ``attribute:<name>`` column
per key used by any extension. Both are sorted (domain, then numeric ids by value) so that
exporting twice gives the same bytes.

No secrets: the API never returns a stored password or a1-hash (only ``has_password``), so
an export cannot contain them, and importing one generates new passwords (shown once).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from typing import Any

from cti.directory_entry import SECTIONS

MESSAGE_SECTIONS = {"param": "params", "variable": "variables", "attribute": "attributes"}
"""Import/seed section name -> Extension message field."""
FIXED_COLUMNS = ("extension", "domain", "template")


class ExportError(ValueError):
    """An extension the chosen format cannot carry without losing something."""


def natural_key(name: str) -> tuple[str, int, str]:
    """Sort key of ``domains/{d}/extensions/{id}``: by domain, numeric ids by value."""
    _, domain, _, extension_id = [*name.split("/"), "", "", ""][:4]
    if extension_id.isdigit():
        return (domain, int(extension_id), "")
    return (domain, 1 << 62, extension_id)


def record(extension: Any) -> dict[str, Any]:
    """One ``Extension`` message as an import record (empty parts left out)."""
    _, domain, _, extension_id = extension.name.split("/")
    data: dict[str, Any] = {"extension": extension_id, "domain": domain}
    if extension.template:
        data["template"] = extension.template.removeprefix("templates/")
    for section in SECTIONS:
        values = getattr(extension, MESSAGE_SECTIONS[section])
        if values:
            data[section] = dict(sorted(values.items()))
    return data


def records(extensions: Iterable[Any]) -> list[dict[str, Any]]:
    return [record(e) for e in sorted(extensions, key=lambda e: natural_key(e.name))]


def to_json(items: Sequence[dict[str, Any]]) -> str:
    return json.dumps(list(items), indent=2, ensure_ascii=False) + "\n"


def to_csv(items: Sequence[dict[str, Any]]) -> str:
    """The CSV text; :class:`ExportError` for an empty value (import leaves empty cells
    out, so it would come back missing: use JSON for such extensions)."""
    order = {section: index for index, section in enumerate(SECTIONS)}
    keys = sorted({(order[s], s, k) for item in items for s in SECTIONS for k in item.get(s, {})})
    columns = [*FIXED_COLUMNS, *(f"{section}:{key}" for _, section, key in keys)]
    empty = [
        f"{item['extension']}@{item['domain']} {section}:{key}"
        for item in items
        for section in SECTIONS
        for key, value in item.get(section, {}).items()
        if value == ""
    ]
    if empty:
        shown = ", ".join(empty[:5]) + (f" and {len(empty) - 5} more" if len(empty) > 5 else "")
        raise ExportError(
            f"CSV cannot carry empty values ({shown}): an empty cell means 'not set' on "
            "import; use --format json"
        )
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for item in items:
        row = {column: item.get(column, "") for column in FIXED_COLUMNS}
        for section in SECTIONS:
            row.update({f"{section}:{k}": v for k, v in item.get(section, {}).items()})
        writer.writerow(row)
    return buffer.getvalue()
