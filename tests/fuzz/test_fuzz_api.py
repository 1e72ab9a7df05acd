"""Fuzzing the directory's gRPC API (real server on loopback, real Redis): hostile
requests never get INTERNAL/UNKNOWN or an oversized error, and every extension the API
accepts is served by a lookup (the same domain view the xml_curl edge answers with)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2
from hypothesis import given
from hypothesis import strategies as st

from cti import redis_keys
from cti.v1 import directory_pb2 as pb
from directory_service.api.passwords import SECRET_PARAMS
from directory_service.api.validation import EXTENSION_ID
from tests.directory.grpc_fixtures import Api, served, start_api
from tests.directory.service import is_not_found, name_values, parse_user
from tests.fuzz.strategies import CASES, NAMES, TEXT
from tests.support import RedisServer, reset_redis

pytestmark = pytest.mark.timeout(1800)

DOMAIN = "fuzz.example"
PARENT = f"domains/{DOMAIN}"
KEY = redis_keys.extensions(DOMAIN)
FORBIDDEN = {
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAVAILABLE,
}
DEEP = '{"template": "t", "x": ' + "[" * 5000 + "]" * 5000 + "}"


@pytest.fixture(scope="module")
def api(redis_server: RedisServer) -> Iterator[Api]:
    reset_redis(redis_server)
    client = redis.Redis.from_url(redis_server.url)
    client.hset(KEY, mapping={"broken": DEEP, "bad\x01id": "{}", b"\xff\xfe": "{}"})
    client.close()
    server, stub = start_api(redis_server.url)
    try:
        yield stub
    finally:
        stub.channel.close()
        server.stop(None).wait()


def attempt(call: Callable[[], Any]) -> Any:
    """The call's answer, or None if it was refused in an allowed way."""
    try:
        return call()
    except grpc.RpcError as error:
        assert error.code() not in FORBIDDEN, (error.code(), error.details())
        assert len(error.details() or "") < 1500, error.details()
        return None


MAPS = st.dictionaries(NAMES, TEXT, max_size=4)
IDS = st.one_of(st.from_regex(EXTENSION_ID, fullmatch=True), TEXT)


@given(IDS, MAPS, MAPS, MAPS, st.one_of(st.just(""), TEXT))
def test_every_accepted_extension_is_served(
    api: Api,
    extension_id: str,
    params: dict[str, str],
    variables: dict[str, str],
    attributes: dict[str, str],
    password: str,
) -> None:
    CASES["gRPC create"] += 1
    request = pb.CreateExtensionRequest(
        parent=PARENT,
        extension_id=extension_id,
        extension=pb.Extension(
            params=params, variables=variables, attributes=attributes, password=password
        ),
    )
    created = attempt(lambda: api.call("CreateExtension", request))
    if created is None:
        return
    try:
        document = served(api.redis_url, DOMAIN, extension_id)
        assert not is_not_found(document), (params, variables, attributes)
        user = parse_user(document)[2]
        assert user.get("id") == extension_id
        assert name_values(user, "variables", "variable") == variables
        shown = {k: v for k, v in name_values(user, "params", "param").items()}
        assert {k: v for k, v in shown.items() if k not in SECRET_PARAMS} == {
            k: v for k, v in params.items() if k not in SECRET_PARAMS
        }
        if password:
            assert shown.get("password") == password
    finally:
        api.call("DeleteExtension", pb.DeleteExtensionRequest(name=created.name))


NAMES_OF_EXTENSIONS = st.one_of(
    st.sampled_from([f"{PARENT}/extensions/broken", f"{PARENT}/extensions/bad\x01id"]),
    TEXT.map(lambda t: f"{PARENT}/extensions/{t}"),
    TEXT,
)


@given(
    st.integers(0, 4),
    NAMES_OF_EXTENSIONS,
    st.one_of(TEXT, st.binary(max_size=40).map(lambda b: b.hex())),
    st.lists(
        st.one_of(st.sampled_from(["password", "params", "params.x", "template"]), TEXT), max_size=4
    ),
    st.integers(-5, 5000),
)
def test_hostile_calls_never_fail_internally(
    api: Api, which: int, name: str, text: str, paths: list[str], number: int
) -> None:
    CASES["gRPC call"] += 1
    if which == 0:
        attempt(lambda: api.call("GetExtension", pb.GetExtensionRequest(name=name)))
    elif which == 1:
        request = pb.ListExtensionsRequest(
            parent=PARENT, page_token=text, id_prefix=text[:5], page_size=max(number, 0)
        )
        attempt(lambda: api.call("ListExtensions", request))
    elif which == 2:
        update = pb.UpdateExtensionRequest(
            extension=pb.Extension(name=name, params={"x": text}, password=text),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        attempt(lambda: api.call("UpdateExtension", update))
    elif which == 3:
        attempt(
            lambda: api.call("DeleteExtension", pb.DeleteExtensionRequest(name=name, etag=text))
        )
    else:
        token = json.dumps({"q": {"parent": PARENT}, "p": [text] * (number % 4)})
        request = pb.ListExtensionsRequest(parent=f"domains/{text}", page_token=token)
        attempt(lambda: api.call("ListExtensions", request))
