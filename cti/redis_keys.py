"""Every Redis key and channel the middleware reads or writes, in one place.

The seed layout (``cti_exten@<domain>``, ``registrations``, ``calls``) is a contract with GUIs
that read Redis directly. Everything we add is derived data kept next to it. Keys derived
from one domain's extensions carry the hash tag ``{cti_exten@<domain>}`` so that, on a Redis
Cluster, they live in the same slot as ``cti_exten@<domain>`` itself (a key without braces is
hashed whole) and can be written in one transaction with it.
"""

from __future__ import annotations

import hashlib

EXTENSIONS_PREFIX = "cti_exten@"
"""Hash per domain: field = extension id, value = JSON ``{param, variable, attribute}``
(plus an optional top-level ``"template"`` naming an extension template)."""

TEMPLATES = "cti_template"
"""Hash: field = template name, value = JSON ``{param, variable, attribute}``."""

DOMAINS = "cti_domain"
"""Hash: field = domain name, value = JSON ``{param, variable}`` (domain-level settings)."""

DIRECTORY_CHANGES_CHANNEL = "cti:directory:changes"
"""Pub/sub: one JSON event per committed directory write (see README, "Change events")."""

DIRECTORY_WRITE_BEGIN_CHANNEL = "cti:directory:write-begin"
"""Pub/sub, internal: published first inside each API write transaction, so directory
replicas can tell keyspace notifications caused by an API write (whose exact extent the
change event names) from writes made by hand (which invalidate the whole domain)."""


DIRECTORY_HAND_WRITES_CHANNEL = "cti:directory:hand-writes"
"""Pub/sub, internal: the event service's directory watch tells directory replicas which
extensions a write by hand changed (``event_service.ingest.directory_watch``,
``directory_service.lookup.hand_writes``), so they re-read those instead of the whole domain."""


def extensions(domain: str) -> str:
    """``cti_exten@<domain>``: the seed's extension hash."""
    return f"{EXTENSIONS_PREFIX}{domain}"


def domain_of_extensions_key(key: str) -> str | None:
    """Inverse of :func:`extensions`; ``None`` for any other key."""
    if key.startswith(EXTENSIONS_PREFIX):
        return key[len(EXTENSIONS_PREFIX) :]
    return None


def aliases(domain: str) -> str:
    """Hash: lower-cased number-alias -> extension id, for one domain (same slot)."""
    return "{" + extensions(domain) + "}:aliases"


def template_refs(domain: str) -> str:
    """Hash: template name -> how many extensions of the domain use it (same slot)."""
    return "{" + extensions(domain) + "}:template-refs"


# ---------------------------------------------------------------------------------------
# Event service (registration and call state from FreeSWITCH's event socket)
#
# Every key below is derived from the registration hash's name: on a Redis Cluster the
# operator names the hashes with a common hash tag (``{cti}registrations``,
# ``{cti}calls``), every derived key then carries that tag, and the event service's
# transactions (hashes + indexes + log + lease in one MULTI/EXEC) stay in one slot. With
# untagged names (the seed's ``registrations`` / ``calls``) the names are the historic ones.

EVENTS_LOG_STREAM = "cti:events:log"
"""Stream (untagged name; see :func:`events_log`): one entry per state change of the
``registrations`` / ``calls`` hashes, written in the same MULTI/EXEC as the change itself
(so the log and the hashes never disagree)::

    XADD cti:events:log MAXLEN ~ <n> * kind <registration|call> op <set|update|delete>
         key <hash field> value <see below> node <host:port>

``set``: the field's new JSON, whole. ``delete``: empty. ``update`` (calls only): what the
change did, constant size however many calls the extension has (``docs/event-path.md``)::

    {"username": "1000", "current": "<uuid>", "notify": "answer",
     "call": {<the current call's fields>}, "active": true}

Readers (gRPC Watch) take a snapshot of the hashes, then XREAD from the id they saw last.
``<n>`` keeps the log within :data:`EVENTS_LOG_MAXLEN` entries and about
:data:`EVENTS_LOG_MAX_BYTES` bytes (computed from the entries' average size)."""

EVENTS_LOG_MAXLEN = 100000
EVENTS_LOG_MAX_BYTES = 64 << 20

_EVENTS_PREFIX = "cti:events"


def hash_tag(key: str) -> str | None:
    """The hash tag Redis Cluster hashes ``key`` by (the text between the first ``{`` and
    the next ``}``, if not empty), or ``None`` when the whole key is hashed."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def _events_prefix(registration_hash: str) -> str:
    """``{X}:events`` when the registration hash is tagged ``{X}``, else ``cti:events``."""
    tag = hash_tag(registration_hash)
    return _EVENTS_PREFIX if tag is None else "{" + tag + "}:events"


def events_log(registration_hash: str) -> str:
    """The change-log stream (:data:`EVENTS_LOG_STREAM` unless the hash is tagged)."""
    return _events_prefix(registration_hash) + ":log"


def _derived(hash_name: str, suffix: str) -> str:
    """A key kept next to a state hash: in its slot. A tagged name already names its slot;
    an untagged one becomes the tag itself (``{registrations}:devices``)."""
    if hash_tag(hash_name) is not None:
        return f"{hash_name}:{suffix}"
    return "{" + hash_name + "}:" + suffix


def registration_devices(registration_hash: str) -> str:
    """Hash, derived: registration hash field -> JSON ``{device id: {node, at, value}}``, the
    registrations FreeSWITCH holds for that extension (several devices, several nodes).
    In the registration hash's slot (``{registrations}:devices``,
    ``{cti}registrations:devices``)."""
    return _derived(registration_hash, "devices")


def call_channels(call_hash: str) -> str:
    """Hash, derived: channel uuid -> JSON ``{node, key, answered}``: which node a live channel
    is on and which ``calls`` field it belongs to (reconcile removes a node's own only).
    In the call hash's slot."""
    return _derived(call_hash, "channels")


def node_lease(node_address: str, registration_hash: str) -> str:
    """String: the id of the event-service replica consuming that FreeSWITCH node now
    (``SET NX PX``, renewed; deleted/extended only by its owner). ``cti:events:lease:<node>``
    or, with a tagged registration hash, ``{X}:events:lease:<node>``."""
    return f"{_events_prefix(registration_hash)}:lease:{node_address}"


def control_request(call_hash: str, caller: str, request_id: str) -> str:
    """String, expiring (10 min): the first result of a call-control request with this
    ``request_id`` from this ``caller`` (the token's name; Originate/Eavesdrop retries
    return it and dial nothing). Per caller, so no client can squat on another's ids. In
    the call hash's slot (``{calls}:control:request:<sha256(caller)[:16]>:<id>``)."""
    caller_tag = hashlib.sha256(caller.encode()).hexdigest()[:16]
    return _derived(call_hash, f"control:request:{caller_tag}:{request_id}")


def event_replicas(registration_hash: str) -> str:
    """Sorted set: the live event-service replicas (member = replica id, score = when its
    announcement expires, ms in Redis's clock); nodes are shared among them
    (``event_service.ingest.placement``). ``cti:events:replicas`` or ``{X}:events:replicas``."""
    return f"{_events_prefix(registration_hash)}:replicas"


def event_replica_addresses(registration_hash: str) -> str:
    """Hash: replica id -> the host:port its gRPC API is reachable at (``events.grpc.
    advertise``), written with its announcement, removed when it leaves or expires; call
    control forwarded to a node's holder dials it (``event_service.api.control_forward``).
    ``cti:events:replicas:grpc`` or ``{X}:events:replicas:grpc``."""
    return f"{_events_prefix(registration_hash)}:replicas:grpc"
