"""The Redis keys the event service uses, and the Redis Cluster check that they share a slot.

Each batch is one WATCH/MULTI/EXEC over the state hashes, their indexes, the change log and
the node's lease (and the optional lists); Watch snapshots the hashes and the log in one
MULTI/EXEC. A Redis Cluster runs a transaction only when all its keys are in one hash slot,
so in cluster mode the service refuses to start unless they are: a clear message at start
instead of every write failing with CROSSSLOT later.
"""

from __future__ import annotations

from redis.crc import key_slot

from cti import redis_keys
from cti.config import ConfigError, EventSettings


def event_keys(settings: EventSettings) -> dict[str, str]:
    """What each key is for (as the operator would name it) -> the key."""
    registration, call = settings.registration, settings.call
    keys = {
        "events.registration.hash": registration.hash,
        "events.call.hash": call.hash,
        "registration devices index": redis_keys.registration_devices(registration.hash),
        "call channels index": redis_keys.call_channels(call.hash),
        "change log": redis_keys.events_log(registration.hash),
    }
    if registration.list:
        keys["events.registration.list"] = registration.list
    if call.list:
        keys["events.call.list"] = call.list
    for node in settings.nodes:
        keys[f"lease of {node.address}"] = redis_keys.node_lease(node.address, registration.hash)
    return keys


def check_one_slot(settings: EventSettings) -> None:
    """Raise :class:`ConfigError` unless every event-service key hashes to one cluster slot."""
    keys = event_keys(settings)
    slots = {what: key_slot(key.encode()) for what, key in keys.items()}
    first = slots["events.registration.hash"]
    apart = [f"{what} {keys[what]!r}" for what, slot in slots.items() if slot != first]
    if not apart:
        return
    raise ConfigError(
        "on a Redis Cluster the event service needs all its keys in one hash slot, but "
        + ", ".join(apart)
        + f" hash elsewhere than events.registration.hash {keys['events.registration.hash']!r}:"
        ' name the hashes (and lists) with a common {tag}, e.g. "{cti}registrations" and'
        ' "{cti}calls"'
    )
