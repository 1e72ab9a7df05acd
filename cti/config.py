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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cti.config_env import apply_env
from cti.config_reader import Section, parse_document, read_fields, read_section, read_text
from cti.redis_client import RedisUrlError, check_url
from cti.settings import (
    DEFAULT_DIAL_STRING,
    DEFAULT_GRPC_LISTEN,
    DEFAULT_REDIS_URL,
    FULL_ACCESS,
    REGISTRATION_MODES,
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
        text = read_text(Path(chosen))
        document = parse_document(text, source)
    settings = _from_document(document, source, text)
    return apply_env(settings, env, service)


def parse_settings(text: str, source: str = "<string>") -> Settings:
    """Like :func:`load_settings` for text already in memory, without env overrides."""
    return _from_document(parse_document(text, source), source, text)


def _from_document(document: Mapping[str, Any], source: str, text: str) -> Settings:
    root = Section(dict(document), source, "", text)
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


def _directory_settings(section: Section) -> DirectorySettings:
    defaults = DirectorySettings()
    settings = read_fields(
        DirectorySettings,
        section,
        defaults,
        http=read_section(HttpSettings, section, "http", defaults.http),
        grpc=_directory_grpc(section.section("grpc"), defaults.grpc),
        tenant_writes=read_section(
            TenantWriteSettings, section, "tenant_writes", defaults.tenant_writes
        ),
    )
    section.close()
    return settings


def _directory_grpc(section: Section, defaults: GrpcSettings) -> GrpcSettings:
    """The directory API forwards nothing: ``advertise`` is the event service's alone."""
    if "advertise" in section.data:
        section._fail(section._key("advertise"), "unknown setting (misspelt?)")
    return _grpc_settings(section, defaults)


def _grpc_settings(section: Section, defaults: GrpcSettings) -> GrpcSettings:
    tokens, scopes = _tokens(section)
    grpc = read_fields(GrpcSettings, section, defaults, tokens=tokens, scopes=scopes)
    if any(not token.strip() for token in grpc.tokens):
        # An empty token would admit "authorization: Bearer" with none.
        section._fail(section._key("tokens"), "a token must not be empty")
    if bool(grpc.tls_cert) != bool(grpc.tls_key):
        section._fail(section.path, "tls_cert and tls_key go together")
    section.close()
    return grpc


def _tokens(section: Section) -> tuple[tuple[str, ...], dict[str, TokenScope]]:
    """``tokens``: strings (full access) and/or scoped-token objects (:class:`TokenScope`)."""
    raw = section.get("tokens", list, [])
    tokens: list[str] = []
    scopes: dict[str, TokenScope] = {}
    for index, item in enumerate(raw):
        if isinstance(item, str):
            tokens.append(item)
            continue
        entry = Section(item, section.source, f"{section._key('tokens')}[{index}]", section.text)
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


def _event_settings(section: Section, gui: Section) -> EventSettings:
    defaults = EventSettings()
    nodes = tuple(_esl_node(section, i, n) for i, n in enumerate(section.get("nodes", list, [])))
    registration = read_section(PublishTarget, gui, "registration", defaults.registration)
    call = read_section(CallTarget, gui, "call", defaults.call)
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
        control=read_section(ControlSettings, section, "control", defaults.control),
    )
    _check_event_settings(section, settings)
    section.close()
    return settings


def _check_event_settings(section: Section, settings: EventSettings) -> None:
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


def _key_with_domain(section: Section) -> bool:
    key_mode = section.get("registration_key", str, "extension")
    if key_mode not in ("extension", "extension@domain"):
        section._fail(section._key("registration_key"), "must be 'extension' or 'extension@domain'")
    return bool(key_mode == "extension@domain")


def _registration_modes(section: Section) -> Mapping[str, str]:
    modes = section.string_map("multiple_registrations", {})
    for profile, mode in modes.items():
        if mode not in REGISTRATION_MODES:
            section._fail(
                section._key(f"multiple_registrations.{profile}"),
                f"must be one of {', '.join(REGISTRATION_MODES)}, got {mode!r}",
            )
    return modes


def _esl_node(section: Section, index: int, raw: Any) -> EslNode:
    node = Section(raw, section.source, f"{section._key('nodes')}[{index}]", section.text)
    result = read_fields(EslNode, node, None)
    node.close()
    return result
