"""Hostile gRPC requests and broken stored values (issue 9, defects 1, 5, 6, 7): a clear
INVALID_ARGUMENT or FAILED_PRECONDITION, never INTERNAL, never an echo of a huge input, and
what the API accepts the directory serves."""

from __future__ import annotations

import base64
import json
from typing import Any

import grpc
import pytest
import redis
from google.protobuf import field_mask_pb2

from cti import redis_keys
from cti.v1 import directory_pb2 as pb
from tests.directory.grpc_fixtures import Api, api_fixture, expect_error, served
from tests.directory.service import is_not_found, name_values, parse_user
from tests.directory.test_grpc_extensions import create, name

__all__ = ["api_fixture"]

DOMAIN = "example.com"
PARENT = f"domains/{DOMAIN}"
KEY = redis_keys.extensions(DOMAIN)
Code = grpc.StatusCode
DEEP = (
    '{"template": "t", "attribute": {"number-alias": "77"}, "x": ' + "[" * 5000 + "]" * 5000 + "}"
)


def token(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def test_a_deeply_nested_stored_value_is_invalid_yet_deletable(api: Api) -> None:
    create(api, "1000", password="secret-1000")
    client = redis.Redis.from_url(api.redis_url)
    client.hset(KEY, "1001", DEEP)
    client.close()
    get = pb.GetExtensionRequest(name=name("1001"))
    expect_error(lambda: api.call("GetExtension", get), Code.FAILED_PRECONDITION)
    listed = api.call("ListExtensions", pb.ListExtensionsRequest(parent=PARENT))
    assert [e.name for e in listed.extensions] == [name("1000")]  # the others still listed
    change = pb.UpdateExtensionRequest(
        extension=pb.Extension(name=name("1001"), password="new-password"),
        update_mask=field_mask_pb2.FieldMask(paths=["password"]),
    )
    expect_error(lambda: api.call("UpdateExtension", change), Code.FAILED_PRECONDITION)
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name=name("1001")))
    expect_error(lambda: api.call("GetExtension", get), Code.NOT_FOUND)


@pytest.mark.parametrize(
    "page_token",
    [
        "abc",
        token({"q": {"parent": PARENT, "template": "", "id_prefix": ""}, "p": [DOMAIN, "abc", ""]}),
        token({"q": {"parent": PARENT, "template": "", "id_prefix": ""}, "p": [DOMAIN, "1e3", ""]}),
        token(
            {
                "q": {"parent": PARENT, "template": "", "id_prefix": ""},
                "p": [DOMAIN, str(2**70), ""],
            }
        ),
        token({"q": {"parent": PARENT, "template": "", "id_prefix": ""}, "p": [DOMAIN, "-1", ""]}),
        token(
            {"q": {"parent": PARENT, "template": "", "id_prefix": ""}, "p": [DOMAIN, "0", "\ud800"]}
        ),
        base64.urlsafe_b64encode(b"[" * 100_000).decode(),
        "[" * 100_000,
    ],
)
def test_forged_page_tokens_are_invalid_argument(api: Api, page_token: str) -> None:
    create(api, "1000")
    request = pb.ListExtensionsRequest(parent=PARENT, page_token=page_token)
    expect_error(
        lambda: api.call("ListExtensions", request), Code.INVALID_ARGUMENT, field="page_token"
    )


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"params": {"x": "a\x01b"}}, "extension.params.x"),
        ({"variables": {"v": "\x1f"}}, "extension.variables.v"),
        ({"attributes": {"a": "\x08"}}, "extension.attributes.a"),
        ({"attributes": {"1a": "v"}}, "extension.attributes"),
        ({"attributes": {"a+b": "v"}}, "extension.attributes"),
        ({"params": {"x": "\ufffe"}}, "extension.params.x"),
        ({"password": "pass\ufffeword"}, "extension.password"),
        ({"password": "pass\uffffword"}, "extension.password"),
        ({"attributes": {"cidr": "10.0.0.1"}}, "extension.attributes.cidr"),
        ({"variables": {f"v{n}": "x" for n in range(1000)}}, "extension.variables"),
    ],
)
def test_the_api_refuses_what_xml_curl_could_not_serve(
    api: Api, fields: dict[str, Any], field: str
) -> None:
    expect_error(lambda: create(api, "1000", **fields), Code.INVALID_ARGUMENT)
    error = expect_error(lambda: create(api, "1000", **fields), Code.INVALID_ARGUMENT)
    assert field in error.details(), error.details()


def test_what_the_api_accepts_is_served(api: Api) -> None:
    values = {"x": "<&\"'> \t\n\r é 😀 \x7f \u0085", "y": ""}
    create(
        api,
        "1000",
        password="p\u00e4ss <&>",
        params=values,
        variables=values,
        attributes={"cidr": "10.0.0.0/8, ::1/128", "mailbox": "1000", "x-y.z_": "v"},
    )
    user = parse_user(served(api.redis_url, DOMAIN, "1000"))[2]
    assert name_values(user, "variables", "variable") == values
    assert name_values(user, "params", "param")["password"] == "p\u00e4ss <&>"
    assert not is_not_found(served(api.redis_url, DOMAIN, "1000"))


@pytest.mark.parametrize(
    ("method", "request_message", "field"),
    [
        ("GetExtension", pb.GetExtensionRequest(name="x" * 10_000), "name"),
        ("GetExtension", pb.GetExtensionRequest(name=name("y" * 10_000)), "name"),
        ("GetDomain", pb.GetDomainRequest(name="domains/" + "a" * 10_000), "name"),
        (
            "CreateExtension",
            pb.CreateExtensionRequest(parent=PARENT, extension_id="1" * 10_000),
            "extension_id",
        ),
        (
            "CreateExtension",
            pb.CreateExtensionRequest(
                parent=PARENT,
                extension_id="1000",
                extension=pb.Extension(params={"k" * 10_000: "v"}),
            ),
            "extension.params",
        ),
        (
            "UpdateExtension",
            pb.UpdateExtensionRequest(
                extension=pb.Extension(name=name("1000")),
                update_mask=field_mask_pb2.FieldMask(paths=["p" * 10_000]),
            ),
            "update_mask",
        ),
        (
            "UpdateExtension",
            pb.UpdateExtensionRequest(
                extension=pb.Extension(name=name("1000")),
                update_mask=field_mask_pb2.FieldMask(paths=["params.x"] * 1000),
            ),
            "update_mask",
        ),
        (
            "ListExtensions",
            pb.ListExtensionsRequest(parent=PARENT, id_prefix="1" * 10_000),
            "id_prefix",
        ),
        (
            "CreateExtensionTemplate",
            pb.CreateExtensionTemplateRequest(extension_template_id="t" * 10_000),
            "extension_template_id",
        ),
    ],
)
def test_huge_input_is_refused_with_a_short_error(
    api: Api, method: str, request_message: Any, field: str
) -> None:
    create(api, "1000")
    error = expect_error(lambda: api.call(method, request_message), Code.INVALID_ARGUMENT)
    assert len(error.details()) < 400, error.details()
    assert error.details().startswith(field), error.details()
