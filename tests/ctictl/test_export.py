"""``ctictl ext export`` writes what ``ctictl ext import`` reads back unchanged, through
the real directory service (both formats, every section, templates, awkward values)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import redis

from cti import redis_keys
from cti.v1 import directory_pb2 as pb
from ctictl.export import ExportError, records, to_csv
from tests.ctictl.support import ctictl, json_error, ok_json
from tests.directory.grpc_fixtures import Api, api_fixture

__all__ = ["api_fixture"]

AWKWARD = 'a "quoted", comma\nand a line break; ünïcode'


def populate(api: Api) -> None:
    ok_json(api, "templates", "add", "agents", "--var", "callgroup=agents", "--attr",
            "cacheable=5000")  # fmt: skip
    ok_json(api, "templates", "add", "managers", "--param", "dial-string=x")
    ok_json(
        api, "ext", "add", "1000@example.com", "--template", "agents", "--alias", "alice",
        "--param", "auth-acl=10.0.0.0/8", "--var", f"note={AWKWARD}", "--attr", "cacheable=true",
    )  # fmt: skip
    ok_json(api, "ext", "add", "999@example.com", "--var", "effective_caller_id_name=Bob")
    ok_json(api, "ext", "add", "sales.desk@example.com", "--template", "managers")
    ok_json(api, "ext", "add", "7@other.org", "--password", "kept-secret-1")


def empty_directory(api: Api) -> None:
    for domain in ("example.com", "other.org"):
        ok_json(api, "ext", "bulk-delete", "--domain", domain, "--all", "--yes")
    client = redis.Redis.from_url(api.redis_url)
    assert client.hlen(redis_keys.extensions("example.com")) == 0


def export_text(api: Api, *args: str) -> str:
    result = ctictl(api, "ext", "export", *args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("file_format", ["json", "csv"])
def test_round_trip(api: Api, tmp_path: Path, file_format: str) -> None:
    populate(api)
    path = tmp_path / f"directory.{file_format}"
    written = ok_json(api, "ext", "export", "--output", str(path))
    assert written == {"exported": 4, "file": str(path)}
    first = path.read_text(encoding="utf-8")
    assert "kept-secret-1" not in first and "password" not in first  # the API hides them
    empty_directory(api)
    summary = ok_json(api, "ext", "import", str(path))
    assert len(summary["created"]) == 4 and summary["failed"] == []
    assert all(len(c["password"]) == 16 for c in summary["created"])  # new ones, shown once
    assert export_text(api, "--format", file_format) == first
    got = ok_json(api, "ext", "get", "1000@example.com")
    assert got["variables"] == {"note": AWKWARD} and got["template"] == "templates/agents"
    assert got["attributes"] == {"number-alias": "alice", "cacheable": "true"}
    assert got["params"] == {"auth-acl": "10.0.0.0/8"} and got["has_password"]


def test_json_export_shape(api: Api) -> None:
    populate(api)
    exported = json.loads(export_text(api, "--domain", "example.com"))
    assert [(e["extension"], e["domain"]) for e in exported] == [
        ("999", "example.com"), ("1000", "example.com"), ("sales.desk", "example.com")
    ]  # fmt: skip
    assert exported[1] == {
        "extension": "1000",
        "domain": "example.com",
        "template": "agents",
        "param": {"auth-acl": "10.0.0.0/8"},
        "variable": {"note": AWKWARD},
        "attribute": {"cacheable": "true", "number-alias": "alice"},
    }
    by_template = json.loads(export_text(api, "--template", "managers"))
    assert [e["extension"] for e in by_template] == ["sales.desk"]


def test_csv_export_columns(api: Api) -> None:
    populate(api)
    header = export_text(api, "--format", "csv", "--domain", "other.org").splitlines()[0]
    assert header == "extension,domain,template"
    header = export_text(api, "--format", "csv").splitlines()[0]
    assert header == (
        "extension,domain,template,param:auth-acl,variable:effective_caller_id_name,"
        "variable:note,attribute:cacheable,attribute:number-alias"
    )


def test_csv_refuses_an_empty_value_and_writes_nothing(api: Api, tmp_path: Path) -> None:
    ok_json(api, "ext", "add", "5@example.com", "--var", "blank=")
    path = tmp_path / "out.csv"
    error = json_error(ctictl(api, "--json", "ext", "export", "--output", str(path)))
    assert error["reason"] == "NOT_REPRESENTABLE"
    assert (
        "5@example.com variable:blank" in error["message"] and "--format json" in error["message"]
    )
    assert not path.exists() and list(tmp_path.iterdir()) == []
    exported = json.loads(export_text(api))
    assert exported[0]["variable"] == {"blank": ""}


def test_to_csv_names_every_empty_value() -> None:
    message = pb.Extension(name="domains/d/extensions/1", params={"a": ""}, attributes={"b": ""})
    with pytest.raises(ExportError, match="1@d param:a, 1@d attribute:b"):
        to_csv(records([message]))
