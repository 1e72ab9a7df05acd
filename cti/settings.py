"""The typed settings of both services, each declared once: its type, its default, its
check. :mod:`cti.config` reads them from ``cti.json`` and the environment (the file key is
the field's name unless :func:`setting` says otherwise). A check takes the value as read
and returns it, possibly normalised, or raises ``ValueError`` saying what is wrong; the
readers add the file, line and key, or the variable's name. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any, Literal

from cti.addresses import is_wildcard, split_address

ServiceName = Literal["directory", "events"]

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
REGISTRATION_MODES = ("false", "contact", "true")


class ConfigError(Exception):
    """The configuration cannot be used; the message says where and why."""


Check = Callable[[Any], Any]


@dataclass(frozen=True)
class Spec:
    """How one field is read from its section: ``key`` (default: the field's name),
    ``check`` (see the module), ``kind`` for a required field (no default to infer it)."""

    key: str = ""
    check: Check | None = None
    kind: type[Any] | None = None


SPEC = "cti.setting"


def setting(
    default: Any = MISSING,
    *,
    check: Check | None = None,
    key: str = "",
    kind: type[Any] | None = None,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
) -> Any:
    """A dataclass field that is also a setting (``secret``: kept out of ``repr``)."""
    metadata = {SPEC: Spec(key, check, kind)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata, repr=not secret)
    return field(default=default, metadata=metadata, repr=not secret)


# ---------------------------------------------------------------------------------------
# Checks


def address(value: str) -> str:
    """``host:port`` (``[v6]:port``)."""
    split_address(value)
    return value


def positive(value: int) -> int:
    if value <= 0:
        raise ValueError(f"must be a positive integer, got {value}")
    return value


def port_number(value: int) -> int:
    if not 0 < value < 65536:
        raise ValueError(f"port {value} out of range")
    return value


def networks(values: tuple[str, ...]) -> tuple[str, ...]:
    """Addresses or CIDR networks, normalised (``10.0.0.1`` -> ``10.0.0.1/32``)."""
    normalised = []
    for value in values:
        try:
            normalised.append(str(ipaddress.ip_network(value, strict=False)))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or CIDR network") from None
    return tuple(normalised)


def url_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError("must start with '/'")
    return value


def dialplan_context(value: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", value):
        raise ValueError("must be letters, digits and _ . - (1-64)")
    return value


def recordings_path(value: str) -> str:
    if not re.fullmatch(r"(/[A-Za-z0-9_][A-Za-z0-9_.-]*)+", value):
        raise ValueError("must be an absolute path of letters, digits and _ . - segments")
    return value


def advertised_address(value: str) -> str:
    """A dialable ``host:port`` (empty: not set)."""
    if value:
        host, _ = split_address(value)
        if is_wildcard(host):
            raise ValueError(
                f"{value!r} is a wildcard address: give one the other replicas can dial"
            )
    return value


def variable_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """Channel-variable names or ``prefix*`` (the call-control allowlist)."""
    for value in values:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,63}\*?", value):
            raise ValueError(f"{value!r} is not a variable name or a name prefix followed by *")
    return values


def matches_pattern(name: str, patterns: tuple[str, ...]) -> bool:
    """``name`` is one of ``patterns``: exact names, or prefixes ending in ``*``."""
    return any(
        name.startswith(pattern[:-1]) if pattern.endswith("*") else name == pattern
        for pattern in patterns
    )


NEVER_FOR_TENANTS = (
    "api_on_answer",
    "api_hangup_hook",
    "execute_on_answer",
    "exec_after_bridge_app",
    "user_context",
    "sip_route_uri",
    "transfer_after_bridge",
)
"""Variables FreeSWITCH acts on (run an API command or application, pick the dialplan or
the route): ``directory.tenant_writes`` may not allow them, nor patterns covering them."""


def never_for_tenants(name: str) -> bool:
    """A variable no tenant may set: runs something (``api_*``, ``exec*``, ``*_on_*``,
    ``*hook*``) or sends calls elsewhere (``user_context``, ``sip_route_uri``, ...)."""
    lowered = name.lower()
    return (
        lowered.startswith(("api_", "exec"))
        or "_on_" in lowered
        or "hook" in lowered
        or lowered in NEVER_FOR_TENANTS
    )


def tenant_variable_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """Variable patterns a tenant token may write: never one that covers a variable
    FreeSWITCH runs or routes by (:func:`never_for_tenants`)."""
    for value in variable_patterns(values):
        covered = [n for n in NEVER_FOR_TENANTS if matches_pattern(n, (value,))]
        if covered or never_for_tenants(value.rstrip("*")):
            raise ValueError(
                f"{value!r} would let tenant tokens set {covered[0] if covered else value!r}, "
                "which FreeSWITCH acts on (runs a command or application, or routes the call)"
            )
    return values


def param_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """Directory param (or attribute) names or ``prefix*``."""
    for value in values:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_.:+-]{0,127}\*?", value):
            raise ValueError(f"{value!r} is not a param name or a name prefix followed by *")
    return values


NEVER_FOR_TENANT_PARAMS = ("dial-string", "allow-empty-password")
"""Params no tenant may set: a ``dial-string`` says where calls to the user go (any
gateway, at the operator's cost), ``allow-empty-password`` drops authentication."""


def tenant_param_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in param_patterns(values):
        covered = [n for n in NEVER_FOR_TENANT_PARAMS if matches_pattern(n, (value,))]
        if covered:
            raise ValueError(f"{value!r} would let tenant tokens set {covered[0]!r}")
    return values


def template_ids(values: tuple[str, ...]) -> tuple[str, ...]:
    for value in values:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", value):
            raise ValueError(f"{value!r} is not a template id")
    return values


def not_negative(value: float) -> float:
    if value < 0:
        raise ValueError("must be 0 (off) or positive")
    return value


def unique(values: tuple[str, ...]) -> tuple[str, ...]:
    """Duplicates are harmless (the seed lists one call field twice): keep the first."""
    return tuple(dict.fromkeys(values))


# ---------------------------------------------------------------------------------------
# The settings


@dataclass(frozen=True)
class HttpSettings:
    listen: str = setting("127.0.0.1:8080", check=address)
    path: str = setting("/directory", check=url_path)
    username: str = ""
    password: str = setting("", secret=True)
    allow: tuple[str, ...] = setting((), check=networks)
    max_body_bytes: int = setting(65536, check=positive)
    deadline_ms: int = setting(2000, check=positive)
    workers: int = setting(1, check=positive)


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
    listen: str = setting(check=address, kind=str)
    tokens: tuple[str, ...] = setting((), secret=True)
    tls_cert: str = ""
    tls_key: str = ""
    scopes: Mapping[str, TokenScope] = field(default_factory=dict, repr=False)
    """token -> its limits, for the tokens configured as objects (others: full access)."""
    advertise: str = setting("", check=advertised_address)
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


DEFAULT_TENANT_PARAMS = (
    "password",
    "a1-hash",
    "vm-password",
    "vm-enabled",
    "vm-mailto",
    "vm-notify-mailto",
    "vm-email-all-messages",
    "vm-attach-file",
    "vm-keep-local-after-email",
)
DEFAULT_TENANT_VARIABLES = (
    "effective_caller_id_name",
    "effective_caller_id_number",
    "outbound_caller_id_*",
    "callgroup",
)
DEFAULT_TENANT_ATTRIBUTES = ("number-alias",)


@dataclass(frozen=True)
class TenantWriteSettings:
    """What a domain-limited token may write into its extensions and domain settings
    (``directory.tenant_writes``; docs/directory.md "Tenant tokens"). Full-access tokens
    are not limited. Names are exact or ``prefix*``; an empty list allows none."""

    params: tuple[str, ...] = setting(DEFAULT_TENANT_PARAMS, check=tenant_param_patterns)
    variables: tuple[str, ...] = setting(DEFAULT_TENANT_VARIABLES, check=tenant_variable_patterns)
    attributes: tuple[str, ...] = setting(DEFAULT_TENANT_ATTRIBUTES, check=param_patterns)
    templates: tuple[str, ...] = setting((), check=template_ids)
    """Shared templates a tenant may attach to (or detach from) its extensions."""


@dataclass(frozen=True)
class DirectorySettings:
    http: HttpSettings = HttpSettings()
    grpc: GrpcSettings = GrpcSettings(DEFAULT_GRPC_LISTEN["directory"])
    cache: bool = True
    store_a1_hash: bool = False
    tenant_writes: TenantWriteSettings = TenantWriteSettings()
    default_domain_params: Mapping[str, str] = setting(
        factory=lambda: {"dial-string": DEFAULT_DIAL_STRING}
    )


@dataclass(frozen=True)
class EslNode:
    host: str = setting(kind=str)
    port: int = setting(8021, check=port_number)
    password: str = setting("ClueCon", secret=True)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PublishTarget:
    """Where a piece of state goes: a hash, and optionally a pub/sub channel and a list."""

    hash: str = setting(kind=str)
    channel: str = ""
    list: str = ""
    list_max: int = setting(10000, check=positive)


@dataclass(frozen=True)
class CallTarget(PublishTarget):
    fields: tuple[str, ...] = setting((), check=unique)


@dataclass(frozen=True)
class ControlSettings:
    """The call-control API (``cti.v1.CallControlService``)."""

    context: str = setting("default", check=dialplan_context)
    """Dialplan context of Originate/Transfer destinations when a request names none."""
    recordings_dir: str = setting("/var/lib/freeswitch/recordings", check=recordings_path)
    """StartRecording writes only under this directory (a path on the FreeSWITCH host)."""
    variables: tuple[str, ...] = setting((), check=variable_patterns)
    """Channel variables an Originate request may set: exact names or ``prefix*``. Empty =
    none. An allowlist: FreeSWITCH acts on many variables (``api_on_answer`` runs an API
    command, ``execute_on_*`` an application, ``user_context`` picks the dialplan)."""


@dataclass(frozen=True)
class EventSettings:
    grpc: GrpcSettings = GrpcSettings(DEFAULT_GRPC_LISTEN["events"])
    nodes: tuple[EslNode, ...] = (EslNode("127.0.0.1"),)
    registration: PublishTarget = PublishTarget("registrations")
    call: CallTarget = CallTarget("calls")
    key_with_domain: bool = False
    """File key ``registration_key``: ``"extension"`` (False) or ``"extension@domain"``."""
    lease_seconds: float = 10.0
    # Per sofia profile: "false" (default; one registration per user@host), "contact"
    # (one per contact) or "true" (one per call-id) -- the profile's multiple-registrations.
    multiple_registrations: Mapping[str, str] = field(default_factory=dict)
    metrics_listen: str = setting("127.0.0.1:9102", check=address)
    # No event at all (FreeSWITCH sends HEARTBEAT every 20 s) for this long = dead socket.
    heartbeat_timeout: float = 60.0
    # Reconcile with FreeSWITCH this often while connected (0 = only on (re)connect): the
    # safety net for events FreeSWITCH dropped without closing the socket (slow reader).
    reconcile_interval: float = setting(300.0, check=not_negative)
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
