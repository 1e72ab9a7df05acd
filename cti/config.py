"""``cti.json`` (JSON with comments) plus environment overrides, as typed settings.

One file configures both services; each reads the sections it needs. Every problem is
reported as :class:`ConfigError` naming the file, the line when the parser knows it, and
the offending key, so a bad deploy fails at start instead of at the first call.

The settings, their defaults and their checks are declared once, in :mod:`cti.settings`
(re-exported here); this module reads the file through them (:func:`read_fields`), and
:mod:`cti.config_env` applies the environment's overrides through the same checks.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any, TypeVar

import json5

from cti.config_env import apply_env
from cti.redis_client import RedisUrlError, check_url
from cti.settings import (
    DEFAULT_DIAL_STRING,
    DEFAULT_GRPC_LISTEN,
    DEFAULT_REDIS_URL,
    FULL_ACCESS,
    REGISTRATION_MODES,
    SPEC,
    CallTarget,
    ConfigError,
    ControlSettings,
    DirectorySettings,
    EslNode,
    EventSettings,
    GrpcSettings,
    HttpSettings,
    PublishTarget,
    ServiceName,
    Settings,
    Spec,
    TenantWriteSettings,
    TokenScope,
)

__all__ = [
    "DEFAULT_DIAL_STRING",
    "DEFAULT_GRPC_LISTEN",
    "DEFAULT_REDIS_URL",
    "FULL_ACCESS",
    "CallTarget",
    "ConfigError",
    "ControlSettings",
    "DirectorySettings",
    "EslNode",
    "EventSettings",
    "GrpcSettings",
    "HttpSettings",
    "PublishTarget",
    "ServiceName",
    "Settings",
    "TenantWriteSettings",
    "TokenScope",
    "load_settings",
    "parse_settings",
]

T = TypeVar("T")

DEFAULT_CONFIG_PATH = "cti.json"


# ---------------------------------------------------------------------------------------
# Reading


def load_settings(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    service: ServiceName = "directory",
) -> Settings:
    """Read the config file (``--config``, else ``CTI_CONFIG``, else ``./cti.json`` if it
    exists, else defaults only), then apply environment overrides for ``service``."""
    env = os.environ if env is None else env
    chosen = path if path is not None else env.get("CTI_CONFIG")
    if chosen is None and Path(DEFAULT_CONFIG_PATH).exists():
        chosen = DEFAULT_CONFIG_PATH
    if chosen is None:
        document: Mapping[str, Any] = {}
        source, text = "<defaults>", ""
    else:
        source = str(chosen)
        text = _read_text(Path(chosen))
        document = _parse_text(text, source)
    settings = _from_document(document, source, text)
    return apply_env(settings, env, service)


def parse_settings(text: str, source: str = "<string>") -> Settings:
    """Like :func:`load_settings` for text already in memory, without env overrides."""
    return _from_document(_parse_text(text, source), source, text)


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    return text


_JSON5_POSITION = re.compile(r"^<string>:(\d+) (.*?)(?: at column (\d+))?$", re.S)


def _parse_text(text: str, source: str) -> Mapping[str, Any]:
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


class _Section:
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

    def section(self, name: str) -> _Section:
        self.seen.add(name)
        return _Section(self.data.get(name), self.source, self._key(name), self.text)

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


def read_fields(cls: type[T], section: _Section, defaults: T | None, **given: Any) -> T:
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


def _read_section(cls: type[T], parent: _Section, name: str, defaults: T) -> T:
    """The whole section ``name`` of ``parent`` as ``cls`` (unknown keys refused)."""
    section = parent.section(name)
    value = read_fields(cls, section, defaults)
    section.close()
    return value


def _read_one(section: _Section, key: str, spec: Spec, default: Any) -> Any:
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


def _from_document(document: Mapping[str, Any], source: str, text: str) -> Settings:
    root = _Section(dict(document), source, "", text)
    redis = root.section("redis")
    redis_url = redis.get("url", str, DEFAULT_REDIS_URL)
    try:
        check_url(redis_url)
    except RedisUrlError as exc:
        redis._fail(redis._key("url"), str(exc))
    redis.close()
    directory = _directory_settings(root.section("directory"))
    events = _event_settings(root.section("events"), root.section("gui"))
    root.close()
    return Settings(
        source=source,
        redis_url=redis_url,
        redis_configured="url" in document.get("redis", {}),
        directory=directory,
        events=events,
    )


def _directory_settings(section: _Section) -> DirectorySettings:
    defaults = DirectorySettings()
    settings = read_fields(
        DirectorySettings,
        section,
        defaults,
        http=_read_section(HttpSettings, section, "http", defaults.http),
        grpc=_directory_grpc(section.section("grpc"), defaults.grpc),
        tenant_writes=_read_section(
            TenantWriteSettings, section, "tenant_writes", defaults.tenant_writes
        ),
    )
    section.close()
    return settings


def _directory_grpc(section: _Section, defaults: GrpcSettings) -> GrpcSettings:
    """The directory API forwards nothing: ``advertise`` is the event service's alone."""
    if "advertise" in section.data:
        section._fail(section._key("advertise"), "unknown setting (misspelt?)")
    return _grpc_settings(section, defaults)


