"""Prometheus metrics of the event service (served on ``events.metrics_listen`` by
:mod:`event_service.status_http`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "cti_events_received_total", "FreeSWITCH events received, by node and type", ["node", "type"]
)
STATE_CHANGES = Counter(
    "cti_events_state_changes_total", "registrations/calls fields written", ["node"]
)
APPLY_LAG = Histogram(
    "cti_events_apply_lag_seconds",
    "Per event: from FreeSWITCH's Event-Date-Timestamp to its batch committed in Redis",
    ["node"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
OLDEST_UNAPPLIED = Gauge(
    "cti_events_oldest_unapplied_seconds",
    "Age (from its Event-Date-Timestamp) of the oldest event read but not yet in Redis; "
    "0 when everything read is applied. Grows through a stall.",
    ["node"],
)
RECONNECTS = Counter("cti_events_reconnects_total", "Event-socket (re)connections", ["node"])
CONNECTED = Gauge("cti_events_connected", "1 while the node's event socket is consumed", ["node"])
RECONCILE_CORRECTIONS = Counter(
    "cti_events_reconcile_corrections_total",
    "State added or removed by reconcile (events that were missed)",
    ["node", "kind", "op"],
)
RESTARTS = Counter("cti_events_freeswitch_restarts_total", "Core-UUID changes seen", ["node"])
LIST_DROPPED = Counter(
    "cti_events_list_dropped_total", "Oldest list entries trimmed by list_max", ["list"]
)
WRITE_CONFLICTS = Counter(
    "cti_events_write_conflicts_total", "Batches re-read after a concurrent write", ["node"]
)
CORRUPT_FRAMES = Counter(
    "cti_events_corrupt_frames_total",
    "Unframed data from python-ESL (reconnected and reconciled)",
    ["node"],
)
FLUSHES = Counter("cti_events_xml_flush_total", "xml_flush_cache commands sent", ["node"])
LEASE_HELD = Gauge(
    "cti_events_lease_held", "1 while this replica holds the node's lease (consumes it)", ["node"]
)
LEASE_ACQUIRED = Counter(
    "cti_events_lease_acquired_total", "Times this replica took a node's lease over", ["node"]
)
NODES_ASSIGNED = Gauge(
    "cti_events_nodes_assigned",
    "FreeSWITCH nodes this replica's share names (from the live replicas in Redis)",
)
NODES_OWNED = Gauge(
    "cti_events_nodes_owned", "FreeSWITCH nodes whose lease this replica holds (consumes)"
)
REPLICAS_LIVE = Gauge("cti_events_replicas_live", "Event-service replicas announced in Redis")
NODE_MOVES = Counter(
    "cti_events_node_moves_total",
    "Nodes this replica took over ('taken') or handed to another replica ('released')",
    ["node", "direction"],
)
HAND_CHANGES = Counter(
    "cti_directory_hand_changes_total",
    "Writes by hand published as directory changes: 'extension' (one per extension) or "
    "'domain' (too many, or unknown before: one change for the whole domain)",
    ["scope"],
)
HAND_READS = Counter(
    "cti_directory_watch_reads_total",
    "Full re-reads (chunked HSCAN passes) of a directory hash by the directory watch",
)
REDIS_ERRORS = Counter(
    "cti_events_redis_errors_total",
    "Redis errors: 'worker' (FreeSWITCH state writes) or 'api' (gRPC reads and Watch)",
    ["part"],
)
WATCH_GAPS = Counter(
    "cti_events_watch_gaps_total",
    "Watch resumes refused: the changes after the client's revision were trimmed",
)
CONTROL_CALLS = Counter(
    "cti_call_control_total",
    "Call-control API calls, by method and outcome (gRPC status code name)",
    ["method", "outcome"],
)
CONTROL_JOBS = Counter(
    "cti_call_control_jobs_total",
    "bgapi jobs sent for call control, by node, command and result (ok/error/lost)",
    ["node", "command", "result"],
)


def declare_node(node: str) -> None:
    """Every configured node's series exist (at 0) from start, not after a first connect:
    an alert on ``cti_events_connected == 0`` must see a node that never connected."""
    CONNECTED.labels(node).set(0)
    LEASE_HELD.labels(node).set(0)
    LEASE_ACQUIRED.labels(node)
    RECONNECTS.labels(node)
