"""The FreeSWITCH-side files: well-formed, only parameters FreeSWITCH's source reads, and
consistent with the services' config, Secrets and Services."""

from __future__ import annotations

import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from cti.config import EslNode, parse_settings
from tests.deploy.freeswitch_preprocess import Preprocessor
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
    acl = ET.parse(FS / "acl_cti.xml").getroot()
    (listed,) = acl.iter("list")
    assert listed.attrib == {"name": params["apply-inbound-acl"], "default": "deny"}


def test_static_directory_is_empty() -> None:
    root = ET.parse(FS / "directory" / "default.xml").getroot()
    assert root.tag == "include"
    assert list(root) == []


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
    files = {
        name for data in variables.values() for name in re.findall(rf"{SECRETS}/([\w-]+)", data)
    }
    assert files == set(freeswitch_secret["data"])


# -- installed as the README says, resolved as FreeSWITCH does ----------------------------

# The shape of FreeSWITCH's stock conf/ (conf/vanilla), reduced to what matters here.
STOCK = {
    "freeswitch.xml": """<?xml version="1.0"?>
<document type="freeswitch/xml">
  <X-PRE-PROCESS cmd="include" data="vars.xml"/>
  <section name="configuration" description="Various Configuration">
    <X-PRE-PROCESS cmd="include" data="autoload_configs/*.xml"/>
  </section>
  <section name="directory" description="User Directory">
    <X-PRE-PROCESS cmd="include" data="directory/*.xml"/>
  </section>
</document>
""",
    "vars.xml": """<include>
  <X-PRE-PROCESS cmd="set" data="domain=example.com"/>
</include>
""",
    "autoload_configs/acl.conf.xml": """<configuration name="acl.conf" description="Network Lists">
  <network-lists>
    <list name="domains" default="deny">
      <node type="allow" domain="$${domain}"/>
    </list>
  </network-lists>
</configuration>
""",
}
GUIDE = FS / "README.md"
SECRETS = "/etc/freeswitch/secrets"


def _guide_destinations() -> dict[str, str]:
    """``shipped file -> folder under conf/`` from the README's table."""
    rows = re.findall(r"^\| `([^`]+\.xml)` \| `conf/([^`]*)`", GUIDE.read_text(), re.M)
    return {shipped: folder for shipped, folder in rows}


def _guide_include(target: str) -> str:
    """The README's include line (its own line in a code block) for ``target``."""
    lines = re.findall(
        r"^ *(<X-PRE-PROCESS cmd=\"include\" data=\"[^\"]+\"/>) *$", GUIDE.read_text(), re.M
    )
    (line,) = [str(line) for line in lines if target in line]
    return line


def _install(conf: Path, acl_include: str | None = None) -> None:
    """A stock-shaped conf/ with the shipped files added exactly as the README says."""
    for name, text in STOCK.items():
        (conf / name).parent.mkdir(parents=True, exist_ok=True)
        (conf / name).write_text(text)
    destinations = _guide_destinations()
    shipped = sorted(p.relative_to(FS).as_posix() for p in FS.rglob("*.xml"))
    assert sorted(destinations) == shipped  # the table names every file, nothing else
    for name, folder in destinations.items():
        target = conf / folder / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(FS / name, target)
    vars_xml = conf / "vars.xml"
    vars_xml.write_text(
        vars_xml.read_text().replace("<include>\n", f"<include>\n{_guide_include('vars_cti')}\n")
    )
    acl = conf / "autoload_configs" / "acl.conf.xml"
    line = acl_include or _guide_include("acl_cti")
    acl.write_text(acl.read_text().replace("<network-lists>\n", f"<network-lists>\n{line}\n"))


def _secrets(folder: Path, **values: str) -> Preprocessor:
    folder.mkdir(exist_ok=True)
    for key, value in values.items():
        (folder / key.replace("_", "-")).write_text(value + "\n")
    return Preprocessor(exec_command=lambda command: command.replace(SECRETS, str(folder)))


SECRET_VALUES = {
    "esl_password": "esl-from-secret",
    "xml_curl_username": "freeswitch",
    "xml_curl_password": "curl-from-secret",
}


