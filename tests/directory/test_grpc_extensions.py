"""Extensions over real gRPC (loopback) against a real redis-server."""

from __future__ import annotations

import json
import threading
from typing import Any

import grpc
import redis
from google.protobuf import field_mask_pb2

from cti import redis_keys
from cti.v1 import directory_pb2 as pb
from directory_service.api.passwords import a1_hash
from tests.directory.grpc_fixtures import Api, api_a1_fixture, api_fixture, expect_error
from tests.support import SEED_DIR

__all__ = ["api_a1_fixture", "api_fixture"]  # pytest fixtures used by name

DOMAIN = "example.com"
PARENT = f"domains/{DOMAIN}"
KEY = redis_keys.extensions(DOMAIN)
Code = grpc.StatusCode


def name(extension_id: str) -> str:
    return f"{PARENT}/extensions/{extension_id}"


def create(api: Api, extension_id: str, **fields: Any) -> Any:
    return api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(
            parent=PARENT, extension_id=extension_id, extension=pb.Extension(**fields)
        ),
    )


def add_template(api: Api, template: str = "agents", **fields: Any) -> Any:
    return api.call(
        "CreateExtensionTemplate",
        pb.CreateExtensionTemplateRequest(
            extension_template_id=template, extension_template=pb.ExtensionTemplate(**fields)
        ),
    )


def update(api: Api, paths: list[str], **fields: Any) -> Any:
    return api.call(
        "UpdateExtension",
        pb.UpdateExtensionRequest(
            extension=pb.Extension(**fields), update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
    )


def stored(api: Api, extension_id: str) -> Any:
    raw = redis.Redis.from_url(api.redis_url).hget(KEY, extension_id)
    return None if raw is None else json.loads(raw)


def snapshot(api: Api) -> dict[Any, Any]:
    client = redis.Redis.from_url(api.redis_url)
    return {key: client.hgetall(key) for key in sorted(client.keys("*"))}


def test_create_get_delete_round_trip(api: Api) -> None:
    add_template(api, variables={"sip-force-contact": "NDLB-connectile-dysfunction-2.0"})
    created = create(
        api,
        "1001",
        password="s3cret-pw",
        params={"auth-acl": "10.0.0.0/8", "max-registrations-per-extension": "2"},
        variables={"effective_caller_id_name": "Alice"},
        attributes={"cacheable": "10000", "number-alias": "alice"},
        template="agents",
    )
    assert created.name == name("1001")
    assert created.password == ""  # given, not generated: never echoed
    assert created.has_password and "password" not in created.params
    # The seed's layout, readable by a GUI:
    assert stored(api, "1001") == {
        "param": {
            "auth-acl": "10.0.0.0/8",
            "max-registrations-per-extension": "2",
            "password": "s3cret-pw",
        },
        "variable": {"effective_caller_id_name": "Alice"},
        "attribute": {"cacheable": "10000", "number-alias": "alice"},
        "template": "agents",
    }
    got = api.call("GetExtension", pb.GetExtensionRequest(name=name("1001")))
    assert got == created
    assert got.template == "templates/agents"
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name=name("1001")))
    assert stored(api, "1001") is None
    client = redis.Redis.from_url(api.redis_url)
    assert client.hgetall(redis_keys.aliases(DOMAIN)) == {}
    assert client.hgetall(redis_keys.template_refs(DOMAIN)) == {}
    expect_error(
        lambda: api.call("GetExtension", pb.GetExtensionRequest(name=name("1001"))),
        Code.NOT_FOUND,
        "EXTENSION_NOT_FOUND",
    )


def test_password_generated_once_when_not_given(api: Api) -> None:
    created = create(api, "1002")
    assert len(created.password) == 16
    assert stored(api, "1002") == {
        "param": {"password": created.password},
        "variable": {},
        "attribute": {},
    }
    got = api.call("GetExtension", pb.GetExtensionRequest(name=name("1002")))
    assert got.password == "" and got.has_password


