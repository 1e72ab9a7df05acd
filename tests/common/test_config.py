from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cti.config import ConfigError, Settings, TenantWriteSettings, load_settings, parse_settings
from cti.config_env import ENV_OVERRIDES
from tests.support import REPO, SEED_DIR


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cti.json"
    path.write_text(text)
    return path


def test_seed_config_loads_as_it_is() -> None:
    settings = load_settings(SEED_DIR / "cti.json", env={})
    assert settings.events.registration.hash == "registrations"
    assert settings.events.registration.channel == ""
    assert settings.events.call.hash == "calls"
    # The seed lists Caller-Profile-Created-Time twice: loads, kept once, order preserved.
    assert settings.events.call.fields == (
        "Caller-Destination-Number",
        "Caller-Caller-ID-Number",
        "Caller-Callee-ID-Number",
        "Caller-Profile-Created-Time",
        "Caller-Channel-Answered-Time",
    )


def test_shipped_config_loads_with_loopback_defaults() -> None:
    settings = load_settings(REPO / "cti.json", env={})
    assert settings.directory.http.listen == "127.0.0.1:8080"
    assert settings.directory.grpc.listen == "127.0.0.1:50051"
    assert settings.events.grpc.listen == "127.0.0.1:50052"
    # cti.json spells out the tenant-write defaults: the documented list is the real one.
    assert settings.directory.tenant_writes == TenantWriteSettings()


def test_no_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.source == "<defaults>"
    assert settings.redis_url == "redis://127.0.0.1:6379/0"
    assert settings.events.nodes[0].address == "127.0.0.1:8021"
    assert settings.events.nodes[0].password == "ClueCon"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{\n  "redis": {\n    "url": "x",,\n  }\n}', "cti.json: line 3"),
        ('{\n  "redis": {\n    "url": 5\n  }\n}', "line 3: redis.url: must be str"),
        ('{\n  "directory": {\n    "htp": {}\n  }\n}', "line 3: directory.htp: unknown setting"),
        ('{"directory": {"http": {"listen": "nowhere"}}}', "directory.http.listen"),
        ('{"directory": {"http": {"allow": ["10.0.0.0/33"]}}}', "directory.http.allow"),
        ('{"directory": {"http": {"max_body_bytes": 0}}}', "must be a positive integer"),
        ('{"events": {"nodes": [{"port": 8021}]}}', "events.nodes[0].host: is required"),
        ('{"events": {"grpc": {"advertise": "10.0.0.5"}}}', "events.grpc.advertise"),
        ('{"events": {"grpc": {"advertise": "0.0.0.0:50052"}}}', "is a wildcard address"),
        ('{"directory": {"grpc": {"advertise": "10.0.0.5:1"}}}', "unknown setting"),
        ("[]", "the top level must be an object"),
    ],
)
def test_invalid_file_names_file_line_and_problem(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_settings(path, env={})
    assert str(path) in str(error.value)
    assert expected in str(error.value)


def test_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "missing.json", env={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '{"redis": {"url": "redis://127.0.0.1:1/0"}}')
    env = {
        "REDIS_URL": "redis://127.0.0.1:2/3",
        "CTI_HTTP_LISTEN": "127.0.0.1:9000",
        "CTI_GRPC_LISTEN": "127.0.0.1:9001",
        "CTI_API_TOKEN": "s3cret",
        "CTI_HTTP_USERNAME": "fs",
        "CTI_HTTP_PASSWORD": "pw",
        "CTI_HTTP_ALLOW": "127.0.0.1/32, ::1",
    }
    settings = load_settings(path, env=env, service="directory")
    assert settings.redis_url == "redis://127.0.0.1:2/3"
    assert settings.directory.http.listen == "127.0.0.1:9000"
    assert settings.directory.grpc.listen == "127.0.0.1:9001"
    assert settings.directory.grpc.tokens == ("s3cret",)
    assert settings.directory.http.allow == ("127.0.0.1/32", "::1/128")
    # The gRPC override applies to the service being started only.
    assert settings.events.grpc.listen == "127.0.0.1:50052"


def test_esl_nodes_from_environment() -> None:
    env = {"CTI_ESL_NODES": "127.0.0.1:8021,127.0.0.2", "CTI_ESL_PASSWORD": "pw"}
    settings = load_settings(
        None, env=env | {"CTI_CONFIG": str(SEED_DIR / "cti.json")}, service="events"
    )
    assert [(n.host, n.port, n.password) for n in settings.events.nodes] == [
        ("127.0.0.1", 8021, "pw"),
        ("127.0.0.2", 8021, "pw"),
    ]


def test_per_service_listen_variables_keep_the_two_services_apart() -> None:
    """One environment (``make run``) starts both services: each takes its own variable,
    which wins over the one-service CTI_GRPC_LISTEN of a container."""
    env = {
        "CTI_GRPC_LISTEN": "127.0.0.1:9001",
        "CTI_DIRECTORY_GRPC_LISTEN": "127.0.0.1:9101",
        "CTI_EVENTS_GRPC_LISTEN": "127.0.0.1:9102",
        "CTI_METRICS_LISTEN": "127.0.0.1:9103",
    }
    directory = load_settings(SEED_DIR / "cti.json", env=env, service="directory")
    events = load_settings(SEED_DIR / "cti.json", env=env, service="events")
    assert directory.directory.grpc.listen == "127.0.0.1:9101"
    assert events.events.grpc.listen == "127.0.0.1:9102"
    assert events.events.metrics_listen == "127.0.0.1:9103"
    with pytest.raises(ConfigError, match="CTI_METRICS_LISTEN"):
        load_settings(SEED_DIR / "cti.json", env={"CTI_METRICS_LISTEN": "x"}, service="events")


def test_advertised_grpc_address_of_an_event_replica(tmp_path: Path) -> None:
    """Where the other replicas forward call control: advertise, else a dialable listen."""

    def reachable(text: str, env: dict[str, str]) -> str:
        settings = load_settings(write(tmp_path, text), env=env, service="events")
        return settings.events.grpc.reachable_at

    assert reachable("{}", {}) == "127.0.0.1:50052"
    assert reachable('{"events": {"grpc": {"listen": "0.0.0.0:50052"}}}', {}) == ""
    assert reachable('{"events": {"grpc": {"listen": "[::]:50052"}}}', {}) == ""
    wildcard = '{"events": {"grpc": {"listen": "0.0.0.0:50052", "advertise": "10.0.0.5:50052"}}}'
    assert reachable(wildcard, {}) == "10.0.0.5:50052"
    assert reachable(wildcard, {"CTI_EVENTS_ADVERTISE": "[fd00::5]:50052"}) == "[fd00::5]:50052"
    for bad in ("10.0.0.5", "0.0.0.0:50052", "[::]:1"):
        with pytest.raises(ConfigError, match="CTI_EVENTS_ADVERTISE"):
            reachable("{}", {"CTI_EVENTS_ADVERTISE": bad})


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match="CTI_GRPC_LISTEN"):
        load_settings(SEED_DIR / "cti.json", env={"CTI_GRPC_LISTEN": "nope"})


