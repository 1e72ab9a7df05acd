"""``ctictl ext bulk-delete`` against the real directory service: selections, the --yes
confirmation, and a report of what was deleted and what was not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from cti import redis_keys
from cti.v1 import directory_pb2 as pb
from ctictl.bulk import IdRange, Selection, delete_extensions
from ctictl.client import ApiClient, Target
from tests.ctictl.support import ctictl, json_error, ok_json
from tests.directory.grpc_fixtures import TOKEN, Api, api_fixture, start_api

__all__ = ["api_fixture"]


def stored_ids(api: Api, domain: str) -> set[str]:
    return stored_at(api.redis_url, domain)


def stored_at(redis_url: str, domain: str) -> set[str]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    return {str(key) for key in client.hkeys(redis_keys.extensions(domain))}


def names(domain: str, ids: range) -> list[str]:
    return [f"domains/{domain}/extensions/{n}" for n in ids]


@pytest.fixture(name="populated")
def populated_fixture(api: Api) -> Api:
    ok_json(api, "templates", "add", "agents")
    ok_json(api, "ext", "batch", "example.com", "1000-1049")
    ok_json(api, "ext", "batch", "other.org", "1000-1009", "--template", "agents")
    ok_json(api, "ext", "add", "10150@example.com")  # starts like the range, is not in it
    ok_json(api, "ext", "add", "desk@example.com", "--template", "agents")
    return api


def test_range_needs_yes_and_reports_what_was_deleted(populated: Api) -> None:
    api = populated
    refused = ctictl(api, "ext", "bulk-delete", "--domain", "example.com", "--range", "1010-1019")
    assert refused.returncode == 2 and refused.stdout == ""
    assert "would delete 10 extension(s); add --yes" in refused.stderr
    assert len(stored_ids(api, "example.com")) == 52
    plan = ok_json(
        api, "ext", "bulk-delete", "--domain", "example.com", "--range", "1010-1019", "--dry-run"
    )
    assert plan == {"would_delete": names("example.com", range(1010, 1020))}
    report = ok_json(
        api, "ext", "bulk-delete", "--domain", "example.com", "--range", "1010-1019", "--yes"
    )
    assert report == {
        "deleted": names("example.com", range(1010, 1020)),
        "already_gone": [],
        "failed": [],
        "not_attempted": [],
    }
    left = stored_ids(api, "example.com")
    assert len(left) == 42 and "10150" in left and not left & {str(n) for n in range(1010, 1020)}


def test_template_across_domains_and_human_report(populated: Api) -> None:
    api = populated
    result = ctictl(api, "ext", "bulk-delete", "--template", "agents", "--yes")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "11 deleted, 0 failed"
    assert stored_ids(api, "other.org") == set()
    assert "desk" not in stored_ids(api, "example.com")
    assert len(stored_ids(api, "example.com")) == 51


def test_whole_domain(populated: Api) -> None:
    api = populated
    error = json_error(ctictl(api, "--json", "ext", "bulk-delete", "--all", "--yes"))
    assert error["code"] == "USAGE" and "--domain" in error["message"]
    error = json_error(ctictl(api, "--json", "ext", "bulk-delete", "--domain", "example.com"))
    assert error["code"] == "USAGE" and "--range, --template, --prefix or --all" in error["message"]
    report = ok_json(api, "ext", "bulk-delete", "--domain", "example.com", "--all", "--yes")
    assert len(report["deleted"]) == 52
    assert stored_ids(api, "example.com") == set() and len(stored_ids(api, "other.org")) == 10


def test_bad_range_is_a_usage_error(api: Api) -> None:
    for text in ("1000", "99-1000", "20-10", "a-b"):
        result = ctictl(api, "ext", "bulk-delete", "--range", text, "--yes")
        assert result.returncode == 2 and repr(text) in result.stderr


def test_selection_is_pure() -> None:
    selection = Selection(IdRange.parse("1200-1299"), prefix="12")
    assert selection.server_prefix() == "12"
    assert Selection(IdRange.parse("1200-1299"), prefix="1").server_prefix() == "12"
    assert Selection(IdRange.parse("1200-1299"), prefix="9").server_prefix() == "9"
    member = pb.Extension(name="domains/d/extensions/1234")
    assert selection.matches(member)
    assert not selection.matches(pb.Extension(name="domains/d/extensions/12345"))
    assert not Selection(prefix="9").matches(member)


@pytest.fixture(name="client")
def client_fixture(api: Api) -> Iterator[ApiClient]:
    client = ApiClient(Target(address=api.address, token=TOKEN, timeout=10))
    try:
        yield client
    finally:
        client.close()


def listed(client: ApiClient, domain: str) -> list[pb.Extension]:
    request = pb.ListExtensionsRequest(parent=f"domains/{domain}", page_size=1000)
    return sorted(client.call("ListExtensions", request).extensions, key=lambda e: e.name)


def test_changed_or_gone_since_listing(api: Api, client: ApiClient) -> None:
    ok_json(api, "ext", "batch", "example.com", "100-104")
    extensions = listed(client, "example.com")
    ok_json(api, "ext", "update", "101@example.com", "--var", "x=1")  # etag changes
    ok_json(api, "ext", "delete", "102@example.com")
    result = delete_extensions(client, extensions)
    assert result.deleted == names("example.com", range(100, 101)) + names(
        "example.com", range(103, 105)
    )
    assert result.gone == ["domains/example.com/extensions/102"]
    assert [(name, why.split(":")[0]) for name, why in result.failed] == [
        ("domains/example.com/extensions/101", "ABORTED ETAG_MISMATCH")
    ]
    assert stored_ids(api, "example.com") == {"101"}


def test_server_lost_midway_reports_what_was_not_attempted(redis_url: str) -> None:
    server, api = start_api(redis_url)
    client = ApiClient(Target(address=api.address, token=TOKEN, timeout=5))
    try:
        ok_json(api, "ext", "batch", "example.com", "100-159")
        extensions = listed(client, "example.com")
        result = delete_extensions(client, extensions, advance=lambda n: server.stop(None))
    finally:
        client.close()
        api.channel.close()
        server.stop(None).wait()
    every = {e.name for e in extensions}
    reported = [*result.deleted, *result.gone, *[n for n, _ in result.failed]]
    assert sorted([*reported, *result.not_attempted]) == sorted(every)
    assert result.not_attempted and result.failed
    assert all(why.startswith(("UNAVAILABLE", "CANCELLED")) for _, why in result.failed)
    # a cut-off call may or may not have been applied; the rest is certain
    left = stored_at(redis_url, "example.com")
    assert {n.rsplit("/", 1)[1] for n in result.not_attempted} <= left
    assert not {n.rsplit("/", 1)[1] for n in result.deleted} & left
