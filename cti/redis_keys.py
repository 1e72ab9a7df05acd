"""Every Redis key and channel the middleware reads or writes, in one place.

The seed layout (``cti_exten@<domain>``, ``registrations``, ``calls``) is a contract with GUIs
that read Redis directly. Everything we add is derived data kept next to it. Keys derived
from one domain's extensions carry the hash tag ``{cti_exten@<domain>}`` so that, on a Redis
Cluster, they live in the same slot as ``cti_exten@<domain>`` itself (a key without braces is
hashed whole) and can be written in one transaction with it.
"""

from __future__ import annotations

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

EVENTS_LOG_STREAM = "cti:events:log"
"""Stream: one entry per state change of the ``registrations`` / ``calls`` hashes, written in
the same MULTI/EXEC as the change itself (so the log and the hashes never disagree)::

    XADD cti:events:log MAXLEN ~ 100000 * kind <registration|call> op <set|delete>
         key <hash field> value <the field's new JSON, empty for delete> node <host:port>

Readers (gRPC Watch) take a snapshot of the hashes, then XREAD from the id they saw last."""

EVENTS_LOG_MAXLEN = 100000


def registration_devices(registration_hash: str) -> str:
    """Hash, derived: registration hash field -> JSON ``{device id: {node, at, value}}``, the
    registrations FreeSWITCH holds for that extension (several devices, several nodes).
    Hash-tagged with the seed hash's name so both live in one Redis Cluster slot."""
    return "{" + registration_hash + "}:devices"


def call_channels(call_hash: str) -> str:
    """Hash, derived: channel uuid -> JSON ``{node, key, answered}``: which node a live channel
    is on and which ``calls`` field it belongs to (reconcile removes a node's own only)."""
    return "{" + call_hash + "}:channels"


def node_lease(node_address: str) -> str:
    """String: the id of the event-service replica consuming that FreeSWITCH node now
    (``SET NX PX``, renewed; deleted/extended only by its owner)."""
    return f"cti:events:lease:{node_address}"