def test_secrets_not_in_repr(tmp_path: Path) -> None:
    path = write(tmp_path, '{"directory": {"http": {"password": "hunter2"}}}')
    settings = load_settings(path, env={"CTI_API_TOKEN": "tok-123"})
    assert "hunter2" not in repr(settings)
    assert "tok-123" not in repr(settings)


@pytest.mark.parametrize(
    "text",
    [
        '{"directory": {"http": {"password": 48213977}}}',
        '{"events": {"nodes": [{"host": "127.0.0.1", "password": 48213977}]}}',
    ],
)
def test_a_mistyped_password_is_not_echoed_in_the_error(tmp_path: Path, text: str) -> None:
    """The start-up error is logged: it names the key and the problem, never the secret."""
    with pytest.raises(ConfigError, match="password: must be str") as caught:
        load_settings(write(tmp_path, text), env={})
    assert "48213977" not in str(caught.value)


@pytest.mark.parametrize("service", ["directory", "events"])
def test_an_empty_api_token_is_refused(tmp_path: Path, service: str) -> None:
    """``"tokens": [""]`` (a placeholder left in) would let ``authorization: Bearer`` with
    no token in, and pass for "tokens configured" on a public listen address."""
    text = f'{{"{service}": {{"grpc": {{"listen": "0.0.0.0:50051", "tokens": ["a", ""]}}}}}}'
    with pytest.raises(ConfigError, match=rf"{service}\.grpc\.tokens"):
        load_settings(write(tmp_path, text), env={})


def test_an_empty_file_gives_exactly_the_declared_defaults() -> None:
    """Each default is declared once (:mod:`cti.settings`): reading nothing yields the
    dataclasses' own defaults, field for field."""
    assert parse_settings("{}", "empty.json") == Settings("empty.json")


