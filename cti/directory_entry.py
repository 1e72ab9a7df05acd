"""Extension, template and domain configs as stored in Redis (the seed's JSON, shared by the
directory service and ctictl), parsed into plain string maps. Pure: no I/O.

Stored form (``cti_exten@<domain>`` field value)::

    {"param": {...}, "variable": {...}, "attribute": {...}, "template": "agents"}

Values may be strings, numbers or booleans; FreeSWITCH wants strings, so booleans become
``"true"``/``"false"`` and numbers their decimal text. ``template`` is optional and names an
entry of ``cti_template`` whose sections the extension inherits (its own values win).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cti.text import excerpt

SECTIONS = ("param", "variable", "attribute")


class ExtensionFormatError(ValueError):
    """A stored value is not a valid extension/template/domain document."""


@dataclass(frozen=True)
class DirectoryEntry:
    """One extension (or template, or domain settings: those have no template/attributes)."""

    params: Mapping[str, str] = field(default_factory=dict)
    variables: Mapping[str, str] = field(default_factory=dict)
    attributes: Mapping[str, str] = field(default_factory=dict)
    template: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)
    """Top-level keys we do not know, kept so a write through the API does not drop what a
    GUI stored beside the seed's sections."""

    @property
    def alias(self) -> str:
        return self.attributes.get("number-alias", "")

    def merged_over(self, base: DirectoryEntry | None) -> DirectoryEntry:
        """This entry with ``base``'s values filling what it does not set itself."""
        if base is None:
            return self
        return DirectoryEntry(
            params={**base.params, **self.params},
            variables={**base.variables, **self.variables},
            attributes={**base.attributes, **self.attributes},
            template=self.template,
            extra=self.extra,
        )

    def to_document(self) -> dict[str, Any]:
        document: dict[str, Any] = dict(self.extra)
        document.update(
            param=dict(self.params), variable=dict(self.variables), attribute=dict(self.attributes)
        )
        if self.template:
            document["template"] = self.template
        return document

    def to_json(self) -> str:
        return json.dumps(self.to_document(), ensure_ascii=False, separators=(",", ":"))


def freeswitch_value(value: Any) -> str:
    """A JSON scalar as FreeSWITCH wants it; anything else is a format error."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    if value is None:
        return ""
    # The message names the type, never the value: it may be a password and it is logged.
    raise ExtensionFormatError(f"a {type(value).__name__} is not a string, number or boolean")


def parse_entry(raw: str | bytes) -> DirectoryEntry:
    """Parse a stored document; raises :class:`ExtensionFormatError` saying what is wrong."""
    try:
        document = json.loads(raw)
    except RecursionError:
        # Nested deeper than the parser recurses: as unreadable as any other bad JSON.
        raise ExtensionFormatError("not JSON: nested too deeply") from None
    except UnicodeDecodeError:
        raise ExtensionFormatError("not JSON: not UTF-8 text") from None
    except ValueError as exc:
        raise ExtensionFormatError(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ExtensionFormatError("not a JSON object")
    sections: dict[str, dict[str, str]] = {}
    for name in SECTIONS:
        section = document.get(name)
        if section is None:
            section = {}
        if not isinstance(section, dict):
            raise ExtensionFormatError(f"{name!r} is not an object")
        values: dict[str, str] = {}
        for key, value in section.items():
            try:
                values[str(key)] = freeswitch_value(value)
            except ExtensionFormatError as exc:
                raise ExtensionFormatError(f"{name}: field {excerpt(str(key))}: {exc}") from None
        sections[name] = values
    template = document.get("template") or ""
    if not isinstance(template, str):
        raise ExtensionFormatError("'template' is not a string")
    extra = {k: v for k, v in document.items() if k not in (*SECTIONS, "template")}
    return DirectoryEntry(
        params=sections["param"],
        variables=sections["variable"],
        attributes=sections["attribute"],
        template=template,
        extra=extra,
    )
