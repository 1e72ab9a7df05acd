"""Prometheus metrics of the event service (served on ``events.metrics_listen``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from cti.config import split_address

EVENTS = Counter(
    "cti_events_received_total", "FreeSWITCH events received, by node and type", ["node", "type"]
)
STATE_CHANGES = Counter(
    "cti_events_state_changes_total", "registrations/calls fields written", ["node"]
)
APPLY_LAG = Histogram(
    "cti_events_apply_lag_seconds",
    "From FreeSWITCH's Event-Date-Timestamp to the change committed in Redis",
    ["node"],
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
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


def serve(listen: str) -> None:
    """Start the /metrics HTTP endpoint (a daemon thread of prometheus_client)."""
    host, port = split_address(listen)
    start_http_server(port, addr=host)
