"""Reading a JSON-with-comments document into declared settings: the generic half of
:mod:`cti.config` (which knows the sections). Every problem is a :class:`ConfigError`
naming the file, the line when it can be found, and the dotted key."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

import json5

from cti.settings import SPEC, ConfigError, Spec

T = TypeVar("T")


def read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    return text


_JSON5_POSITION = re.compile(r"^<string>:(\d+) (.*?)(?: at column (\d+))?$", re.S)


def parse_document(text: str, source: str) -> Mapping[str, Any]:
    try:
        document = json5.loads(text)
    except ValueError as exc:
        match = _JSON5_POSITION.match(str(exc))
        if match:
            line, problem, column = match.groups()
            where = f"line {line}" + (f", column {column}" if column else "")
            raise ConfigError(f"{source}: {where}: {problem}") from None
        raise ConfigError(f"{source}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{source}: line 1: the top level must be an object")
    return document


class Section:
    """A view on one JSON object that checks types and reports the dotted key path."""

    def __init__(self, data: Any, source: str, path: str, text: str = "") -> None:
        self.source = source
        self.text = text
        self.path = path
        if data is None:
            data = {}
        if not isinstance(data, dict):
            self._fail(path, "must be an object")
        self.data: dict[str, Any] = data
        self.seen: set[str] = set()

    def _fail(self, key: str, problem: str) -> None:
        line = _line_of(self.text, key)
        where = f"line {line}: " if line else ""
        raise ConfigError(f"{self.source}: {where}{key or '<top level>'}: {problem}")

    def _key(self, name: str) -> str:
        return f"{self.path}.{name}" if self.path else name

    def section(self, name: str) -> Section:
        self.seen.add(name)
        return Section(self.data.get(name), self.source, self._key(name), self.text)

    def get(self, name: str, kind: type[Any], default: Any) -> Any:
        self.seen.add(name)
        if name not in self.data or self.data[name] is None:
            return default
        value = self.data[name]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            # A secret's value must not reach the start-up error (it is logged).
            got = type(value).__name__ if _is_secret(name) else repr(value)
            self._fail(self._key(name), f"must be {kind.__name__}, got {got}")
        return value

    def strings(self, name: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        values = self.get(name, list, None)
        if values is None:
            return default
        if not all(isinstance(v, str) for v in values):
            self._fail(self._key(name), "must be a list of strings")
        return tuple(values)

    def string_map(self, name: str, default: Mapping[str, str]) -> Mapping[str, str]:
        values = self.get(name, dict, None)
        if values is None:
            return default
        if not all(isinstance(v, str | int | float | bool) for v in values.values()):
            self._fail(self._key(name), "values must be strings, numbers or booleans")
        return {k: _freeswitch_string(v) for k, v in values.items()}

    def close(self) -> None:
        unknown = sorted(set(self.data) - self.seen)
        if unknown:
            self._fail(self._key(unknown[0]), "unknown setting (misspelt?)")


def _is_secret(name: str) -> bool:
    return "password" in name or "token" in name


def _line_of(text: str, dotted_key: str) -> int | None:
    """Best-effort line of a key for messages: the first ``"name":`` of the key's last
    component found after its parents' (JSON5 parsers do not keep positions)."""
    offset = 0
    for part in re.sub(r"\[\d+\]", "", dotted_key).split("."):
        match = re.compile(rf"[\"']?{re.escape(part)}[\"']?\s*:").search(text, offset)
        if match is None:
            return None
        offset = match.start()
    return text.count("\n", 0, offset) + 1 if dotted_key else None


def _freeswitch_string(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def read_fields(cls: type[T], section: Section, defaults: T | None, **given: Any) -> T:
    """``cls`` from ``section``: each field not ``given`` read under its key, with its
    declared type, check (:mod:`cti.settings`) and default (``defaults``' value, else the
    field's own). A field without a default is required. The caller closes the section."""
    values = dict(given)
    for item in fields(cls):  # type: ignore[arg-type]
        if item.name in values or not item.init:
            continue
        spec: Spec = item.metadata.get(SPEC, Spec())
        if defaults is not None:
            default = getattr(defaults, item.name)
        elif item.default_factory is not MISSING:
            default = item.default_factory()
        else:
            default = item.default
        values[item.name] = _read_one(section, spec.key or item.name, spec, default)
    return cls(**values)


def read_section(cls: type[T], parent: Section, name: str, defaults: T) -> T:
    """The whole section ``name`` of ``parent`` as ``cls`` (unknown keys refused)."""
    section = parent.section(name)
    value = read_fields(cls, section, defaults)
    section.close()
    return value


def _read_one(section: Section, key: str, spec: Spec, default: Any) -> Any:
    if default is MISSING:
        value = section.get(key, spec.kind or str, None)
        if not value:
            section._fail(section._key(key), "is required")
    elif isinstance(default, tuple):
        value = section.strings(key, default)
    elif isinstance(default, Mapping):
        value = section.string_map(key, default)
    else:
        value = section.get(key, type(default), default)
    if spec.check is None:
        return value
    try:
        return spec.check(value)
    except ValueError as exc:
        section._fail(section._key(key), str(exc))
        raise  # unreachable