def test_store_a1_hash_never_stores_the_clear_password(api_a1: Api) -> None:
    create(api_a1, "1003", password="pw-1003")
    assert stored(api_a1, "1003") == {
        "param": {"a1-hash": a1_hash("1003", DOMAIN, "pw-1003")},
        "variable": {},
        "attribute": {},
    }
    update(api_a1, ["password"], name=name("1003"), password="new-pw")
    assert stored(api_a1, "1003")["param"] == {"a1-hash": a1_hash("1003", DOMAIN, "new-pw")}
    got = api_a1.call("GetExtension", pb.GetExtensionRequest(name=name("1003")))
    assert got.has_password and "a1-hash" not in got.params


def test_hand_written_entry_is_read_by_get_and_list(api: Api, redis_server: object) -> None:
    seed = (SEED_DIR / "extension-value.json").read_text()
    redis.Redis.from_url(api.redis_url).hset(KEY, "1000", seed)
    got = api.call("GetExtension", pb.GetExtensionRequest(name=name("1000")))
    assert dict(got.params) == {
        "allow-empty-password": "false",
        "auth-acl": "",
        "sip-forbid-register": "false",
    }
    assert got.has_password and got.attributes["number-alias"] == "myphone"
    listed = api.call("ListExtensions", pb.ListExtensionsRequest(parent=PARENT))
    assert [e.name for e in listed.extensions] == [name("1000")]
    # Updated through the API: the alias gets indexed and the rest is kept.
    update(api, ["variables.x"], name=name("1000"), variables={"x": "1"})
    assert (
        redis.Redis.from_url(api.redis_url).hget(redis_keys.aliases(DOMAIN), "myphone") == b"1000"
    )
    assert stored(api, "1000")["param"]["password"] == "123"
    # An id the API would not create (upper case) is still readable and deletable.
    redis.Redis.from_url(api.redis_url).hset(KEY, "Alice", '{"param":{"vm-password":"1"}}')
    got = api.call("GetExtension", pb.GetExtensionRequest(name=name("Alice")))
    assert dict(got.params) == {"vm-password": "1"} and not got.has_password
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name=name("Alice")))


def test_unreadable_stored_value_is_reported_and_can_be_deleted(api: Api) -> None:
    redis.Redis.from_url(api.redis_url).hset(KEY, "1009", "{not json")
    expect_error(
        lambda: api.call("GetExtension", pb.GetExtensionRequest(name=name("1009"))),
        Code.FAILED_PRECONDITION,
        "STORED_VALUE_INVALID",
    )
    assert api.call("ListExtensions", pb.ListExtensionsRequest(parent=PARENT)).extensions == []
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name=name("1009")))
    assert stored(api, "1009") is None


def test_list_pages_filters_and_all_domains(api: Api) -> None:
    add_template(api, "agents")
    api.call(
        "BatchCreateExtensions",
        pb.BatchCreateExtensionsRequest(
            parent=PARENT,
            range=pb.ExtensionRange(
                first="1000", last="1024", prototype=pb.Extension(template="agents")
            ),
        ),
    )
    api.call(
        "BatchCreateExtensions",
        pb.BatchCreateExtensionsRequest(
            parent=PARENT, range=pb.ExtensionRange(first="2000", last="2009")
        ),
    )
    create(api, "3000")
    api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(parent="domains/other.org", extension_id="1000"),
    )

    def collect(request: pb.ListExtensionsRequest) -> tuple[list[str], int]:
        names: list[str] = []
        pages = 0
        while True:
            response = api.call("ListExtensions", request)
            pages += 1
            assert len(response.extensions) <= request.page_size
            names += [e.name for e in response.extensions]
            if not response.next_page_token:
                return names, pages
            request.page_token = response.next_page_token

    names, pages = collect(pb.ListExtensionsRequest(parent=PARENT, page_size=7))
    expected = [name(f"{n}") for n in [*range(1000, 1025), *range(2000, 2010), 3000]]
    assert sorted(names) == expected and pages >= 6  # each exactly once
    names, _ = collect(pb.ListExtensionsRequest(parent=PARENT, page_size=4, template="agents"))
    assert sorted(names) == [name(f"{n}") for n in range(1000, 1025)]
    names, _ = collect(pb.ListExtensionsRequest(parent=PARENT, page_size=3, id_prefix="200"))
    assert sorted(names) == [name(f"{n}") for n in range(2000, 2010)]
    names, _ = collect(pb.ListExtensionsRequest(parent="domains/-", page_size=10))
    assert sorted(names[:-1]) == expected  # domains in name order
    assert names[-1] == "domains/other.org/extensions/1000"
    names, _ = collect(pb.ListExtensionsRequest(parent="domains/-", page_size=36))
    assert len(names) == 37  # a page ending exactly at a domain's end
    # A token is bound to its query.
    first = api.call("ListExtensions", pb.ListExtensionsRequest(parent=PARENT, page_size=2))
    expect_error(
        lambda: api.call(
            "ListExtensions",
            pb.ListExtensionsRequest(
                parent=PARENT, page_size=2, id_prefix="1", page_token=first.next_page_token
            ),
        ),
        Code.INVALID_ARGUMENT,
        field="page_token",
    )


