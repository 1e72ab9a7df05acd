"""The Redis reads behind a directory answer (asyncio). Read-only: writes belong to the
gRPC API (``store.py``). Every Redis error propagates; the HTTP edge turns it into 503."""

from __future__ import annotations

from typing import Any

import redis.asyncio

from cti import redis_keys
from cti.directory_entry import ExtensionFormatError, parse_entry
from cti.text import redis_text
from directory_service.lookup.directory import DomainData, SharedData

Client = redis.asyncio.Redis


def _text_keys(raw: dict[Any, Any]) -> dict[str, bytes]:
    return {redis_text(k): v for k, v in raw.items()}


def _bytes(value: bytes | str | None) -> bytes | None:
    """Our clients never decode responses; this keeps the types honest."""
    return value.encode() if isinstance(value, str) else value


async def load_domain(client: Client, domain: str) -> DomainData:
    """A whole domain: every extension's raw JSON."""
    raw = await client.hgetall(redis_keys.extensions(domain))
    return DomainData(domain, _text_keys(raw))


async def load_shared(client: Client) -> SharedData:
    """All templates and all domain settings, in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(redis_keys.TEMPLATES)
        pipe.hgetall(redis_keys.DOMAINS)
        templates, domains = await pipe.execute()
    return SharedData(_text_keys(templates), _text_keys(domains))


async def fetch_extension(client: Client, domain: str, user_id: str) -> bytes | None:
    value = await client.hget(redis_keys.extensions(domain), user_id)
    return _bytes(value)


async def fetch_user(
    client: Client, domain: str, user: str
) -> tuple[DomainData, SharedData] | None:
    """An uncached lookup's fast path: the extension stored under exactly ``user``, its
    domain's settings and its template. ``None`` when no field is named ``user`` (the
    caller then needs the whole domain to match aliases and other letter cases)."""
    async with client.pipeline(transaction=False) as pipe:
        pipe.hget(redis_keys.extensions(domain), user)
        pipe.hget(redis_keys.DOMAINS, domain)
        raw, settings = await pipe.execute()
    if raw is None:
        return None
    templates: dict[str, bytes] = {}
    template = _template_name(raw)
    if template:
        template_raw = _bytes(await client.hget(redis_keys.TEMPLATES, template))
        if template_raw is not None:
            templates[template] = template_raw
    domains = {domain: settings} if settings is not None else {}
    return DomainData(domain, {user: raw}), SharedData(templates, domains)


def _template_name(raw: bytes) -> str:
    try:
        return parse_entry(raw).template
    except ExtensionFormatError:
        return ""  # the view reports it when it parses the entry
