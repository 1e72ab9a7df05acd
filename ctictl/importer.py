"""Reading extension rows from CSV or JSON files into create requests (pure), and the
import loop: batches of rows through ``BatchCreateExtensions``; a batch the server refuses
is retried row by row so that every good row is created and every bad one reported.

CSV: a header row; columns ``extension`` (required), ``domain`` (or ``--domain``),
``password``, ``template``, ``alias`` (the number-alias), and any ``param:<name>``,
``variable:<name>``, ``attribute:<name>``. Empty cells are left out.

JSON: a list of objects ``{"extension": "1001", "domain": "...", "password": "...",
"template": "...", "param": {...}, "variable": {...}, "attribute": {...}}``, or one object
mapping ids to the seed's documents (a dump of ``cti_exten@<domain>``; needs ``--domain``).
A ``password`` inside ``param`` is taken as the password.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cti.directory_entry import SECTIONS, freeswitch_value
from cti.v1 import directory_pb2 as pb
from ctictl.client import ApiClient, ApiFailure

NOT_AN_OBJECT = "\x00not-an-object"
FATAL = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "UNAVAILABLE", "UNIMPLEMENTED"})
"""Failures that no row can avoid: stop the import instead of trying row by row."""


class RowError(ValueError):
    """A row that cannot even be sent (no id, bad JSON shape)."""


@dataclass(frozen=True)
class Row:
    """One extension to create; ``line`` is where it came from (for the summary)."""

    line: str
    domain: str
    request: pb.CreateExtensionRequest

    @property
    def label(self) -> str:
        return f"{self.request.extension_id}@{self.domain}"


@dataclass
class ImportResult:
    created: list[tuple[Row, pb.Extension]] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    """(where, what, why) for each row that was not created."""


def _row(line: str, data: dict[str, Any], default_domain: str) -> Row:
    if NOT_AN_OBJECT in data:
        raise RowError("not an object")
    extension_id = str(data.get("extension") or data.get("id") or "").strip()
    if not extension_id:
        raise RowError("no extension id")
    domain = str(data.get("domain") or default_domain).strip()
    if not domain:
        raise RowError("no domain (add a domain column or --domain)")
    sections: dict[str, dict[str, str]] = {name: {} for name in SECTIONS}
    for name in SECTIONS:
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise RowError(f"{name!r} must be an object")
        sections[name] = {str(k): freeswitch_value(v) for k, v in values.items()}
    password = str(data.get("password") or sections["param"].pop("password", "") or "")
    if data.get("alias"):
        sections["attribute"]["number-alias"] = str(data["alias"])
    extension = pb.Extension(
        params=sections["param"],
        variables=sections["variable"],
        attributes=sections["attribute"],
        template=str(data.get("template") or ""),
        password=password,
    )
    request = pb.CreateExtensionRequest(
        parent=f"domains/{domain}", extension_id=extension_id, extension=extension
    )
    return Row(line, domain, request)


def csv_records(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))  # quoted line breaks kept
    for record in reader:
        data: dict[str, Any] = {name: {} for name in SECTIONS}
        for column, value in record.items():
            if column is None or value is None or value == "":
                continue
            kind, sep, key = column.partition(":")
            if sep and kind in SECTIONS:
                data[kind][key] = value
            else:
                data[column.strip()] = value
        yield f"line {reader.line_num}", data  # where the record ends


def json_records(text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise RowError(f"not JSON: {exc}") from None
    if isinstance(document, dict):
        for extension_id, entry in document.items():
            if not isinstance(entry, dict):
                yield f"entry {extension_id}", {"extension": extension_id, NOT_AN_OBJECT: True}
                continue
            yield f"entry {extension_id}", {**entry, "extension": extension_id}
    elif isinstance(document, list):
        for index, entry in enumerate(document):
            yield f"item {index}", entry if isinstance(entry, dict) else {NOT_AN_OBJECT: True}
    else:
        raise RowError("a JSON import is a list of objects or an object of id -> entry")


def read_rows(
    path: Path, default_domain: str, file_format: str = ""
) -> tuple[list[Row], list[tuple[str, str, str]]]:
    """The rows of ``path`` and, for rows that cannot be sent, (where, what, why)."""
    text = path.read_text(encoding="utf-8-sig")
    kind = file_format or ("json" if path.suffix.lower() == ".json" else "csv")
    records = json_records(text) if kind == "json" else csv_records(text)
    rows: list[Row] = []
    bad: list[tuple[str, str, str]] = []
    for line, data in records:
        try:
            rows.append(_row(line, data, default_domain))
        except (RowError, ValueError) as exc:
            bad.append((line, str(data.get("extension", "?")), str(exc)))
    return rows, bad


def _batches(rows: Sequence[Row], size: int) -> Iterator[list[Row]]:
    """Consecutive rows of one domain, at most ``size`` each."""
    batch: list[Row] = []
    for row in rows:
        if batch and (len(batch) >= size or batch[0].domain != row.domain):
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def run_import(
    client: ApiClient,
    rows: Iterable[Row],
    batch_size: int = 500,
    advance: Callable[[int], None] = lambda n: None,
) -> ImportResult:
    result = ImportResult()
    batches = list(_batches(list(rows), batch_size))
    for number, batch in enumerate(batches):
        request = pb.BatchCreateExtensionsRequest(
            parent=f"domains/{batch[0].domain}", requests=[r.request for r in batch]
        )
        try:
            response = client.call("BatchCreateExtensions", request)
            result.created += list(zip(batch, response.extensions, strict=True))
        except ApiFailure as failure:
            if failure.code in FATAL:
                # Stop, but return what was created: generated passwords are shown once.
                for row in (row for rest in batches[number:] for row in rest):
                    result.failed.append((row.line, row.label, failure.describe()))
                return result
            for row in batch:  # find the bad rows; create the good ones
                try:
                    result.created.append((row, client.call("CreateExtension", row.request)))
                except ApiFailure as failure:
                    result.failed.append((row.line, row.label, failure.describe()))
        advance(len(batch))
    return result