def test_list_a_large_domain_page_by_page(api: Api) -> None:
    """Beyond Redis's small-hash encoding: HSCAN pages, each id once, prefix escaping."""
    client = redis.Redis.from_url(api.redis_url)
    client.hset(KEY, mapping={str(n): '{"param":{}}' for n in range(3000)})
    client.hset(KEY, "a*b", '{"param":{}}')  # hand-written id with a glob character
    request = pb.ListExtensionsRequest(parent=PARENT, page_size=500)
    names: list[str] = []
    while True:
        response = api.call("ListExtensions", request)
        assert len(response.extensions) <= 500
        names += [e.name for e in response.extensions]
        if not response.next_page_token:
            break
        request.page_token = response.next_page_token
    assert len(names) == len(set(names)) == 3001
    only = api.call("ListExtensions", pb.ListExtensionsRequest(parent=PARENT, id_prefix="a*"))
    assert [e.name for e in only.extensions] == [name("a*b")]


def test_update_with_field_masks(api: Api) -> None:
    add_template(api, "agents")
    create(
        api,
        "1001",
        password="pw",
        params={"vm-password": "1234", "auth-acl": "10.0.0.0/8"},
        variables={"a": "1", "b": "2"},
        attributes={"cacheable": "5000"},
    )
    # One map key set, one removed (absent from the request), the rest untouched.
    got = update(
        api,
        ["variables.a", "variables.b", "template"],
        name=name("1001"),
        variables={"a": "9"},
        template="agents",
    )
    assert dict(got.variables) == {"a": "9"} and got.template == "templates/agents"
    assert dict(got.params) == {"vm-password": "1234", "auth-acl": "10.0.0.0/8"}
    # A whole section replaced; the hidden password survives.
    got = update(api, ["params"], name=name("1001"), params={"dial-string": "x"})
    assert dict(got.params) == {"dial-string": "x"}
    assert stored(api, "1001")["param"] == {"password": "pw", "dial-string": "x"}
    # Empty mask: every populated field.
    got = update(api, [], name=name("1001"), attributes={"cacheable": "true"})
    assert dict(got.attributes) == {"cacheable": "true"} and dict(got.params) == {
        "dial-string": "x"
    }
    # Template removed.
    got = update(api, ["template"], name=name("1001"))
    assert got.template == ""
    assert redis.Redis.from_url(api.redis_url).hgetall(redis_keys.template_refs(DOMAIN)) == {}
    expect_error(
        lambda: update(api, ["name"], name=name("1001")), Code.INVALID_ARGUMENT, field="update_mask"
    )
    expect_error(
        lambda: update(api, ["params"], name=name("9999")), Code.NOT_FOUND, "EXTENSION_NOT_FOUND"
    )


def test_stale_etag_is_aborted_and_changes_nothing(api: Api) -> None:
    first = create(api, "1001", variables={"v": "1"})
    second = update(api, ["variables"], name=name("1001"), variables={"v": "2"}, etag=first.etag)
    assert second.etag != first.etag
    before = snapshot(api)
    expect_error(
        lambda: update(
            api, ["variables"], name=name("1001"), variables={"v": "3"}, etag=first.etag
        ),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )
    expect_error(
        lambda: api.call(
            "DeleteExtension", pb.DeleteExtensionRequest(name=name("1001"), etag=first.etag)
        ),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )
    assert snapshot(api) == before
    # A change made by hand also invalidates the etag.
    redis.Redis.from_url(api.redis_url).hset(KEY, "1001", '{"param":{},"variable":{"v":"hand"}}')
    expect_error(
        lambda: update(
            api, ["variables"], name=name("1001"), variables={"v": "4"}, etag=second.etag
        ),
        Code.ABORTED,
    )
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name=name("1001")))


