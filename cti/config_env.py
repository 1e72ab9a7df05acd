"""Environment overrides (containers configure through these): one table, each variable
read through the same check as the file key it overrides (:mod:`cti.settings`), and a
problem reported as ``environment VAR: ...``.

A variable applies to the services that use it (``services``) and is ignored by the other:
one environment (``make run``) may start both. ``{service}`` in a path is the service
being started. Three need more than one variable and are written out below the table:
API tokens, the ESL nodes with their password, and ``REDIS_PASSWORD`` joined to the URL.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from cti.addresses import split_address
from cti.redis_client import check_url, with_password
from cti.settings import (
    ConfigError,
    EslNode,
    ServiceName,
    Settings,
    address,
    advertised_address,
    networks,
)

BOTH: tuple[ServiceName, ...] = ("directory", "events")


def _text(value: str) -> str:
    return value


def _redis_url(value: str) -> str:
    check_url(value)  # RedisUrlError is a ValueError, and never contains the password
    return value


def _comma_list(check: Callable[[tuple[str, ...]], Any]) -> Callable[[str], Any]:
    """``a, b`` -> ``check(("a", "b"))`` (blanks dropped)."""
    return lambda value: check(tuple(item.strip() for item in value.split(",") if item.strip()))


@dataclass(frozen=True)
class EnvOverride:
    var: str
    path: tuple[str, ...]
    """Where in :class:`~cti.settings.Settings` (``{service}``: the running service)."""
    parse: Callable[[str], Any]
    """The file key's check, from the variable's text; raises ``ValueError``."""
    services: tuple[ServiceName, ...] = BOTH


ENV_OVERRIDES = (
    EnvOverride("REDIS_URL", ("redis_url",), _redis_url),
    EnvOverride("CTI_HTTP_LISTEN", ("directory", "http", "listen"), address, ("directory",)),
    EnvOverride("CTI_HTTP_USERNAME", ("directory", "http", "username"), _text, ("directory",)),
    EnvOverride("CTI_HTTP_PASSWORD", ("directory", "http", "password"), _text, ("directory",)),
    EnvOverride(
        "CTI_HTTP_ALLOW", ("directory", "http", "allow"), _comma_list(networks), ("directory",)
    ),
    # A process that runs one service (a container); the per-service names below win, so
    # one environment can start both services on different ports.
    EnvOverride("CTI_GRPC_LISTEN", ("{service}", "grpc", "listen"), address),
    EnvOverride(
        "CTI_DIRECTORY_GRPC_LISTEN", ("directory", "grpc", "listen"), address, ("directory",)
    ),
    EnvOverride("CTI_EVENTS_GRPC_LISTEN", ("events", "grpc", "listen"), address, ("events",)),
    EnvOverride("CTI_METRICS_LISTEN", ("events", "metrics_listen"), address, ("events",)),
    EnvOverride(
        "CTI_EVENTS_ADVERTISE", ("events", "grpc", "advertise"), advertised_address, ("events",)
    ),
)


def apply_env(settings: Settings, env: Mapping[str, str], service: ServiceName) -> Settings:
    """``settings`` with the environment's overrides for ``service``."""
    for override in ENV_OVERRIDES:
        if override.var in env and service in override.services:
            path = tuple(service if part == "{service}" else part for part in override.path)
            settings = _replace_at(settings, path, _parsed(override.var, override.parse, env))
    tokens = _env_tokens(env)
    if tokens:
        settings = _replace_at(settings, (service, "grpc", "tokens"), tokens)
    if service == "events":
        settings = _replace_at(settings, ("events", "nodes"), _env_nodes(settings, env))
    password = env.get("REDIS_PASSWORD")  # from a Secret; the URL itself need not be secret
    if password:
        settings = replace(settings, redis_url=with_password(settings.redis_url, password))
    return replace(settings, redis_configured=settings.redis_configured or "REDIS_URL" in env)


def _parsed(var: str, parse: Callable[[str], Any], env: Mapping[str, str]) -> Any:
    try:
        return parse(env[var])
    except ValueError as exc:
        raise ConfigError(f"environment {var}: {exc}") from None


def _replace_at(settings: Any, path: tuple[str, ...], value: Any) -> Any:
    """A copy of ``settings`` with the field at ``path`` (attribute names) set."""
    head, *rest = path
    inner = _replace_at(getattr(settings, head), tuple(rest), value) if rest else value
    return replace(settings, **{head: inner})


def _env_tokens(env: Mapping[str, str]) -> tuple[str, ...]:
    """``CTI_API_TOKEN`` first, then the comma-separated ``CTI_API_TOKENS``."""
    tokens = tuple(token for token in env.get("CTI_API_TOKENS", "").split(",") if token)
    if env.get("CTI_API_TOKEN"):
        tokens = (env["CTI_API_TOKEN"], *tokens)
    return tokens


def _env_nodes(settings: Settings, env: Mapping[str, str]) -> tuple[EslNode, ...]:
    """``CTI_ESL_NODES`` (``host[:port], ...``) replaces the nodes; ``CTI_ESL_PASSWORD`` is
    their password (alone: every configured node's)."""
    nodes = settings.events.nodes
    if "CTI_ESL_NODES" in env:
        defaults = EslNode(host="")  # the declared port and password
        password = env.get("CTI_ESL_PASSWORD", defaults.password)

        def node(item: str) -> EslNode:
            host, port = split_address(item if ":" in item else f"{item}:{defaults.port}")
            return EslNode(host, port, password)

        parse = _comma_list(lambda items: tuple(node(item) for item in items))
        return tuple(_parsed("CTI_ESL_NODES", parse, env))
    if "CTI_ESL_PASSWORD" in env:
        return tuple(replace(n, password=env["CTI_ESL_PASSWORD"]) for n in nodes)
    return nodes
