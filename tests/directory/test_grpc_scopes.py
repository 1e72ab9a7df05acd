"""Token scopes on the directory API: a domain-limited token sees and changes only its
domains (PERMISSION_DENIED elsewhere, lists filtered, shared templates read-only); a
read-only token may Get/List but not write."""

from __future__ import annotations

import grpc
from google.protobuf import field_mask_pb2

from cti.api_errors import error_info
from cti.v1 import directory_pb2 as pb
from tests.directory.grpc_fixtures import READER_TOKEN, TENANT_TOKEN, Api, api_fixture, start_api

__all__ = ["api_fixture"]


def _denied(api: Api, method: str, request: object, token: str) -> str:
    try:
        api.call(method, request, token=token)
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        return error_info(error)[0]
    raise AssertionError(f"{method} was allowed")


def _create(api: Api, domain: str, extension: str) -> None:
    api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(
            parent=f"domains/{domain}",
            extension_id=extension,
            extension=pb.Extension(password="pw-123456-long"),
        ),
    )


def test_a_tenant_token_works_only_in_its_domain(api: Api) -> None:
    _create(api, "a.example", "1000")
    _create(api, "b.example", "1000")
    listed = api.call(
        "ListExtensions", pb.ListExtensionsRequest(parent="domains/-"), token=TENANT_TOKEN
    )
    assert [e.name for e in listed.extensions] == ["domains/b.example/extensions/1000"]
    domains = api.call("ListDomains", pb.ListDomainsRequest(), token=TENANT_TOKEN)
    assert [d.name for d in domains.domains] == ["domains/b.example"]
    other = "domains/a.example/extensions/1000"
    assert _denied(api, "GetExtension", pb.GetExtensionRequest(name=other), TENANT_TOKEN) == (
        "DOMAIN_NOT_ALLOWED"
    )
    assert _denied(api, "DeleteExtension", pb.DeleteExtensionRequest(name=other), TENANT_TOKEN)
    assert _denied(
        api,
        "CreateExtension",
        pb.CreateExtensionRequest(parent="domains/a.example", extension_id="1001"),
        TENANT_TOKEN,
    )
    assert _denied(
        api,
        "ListExtensions",
        pb.ListExtensionsRequest(parent="domains/a.example"),
        TENANT_TOKEN,
    )
    assert _denied(
        api,
        "CreateExtensionTemplate",
        pb.CreateExtensionTemplateRequest(extension_template_id="t1"),
        TENANT_TOKEN,
    )
    own = api.call(
        "GetExtension",
        pb.GetExtensionRequest(name="domains/b.example/extensions/1000"),
        token=TENANT_TOKEN,
    )
    assert own.has_password
    api.call(
        "DeleteExtension",
        pb.DeleteExtensionRequest(name="domains/b.example/extensions/1000"),
        token=TENANT_TOKEN,
    )
    assert api.call("GetExtension", pb.GetExtensionRequest(name=other)).name == other


def test_a_read_only_token_reads_but_cannot_write(api: Api) -> None:
    _create(api, "a.example", "1000")
    name = "domains/a.example/extensions/1000"
    assert api.call("GetExtension", pb.GetExtensionRequest(name=name), token=READER_TOKEN).name
    assert _denied(api, "DeleteExtension", pb.DeleteExtensionRequest(name=name), READER_TOKEN) == (
        "READ_ONLY_TOKEN"
    )
    assert api.call("GetExtension", pb.GetExtensionRequest(name=name)).name == name


# ---------------------------------------------------------------------------------------
# Tenant writes: what a domain-limited token may write into its own entries


TENANT_EXTENSION = "domains/b.example/extensions/1000"


def _refused(
    api: Api, method: str, request: object, code: grpc.StatusCode, reason: str, field: str
) -> None:
    """``method`` with the tenant token fails with ``code``, ``reason`` and a violation
    naming ``field``, echoing no more than an excerpt of what was sent."""
    try:
        api.call(method, request, token=TENANT_TOKEN)
    except grpc.RpcError as error:
        assert error.code() == code, (error.code(), error.details())
        got_reason, metadata, violations = error_info(error)
        assert got_reason == reason, (got_reason, error.details())
        assert field in [f for f, _ in violations], violations
        assert len(error.details()) < 400
        if code == grpc.StatusCode.PERMISSION_DENIED:
            assert metadata["field"] == field
        return
    raise AssertionError(f"{method} was allowed")


