"""The one place Redis clients are made, from ``REDIS_URL``-style URLs.

Every service and tool calls :func:`connect` / :func:`connect_async` instead of
``redis.Redis.from_url`` so that deployment options (timeouts, retries, Sentinel, Cluster)
are decided once, and a deployment switches topology by changing ``REDIS_URL`` alone:

``redis://[[user]:password@]host[:port][/db]``, ``rediss://...``, ``unix://...``
    One Redis server (redis-py's own URL syntax, unchanged).
``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master-name[/db][?opts]``
    Redis Sentinel: the hosts are sentinels (default port 26379); the client asks them for
    the current master of ``master-name`` and follows failovers by itself. ``user`` and
    ``password`` authenticate to the Redis servers; options ``sentinel_username`` and
    ``sentinel_password`` to the sentinels, when they require it.
``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/0]``
    Redis Cluster: the hosts are any seed nodes (default port 6379); the client discovers
    the others and follows MOVED/ASK redirections and slot migrations. Cluster has only
    database 0.

``rediss+sentinel://`` and ``rediss+cluster://`` use TLS. Percent-encode a password that
contains ``@ : / , ? # %`` (or give it as ``REDIS_PASSWORD``, see :func:`with_password`).
In cluster mode every multi-key command and transaction must stay within one hash slot;
the key schema (:mod:`cti.redis_keys`) is designed for that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, quote, unquote

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.sentinel
import redis.cluster
import redis.sentinel

SOCKET_TIMEOUT = 2.0
CONNECT_TIMEOUT = 1.0
SENTINEL_PORT = 26379
REDIS_PORT = 6379

Mode = Literal["single", "sentinel", "cluster"]
_SCHEMES: dict[str, tuple[Mode, bool]] = {
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})


class RedisUrlError(ValueError):
    """``REDIS_URL`` cannot be used; the message says why (never with the password)."""


@dataclass(frozen=True)
class RedisTarget:
    """What a Sentinel or Cluster URL says, parsed without touching the network."""

    mode: Mode
    nodes: tuple[tuple[str, int], ...]
    ssl: bool = False
    service_name: str = ""
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def redacted(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = userinfo.split(":", 1)[0] + ":***@" + hosts
    path, qmark, query = path.partition("?")
    if qmark:
        query = "&".join(
            f"{k}=***" if "password" in k.lower() else f"{k}={v}"
            for k, v in parse_qsl(query, keep_blank_values=True)
        )
    return f"{scheme}://{netloc}{slash}{path}{qmark}{query}"


def with_password(url: str, password: str) -> str:
    """The URL with its password set to ``password`` (percent-encoded, so any character
    works), keeping any username: how ``REDIS_PASSWORD`` from a Secret joins a URL that is
    not itself secret."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise RedisUrlError(f"{redacted(url)}: not a URL")
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    username = userinfo.split(":", 1)[0] if at else ""
    return f"{scheme}://{username}:{quote(password, safe='')}@{hosts}{slash}{path}"


def check_url(url: str) -> None:
    """Raise :class:`RedisUrlError` for a URL :func:`connect` would refuse, without
    connecting: a config check at start instead of a failure at the first command."""
    scheme = url.partition("://")[0].lower()
    if mode_of(url) != "single":
        parse_url(url)
    elif scheme not in ("redis", "rediss", "unix"):
        raise RedisUrlError(
            f"{redacted(url)}: scheme must be redis, rediss, unix, redis+sentinel, "
            "rediss+sentinel, redis+cluster or rediss+cluster"
        )


def mode_of(url: str) -> Mode:
    """Which topology a URL names (``single`` for redis-py's own schemes)."""
    scheme = url.partition("://")[0].lower()
    return _SCHEMES[scheme][0] if scheme in _SCHEMES else "single"


