"""``ctictl`` run as operators run it (the installed script, a subprocess) against a real
directory gRPC server and a real redis-server."""

from __future__ import annotations

import json
from pathlib import Path

import redis

from cti import redis_keys
from ctictl.importer import read_rows
from tests.ctictl.support import ctictl, json_error, ok_json
from tests.directory.grpc_fixtures import TOKEN, Api, api_fixture

__all__ = ["api_fixture"]  # the pytest fixture "api"


def test_extension_lifecycle(api: Api) -> None:
    ok_json(api, "templates", "add", "agents", "--var", "sip-force-contact=NDLB")
    created = ok_json(
        api,
        "ext",
        "add",
        "1001@example.com",
        "--template",
        "agents",
        "--alias",
        "alice",
        "--param",
        "auth-acl=10.0.0.0/8",
    )
    assert created["name"] == "domains/example.com/extensions/1001"
    assert len(created["password"]) == 16
    got = ok_json(api, "ext", "get", "1001@example.com")
    assert got["attributes"] == {"number-alias": "alice"} and "password" not in got
    updated = ok_json(
        api, "ext", "update", "1001@example.com", "--var", "x=1", "--unset-param", "auth-acl"
    )
    assert updated["variables"] == {"x": "1"} and "params" not in updated
    stale = ctictl(api, "ext", "update", "1001@example.com", "--var", "y=2", "--etag", got["etag"])
    assert stale.returncode == 1 and "ETAG_MISMATCH" in stale.stderr
    cleared = ok_json(
        api, "ext", "update", "1001@example.com", "--alias", "", "--no-template",
        "--etag", updated["etag"],
    )  # fmt: skip
    assert "attributes" not in cleared and "template" not in cleared
    assert redis.Redis.from_url(api.redis_url).hlen(redis_keys.aliases("example.com")) == 0
    listed = ok_json(api, "ext", "list", "--domain", "example.com")
    assert [e["name"] for e in listed] == ["domains/example.com/extensions/1001"]
    human = ctictl(api, "ext", "list")
    assert human.returncode == 0 and "1001@example.com" in human.stdout
    assert ok_json(api, "ext", "delete", "1001@example.com") == {
        "deleted": "domains/example.com/extensions/1001"
    }
    assert redis.Redis.from_url(api.redis_url).hlen(redis_keys.extensions("example.com")) == 0


def test_failures_exit_non_zero_with_the_reason(api: Api) -> None:
    result = ctictl(api, "--json", "ext", "get", "9@example.com")
    assert result.returncode == 1
    assert json_error(result)["reason"] == "EXTENSION_NOT_FOUND"
    result = ctictl(api, "ext", "add", "1@example.com", "--param", "auth-acl=10.0.0.1")
    assert result.returncode == 1
    assert "extension.params.auth-acl" in result.stderr and "10.0.0.1/32" in result.stderr
    result = ctictl(api, "ext", "list", token="wrong")
    assert result.returncode == 1 and "UNAUTHENTICATED" in result.stderr
    result = ctictl(api, "ext", "get", "no-domain")
    assert result.returncode == 2 and "ID@DOMAIN" in result.stderr


def test_batch_range(api: Api) -> None:
    created = ok_json(api, "ext", "batch", "example.com", "2000-2049")
    assert len(created) == 50 and all(len(e["password"]) == 16 for e in created)
    assert len(ok_json(api, "ext", "list", "--page-size", "7")) == 50


def test_import_csv_with_a_bad_row(api: Api, tmp_path: Path) -> None:
    rows = ["extension,domain,password,alias,template,param:auth-acl,variable:callgroup"]
    rows += [f"{3000 + n},example.com,,,,,sales" for n in range(1200)]
    rows.insert(5, "3999,example.com,pw,bob,,not an acl,")  # refused by the server
    rows.insert(7, ",example.com,,,,,")  # no id
    path = tmp_path / "users.csv"
    path.write_text("\n".join(rows) + "\n")
    result = ctictl(api, "--json", "ext", "import", str(path), "--batch-size", "500")
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert len(summary["created"]) == 1200
    assert {f["where"] for f in summary["failed"]} == {"line 6", "line 8"}
    bad = next(f for f in summary["failed"] if f["where"] == "line 6")
    assert bad["extension"] == "3999@example.com" and "auth-acl" in bad["error"]
    client = redis.Redis.from_url(api.redis_url)
    assert client.hlen(redis_keys.extensions("example.com")) == 1200
    stored = json.loads(client.hget(redis_keys.extensions("example.com"), "3000") or b"")
    assert stored["variable"] == {"callgroup": "sales"}


