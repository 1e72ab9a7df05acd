"""Extension templates and domain settings over real gRPC against a real redis-server."""

from __future__ import annotations

import json

import grpc
import redis
from google.protobuf import field_mask_pb2

from cti import redis_keys
from cti.v1 import directory_pb2 as pb
from tests.directory.grpc_fixtures import Api, api_fixture, expect_error

__all__ = ["api_fixture"]  # the pytest fixture "api"

Code = grpc.StatusCode


def test_template_round_trip_and_in_use(api: Api) -> None:
    created = api.call(
        "CreateExtensionTemplate",
        pb.CreateExtensionTemplateRequest(
            extension_template_id="agents",
            extension_template=pb.ExtensionTemplate(
                params={"max-registrations-per-extension": "2"},
                variables={"sip-force-contact": "NDLB-connectile-dysfunction-2.0"},
                attributes={"cacheable": "10000"},
            ),
        ),
    )
    assert created.name == "templates/agents"
    raw = redis.Redis.from_url(api.redis_url).hget(redis_keys.TEMPLATES, "agents")
    assert json.loads(raw or b"") == {
        "param": {"max-registrations-per-extension": "2"},
        "variable": {"sip-force-contact": "NDLB-connectile-dysfunction-2.0"},
        "attribute": {"cacheable": "10000"},
    }
    api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(
            parent="domains/a.com", extension_id="1001", extension=pb.Extension(template="agents")
        ),
    )
    got = api.call("GetExtensionTemplate", pb.GetExtensionTemplateRequest(name="templates/agents"))
    assert got.usage_count == 1
    updated = api.call(
        "UpdateExtensionTemplate",
        pb.UpdateExtensionTemplateRequest(
            extension_template=pb.ExtensionTemplate(
                name="templates/agents", attributes={"cacheable": "true"}, etag=got.etag
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["attributes.cacheable"]),
        ),
    )
    assert dict(updated.attributes) == {"cacheable": "true"}
    expect_error(
        lambda: api.call(
            "UpdateExtensionTemplate",
            pb.UpdateExtensionTemplateRequest(
                extension_template=pb.ExtensionTemplate(name="templates/agents", etag=got.etag),
                update_mask=field_mask_pb2.FieldMask(paths=["params"]),
            ),
        ),
        Code.ABORTED,
        "ETAG_MISMATCH",
    )
    expect_error(
        lambda: api.call(
            "DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name="templates/agents")
        ),
        Code.FAILED_PRECONDITION,
        "TEMPLATE_IN_USE",
    )
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name="domains/a.com/extensions/1001"))
    api.call("DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name="templates/agents"))
    expect_error(
        lambda: api.call(
            "GetExtensionTemplate", pb.GetExtensionTemplateRequest(name="templates/agents")
        ),
        Code.NOT_FOUND,
        "TEMPLATE_NOT_FOUND",
    )


def test_template_used_by_hand_written_entry_is_not_deleted(api: Api) -> None:
    api.call(
        "CreateExtensionTemplate", pb.CreateExtensionTemplateRequest(extension_template_id="t")
    )
    redis.Redis.from_url(api.redis_url).hset(
        redis_keys.extensions("b.com"), "7", '{"param":{},"template":"t"}'
    )
    error = expect_error(
        lambda: api.call(
            "DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name="templates/t")
        ),
        Code.FAILED_PRECONDITION,
        "TEMPLATE_IN_USE",
    )
    assert "domains/b.com/extensions/7" in error.details()


def test_template_validation(api: Api) -> None:
    for fields, field in (
        ({"params": {"password": "x"}}, "extension_template.params.password"),
        ({"attributes": {"number-alias": "x"}}, "extension_template.attributes.number-alias"),
        ({"attributes": {"cacheable": "no"}}, "extension_template.attributes.cacheable"),
    ):
        expect_error(
            lambda f=fields: api.call(
                "CreateExtensionTemplate",
                pb.CreateExtensionTemplateRequest(
                    extension_template_id="t", extension_template=pb.ExtensionTemplate(**f)
                ),
            ),
            Code.INVALID_ARGUMENT,
            field=field,
        )
    expect_error(
        lambda: api.call(
            "CreateExtensionTemplate",
            pb.CreateExtensionTemplateRequest(extension_template_id="a b"),
        ),
        Code.INVALID_ARGUMENT,
        field="extension_template_id",
    )
    api.call(
        "CreateExtensionTemplate", pb.CreateExtensionTemplateRequest(extension_template_id="t")
    )
    expect_error(
        lambda: api.call(
            "CreateExtensionTemplate", pb.CreateExtensionTemplateRequest(extension_template_id="t")
        ),
        Code.ALREADY_EXISTS,
        "TEMPLATE_ALREADY_EXISTS",
    )


def test_list_templates_pages(api: Api) -> None:
    for n in range(5):
        api.call(
            "CreateExtensionTemplate",
            pb.CreateExtensionTemplateRequest(extension_template_id=f"t{n}"),
        )
    names: list[str] = []
    token = ""
    while True:
        page = api.call(
            "ListExtensionTemplates",
            pb.ListExtensionTemplatesRequest(page_size=2, page_token=token),
        )
        names += [t.name for t in page.extension_templates]
        token = page.next_page_token
        if not token:
            break
    assert names == [f"templates/t{n}" for n in range(5)]


def test_domain_round_trip(api: Api) -> None:
    created = api.call(
        "CreateDomain",
        pb.CreateDomainRequest(
            domain_id="a.com", domain=pb.Domain(params={"dial-string": "x"}, variables={"v": "1"})
        ),
    )
    assert created.name == "domains/a.com" and created.extension_count == 0
    raw = redis.Redis.from_url(api.redis_url).hget(redis_keys.DOMAINS, "a.com")
    assert json.loads(raw or b"") == {
        "param": {"dial-string": "x"},
        "variable": {"v": "1"},
        "attribute": {},
    }
    api.call("CreateExtension", pb.CreateExtensionRequest(parent="domains/a.com", extension_id="1"))
    api.call("CreateExtension", pb.CreateExtensionRequest(parent="domains/b.org", extension_id="1"))
    updated = api.call(
        "UpdateDomain",
        pb.UpdateDomainRequest(
            domain=pb.Domain(name="domains/a.com", variables={"w": "2"}, etag=created.etag),
            update_mask=field_mask_pb2.FieldMask(paths=["variables"]),
        ),
    )
    assert dict(updated.variables) == {"w": "2"} and updated.extension_count == 1
    listed = api.call("ListDomains", pb.ListDomainsRequest())
    assert [(d.name, d.extension_count) for d in listed.domains] == [
        ("domains/a.com", 1),
        ("domains/b.org", 1),
    ]
    expect_error(
        lambda: api.call("DeleteDomain", pb.DeleteDomainRequest(name="domains/a.com")),
        Code.FAILED_PRECONDITION,
        "DOMAIN_NOT_EMPTY",
    )
    expect_error(
        lambda: api.call("CreateDomain", pb.CreateDomainRequest(domain_id="a.com")),
        Code.ALREADY_EXISTS,
        "DOMAIN_ALREADY_EXISTS",
    )
    expect_error(
        lambda: api.call(
            "CreateDomain",
            pb.CreateDomainRequest(domain_id="c.com", domain=pb.Domain(params={"password": "x"})),
        ),
        Code.INVALID_ARGUMENT,
        field="domain.params.password",
    )
    api.call("DeleteExtension", pb.DeleteExtensionRequest(name="domains/a.com/extensions/1"))
    api.call("DeleteDomain", pb.DeleteDomainRequest(name="domains/a.com"))
    expect_error(
        lambda: api.call("GetDomain", pb.GetDomainRequest(name="domains/a.com")),
        Code.NOT_FOUND,
        "DOMAIN_NOT_FOUND",
    )
    # A domain with extensions but no settings exists, with empty settings.
    got = api.call("GetDomain", pb.GetDomainRequest(name="domains/b.org"))
    assert got.extension_count == 1 and not got.params
