"""Helpers for the event-service gRPC tests: a real server on loopback over a real Redis,
and state written exactly the way the core writes it (hash write + change-log entry in
one MULTI/EXEC)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Literal

import grpc
import redis

from cti import redis_keys
from cti.config import GrpcSettings, Settings, parse_settings
from cti.v1 import events_pb2_grpc
from event_service.app import create_grpc_server
from tests.support import SEED_DIR, free_port

TOKEN = "test-token-events"
AUTH = (("authorization", f"Bearer {TOKEN}"),)
NODE = "127.0.0.1:8021"


def seed_registration() -> dict[str, str]:
    value: dict[str, str] = json.loads((SEED_DIR / "registration-value.json").read_text())
    return value


def seed_call_record() -> dict[str, Any]:
    value: dict[str, Any] = json.loads((SEED_DIR / "call-value.json").read_text())
    return value


def registration(extension: str, domain: str = "127.0.0.1", **extra: str) -> dict[str, str]:
    """A registration value shaped like the seed's, for another extension/domain."""
    value = seed_registration()
    value.update(
        {
            "from-user": extension,
            "username": extension,
            "to-user": extension,
            "user_name": extension,
            "from-host": domain,
            "domain_name": domain,
            "realm": domain,
        }
    )
    value.update(extra)
    return value


def call_record(extension: str, uuids: list[str], notify: str = "answer") -> dict[str, Any]:
    value: dict[str, Any] = {"username": extension, "current": uuids[-1] if uuids else ""}
    value["notify"] = notify
    for uuid in uuids:
        value[uuid] = {
            "Caller-Destination-Number": "5555",
            "Caller-Caller-ID-Number": extension,
            "Caller-Profile-Created-Time": "1649344241663800",
        }
    value["activity"] = list(uuids) if notify != "hangup" else []
    return value


def settings_for(redis_url: str, port: int, **events: Any) -> Settings:
    base = parse_settings("{}")
    grpc_settings = GrpcSettings(f"127.0.0.1:{port}", tokens=(TOKEN,))
    return replace(
        base, redis_url=redis_url, events=replace(base.events, grpc=grpc_settings, **events)
    )


@dataclass
class EventsApi:
    """A started server, a client stub and a Redis client to write state with."""

    server: grpc.Server
    channel: grpc.Channel
    stub: events_pb2_grpc.EventServiceStub
    redis: redis.Redis
    settings: Settings

    def write(
        self,
        kind: Literal["registration", "call"],
        key: str,
        value: dict[str, Any] | None,
        node: str = NODE,
    ) -> str:
        """Set (``value``) or delete (``None``) one entry as the core does; the revision."""
        target = (
            self.settings.events.registration
            if kind == "registration"
            else self.settings.events.call
        )
        text = json.dumps(value) if value is not None else ""
        with self.redis.pipeline(transaction=True) as pipe:
            if value is None:
                pipe.hdel(target.hash, key)
            else:
                pipe.hset(target.hash, key, text)
            pipe.xadd(
                redis_keys.EVENTS_LOG_STREAM,
                {
                    "kind": kind,
                    "op": "set" if value is not None else "delete",
                    "key": key,
                    "value": text,
                    "node": node,
                },
                maxlen=redis_keys.EVENTS_LOG_MAXLEN,
                approximate=True,
            )
            _, revision = pipe.execute()
        return revision.decode() if isinstance(revision, bytes) else str(revision)


class Watching:
    """A Watch call seen event by event (the server sends them in batches)."""

    def __init__(self, call: Any) -> None:
        self.call = call
        self._events = (event for response in call for event in response.events)

    def __iter__(self) -> Iterator[Any]:
        return self._events

    def __next__(self) -> Any:
        return next(self._events)

    def cancel(self) -> None:
        self.call.cancel()


@contextmanager
def running_api(redis_url: str, **events: Any) -> Iterator[EventsApi]:
    port = free_port()
    settings = settings_for(redis_url, port, **events)
    server = create_grpc_server(settings)
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    client = redis.Redis.from_url(redis_url)
    try:
        yield EventsApi(
            server, channel, events_pb2_grpc.EventServiceStub(channel), client, settings
        )
    finally:
        channel.close()
        server.stop(0).wait()
        client.close()
