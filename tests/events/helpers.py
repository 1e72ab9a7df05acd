"""Shared helpers of the event-service tests: captured frames as headers, settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from cti.config import CallTarget, EslNode, EventSettings, PublishTarget, parse_settings
from tests.eslserver import FakeFreeSwitch, fixture_frames, frame_headers
from tests.support import SEED_DIR

SEED_SETTINGS = parse_settings((SEED_DIR / "cti.json").read_text(), "seed cti.json")
SEED_FIELDS = SEED_SETTINGS.events.call.fields
"""The seed's call fields (its duplicate ``Caller-Profile-Created-Time`` folded by config)."""

A_LEG = "0b7b74e2-c831-4fcf-b4c2-07630968a707"
B_LEG = "6c0bbabd-6dbc-475c-8e15-4bd7ecad8f53"


def captured() -> list[dict[str, str]]:
    """The 11 captured events, decoded, in order (001..011)."""
    return [frame_headers(f) for f in fixture_frames()]


def registration_event(user: str, domain: str) -> dict[str, str]:
    """The captured sofia::register, made ``user@domain``'s (with its own call-id)."""
    headers = dict(captured()[0])
    headers.update({"from-user": user, "from-host": domain, "call-id": f"{user}@{domain}"})
    return headers


def inbound_call_event(uuid: str, user: str, domain: str) -> dict[str, str]:
    """The CHANNEL_CREATE of an inbound call from ``user@domain`` (its A-leg) to 5555."""
    return {
        "Event-Name": "CHANNEL_CREATE",
        "Unique-ID": uuid,
        "Call-Direction": "inbound",
        "variable_user_name": user,
        "variable_domain_name": domain,
        "Caller-Destination-Number": "5555",
    }


def settings(
    nodes: tuple[EslNode, ...] = (),
    registration: PublishTarget | None = None,
    call: CallTarget | None = None,
    **changes: Any,
) -> EventSettings:
    base = EventSettings()
    return replace(
        base,
        nodes=nodes or base.nodes,
        registration=registration or PublishTarget("registrations"),
        call=call or CallTarget("calls", fields=SEED_FIELDS),
        **changes,
    )


def until(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll (no timed assertion: the deadline only bounds a hang)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def subscriptions(fs: FakeFreeSwitch) -> int:
    """Event-socket connections that subscribed (reconcile's own connections do not)."""
    return sum(1 for command in fs.commands if command.startswith("event plain"))