def _resolved(tmp_path: Path, run: Preprocessor, acl_include: str | None = None) -> ET.Element:
    conf = tmp_path / "conf"
    _install(conf, acl_include)
    text = run.resolve(conf / "freeswitch.xml")
    assert not run.missing_includes
    return ET.fromstring(text)


def _acl_lists(root: ET.Element) -> list[tuple[str, ET.Element]]:
    """``(where, list)`` for every ``<list>`` in the resolved document."""
    found = []
    for configuration in root.iter("configuration"):
        where = configuration.attrib["name"]
        for network_lists in configuration.findall("network-lists"):
            found += [(f"{where}/network-lists", x) for x in network_lists.findall("list")]
    listed_inside = {id(x) for _, x in found}
    found += [("elsewhere", x) for x in root.iter("list") if id(x) not in listed_inside]
    return found


def test_installed_as_documented_the_acl_lands_inside_network_lists(tmp_path: Path) -> None:
    run = _secrets(tmp_path / "secrets", **SECRET_VALUES)
    root = _resolved(tmp_path, run)
    lists = [(where, x) for where, x in _acl_lists(root) if x.get("name") == "cti_event_service"]
    assert [where for where, _ in lists] == ["acl.conf/network-lists"]  # once, in place
    (configuration,) = [
        c for c in root.iter("configuration") if c.get("name") == "event_socket.conf"
    ]
    params = {p.attrib["name"]: p.attrib["value"] for p in configuration.iter("param")}
    assert params["apply-inbound-acl"] == "cti_event_service"
    assert params["password"] == "esl-from-secret"
    (curl,) = [c for c in root.iter("configuration") if c.get("name") == "xml_curl.conf"]
    curl_params = {p.attrib["name"]: p.attrib["value"] for p in curl.iter("param")}
    assert curl_params["gateway-credentials"] == "freeswitch:curl-from-secret"
    assert run.undefined == []  # every $${} used, comments included, was set before use
    assert run.stderr == []


def test_the_old_include_path_resolves_to_nothing(tmp_path: Path) -> None:
    """The resolver is faithful: the path relative to conf/ (what the README once said)
    finds no file from acl.conf.xml's folder, so the list never reaches network-lists."""
    old = '<X-PRE-PROCESS cmd="include" data="autoload_configs/acl_cti.xml"/>'
    run = _secrets(tmp_path / "secrets", **SECRET_VALUES)
    conf = tmp_path / "conf"
    _install(conf, acl_include=old)
    root = ET.fromstring(run.resolve(conf / "freeswitch.xml"))
    assert run.missing_includes == [f"{conf}/autoload_configs/autoload_configs/acl_cti.xml"]
    assert not [x for x in root.iter("list") if x.get("name") == "cti_event_service"]


def test_a_missing_esl_secret_locks_the_socket_loudly_instead_of_cluecon(tmp_path: Path) -> None:
    values = {k: v for k, v in SECRET_VALUES.items() if k != "esl_password"}
    passwords = []
    for attempt in ("one", "two"):
        run = _secrets(tmp_path / f"secrets-{attempt}", **values)
        root = _resolved(tmp_path / attempt, run)
        (configuration,) = [
            c for c in root.iter("configuration") if c.get("name") == "event_socket.conf"
        ]
        params = {p.attrib["name"]: p.attrib["value"] for p in configuration.iter("param")}
        passwords.append(params["password"])
        assert any("esl-password is missing or empty" in line for line in run.stderr)
    for password in passwords:  # never empty (= ClueCon in mod_event_socket), never guessable
        assert re.fullmatch(r"[0-9a-f]{48}", password), password
    assert passwords[0] != passwords[1]


def test_an_empty_esl_secret_file_is_missing_too(tmp_path: Path) -> None:
    run = _secrets(tmp_path / "secrets", **{**SECRET_VALUES, "esl_password": ""})
    root = _resolved(tmp_path, run)
    (password,) = [p.attrib["value"] for p in root.iter("param") if p.attrib["name"] == "password"]
    assert re.fullmatch(r"[0-9a-f]{48}", password)