@pytest.mark.parametrize(
    ("var", "value", "key", "file_value"),
    [
        ("CTI_HTTP_ALLOW", "10.0.0.0/33", "directory.http.allow", '{"http": {"allow": ["%s"]}}'),
        ("CTI_HTTP_LISTEN", "nowhere", "directory.http.listen", '{"http": {"listen": "%s"}}'),
    ],
)
def test_an_environment_override_goes_through_its_file_keys_check(
    tmp_path: Path, var: str, value: str, key: str, file_value: str
) -> None:
    """The same problem text, named by the variable instead of the file, line and key."""
    with pytest.raises(ConfigError) as from_env:
        load_settings(None, {var: value}, "directory")
    path = write(tmp_path, '{"directory": ' + file_value % value + "}")
    with pytest.raises(ConfigError) as from_file:
        load_settings(path, env={})
    problem = str(from_file.value).partition(f"{key}: ")[2]
    assert problem
    assert str(from_env.value) == f"environment {var}: {problem}"


def test_every_environment_variable_is_documented() -> None:
    documented = "".join(
        (REPO / "docs" / name).read_text()
        for name in ("configuration.md", "events.md", "deployment.md")
    )
    variables = [override.var for override in ENV_OVERRIDES]
    variables += ["CTI_API_TOKEN", "CTI_API_TOKENS", "CTI_ESL_NODES", "CTI_ESL_PASSWORD"]
    assert [v for v in variables if v not in documented] == []


def test_control_variables_are_names_or_prefixes(tmp_path: Path) -> None:
    text = '{"events": {"control": {"variables": ["crm_*", "agent_id"]}}}'
    settings = load_settings(write(tmp_path, text), env={})
    assert settings.events.control.variables == ("crm_*", "agent_id")
    assert load_settings(write(tmp_path, "{}"), env={}).events.control.variables == ()
    for bad in ('"*"', '"api on answer"', '"a*b"', '"x\\n"'):
        text = f'{{"events": {{"control": {{"variables": [{bad}]}}}}}}'
        with pytest.raises(ConfigError, match=r"events\.control\.variables: "):
            load_settings(write(tmp_path, text), env={})


def test_an_unnamed_token_is_named_by_its_place_not_by_its_value(tmp_path: Path) -> None:
    """The name goes into every audit log line: nothing derived from the secret (a hash
    prefix would let anyone with the logs test guesses of a weak token offline)."""
    token = "weak-token-1"
    scoped = f'{{"token": "{token}", "read_only": true}}'
    text = f'{{"events": {{"grpc": {{"tokens": ["full", {scoped}]}}}}}}'
    settings = load_settings(write(tmp_path, text), env={})
    name = settings.events.grpc.scope_of(token).name
    assert name == "tokens[1]"
    assert hashlib.sha256(token.encode()).hexdigest()[:8] not in name


def test_tenant_writes_default_to_safe_names_and_refuse_ones_freeswitch_acts_on(
    tmp_path: Path,
) -> None:
    defaults = load_settings(write(tmp_path, "{}"), env={}).directory.tenant_writes
    assert "password" in defaults.params and "dial-string" not in defaults.params
    assert "outbound_caller_id_*" in defaults.variables
    assert "user_context" not in defaults.variables and defaults.templates == ()
    text = (
        '{"directory": {"tenant_writes": {"params": ["vm-*"], "variables": ["crm_*"],'
        ' "attributes": [], "templates": ["agents"]}}}'
    )
    policy = load_settings(write(tmp_path, text), env={}).directory.tenant_writes
    assert (policy.params, policy.variables, policy.attributes, policy.templates) == (
        ("vm-*",),
        ("crm_*",),
        (),
        ("agents",),
    )
    for key, bad in (
        ("variables", '"user_context"'),
        ("variables", '"api_*"'),
        ("variables", '"a*"'),  # covers api_on_answer
        ("variables", '"execute_on_answer"'),
        ("variables", '"my_hangup_hook"'),
        ("variables", '"*"'),
        ("params", '"dial string"'),
        ("params", '"dial-*"'),
        ("params", '"allow-empty-password"'),
        ("templates", '"a/b"'),
    ):
        text = f'{{"directory": {{"tenant_writes": {{"{key}": [{bad}]}}}}}}'
        with pytest.raises(ConfigError, match=rf"directory\.tenant_writes\.{key}: "):
            load_settings(write(tmp_path, text), env={})
    with pytest.raises(ConfigError, match=r"directory\.tenant_writes\.domains: unknown"):
        load_settings(write(tmp_path, '{"directory": {"tenant_writes": {"domains": []}}}'), env={})