def _grpc_settings(section: _Section, defaults: GrpcSettings) -> GrpcSettings:
    tokens, scopes = _tokens(section)
    grpc = read_fields(GrpcSettings, section, defaults, tokens=tokens, scopes=scopes)
    if any(not token.strip() for token in grpc.tokens):
        # An empty token would admit "authorization: Bearer" with none.
        section._fail(section._key("tokens"), "a token must not be empty")
    if bool(grpc.tls_cert) != bool(grpc.tls_key):
        section._fail(section.path, "tls_cert and tls_key go together")
    section.close()
    return grpc


def _tokens(section: _Section) -> tuple[tuple[str, ...], dict[str, TokenScope]]:
    """``tokens``: strings (full access) and/or scoped-token objects (:class:`TokenScope`)."""
    raw = section.get("tokens", list, [])
    tokens: list[str] = []
    scopes: dict[str, TokenScope] = {}
    for index, item in enumerate(raw):
        if isinstance(item, str):
            tokens.append(item)
            continue
        entry = _Section(item, section.source, f"{section._key('tokens')}[{index}]", section.text)
        token = entry.get("token", str, "")
        if not token.strip():
            entry._fail(entry._key("token"), "is required and must not be empty")
        domains = tuple(d.lower() for d in entry.strings("domains"))
        if any(not d.strip() for d in domains):
            entry._fail(entry._key("domains"), "a domain must not be empty")
        scopes[token] = TokenScope(
            # Unnamed: by its place, never by anything derived from the secret (logged).
            name=entry.get("name", str, "") or f"tokens[{index}]",
            read_only=entry.get("read_only", bool, False),
            domains=domains,
        )
        entry.close()
        tokens.append(token)
    return tuple(tokens), scopes


def _event_settings(section: _Section, gui: _Section) -> EventSettings:
    defaults = EventSettings()
    nodes = tuple(_esl_node(section, i, n) for i, n in enumerate(section.get("nodes", list, [])))
    registration = _read_section(PublishTarget, gui, "registration", defaults.registration)
    call = _read_section(CallTarget, gui, "call", defaults.call)
    gui.close()
    settings = read_fields(
        EventSettings,
        section,
        defaults,
        grpc=_grpc_settings(section.section("grpc"), defaults.grpc),
        nodes=nodes or defaults.nodes,
        registration=registration,
        call=call,
        key_with_domain=_key_with_domain(section),
        multiple_registrations=_registration_modes(section),
        control=_read_section(ControlSettings, section, "control", defaults.control),
    )
    _check_event_settings(section, settings)
    section.close()
    return settings


def _check_event_settings(section: _Section, settings: EventSettings) -> None:
    """What no single setting can check alone."""
    if any(scope.domains for scope in settings.grpc.scopes.values()) and not (
        settings.key_with_domain
    ):
        section._fail(
            section._key("grpc.tokens"),
            'tokens limited to domains need registration_key "extension@domain" (plain '
            "extension keys do not say which domain a registration or call is in)",
        )
    if settings.lease_seconds <= 0 or settings.heartbeat_timeout <= 0:
        section._fail(section.path, "lease_seconds and heartbeat_timeout must be positive")


def _key_with_domain(section: _Section) -> bool:
    key_mode = section.get("registration_key", str, "extension")
    if key_mode not in ("extension", "extension@domain"):
        section._fail(section._key("registration_key"), "must be 'extension' or 'extension@domain'")
    return bool(key_mode == "extension@domain")


def _registration_modes(section: _Section) -> Mapping[str, str]:
    modes = section.string_map("multiple_registrations", {})
    for profile, mode in modes.items():
        if mode not in REGISTRATION_MODES:
            section._fail(
                section._key(f"multiple_registrations.{profile}"),
                f"must be one of {', '.join(REGISTRATION_MODES)}, got {mode!r}",
            )
    return modes


def _esl_node(section: _Section, index: int, raw: Any) -> EslNode:
    node = _Section(raw, section.source, f"{section._key('nodes')}[{index}]", section.text)
    result = read_fields(EslNode, node, None)
    node.close()
    return result
