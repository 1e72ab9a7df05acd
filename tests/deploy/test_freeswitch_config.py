"""The FreeSWITCH-side files: well-formed, only parameters FreeSWITCH's source reads, and
consistent with the services' config, Secrets and Services."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cti.config import EslNode, parse_settings
from tests.deploy.manifests import K8S, render
from tests.support import REPO

FS = REPO / "deploy" / "freeswitch"
# Parameter names read by do_config() in src/mod/xml_int/mod_xml_curl/mod_xml_curl.c, and
# those FreeSWITCH's own conf/vanilla/autoload_configs/event_socket.conf.xml documents.
XML_CURL_PARAMS = {
    "gateway-url",
    "gateway-credentials",
    "auth-scheme",
    "disable-100-continue",
    "method",
    "timeout",
    "enable-cacert-check",
    "ssl-cert-path",
    "ssl-key-path",
    "ssl-key-password",
    "ssl-version",
    "ssl-cacert-file",
    "enable-ssl-verifyhost",
    "cookie-file",
    "use-dynamic-url",
    "enable-post-var",
    "bind-local",
}
EVENT_SOCKET_PARAMS = {
    "listen-ip",
    "listen-port",
    "password",
    "apply-inbound-acl",
    "nat-map",
    "stop-on-bind-error",
}
VARIABLE = re.compile(r"\$\$\{(\w+)\}")


def _params(path: Path) -> dict[str, ET.Element]:
    return {p.attrib["name"]: p for p in ET.parse(path).getroot().iter("param")}


def _set_variables() -> dict[str, str]:
    """``name -> data`` of every variable vars_cti.xml sets (``set`` or ``exec-set``)."""
    found = {}
    for tag in ET.parse(FS / "vars_cti.xml").getroot().iter("X-PRE-PROCESS"):
        assert tag.attrib["cmd"] in ("set", "exec-set")
        name, _, data = tag.attrib["data"].partition("=")
        found[name] = data
    return found


@pytest.mark.parametrize("path", sorted(FS.rglob("*.xml")), ids=lambda p: p.name)
def test_well_formed_and_no_preprocessor_tag_in_a_comment(path: Path) -> None:
    """FreeSWITCH runs an X-PRE-PROCESS tag even inside a comment, line by line."""
    ET.parse(path)  # also refuses "--" inside comments, which FreeSWITCH's parser chokes on
    for comment in re.findall(r"<!--(.*?)-->", path.read_text(), re.S):
        assert not re.search(r"<\s*x-pre-process", comment, re.I), path.name


def test_xml_curl_binding_serves_only_the_directory_with_auth_and_a_timeout() -> None:
    root = ET.parse(FS / "autoload_configs" / "xml_curl.conf.xml").getroot()
    assert root.attrib["name"] == "xml_curl.conf"
    (binding,) = root.findall("./bindings/binding")
    params = _params(FS / "autoload_configs" / "xml_curl.conf.xml")
    assert set(params) <= XML_CURL_PARAMS
    assert params["gateway-url"].attrib["bindings"] == "directory"
    user, password = params["gateway-credentials"].attrib["value"].split(":")
    assert VARIABLE.fullmatch(user) and VARIABLE.fullmatch(password)
    assert params["auth-scheme"].attrib["value"] == "basic"
    settings = parse_settings((K8S / "base" / "cti.json").read_text(), "base/cti.json")
    timeout_s = int(params["timeout"].attrib["value"])
    assert timeout_s * 1000 > settings.directory.http.deadline_ms  # the service answers first
    assert binding.attrib["name"]


def test_event_socket_takes_its_password_from_a_variable_and_an_acl() -> None:
    path = FS / "autoload_configs" / "event_socket.conf.xml"
    assert ET.parse(path).getroot().attrib["name"] == "event_socket.conf"
    params = {k: v.attrib["value"] for k, v in _params(path).items()}
    assert set(params) <= EVENT_SOCKET_PARAMS
    assert VARIABLE.fullmatch(params["password"])
    assert int(params["listen-port"]) == EslNode("freeswitch").port
    acl = ET.parse(FS / "autoload_configs" / "acl_cti.xml").getroot()
    (listed,) = acl.iter("list")
    assert listed.attrib == {"name": params["apply-inbound-acl"], "default": "deny"}


def test_static_directory_is_empty() -> None:
    root = ET.parse(FS / "directory" / "default.xml").getroot()
    assert root.tag == "include"
    assert list(root) == []


def test_every_variable_used_is_set() -> None:
    used = {
        name
        for path in FS.rglob("*.xml")
        if path.name != "vars_cti.xml"
        for name in VARIABLE.findall(re.sub(r"<!--.*?-->", "", path.read_text(), flags=re.S))
    }
    assert used and used <= set(_set_variables())


def test_variables_match_the_directory_service_and_the_secret() -> None:
    variables = _set_variables()
    settings = parse_settings((K8S / "base" / "cti.json").read_text(), "base/cti.json")
    url = urlsplit(variables["cti_directory_url"])
    assert url.path == settings.directory.http.path
    (service,) = [
        d
        for d in render(K8S / "overlays" / "prod")
        if d["kind"] == "Service" and d["metadata"]["name"] == "cti-directory"
    ]
    meta = service["metadata"]
    assert url.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    assert url.port == http["port"]
    dev_secrets = [d for d in render(K8S / "overlays" / "dev") if d["kind"] == "Secret"]
    (freeswitch_secret,) = [
        s for s in dev_secrets if s["metadata"]["name"].startswith("cti-freeswitch")
    ]
    files = {Path(data.split()[-1]).name for data in variables.values() if data.startswith("cat ")}
    assert files == set(freeswitch_secret["data"])