def test_import_seed_json_dump(api: Api, tmp_path: Path) -> None:
    """A dump of ``cti_exten@<domain>`` (id -> the seed's document) imports as is."""
    seed = {
        "1000": {
            "param": {"password": "123", "allow-empty-password": False},
            "variable": {"sip-force-contact": "NDLB-connectile-dysfunction-2.0"},
            "attribute": {"cacheable": "10000", "number-alias": "myphone"},
        },
        "1001": "not an object",
    }
    path = tmp_path / "dump.json"
    path.write_text(json.dumps(seed))
    result = ctictl(api, "--json", "ext", "import", str(path), "--domain", "example.com")
    summary = json.loads(result.stdout)
    assert result.returncode == 1
    assert [c["name"] for c in summary["created"]] == ["domains/example.com/extensions/1000"]
    assert summary["failed"][0]["extension"] == "1001"
    stored = json.loads(
        redis.Redis.from_url(api.redis_url).hget(redis_keys.extensions("example.com"), "1000")
        or b""
    )
    assert stored["param"] == {"password": "123", "allow-empty-password": "false"}


def test_read_rows_without_domain_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("extension\n1001\n")
    rows, bad = read_rows(path, "")
    assert rows == [] and bad == [("line 2", "1001", "no domain (add a domain column or --domain)")]


def test_templates_and_domains(api: Api) -> None:
    ok_json(api, "domains", "add", "example.com", "--param", "dial-string=x")
    ok_json(api, "templates", "add", "agents", "--attr", "cacheable=5000")
    assert [d["name"] for d in ok_json(api, "domains", "list")] == ["domains/example.com"]
    assert ok_json(api, "templates", "get", "agents")["attributes"] == {"cacheable": "5000"}
    updated = ok_json(api, "domains", "update", "example.com", "--var", "v=1")
    assert updated["params"] == {"dial-string": "x"} and updated["variables"] == {"v": "1"}
    ok_json(api, "ext", "add", "1@example.com", "--template", "agents")
    in_use = ctictl(api, "templates", "delete", "agents")
    assert in_use.returncode == 1 and "TEMPLATE_IN_USE" in in_use.stderr
    ok_json(api, "ext", "delete", "1@example.com")
    ok_json(api, "templates", "delete", "agents")
    ok_json(api, "domains", "delete", "example.com")
    assert ok_json(api, "templates", "list") == []


def test_import_cut_short_still_reports_what_was_created(redis_url: str, tmp_path: Path) -> None:
    """The server going away mid-import must not lose the rows already created: their
    generated passwords are shown only once."""
    from ctictl.client import ApiClient, Target
    from ctictl.importer import run_import
    from tests.directory.grpc_fixtures import start_api

    path = tmp_path / "users.csv"
    path.write_text("extension,domain\n" + "".join(f"{n},example.com\n" for n in range(4000, 4003)))
    rows, _ = read_rows(path, "")
    server, api = start_api(redis_url)
    client = ApiClient(Target(address=api.address, token=TOKEN, timeout=5))
    try:
        result = run_import(client, rows, batch_size=1, advance=lambda n: server.stop(None).wait())
    finally:
        client.close()
        api.channel.close()
        server.stop(None).wait()
    assert [(row.label, len(e.password)) for row, e in result.created] == [("4000@example.com", 16)]
    assert [(where, what) for where, what, _ in result.failed] == [
        ("line 3", "4001@example.com"),
        ("line 4", "4002@example.com"),
    ]
    assert "UNAVAILABLE" in result.failed[0][2]
