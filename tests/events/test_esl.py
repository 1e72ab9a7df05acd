"""The python-ESL wrapper against the fake event socket: protocol, headers, failures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cti.config import EslNode
from event_service.ingest.esl import (
    EslAddressRefused,
    EslConnection,
    EslCorruptFrame,
    EslDisconnected,
    EslPasswordRefused,
    EslUnavailable,
)
from event_service.ingest.events import SUBSCRIPTION
from tests.eslserver import FakeFreeSwitch, fixture_frames
from tests.events.helpers import captured


@pytest.fixture
def conn(fs: FakeFreeSwitch) -> Iterator[EslConnection]:
    connection = EslConnection(EslNode("127.0.0.1", fs.port))
    connection.open()
    connection.subscribe(SUBSCRIPTION)
    yield connection
    connection.close()


def test_handshake_is_auth_then_one_subscription(fs: FakeFreeSwitch, conn: EslConnection) -> None:
    assert fs.commands == ["auth ClueCon", f"event plain {SUBSCRIPTION}"]


def test_received_headers_equal_the_captured_decoded_frame(
    fs: FakeFreeSwitch, conn: EslConnection
) -> None:
    fs.send_frames(fixture_frames()[2:3], restamp=False)  # byte-exact captured frame
    headers = conn.receive(5000)
    assert headers is not None
    expected = captured()[2]
    assert headers.get("Channel-Presence-ID") == "1000@127.0.0.1"  # decoded
    assert "variable_uuid" in headers and "nope" not in headers
    assert headers.get("nope", "default") == "default"
    assert dict(headers) == expected
    assert headers["Channel-Name"] == "sofia/internal/1000@127.0.0.1"


def test_multibyte_values_are_framed_in_bytes(fs: FakeFreeSwitch, conn: EslConnection) -> None:
    fs.send_event(
        {
            "Event-Name": "CUSTOM",
            "Event-Subclass": "sofia::register",
            "effective_caller_id_name": "张三 Zhāng",
        }
    )
    fs.send_event({"Event-Name": "HEARTBEAT"})
    first, second = conn.receive(5000), conn.receive(5000)
    assert first is not None and first.get("effective_caller_id_name") == "张三 Zhāng"
    assert second is not None and second.get("Event-Name") == "HEARTBEAT"


def test_api_reply_and_events_around_it(fs: FakeFreeSwitch, conn: EslConnection) -> None:
    fs.send_event({"Event-Name": "HEARTBEAT"})
    assert conn.api("show", "channels as json").strip() == '{"row_count": 0}'
    headers = conn.receive(5000)  # the event that arrived during the api call is kept
    assert headers is not None and headers.get("Event-Name") == "HEARTBEAT"


def test_drop_is_a_disconnect(fs: FakeFreeSwitch, conn: EslConnection) -> None:
    fs.drop()
    with pytest.raises(EslDisconnected):
        for _ in range(50):
            conn.receive(100)


def test_wrong_password_and_nobody_listening_are_unavailable(fs: FakeFreeSwitch) -> None:
    with pytest.raises(EslUnavailable):
        EslConnection(EslNode("127.0.0.1", fs.port, "wrong")).open()
    dead = FakeFreeSwitch()
    dead.stop()
    with pytest.raises(EslUnavailable):
        EslConnection(EslNode("127.0.0.1", dead.port)).open()


def test_a_refused_password_is_named_as_such(fs: FakeFreeSwitch) -> None:
    with pytest.raises(EslPasswordRefused) as refused:
        EslConnection(EslNode("127.0.0.1", fs.port, "wrong")).open()
    assert str(refused.value) == f"FreeSWITCH at 127.0.0.1:{fs.port} refused the ESL password"
    assert fs.commands.count("auth wrong") == 2  # python-ESL's attempt, then the diagnosis


def test_an_acl_refusal_is_named_as_such() -> None:
    server = FakeFreeSwitch(acl_denied=True).start()
    try:
        with pytest.raises(EslAddressRefused) as refused:
            EslConnection(EslNode("127.0.0.1", server.port)).open()
    finally:
        server.stop()
    assert "refused this client's address (apply-inbound-acl)" in str(refused.value)
    assert server.commands == []  # the password was never sent


def test_nobody_listening_is_not_called_a_refusal() -> None:
    dead = FakeFreeSwitch()
    dead.stop()
    with pytest.raises(EslUnavailable) as failed:
        EslConnection(EslNode("127.0.0.1", dead.port)).open()
    assert type(failed.value) is EslUnavailable
    assert str(failed.value) == f"cannot reach FreeSWITCH at 127.0.0.1:{dead.port}"


@pytest.mark.parametrize(
    "garbage",
    [
        b"Content-Type: text/unknown\n\n",  # no event at all: libesl's SOCKET_DATA
        b"Content-Length: 10\nContent-Type: text/event-plain\n\nfoo: bar\n\n",  # no name
    ],
)
def test_unframed_data_is_a_corrupt_frame(
    fs: FakeFreeSwitch, conn: EslConnection, garbage: bytes
) -> None:
    fs.send_raw(garbage)
    with pytest.raises(EslCorruptFrame):
        conn.receive(5000)


def test_a_stopped_fake_freeswitch_accepts_no_more_connections() -> None:
    """``stop()`` must play "FreeSWITCH is gone": a test relying on it must not be served
    by a listener still blocked in accept()."""
    server = FakeFreeSwitch().start()
    first = EslConnection(EslNode("127.0.0.1", server.port))
    first.open()  # its accept loop is running
    server.stop()
    first.close()
    with pytest.raises(EslUnavailable):
        EslConnection(EslNode("127.0.0.1", server.port)).open()