def test_validation_errors_name_the_field(api: Api) -> None:
    cases = [
        ({"params": {"auth-acl": "192.168.0.100/255"}}, "extension.params.auth-acl"),
        ({"params": {"user-agent-filter": "(unclosed"}}, "extension.params.user-agent-filter"),
        (
            {"params": {"max-registrations-per-extension": "0"}},
            "extension.params.max-registrations-per-extension",
        ),
        ({"attributes": {"cacheable": "forever"}}, "extension.attributes.cacheable"),
        ({"params": {"password": "x"}}, "extension.params.password"),
        ({"template": "bad name!"}, "extension.template"),
    ]
    for fields, field in cases:
        expect_error(lambda f=fields: create(api, "1001", **f), Code.INVALID_ARGUMENT, field=field)
    expect_error(lambda: create(api, "Alice"), Code.INVALID_ARGUMENT, field="extension_id")
    expect_error(
        lambda: api.call(
            "CreateExtension",
            pb.CreateExtensionRequest(parent="domains/bad_domain", extension_id="1"),
        ),
        Code.INVALID_ARGUMENT,
        field="parent",
    )
    expect_error(
        lambda: create(api, "1001", template="missing"),
        Code.FAILED_PRECONDITION,
        "TEMPLATE_NOT_FOUND",
    )
    create(api, "1001")
    expect_error(
        lambda: update(api, ["params.auth-acl"], name=name("1001"), params={"auth-acl": "1.2.3.4"}),
        Code.INVALID_ARGUMENT,
        field="extension.params.auth-acl",
    )
    expect_error(lambda: create(api, "1001"), Code.ALREADY_EXISTS, "EXTENSION_ALREADY_EXISTS")
    assert redis.Redis.from_url(api.redis_url).hkeys(KEY) == [b"1001"]


def test_alias_collisions(api: Api) -> None:
    create(api, "1001", attributes={"number-alias": "Alice"})
    create(api, "1002")
    # Another extension's alias (case-insensitively), or another extension's id.
    expect_error(
        lambda: create(api, "1003", attributes={"number-alias": "ALICE"}),
        Code.ALREADY_EXISTS,
        "ALIAS_CONFLICT",
    )
    expect_error(
        lambda: create(api, "1003", attributes={"number-alias": "1002"}),
        Code.ALREADY_EXISTS,
        "ALIAS_CONFLICT",
    )
    expect_error(
        lambda: update(
            api, ["attributes"], name=name("1002"), attributes={"number-alias": "alice"}
        ),
        Code.ALREADY_EXISTS,
        "ALIAS_CONFLICT",
    )
    # A new id equal to an existing alias.
    expect_error(lambda: create(api, "alice"), Code.ALREADY_EXISTS, "ID_IS_AN_ALIAS")
    assert stored(api, "1003") is None and stored(api, "alice") is None
    # Moving the alias frees the old one.
    update(api, ["attributes.number-alias"], name=name("1001"), attributes={"number-alias": "al"})
    create(api, "1003", attributes={"number-alias": "alice"})
    assert redis.Redis.from_url(api.redis_url).hgetall(redis_keys.aliases(DOMAIN)) == {
        b"al": b"1001",
        b"alice": b"1003",
    }
    # A stale index entry (its extension changed by hand) does not block.
    redis.Redis.from_url(api.redis_url).hset(KEY, "1001", '{"param":{}}')
    create(api, "1004", attributes={"number-alias": "al"})


