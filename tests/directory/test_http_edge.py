"""Who may ask and what they may send: basic auth, allow-list, body limits, routes."""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator

import pytest
import redis

from tests.directory.service import Service, is_not_found, parse_user, running_service
from tests.support import RedisServer, xml_curl_fixture

USER, PASSWORD = "fs", "pa:ss<wörd>"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def guarded(redis_server: RedisServer) -> Iterator[Service]:
    config = {
        "directory": {
            "http": {
                "username": USER,
                "password": PASSWORD,
                "allow": ["127.0.0.0/8"],
                "max_body_bytes": 4096,
            }
        }
    }
    with running_service(redis_server.url, config) as svc:
        yield svc


@pytest.fixture
def seeded(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    client.hset("cti_exten@127.0.0.1", "1000", json.dumps({"param": {"password": "1234"}}))
    client.close()


def test_basic_auth_is_required(guarded: Service, seeded: None) -> None:
    _, body = xml_curl_fixture("03")
    assert guarded.post(body)[0] == 401
    assert guarded.post(body, basic(USER, "wrong"))[0] == 401
    status, document = guarded.post(body, basic(USER, PASSWORD))
    assert status == 200
    assert parse_user(document)[2].get("id") == "1000"
    assert PASSWORD not in guarded.log_path.read_text()


def test_oversized_and_garbled_bodies(guarded: Service) -> None:
    auth = basic(USER, PASSWORD)
    status, _ = guarded.post(b"section=directory&x=" + b"a" * 5000, auth)
    assert status == 413
    for garbage in (b"\xff\x00\xfe", b"", b"section=directory&&&==&user=%zz", b"%" * 100):
        status, document = guarded.post(garbage, auth)
        assert status == 200
        assert is_not_found(document)


def test_routes_and_methods(guarded: Service) -> None:
    auth = basic(USER, PASSWORD)
    assert guarded.request("GET", "/directory", headers=auth)[0] == 405
    assert guarded.post(b"", auth, path="/elsewhere")[0] == 404
    status, body = guarded.request("GET", "/metrics")
    assert status == 200 and b"cti_directory_requests_total" in body


def test_source_outside_the_allow_list_is_refused(redis_server: RedisServer) -> None:
    config = {"directory": {"http": {"allow": ["192.0.2.0/24", "10.0.0.0/8"]}}}
    with running_service(redis_server.url, config) as svc:
        _, body = xml_curl_fixture("03")
        assert svc.post(body)[0] == 403


def test_a_body_shorter_than_its_content_length_is_a_client_error(guarded: Service) -> None:
    """The client promises 100 bytes, sends 10 and half-closes (issue 9, defect 3): a 4xx,
    never a 500 with a traceback."""
    auth = basic(USER, PASSWORD)["Authorization"]
    head = (
        "POST /directory HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100\r\n"
        f"Content-Type: application/x-www-form-urlencoded\r\nAuthorization: {auth}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", guarded.http_port), timeout=10) as sock:
        sock.sendall(head.encode() + b"section=di")
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    if answer:  # the server may also just close: the client is gone
        status = int(answer.split(b" ", 2)[1])
        assert 400 <= status < 500, answer
    assert not [e for e in guarded.logs() if e["level"] in ("ERROR", "CRITICAL")]
    assert "Traceback" not in guarded.log_path.read_text()


@pytest.mark.parametrize("length", ["9" * 5000, "１２", "+5", "-1"])
def test_a_content_length_that_is_no_small_decimal_is_refused(
    guarded: Service, length: str
) -> None:
    auth = basic(USER, PASSWORD)["Authorization"]
    head = (
        f"POST /directory HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
        f"Connection: close\r\nAuthorization: {auth}\r\n\r\nsection=directory"
    )
    with socket.create_connection(("127.0.0.1", guarded.http_port), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    if answer:
        assert int(answer.split(b" ", 2)[1]) < 500, answer
    assert "Traceback" not in guarded.log_path.read_text()