def parse_url(url: str) -> RedisTarget:
    """Parse a ``redis+sentinel://`` or ``redis+cluster://`` URL (see module docstring)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _SCHEMES:
        raise RedisUrlError(f"{redacted(url)}: not a redis+sentinel:// or redis+cluster:// URL")
    mode, ssl = _SCHEMES[scheme.lower()]
    rest, _, fragment = rest.partition("#")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon and password_text else None
    default_port = SENTINEL_PORT if mode == "sentinel" else REDIS_PORT
    nodes = tuple(_host_port(item, default_port, url) for item in hostlist.split(","))
    options = dict(parse_qsl(query, keep_blank_values=True))
    allowed = _SENTINEL_OPTIONS if mode == "sentinel" else frozenset()
    unknown = sorted(set(options) - allowed)
    if unknown or fragment:
        what = f"option {unknown[0]!r}" if unknown else "a #fragment"
        raise RedisUrlError(f"{redacted(url)}: {what} is not supported in {mode} mode")
    parts = [unquote(p) for p in path.split("/") if p]
    if mode == "sentinel":
        if not parts or len(parts) > 2:
            raise RedisUrlError(f"{redacted(url)}: expected /<master-name>[/<db>] after the hosts")
        service_name, db = parts[0], _db(parts[1] if len(parts) == 2 else "0", url)
    else:
        if len(parts) > 1 or (parts and _db(parts[0], url) != 0):
            raise RedisUrlError(f"{redacted(url)}: Redis Cluster has only database 0")
        service_name, db = "", 0
    return RedisTarget(
        mode=mode,
        nodes=nodes,
        ssl=ssl,
        service_name=service_name,
        db=db,
        username=username,
        password=password,
        sentinel_username=options.get("sentinel_username") or None,
        sentinel_password=options.get("sentinel_password") or None,
    )


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [v6]:port
        host, _, port_text = item[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise RedisUrlError(f"{redacted(url)}: empty host in the host list")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise RedisUrlError(f"{redacted(url)}: bad port in {item!r}")
    return host, int(port_text)


def _db(text: str, url: str) -> int:
    if not text.isdigit():
        raise RedisUrlError(f"{redacted(url)}: database must be a number, got {text!r}")
    return int(text)


def _server_kwargs(target: RedisTarget, decode_responses: bool) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "decode_responses": decode_responses,
        "username": target.username,
        "password": target.password,
    }
    if target.ssl:
        kwargs["ssl"] = True
    return kwargs


def _sentinel_kwargs(target: RedisTarget) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": CONNECT_TIMEOUT,
        "username": target.sentinel_username,
        "password": target.sentinel_password,
    }
    if target.ssl:
        kwargs["ssl"] = True
    return kwargs


class _SentinelMaster(redis.Redis):
    """The master client, which also closes the sentinel connections it found it through."""

    def close(self) -> None:
        super().close()
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            manager.close()


class _AsyncSentinelMaster(redis.asyncio.Redis):
    """Async twin of :class:`_SentinelMaster`."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        manager = getattr(self.connection_pool, "sentinel_manager", None)
        if manager is not None:
            await manager.aclose()


def connect(url: str, *, decode_responses: bool = False) -> redis.Redis:
    """A blocking client for any URL form above.

    In cluster mode the object is a :class:`redis.cluster.RedisCluster`: the same commands,
    pipelines and transactions for keys of one slot, typed as ``redis.Redis`` so callers
    stay topology-agnostic (see :func:`mode_of` where it matters, e.g. keyspace
    notifications, which a cluster node publishes only for its own keys)."""
    if mode_of(url) == "single":
        return redis.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            decode_responses=decode_responses,
        )
    target = parse_url(url)
    if target.mode == "sentinel":
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target)
        )
        client = sentinel.master_for(  # type: ignore[no-untyped-call]
            target.service_name,
            redis_class=_SentinelMaster,
            db=target.db,
            **_server_kwargs(target, decode_responses),
        )
        return cast(redis.Redis, client)
    cluster = redis.cluster.RedisCluster(
        startup_nodes=[
            redis.cluster.ClusterNode(h, p)  # type: ignore[no-untyped-call]
            for h, p in target.nodes
        ],
        **_server_kwargs(target, decode_responses),
    )
    return cast(redis.Redis, cluster)


def connect_cluster_node_async(url: str, host: str, port: int) -> redis.asyncio.Redis:
    """A plain (non-cluster) asyncio client to one node of the cluster ``url`` names, with
    the URL's credentials, TLS and timeouts: for what must talk to each node itself, such
    as keyspace notifications, which a node publishes only for the keys it holds."""
    target = parse_url(url)
    if target.mode != "cluster":
        raise RedisUrlError(f"{redacted(url)}: not a redis+cluster:// URL")
    return redis.asyncio.Redis(host=host, port=port, **_server_kwargs(target, False))


def connect_async(url: str, *, decode_responses: bool = False) -> redis.asyncio.Redis:
    """An asyncio client for any URL form above (cluster: see :func:`connect`)."""
    if mode_of(url) == "single":
        return redis.asyncio.Redis.from_url(
            url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=CONNECT_TIMEOUT,
            decode_responses=decode_responses,
        )
    target = parse_url(url)
    if target.mode == "sentinel":
        sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            list(target.nodes), sentinel_kwargs=_sentinel_kwargs(target)
        )
        client = sentinel.master_for(
            target.service_name,
            redis_class=_AsyncSentinelMaster,
            db=target.db,
            **_server_kwargs(target, decode_responses),
        )
        return cast(redis.asyncio.Redis, client)
    cluster = redis.asyncio.cluster.RedisCluster(
        startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.nodes],
        **_server_kwargs(target, decode_responses),
    )
    return cast(redis.asyncio.Redis, cluster)


_PUBLISH_SCRIPT = "return redis.call('PUBLISH', ARGV[1], ARGV[2])"


def publish_in_transaction(pipe: Any, channel: str, payload: str, slot_key: str) -> None:
    """Queue a PUBLISH inside a MULTI, so subscribers see it in commit order.

    A cluster pipeline refuses PUBLISH inside a transaction (it takes the channel for a key
    of another slot); there the same PUBLISH runs from a one-line script keyed by
    ``slot_key``, a key of the transaction's own slot. Redis Cluster delivers it to
    subscribers on every node."""
    if isinstance(pipe, redis.cluster.ClusterPipeline):
        pipe.execute_command("EVAL", _PUBLISH_SCRIPT, 1, slot_key, channel, payload)  # type: ignore[no-untyped-call]
    else:
        pipe.publish(channel, payload)