def _tenant_create(variables: dict[str, str] | None = None, **params: str) -> object:
    return pb.CreateExtensionRequest(
        parent="domains/b.example",
        extension_id="1000",
        extension=pb.Extension(password="pw-123456-long", params=params, variables=variables),
    )


def _absent(api: Api, name: str) -> bool:
    try:
        api.call("GetExtension", pb.GetExtensionRequest(name=name))
    except grpc.RpcError as error:
        return bool(error.code() == grpc.StatusCode.NOT_FOUND)
    return False


DENIED = grpc.StatusCode.PERMISSION_DENIED
BAD_VALUE = grpc.StatusCode.INVALID_ARGUMENT


def test_a_tenant_cannot_create_an_extension_with_names_freeswitch_acts_on(api: Api) -> None:
    for variables, params, field in (
        ({"user_context": "a-tenant"}, {}, "extension.variables.user_context"),
        ({"api_on_answer": "system id"}, {}, "extension.variables.api_on_answer"),
        ({"execute_on_answer": "park"}, {}, "extension.variables.execute_on_answer"),
        ({"sip_route_uri": "sip:x@evil"}, {}, "extension.variables.sip_route_uri"),
        ({"toll_allow": "international"}, {}, "extension.variables.toll_allow"),
        ({}, {"dial-string": "${system(rm -rf /)}"}, "extension.params.dial-string"),
    ):
        request = _tenant_create(variables, **params)
        _refused(api, "CreateExtension", request, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
        assert _absent(api, TENANT_EXTENSION)
    # An attribute not listed (cidr would let an address in without a password).
    request = pb.CreateExtensionRequest(
        parent="domains/b.example",
        extension_id="1000",
        extension=pb.Extension(attributes={"cidr": "0.0.0.0/0"}),
    )
    field = "extension.attributes.cidr"
    _refused(api, "CreateExtension", request, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
    assert _absent(api, TENANT_EXTENSION)


def test_a_tenant_cannot_write_values_freeswitch_would_expand(api: Api) -> None:
    for value in ("${system(id)}", "$${default_password}", "{api_on_answer=x}1", "[a=b]x", "<a>"):
        request = _tenant_create({"effective_caller_id_name": value})
        field = "extension.variables.effective_caller_id_name"
        _refused(api, "CreateExtension", request, BAD_VALUE, "TENANT_VALUE_NOT_ALLOWED", field)
        assert _absent(api, TENANT_EXTENSION)
    request = pb.CreateExtensionRequest(
        parent="domains/b.example",
        extension_id="1000",
        extension=pb.Extension(password="pw-${system(id)}"),
    )
    field = "extension.password"
    _refused(api, "CreateExtension", request, BAD_VALUE, "TENANT_VALUE_NOT_ALLOWED", field)
    assert _absent(api, TENANT_EXTENSION)


def test_a_tenant_writes_the_allowed_names_and_a_full_access_token_anything(api: Api) -> None:
    variables = {
        "effective_caller_id_name": "Alice Smith",
        "outbound_caller_id_number": "+15550100",
    }
    created = api.call(
        "CreateExtension",
        _tenant_create(variables, **{"vm-password": "4321", "vm-enabled": "true"}),
        token=TENANT_TOKEN,
    )
    assert dict(created.variables) == variables
    assert created.params["vm-password"] == "4321"
    stored = api.call("GetExtension", pb.GetExtensionRequest(name=TENANT_EXTENSION))
    assert dict(stored.variables) == variables
    operator = api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(
            parent="domains/b.example",
            extension_id="1001",
            extension=pb.Extension(
                params={"dial-string": "{presence_id=${dialed_user}}${sofia_contact(1001)}"},
                variables={"user_context": "b-tenant", "toll_allow": "local"},
            ),
        ),
    )
    assert operator.variables["user_context"] == "b-tenant"


def _operator_extension(api: Api) -> pb.Extension:
    """1000 in the tenant's domain with an operator-set context."""
    created: pb.Extension = api.call(
        "CreateExtension",
        pb.CreateExtensionRequest(
            parent="domains/b.example",
            extension_id="1000",
            extension=pb.Extension(
                password="pw-123456-long",
                variables={"user_context": "b-tenant", "effective_caller_id_name": "Old"},
            ),
        ),
    )
    return created


def _update(variables: dict[str, str], paths: list[str]) -> object:
    return pb.UpdateExtensionRequest(
        extension=pb.Extension(name=TENANT_EXTENSION, variables=variables),
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


def test_a_tenant_update_may_not_touch_forbidden_names_even_by_mask(api: Api) -> None:
    before = _operator_extension(api)
    field = "extension.variables.user_context"
    for variables, paths in (
        ({"user_context": "a-tenant"}, ["variables.user_context"]),  # change it
        ({}, ["variables.user_context"]),  # remove it
        ({"effective_caller_id_name": "New"}, ["variables"]),  # drop it by replacing all
        ({"user_context": "a-tenant"}, []),  # empty mask: every populated field
    ):
        _refused(
            api,
            "UpdateExtension",
            _update(variables, paths),
            DENIED,
            "TENANT_WRITE_NOT_ALLOWED",
            field,
        )
    value_field = "extension.variables.effective_caller_id_name"
    request = _update({"effective_caller_id_name": "${x}"}, ["variables.effective_caller_id_name"])
    _refused(api, "UpdateExtension", request, BAD_VALUE, "TENANT_VALUE_NOT_ALLOWED", value_field)
    request = pb.UpdateExtensionRequest(
        extension=pb.Extension(name=TENANT_EXTENSION, params={"dial-string": "x"}),
        update_mask=field_mask_pb2.FieldMask(paths=["params.dial-string"]),
    )
    field = "extension.params.dial-string"
    _refused(api, "UpdateExtension", request, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
    after = api.call("GetExtension", pb.GetExtensionRequest(name=TENANT_EXTENSION))
    assert after.etag == before.etag and dict(after.variables) == dict(before.variables)


def test_a_tenant_update_of_allowed_names_keeps_what_the_operator_set(api: Api) -> None:
    _operator_extension(api)
    paths = ["variables.effective_caller_id_name"]
    api.call(
        "UpdateExtension", _update({"effective_caller_id_name": "New"}, paths), token=TENANT_TOKEN
    )
    # Resending the operator's keys unchanged is no write of them.
    variables = {"user_context": "b-tenant", "effective_caller_id_name": "Newer"}
    api.call("UpdateExtension", _update(variables, ["variables"]), token=TENANT_TOKEN)
    api.call(
        "UpdateExtension",
        pb.UpdateExtensionRequest(
            extension=pb.Extension(name=TENANT_EXTENSION, password="another-pw-123")
        ),
        token=TENANT_TOKEN,
    )
    after = api.call("GetExtension", pb.GetExtensionRequest(name=TENANT_EXTENSION))
    assert dict(after.variables) == variables
    # A full-access token may still change anything.
    api.call("UpdateExtension", _update({"user_context": "other"}, ["variables.user_context"]))
    after = api.call("GetExtension", pb.GetExtensionRequest(name=TENANT_EXTENSION))
    assert after.variables["user_context"] == "other"


def test_a_tenant_batch_is_refused_whole(api: Api) -> None:
    request = pb.BatchCreateExtensionsRequest(
        parent="domains/b.example",
        requests=[
            pb.CreateExtensionRequest(extension_id="1000"),
            pb.CreateExtensionRequest(
                extension_id="1001",
                extension=pb.Extension(variables={"execute_on_answer": "park"}),
            ),
        ],
    )
    field = "requests[1].extension.variables.execute_on_answer"
    _refused(api, "BatchCreateExtensions", request, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
    assert _absent(api, TENANT_EXTENSION)
    ranged = pb.BatchCreateExtensionsRequest(
        parent="domains/b.example",
        range=pb.ExtensionRange(
            first="2000",
            last="2009",
            prototype=pb.Extension(variables={"callgroup": "{x=y}sales"}),
        ),
    )
    field = "range.prototype.variables.callgroup"
    _refused(api, "BatchCreateExtensions", ranged, BAD_VALUE, "TENANT_VALUE_NOT_ALLOWED", field)
    assert _absent(api, "domains/b.example/extensions/2000")
    ranged.range.prototype.variables["callgroup"] = "sales"
    created = api.call("BatchCreateExtensions", ranged, token=TENANT_TOKEN)
    assert len(created.extensions) == 10


def _template(api: Api, template: str) -> None:
    api.call(
        "CreateExtensionTemplate",
        pb.CreateExtensionTemplateRequest(
            extension_template_id=template,
            extension_template=pb.ExtensionTemplate(variables={"user_context": "shared"}),
        ),
    )


def test_a_tenant_attaches_no_template_unless_listed(api: Api) -> None:
    _template(api, "agents")
    request = pb.CreateExtensionRequest(
        parent="domains/b.example",
        extension_id="1000",
        extension=pb.Extension(template="templates/agents"),
    )
    field = "extension.template"
    _refused(api, "CreateExtension", request, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
    assert _absent(api, TENANT_EXTENSION)
    # Templates are shared: no write of one by a tenant at all.
    template = pb.ExtensionTemplate(name="templates/agents", variables={"user_context": "x"})
    for method, call in (
        ("UpdateExtensionTemplate", pb.UpdateExtensionTemplateRequest(extension_template=template)),
        ("DeleteExtensionTemplate", pb.DeleteExtensionTemplateRequest(name="templates/agents")),
    ):
        assert _denied(api, method, call, TENANT_TOKEN) == "DOMAIN_NOT_ALLOWED"
    stored = api.call(
        "GetExtensionTemplate", pb.GetExtensionTemplateRequest(name="templates/agents")
    )
    assert dict(stored.variables) == {"user_context": "shared"}


def test_a_tenant_attaches_and_detaches_the_listed_templates(redis_url: str) -> None:
    server, api = start_api(redis_url, tenant_writes={"templates": ["agents"]})
    try:
        _template(api, "agents")
        _template(api, "operators")
        request = pb.CreateExtensionRequest(
            parent="domains/b.example",
            extension_id="1000",
            extension=pb.Extension(template="templates/agents"),
        )
        assert api.call("CreateExtension", request, token=TENANT_TOKEN).template
        to_operators = pb.UpdateExtensionRequest(
            extension=pb.Extension(name=TENANT_EXTENSION, template="templates/operators"),
            update_mask=field_mask_pb2.FieldMask(paths=["template"]),
        )
        field = "extension.template"
        _refused(api, "UpdateExtension", to_operators, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
        detach = pb.UpdateExtensionRequest(
            extension=pb.Extension(name=TENANT_EXTENSION),
            update_mask=field_mask_pb2.FieldMask(paths=["template"]),
        )
        assert not api.call("UpdateExtension", detach, token=TENANT_TOKEN).template
        # One the operator attached, not listed: the tenant may not detach it either.
        api.call("UpdateExtension", to_operators)
        _refused(api, "UpdateExtension", detach, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
        stored = api.call("GetExtension", pb.GetExtensionRequest(name=TENANT_EXTENSION))
        assert stored.template == "templates/operators"
    finally:
        api.channel.close()
        server.stop(None).wait()


def test_a_tenant_domain_settings_write_follows_the_same_policy(api: Api) -> None:
    _refused(
        api,
        "CreateDomain",
        pb.CreateDomainRequest(
            domain_id="b.example", domain=pb.Domain(variables={"user_context": "default"})
        ),
        DENIED,
        "TENANT_WRITE_NOT_ALLOWED",
        "domain.variables.user_context",
    )
    assert not api.call("ListDomains", pb.ListDomainsRequest()).domains
    api.call(
        "CreateDomain",
        pb.CreateDomainRequest(
            domain_id="b.example", domain=pb.Domain(variables={"user_context": "b-tenant"})
        ),
    )
    for variables, paths, field in (
        ({}, ["variables.user_context"], "domain.variables.user_context"),
        ({"callgroup": "sales"}, ["variables"], "domain.variables.user_context"),
        ({}, [], "domain.variables.user_context"),
    ):
        request = pb.UpdateDomainRequest(
            domain=pb.Domain(name="domains/b.example", variables=variables),
            update_mask=field_mask_pb2.FieldMask(paths=paths),
        )
        if not paths:
            request.domain.params["dial-string"] = "${system(id)}"
            field = "domain.params.dial-string"
        _refused(api, "UpdateDomain", request, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
    delete = pb.DeleteDomainRequest(name="domains/b.example")
    field = "domain.variables.user_context"
    _refused(api, "DeleteDomain", delete, DENIED, "TENANT_WRITE_NOT_ALLOWED", field)
    stored = api.call("GetDomain", pb.GetDomainRequest(name="domains/b.example"))
    assert dict(stored.variables) == {"user_context": "b-tenant"} and not stored.params
    allowed = pb.UpdateDomainRequest(
        domain=pb.Domain(name="domains/b.example", variables={"callgroup": "sales"}),
        update_mask=field_mask_pb2.FieldMask(paths=["variables.callgroup"]),
    )
    assert api.call("UpdateDomain", allowed, token=TENANT_TOKEN).variables["callgroup"] == "sales"
    # The full-access token may delete the settings whatever they hold.
    api.call("DeleteDomain", delete)
    assert not api.call("ListDomains", pb.ListDomainsRequest()).domains