def test_batch_create_list_and_range(api: Api) -> None:
    response = api.call(
        "BatchCreateExtensions",
        pb.BatchCreateExtensionsRequest(
            parent=PARENT,
            requests=[
                pb.CreateExtensionRequest(
                    extension_id="1001", extension=pb.Extension(password="given")
                ),
                pb.CreateExtensionRequest(
                    extension_id="1002", extension=pb.Extension(attributes={"number-alias": "b"})
                ),
            ],
        ),
    )
    assert [e.name for e in response.extensions] == [name("1001"), name("1002")]
    assert response.extensions[0].password == "" and len(response.extensions[1].password) == 16
    response = api.call(
        "BatchCreateExtensions",
        pb.BatchCreateExtensionsRequest(
            parent=PARENT,
            range=pb.ExtensionRange(
                first="0098", last="0101", prototype=pb.Extension(variables={"v": "1"})
            ),
        ),
    )
    passwords = [e.password for e in response.extensions]
    assert [e.name for e in response.extensions] == [
        name(i) for i in ("0098", "0099", "0100", "0101")
    ]
    assert len(set(passwords)) == 4
    assert stored(api, "0100") == {
        "param": {"password": passwords[2]},
        "variable": {"v": "1"},
        "attribute": {},
    }


def test_batch_is_all_or_nothing(api: Api) -> None:
    create(api, "1005")
    before = snapshot(api)
    expect_error(
        lambda: api.call(
            "BatchCreateExtensions",
            pb.BatchCreateExtensionsRequest(
                parent=PARENT, range=pb.ExtensionRange(first="1000", last="1009")
            ),
        ),
        Code.ALREADY_EXISTS,
        "EXTENSION_ALREADY_EXISTS",
    )
    expect_error(
        lambda: api.call(
            "BatchCreateExtensions",
            pb.BatchCreateExtensionsRequest(
                parent=PARENT,
                requests=[
                    pb.CreateExtensionRequest(
                        extension_id="2001",
                        extension=pb.Extension(attributes={"number-alias": "x"}),
                    ),
                    pb.CreateExtensionRequest(
                        extension_id="2002",
                        extension=pb.Extension(attributes={"number-alias": "X"}),
                    ),
                ],
            ),
        ),
        Code.ALREADY_EXISTS,
        "ALIAS_CONFLICT",
    )
    expect_error(
        lambda: api.call(
            "BatchCreateExtensions",
            pb.BatchCreateExtensionsRequest(
                parent=PARENT,
                requests=[
                    pb.CreateExtensionRequest(extension_id="2001"),
                    pb.CreateExtensionRequest(
                        extension_id="2002", extension=pb.Extension(params={"auth-acl": "nope/1"})
                    ),
                ],
            ),
        ),
        Code.INVALID_ARGUMENT,
        field="requests[1].extension.params.auth-acl",
    )
    expect_error(
        lambda: api.call("BatchCreateExtensions", pb.BatchCreateExtensionsRequest(parent=PARENT)),
        Code.INVALID_ARGUMENT,
        field="requests",
    )
    assert snapshot(api) == before


def test_concurrent_updates_lose_nothing(api: Api) -> None:
    create(api, "1001")
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(10):
                update(
                    api, [f"variables.w{n}_{i}"], name=name("1001"), variables={f"w{n}_{i}": str(i)}
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    variables = stored(api, "1001")["variable"]
    assert variables == {f"w{n}_{i}": str(i) for n in range(6) for i in range(10)}


def test_concurrent_alias_claims_have_one_winner(api: Api) -> None:
    results: list[str] = []

    def claim(extension_id: str) -> None:
        try:
            create(api, extension_id, attributes={"number-alias": "shared"})
            results.append("ok")
        except grpc.RpcError as exc:
            results.append(exc.code().name)

    threads = [threading.Thread(target=claim, args=(str(2000 + n),)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["ALREADY_EXISTS"] * 5 + ["ok"]
    assert len(redis.Redis.from_url(api.redis_url).hkeys(KEY)) == 1


def test_masking_a_secret_param_out_keeps_the_secret(api: Api, api_a1: Api) -> None:
    """A mask naming ``params.password`` / ``params.a1-hash`` without a value must not strip
    the extension's only secret: sofia then accepts any password (allow-empty-password
    defaults to true)."""
    create(api, "1001", password="pw")
    update(api, ["params.password"], name=name("1001"))
    assert stored(api, "1001")["param"].get("password") == "pw"
    create(api_a1, "1002", password="pw")
    update(api_a1, ["params.a1-hash"], name=name("1002"))
    assert stored(api_a1, "1002")["param"].get("a1-hash") == a1_hash("1002", DOMAIN, "pw")
