"""Both real services through Redis Sentinel (passwords on servers and sentinels, the server
password given as REDIS_PASSWORD beside the URL), across one ``SENTINEL FAILOVER``: the
directory keeps answering lookups during it, and afterwards both services work against
the new master with the Redis clients they started with."""

from __future__ import annotations

import json
import time
from urllib.parse import urlencode

import redis.exceptions

from cti import redis_keys
from cti.redis_client import connect
from tests.directory.service import Service, name_values, parse_user, until
from tests.eslserver import FakeFreeSwitch, encode_event, fixture_frames, frame_headers
from tests.redis_ha.services import directory_service, event_service
from tests.redis_ha.topology import SERVER_PASSWORD, SentinelSetup, poll

DOMAIN = "sentinel.example"


def _extension(password: str) -> str:
    return json.dumps({"param": {"password": password}, "variable": {}, "attribute": {}})


def _password(service: Service) -> str:
    user = parse_user(service.lookup(DOMAIN, "1000"))[2]
    return name_values(user, "params", "param")["password"]


def _is_replica(setup: SentinelSetup, port: int) -> bool:
    return bool(setup.server(port).info("replication")["role"] == "slave")


def _lookup_status(service: Service) -> int:
    fields = {"section": "directory", "tag_name": "domain", "key_name": "name"}
    fields.update(key_value=DOMAIN, action="sip_auth", key="id", user="1000", domain=DOMAIN)
    return service.post(urlencode(fields))[0]


def test_services_ride_out_a_sentinel_failover(
    sentinel_setup: SentinelSetup, sentinel_url: str
) -> None:
    url = sentinel_setup.url_without_server_password
    fs = FakeFreeSwitch().start()  # answers reconcile queries with empty tables
    db = connect(sentinel_url, decode_responses=True)
    registers = fixture_frames()[:2]  # sofia::register of 1000 and 1001
    try:
        with (
            directory_service(url, SERVER_PASSWORD) as directory,
            event_service(url, fs.address, SERVER_PASSWORD),
        ):
            directory.wait_until_live(timeout=20)
            fs.wait_subscribed()
            db.hset(redis_keys.extensions(DOMAIN), "1000", _extension("before"))
            assert _password(directory) == "before"
            fs.send_frames(registers)
            poll("2 registrations in Redis", lambda: db.hlen("registrations") == 2, 10)

            old_master = sentinel_setup.failover()
            statuses: list[int] = []

            def demoted() -> bool:
                statuses.append(_lookup_status(directory))
                return _is_replica(sentinel_setup, old_master)

            # Until Sentinel demotes the old master (seconds after promoting the replica),
            # clients still connected to it write there, and such writes are lost.
            poll("the old master demoted", demoted, timeout=30)
            assert statuses.count(200) > 0  # lookups kept being answered meanwhile

            # Directory: the cache follows a write made on the new master.
            def written() -> bool:
                try:
                    db.hset(redis_keys.extensions(DOMAIN), "1000", _extension("after"))
                    return int(db.wait(1, 500)) >= 1
                except (redis.exceptions.ConnectionError, redis.exceptions.ResponseError):
                    return False

            poll("a write through the new master", written, timeout=30)
            until(lambda: _password(directory) == "after", timeout=20)

            # Events: a phone registering only now can only come from a write made after
            # the failover, by the service's own (same) Redis client.
            late = {**frame_headers(registers[0]), "call-id": "after-failover"}
            late.update({k: "1002" for k in ("from-user", "to-user", "username")})
            new_master = sentinel_setup.server(sentinel_setup.master_port())

            def registered_on_new_master() -> bool:
                # Re-sent until it sticks: after the failover the service may re-take its
                # lease and reconcile with the (empty) fake FreeSWITCH, which is correct.
                fs.send_frames([encode_event(late)])
                time.sleep(0.2)
                return bool(new_master.hexists("registrations", "1002"))

            poll("a registration written to the new master", registered_on_new_master, 30)
    finally:
        db.close()
        fs.stop()
