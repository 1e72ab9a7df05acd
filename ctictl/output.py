"""What ``ctictl`` prints: rich tables for people, one JSON document for scripts.

Results go to stdout; errors and the progress bar to stderr. An error is written once:
``error: <text>`` on one line (never wrapped, whatever the terminal width), or with
``--json`` only ``{"error": {...}}`` as one JSON document, so stdout holds nothing but
results and a script can parse either stream.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from google.protobuf.json_format import MessageToDict
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from ctictl.bulk import DeleteResult
from ctictl.client import ApiFailure
from ctictl.importer import ImportResult


def as_dict(message: Any) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _pairs(values: Mapping[str, str]) -> Text:
    """Stored values are shown as they are (never read as rich markup)."""
    return Text("\n".join(f"{k}={v}" for k, v in sorted(values.items())))


def _short_name(name: str) -> str:
    """``domains/d/extensions/1001`` -> ``1001@d``."""
    parts = name.split("/")
    return f"{parts[3]}@{parts[1]}" if len(parts) == 4 else name


class Output:
    def __init__(self, json_mode: bool) -> None:
        self.json_mode = json_mode
        self.console = Console(soft_wrap=True)
        self.errors = Console(stderr=True, soft_wrap=True, highlight=False)

    def _json(self, document: Any) -> None:
        print(json.dumps(document, indent=2, ensure_ascii=False))

    # results -------------------------------------------------------------------------

    def extensions(self, items: Sequence[Any]) -> None:
        if self.json_mode:
            self._json([as_dict(e) for e in items])
            return
        table = Table("extension", "template", "alias", "params", "variables", "attributes")
        for e in items:
            attributes = {k: v for k, v in e.attributes.items() if k != "number-alias"}
            table.add_row(
                _short_name(e.name),
                e.template.removeprefix("templates/"),
                Text(e.attributes.get("number-alias", "")),
                _pairs(e.params),
                _pairs(e.variables),
                _pairs(attributes),
            )
        self.console.print(table)
        self.console.print(f"{len(items)} extension(s)")

    def extension(self, e: Any) -> None:
        if self.json_mode:
            self._json(as_dict(e))
            return
        table = Table("field", "value", show_header=False)
        table.add_row("name", _short_name(e.name))
        table.add_row("template", e.template.removeprefix("templates/"))
        table.add_row("params", _pairs(e.params))
        table.add_row("variables", _pairs(e.variables))
        table.add_row("attributes", _pairs(e.attributes))
        table.add_row("password", "set" if e.has_password else "[red]none[/red]")
        if e.password:
            table.add_row("generated password", f"[bold]{e.password}[/bold] (shown once)")
        table.add_row("etag", e.etag)
        self.console.print(table)

    def created(self, items: Sequence[Any]) -> None:
        if self.json_mode:
            self._json([as_dict(e) for e in items])
            return
        table = Table("extension", "generated password (shown once)")
        for e in items:
            table.add_row(_short_name(e.name), e.password)
        self.console.print(table)
        self.console.print(f"{len(items)} extension(s) created")

    def templates(self, items: Sequence[Any]) -> None:
        if self.json_mode:
            self._json([as_dict(t) for t in items])
            return
        table = Table("template", "used by", "params", "variables", "attributes")
        for t in items:
            table.add_row(
                t.name.removeprefix("templates/"),
                str(t.usage_count),
                _pairs(t.params),
                _pairs(t.variables),
                _pairs(t.attributes),
            )
        self.console.print(table)

    def template(self, t: Any) -> None:
        self.templates([t]) if not self.json_mode else self._json(as_dict(t))

    def domains(self, items: Sequence[Any]) -> None:
        if self.json_mode:
            self._json([as_dict(d) for d in items])
            return
        table = Table("domain", "extensions", "params", "variables")
        for d in items:
            table.add_row(
                d.name.removeprefix("domains/"),
                str(d.extension_count),
                _pairs(d.params),
                _pairs(d.variables),
            )
        self.console.print(table)

    def domain(self, d: Any) -> None:
        self.domains([d]) if not self.json_mode else self._json(as_dict(d))

    def done(self, text: str | Text, document: Mapping[str, Any]) -> None:
        if self.json_mode:
            self._json(dict(document))
        else:
            self.console.print(text)

    def call_placed(self, response: Any) -> None:
        """A call placed (dial, listen): the new channel's uuid alone on stdout, so that
        ``UUID=$(ctictl call dial ...)`` works."""
        document = {
            "uuid": response.uuid,
            "channel": response.channel,
            "node": response.node,
            "job_uuid": response.job_uuid,
            "replayed": response.replayed,
        }
        if self.json_mode:
            self._json(document)
        else:
            print(response.uuid)

    def call_done(self, action: str, response: Any) -> None:
        """A command on a channel: what was done where, and FreeSWITCH's reply."""
        uuid = response.channel.removeprefix("channels/")
        document = {
            "uuid": uuid,
            "channel": response.channel,
            "node": response.node,
            "reply": response.reply,
        }
        text = Text(f"{action} {uuid} on {response.node}: {response.reply}")
        self.done(text, document)

    def import_summary(self, result: ImportResult) -> None:
        if self.json_mode:
            self._json(
                {
                    "created": [
                        {"name": e.name, **({"password": e.password} if e.password else {})}
                        for _, e in result.created
                    ],
                    "failed": [
                        {"where": where, "extension": what, "error": why}
                        for where, what, why in result.failed
                    ],
                }
            )
            return
        generated = [(row, e) for row, e in result.created if e.password]
        if generated:
            table = Table("extension", "generated password (shown once)")
            for row, e in generated:
                table.add_row(row.label, e.password)
            self.console.print(table)
        if result.failed:
            table = Table("where", "extension", "why", title="not imported")
            for where, what, why in result.failed:
                table.add_row(Text(where), Text(what), Text(why))
            self.console.print(table)
        self.console.print(f"{len(result.created)} created, {len(result.failed)} failed")

    def export_summary(self, count: int, path: str) -> None:
        self.done(f"exported {count} extension(s) to {path}", {"exported": count, "file": path})

    def delete_plan(self, names: Sequence[str]) -> None:
        """What a bulk delete would delete (``--dry-run``)."""
        if self.json_mode:
            self._json({"would_delete": list(names)})
            return
        for name in names:
            self.console.print(Text(_short_name(name)))
        self.console.print(f"{len(names)} extension(s) would be deleted")

    def delete_summary(self, result: DeleteResult) -> None:
        if self.json_mode:
            self._json(
                {
                    "deleted": result.deleted,
                    "already_gone": result.gone,
                    "failed": [{"name": n, "error": why} for n, why in result.failed],
                    "not_attempted": result.not_attempted,
                }
            )
            return
        if result.failed:
            table = Table("extension", "why", title="not deleted")
            for name, why in result.failed:
                table.add_row(_short_name(name), Text(why))
            self.console.print(table)
        parts = [f"{len(result.deleted)} deleted", f"{len(result.failed)} failed"]
        if result.gone:
            parts.append(f"{len(result.gone)} already gone")
        if result.not_attempted:
            parts.append(f"{len(result.not_attempted)} not attempted")
        self.console.print(", ".join(parts))

    # progress and errors -------------------------------------------------------------

    @contextmanager
    def progress(self, label: str, total: int) -> Iterator[Callable[[int], None]]:
        columns = (
            TextColumn(label),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        quiet = not self.errors.is_terminal  # nothing (not even a blank line) into a pipe
        with Progress(*columns, console=self.errors, transient=True, disable=quiet) as bar:
            task = bar.add_task(label, total=total)
            yield lambda n: bar.advance(task, n)

    def failure(self, failure: ApiFailure) -> None:
        if self.json_mode:
            self._json_error(failure.to_dict())
            return
        self._error_line(failure.describe())
        for field, description in failure.fields:
            self.errors.print(Text(f"  {field}: {description}"))

    def usage_error(self, text: str) -> None:
        if self.json_mode:
            self._json_error({"code": "USAGE", "message": text})
        else:
            self._error_line(text)

    def _error_line(self, text: str) -> None:
        self.errors.print(Text.assemble(("error", "red"), f": {text}"))

    @staticmethod
    def _json_error(error: Mapping[str, Any]) -> None:
        sys.stderr.write(json.dumps({"error": dict(error)}, ensure_ascii=False) + "\n")
