"""``cti.json`` (JSON with comments) plus environment overrides, as typed settings.

One file configures both services; each reads the sections it needs. Every problem is
reported as :class:`ConfigError` naming the file, the line when the parser knows it, and
the offending key, so a bad deploy fails at start instead of at the first call.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import json5

from cti.redis_client import RedisUrlError, check_url, with_password

ServiceName = Literal["directory", "events"]

DEFAULT_CONFIG_PATH = "cti.json"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_GRPC_LISTEN: dict[ServiceName, str] = {
    "directory": "127.0.0.1:50051",
    "events": "127.0.0.1:50052",
}
# Stock FreeSWITCH's default domain dial-string: makes `user/1001@dom` bridges work.
DEFAULT_DIAL_STRING = (
    "{^^:sip_invite_domain=${dialed_domain}:presence_id=${dialed_user}@${dialed_domain}}"
    "${sofia_contact(*/${dialed_user}@${dialed_domain})},"
    "${verto_contact(${dialed_user}@${dialed_domain})}"
)


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


@dataclass(frozen=True)
class HttpSettings:
    listen: str = "127.0.0.1:8080"
    path: str = "/directory"
    username: str = ""
    password: str = field(default="", repr=False)
    allow: tuple[str, ...] = ()
    max_body_bytes: int = 65536
    deadline_ms: int = 2000
    workers: int = 1


@dataclass(frozen=True)
class TokenScope:
    """What one API token may do. A plain string in ``grpc.tokens`` has full access; an
    object ``{"token": ..., "name": "crm", "read_only": true, "domains": ["a.example"]}``
    is limited to Get/List/Watch (``read_only``) and/or to those SIP domains."""

    name: str = ""
    """Who, for logs (never the token itself)."""
    read_only: bool = False
    domains: tuple[str, ...] = ()
    """Empty = every domain."""

    def allows_domain(self, domain: str) -> bool:
        return not self.domains or domain.lower() in self.domains


FULL_ACCESS = TokenScope("full-access")


@dataclass(frozen=True)
class GrpcSettings:
    listen: str
    tokens: tuple[str, ...] = field(default=(), repr=False)
    tls_cert: str = ""
    tls_key: str = ""
    scopes: Mapping[str, TokenScope] = field(default_factory=dict, repr=False)
    """token -> its limits, for the tokens configured as objects (others: full access)."""
    advertise: str = ""
    """Event service: where the other replicas reach this API (host:port) to forward call
    control to the node this replica holds; empty = :attr:`reachable_at` decides."""

    @property
    def reachable_at(self) -> str:
        """``advertise``, else ``listen`` unless that is a wildcard (0.0.0.0, [::]), which
        names no address another replica could dial: then empty (nothing to forward to)."""
        if self.advertise:
            return self.advertise
        host, _ = split_address(self.listen)
        return "" if is_wildcard(host) else self.listen

    def scope_of(self, token: str) -> TokenScope:
        return self.scopes.get(token, FULL_ACCESS)


@dataclass(frozen=True)
class DirectorySettings:
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings(DEFAULT_GRPC_LISTEN["directory"])
    cache: bool = True
    store_a1_hash: bool = False
    default_domain_params: Mapping[str, str] = field(
        default_factory=lambda: {"dial-string": DEFAULT_DIAL_STRING}
    )


@dataclass(frozen=True)
class EslNode:
    host: str
    port: int = 8021
    password: str = field(default="ClueCon", repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PublishTarget:
    """Where a piece of state goes: a hash, and optionally a pub/sub channel and a list."""

    hash: str
    channel: str = ""
    list: str = ""
    list_max: int = 10000


@dataclass(frozen=True)
class CallTarget(PublishTarget):
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class ControlSettings:
    """The call-control API (``cti.v1.CallControlService``)."""

    context: str = "default"
    """Dialplan context of Originate/Transfer destinations when a request names none."""
    recordings_dir: str = "/var/lib/freeswitch/recordings"
    """StartRecording writes only under this directory (a path on the FreeSWITCH host)."""


@dataclass(frozen=True)
class EventSettings:
    grpc: GrpcSettings = GrpcSettings(DEFAULT_GRPC_LISTEN["events"])
    nodes: tuple[EslNode, ...] = (EslNode("127.0.0.1"),)
    registration: PublishTarget = PublishTarget("registrations")
    call: CallTarget = CallTarget("calls")
    key_with_domain: bool = False
    lease_seconds: float = 10.0
    # Per sofia profile: "false" (default; one registration per user@host), "contact"
    # (one per contact) or "true" (one per call-id) -- the profile's multiple-registrations.
    multiple_registrations: Mapping[str, str] = field(default_factory=dict)
    metrics_listen: str = "127.0.0.1:9102"
    # No event at all (FreeSWITCH sends HEARTBEAT every 20 s) for this long = dead socket.
    heartbeat_timeout: float = 60.0
    # Reconcile with FreeSWITCH this often while connected (0 = only on (re)connect): the
    # safety net for events FreeSWITCH dropped without closing the socket (slow reader).
    reconcile_interval: float = 300.0
    control: ControlSettings = ControlSettings()


@dataclass(frozen=True)
class Settings:
    source: str
    redis_url: str = DEFAULT_REDIS_URL
    # False when redis_url is only the default (neither the file nor REDIS_URL named one):
    # `make run` then starts its own Redis instead of using whatever answers there.
    redis_configured: bool = False
    directory: DirectorySettings = DirectorySettings()
    events: EventSettings = EventSettings()


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
    return _apply_env(settings, env, service)


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


def _grpc_settings(section: _Section, service: ServiceName) -> GrpcSettings:
    tokens, scopes = _tokens(section)
    grpc = GrpcSettings(
        listen=_address(section, "listen", DEFAULT_GRPC_LISTEN[service]),
        tokens=tokens,
        tls_cert=section.get("tls_cert", str, ""),
        tls_key=section.get("tls_key", str, ""),
        scopes=scopes,
        advertise=_advertise(section) if service == "events" else "",
    )
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
        digest = hashlib.sha256(token.encode()).hexdigest()[:8]
        scopes[token] = TokenScope(
            name=entry.get("name", str, "") or f"token-{digest}",
            read_only=entry.get("read_only", bool, False),
            domains=domains,
        )
        entry.close()
        tokens.append(token)
    return tuple(tokens), scopes


def _directory_settings(section: _Section) -> DirectorySettings:
    http_section = section.section("http")
    defaults = HttpSettings()
    http = HttpSettings(
        listen=_address(http_section, "listen", defaults.listen),
        path=http_section.get("path", str, defaults.path),
        username=http_section.get("username", str, ""),
        password=http_section.get("password", str, ""),
        allow=tuple(_network(http_section, "allow", n) for n in http_section.strings("allow")),
        max_body_bytes=_positive(http_section, "max_body_bytes", defaults.max_body_bytes),
        deadline_ms=_positive(http_section, "deadline_ms", defaults.deadline_ms),
        workers=_positive(http_section, "workers", defaults.workers),
    )
    if not http.path.startswith("/"):
        http_section._fail(http_section._key("path"), "must start with '/'")
    http_section.close()
    settings = DirectorySettings(
        http=http,
        grpc=_grpc_settings(section.section("grpc"), "directory"),
        cache=section.get("cache", bool, True),
        store_a1_hash=section.get("store_a1_hash", bool, False),
        default_domain_params=section.string_map(
            "default_domain_params", DirectorySettings().default_domain_params
        ),
    )
    section.close()
    return settings


def _event_settings(section: _Section, gui: _Section) -> EventSettings:
    nodes = tuple(_esl_node(section, i, n) for i, n in enumerate(section.get("nodes", list, [])))
    registration = _publish_target(gui.section("registration"), "registrations")
    call_section = gui.section("call")
    call_target = _publish_target(call_section, "calls", close=False)
    call = CallTarget(
        hash=call_target.hash,
        channel=call_target.channel,
        list=call_target.list,
        list_max=call_target.list_max,
        # Duplicates (the seed lists one field twice) are harmless: keep the first.
        fields=tuple(dict.fromkeys(call_section.strings("fields"))),
    )
    call_section.close()
    gui.close()
    key_mode = section.get("registration_key", str, "extension")
    if key_mode not in ("extension", "extension@domain"):
        section._fail(section._key("registration_key"), "must be 'extension' or 'extension@domain'")
    settings = EventSettings(
        grpc=_grpc_settings(section.section("grpc"), "events"),
        nodes=nodes or EventSettings().nodes,
        registration=registration,
        call=call,
        key_with_domain=key_mode == "extension@domain",
        lease_seconds=float(section.get("lease_seconds", float, 10.0)),
        multiple_registrations=_registration_modes(section),
        metrics_listen=_address(section, "metrics_listen", EventSettings().metrics_listen),
        heartbeat_timeout=float(section.get("heartbeat_timeout", float, 60.0)),
        reconcile_interval=float(section.get("reconcile_interval", float, 300.0)),
        control=_control_settings(section.section("control")),
    )
    if any(scope.domains for scope in settings.grpc.scopes.values()) and not (
        settings.key_with_domain
    ):
        section._fail(
            section._key("grpc.tokens"),
            'tokens limited to domains need registration_key "extension@domain" (plain '
            "extension keys do not say which domain a registration or call is in)",
        )
    if settings.reconcile_interval < 0:
        section._fail(section._key("reconcile_interval"), "must be 0 (off) or positive")
    if settings.lease_seconds <= 0 or settings.heartbeat_timeout <= 0:
        section._fail(section.path, "lease_seconds and heartbeat_timeout must be positive")
    section.close()
    return settings


def _control_settings(section: _Section) -> ControlSettings:
    defaults = ControlSettings()
    settings = ControlSettings(
        context=section.get("context", str, defaults.context),
        recordings_dir=section.get("recordings_dir", str, defaults.recordings_dir),
    )
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", settings.context):
        section._fail(section._key("context"), "must be letters, digits and _ . - (1-64)")
    if not re.fullmatch(r"(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+", settings.recordings_dir):
        section._fail(
            section._key("recordings_dir"),
            "must be an absolute path of letters, digits and _ . - segments",
        )
    section.close()
    return settings


REGISTRATION_MODES = ("false", "contact", "true")


def _registration_modes(section: _Section) -> Mapping[str, str]:
    modes = section.string_map("multiple_registrations", {})
    for profile, mode in modes.items():
        if mode not in REGISTRATION_MODES:
            section._fail(
                section._key(f"multiple_registrations.{profile}"),
                f"must be one of {', '.join(REGISTRATION_MODES)}, got {mode!r}",
            )
    return modes


def _publish_target(section: _Section, default_hash: str, close: bool = True) -> PublishTarget:
    target = PublishTarget(
        hash=section.get("hash", str, default_hash),
        channel=section.get("channel", str, ""),
        list=section.get("list", str, ""),
        list_max=_positive(section, "list_max", 10000),
    )
    if close:
        section.close()
    return target


def _esl_node(section: _Section, index: int, raw: Any) -> EslNode:
    node = _Section(raw, section.source, f"{section._key('nodes')}[{index}]", section.text)
    host = node.get("host", str, None)
    if not host:
        node._fail(node._key("host"), "is required")
    result = EslNode(
        host=host,
        port=_port(node, node.get("port", int, 8021)),
        password=node.get("password", str, "ClueCon"),
    )
    node.close()
    return result


def _positive(section: _Section, name: str, default: int) -> int:
    value: int = section.get(name, int, default)
    if value <= 0:
        section._fail(section._key(name), f"must be a positive integer, got {value}")
    return value


def _port(section: _Section, port: int) -> int:
    if not 0 < port < 65536:
        section._fail(section.path, f"port {port} out of range")
    return port


def _address(section: _Section, name: str, default: str) -> str:
    value: str = section.get(name, str, default)
    try:
        split_address(value)
    except ValueError as exc:
        section._fail(section._key(name), str(exc))
    return value


def is_wildcard(host: str) -> bool:
    """``0.0.0.0`` / ``::`` (listen on every interface): no address to dial."""
    try:
        return not host or ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def _check_advertise(value: str) -> str:
    """A dialable ``host:port`` (ValueError says why not)."""
    host, _ = split_address(value)
    if is_wildcard(host):
        raise ValueError(f"{value!r} is a wildcard address: give one the other replicas can dial")
    return value


def _advertise(section: _Section) -> str:
    value: str = section.get("advertise", str, "")
    if value:
        try:
            _check_advertise(value)
        except ValueError as exc:
            section._fail(section._key("advertise"), str(exc))
    return value


def _network(section: _Section, name: str, value: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=False))
    except ValueError:
        section._fail(section._key(name), f"{value!r} is not an address or CIDR network")
        raise  # unreachable


def split_address(value: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port)."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return host.strip("[]"), int(port_text)


# ---------------------------------------------------------------------------------------
# Environment overrides (containers configure through these)


def _apply_env(settings: Settings, env: Mapping[str, str], service: ServiceName) -> Settings:
    from dataclasses import replace

    def checked_address(var: str) -> str:
        try:
            split_address(env[var])
        except ValueError as exc:
            raise ConfigError(f"environment {var}: {exc}") from None
        return env[var]

    redis_url = env.get("REDIS_URL", settings.redis_url)
    try:
        check_url(redis_url)
    except RedisUrlError as exc:
        raise ConfigError(f"environment REDIS_URL: {exc}") from None
    if env.get("REDIS_PASSWORD"):  # from a Secret; the URL itself need not be secret
        redis_url = with_password(redis_url, env["REDIS_PASSWORD"])
    directory, events = settings.directory, settings.events
    tokens = tuple(t for t in env.get("CTI_API_TOKENS", "").split(",") if t)
    if env.get("CTI_API_TOKEN"):
        tokens = (env["CTI_API_TOKEN"], *tokens)

    http = directory.http
    if "CTI_HTTP_LISTEN" in env:
        http = replace(http, listen=checked_address("CTI_HTTP_LISTEN"))
    if "CTI_HTTP_USERNAME" in env:
        http = replace(http, username=env["CTI_HTTP_USERNAME"])
    if "CTI_HTTP_PASSWORD" in env:
        http = replace(http, password=env["CTI_HTTP_PASSWORD"])
    if "CTI_HTTP_ALLOW" in env:
        try:
            allow = tuple(
                str(ipaddress.ip_network(n.strip(), strict=False))
                for n in env["CTI_HTTP_ALLOW"].split(",")
                if n.strip()
            )
        except ValueError as exc:
            raise ConfigError(f"environment CTI_HTTP_ALLOW: {exc}") from None
        http = replace(http, allow=allow)

    own_grpc = directory.grpc if service == "directory" else events.grpc
    # CTI_GRPC_LISTEN: a process that runs one service (a container); the per-service
    # names win, so one environment can start both services on different ports.
    for var in ("CTI_GRPC_LISTEN", f"CTI_{service.upper()}_GRPC_LISTEN"):
        if var in env:
            own_grpc = replace(own_grpc, listen=checked_address(var))
    if tokens:
        own_grpc = replace(own_grpc, tokens=tokens)

    nodes = events.nodes
    if "CTI_ESL_NODES" in env:
        password = env.get("CTI_ESL_PASSWORD", "ClueCon")
        parsed = []
        for item in filter(None, (n.strip() for n in env["CTI_ESL_NODES"].split(","))):
            try:
                host, port = split_address(item if ":" in item else f"{item}:8021")
            except ValueError as exc:
                raise ConfigError(f"environment CTI_ESL_NODES: {exc}") from None
            parsed.append(EslNode(host, port, password))
        nodes = tuple(parsed)
    elif "CTI_ESL_PASSWORD" in env:
        nodes = tuple(replace(n, password=env["CTI_ESL_PASSWORD"]) for n in nodes)

    if service == "directory":
        directory = replace(directory, http=http, grpc=own_grpc)
    else:
        metrics_listen = events.metrics_listen
        if "CTI_METRICS_LISTEN" in env:
            metrics_listen = checked_address("CTI_METRICS_LISTEN")
        if env.get("CTI_EVENTS_ADVERTISE"):
            try:
                advertise = _check_advertise(env["CTI_EVENTS_ADVERTISE"])
            except ValueError as exc:
                raise ConfigError(f"environment CTI_EVENTS_ADVERTISE: {exc}") from None
            own_grpc = replace(own_grpc, advertise=advertise)
        events = replace(events, grpc=own_grpc, nodes=nodes, metrics_listen=metrics_listen)
    return replace(
        settings,
        redis_url=redis_url,
        redis_configured=settings.redis_configured or "REDIS_URL" in env,
        directory=directory,
        events=events,
    )
