"""Token scopes on the directory API: a domain-limited token sees and changes only its
domains (PERMISSION_DENIED elsewhere, lists filtered, shared templates read-only); a
read-only token may Get/List but not write."""

from __future__ import annotations

import grpc

from cti.api_errors import error_info
from cti.v1 import directory_pb2 as pb
from tests.directory.grpc_fixtures import READER_TOKEN, TENANT_TOKEN, Api, api_fixture

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
