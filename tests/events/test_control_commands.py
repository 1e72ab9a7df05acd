"""The call-control command builder (pure): exact commands, refused arguments, and the
property that no argument can add a second command or shift another argument.

FreeSWITCH reads an API argument with ``switch_separate_string`` (``src/switch_utils.c``):
split on blanks (honouring ``'`` quotes and ``\\`` escapes), each word cleaned (quotes
removed, ``\\s`` -> space, ...), and a ``{a=b,c=d}`` block split on commas the same way.
:func:`split_blank` / :func:`split_char` port those loops, so the tests read the commands
back the way FreeSWITCH will.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from event_service.api import control_commands as cc

UUID = "0b7b74e2-c831-4fcf-b4c2-07630968a707"
ESC = "\\"
_UNESCAPED = {"n": "\n", "r": "\r", "t": "\t", "s": " "}


def _cleanup(word: str, delim: str) -> str:
    """``cleanup_separated_string``: strip quotes and leading/trailing blanks, unescape."""
    i = 0
    while i < len(word) and word[i] == " ":
        i += 1
    out: list[str] = []
    end: int | None = None
    inside = False
    while i < len(word):
        c = word[i]
        escaped = False
        if c == ESC and i + 1 < len(word):
            e = word[i + 1]
            if e in "'\"" or (delim and e == delim) or e == ESC or _UNESCAPED.get(e, e) != e:
                i += 1
                out.append(_UNESCAPED.get(e, e) if e in _UNESCAPED else e)
                end = len(out)
                escaped = True
        if not escaped:
            if c == "'" and (inside or "'" in word[i + 1 :]):
                inside = not inside
                if inside:
                    end = len(out)
            else:
                out.append(c)
                if c != " " or inside:
                    end = len(out)
        i += 1
    return "".join(out[:end] if end is not None else out)


def split_blank(text: str, limit: int = 10) -> list[str]:
    """``separate_string_blank_delim`` + cleanup."""
    starts: list[int] = []
    ends: dict[int, int] = {}
    i, state, inside = 0, "start", False
    while i < len(text) and len(starts) < limit:
        if state == "start":
            starts.append(i)
            state = "skip_initial"
        elif state == "skip_initial":
            if text[i] == " ":
                i += 1
            else:
                state = "find"
        elif state == "find":
            if text[i] == ESC:
                i += 1
            elif text[i] == "'":
                inside = not inside
            elif text[i] == " " and not inside:
                ends[len(starts) - 1] = i
                state = "skip_end"
            i += 1
        else:
            if text[i] == " ":
                i += 1
            else:
                state = "start"
    return [_cleanup(text[s : ends.get(k, len(text))], "") for k, s in enumerate(starts)]


def split_char(text: str, delim: str, limit: int = 1024) -> list[str]:
    """``separate_string_char_delim`` + cleanup."""
    starts: list[int] = []
    ends: dict[int, int] = {}
    i, state, inside = 0, "start", False
    while i < len(text) and len(starts) < limit:
        if state == "start":
            starts.append(i)
            state = "find"
            continue
        if text[i] == ESC:
            i += 1
        elif text[i] == "'" and (inside or "'" in text[i + 1 :]):
            inside = not inside
        elif text[i] == delim and not inside:
            ends[len(starts) - 1] = i
            state = "start"
        i += 1
    return [_cleanup(text[s : ends.get(k, len(text))], delim) for k, s in enumerate(starts)]


def read_dial(word: str) -> tuple[dict[str, str], str]:
    """``{a=b,c=d}rest`` -> ({a: b, c: d}, rest) as switch_event_create_brackets reads it."""
    assert word.startswith("{")
    inner, _, rest = word[1:].partition("}")
    pairs = [p.partition("=") for p in split_char(inner, ",")]
    return {name: value for name, _, value in pairs}, rest


# -- exact commands -----------------------------------------------------------------------


def test_each_command_is_what_freeswitch_documents() -> None:
    assert cc.hangup(UUID).text == f"uuid_kill {UUID} NORMAL_CLEARING"
    assert cc.hangup(UUID, "USER_BUSY").text == f"uuid_kill {UUID} USER_BUSY"
    assert cc.transfer(UUID, "1002", "default").text == f"uuid_transfer {UUID} 1002 XML default"
    assert cc.transfer(UUID, "1002", "sales", "bleg").text == (
        f"uuid_transfer {UUID} -bleg 1002 XML sales"
    )
    assert cc.hold(UUID).text == f"uuid_hold {UUID}"
    assert cc.unhold(UUID).text == f"uuid_hold off {UUID}"
    assert cc.start_recording(UUID, "/rec/a.wav").text == f"uuid_record {UUID} start /rec/a.wav"
    assert cc.start_recording(UUID, "/rec/a.wav", 60).text.endswith("start /rec/a.wav 60")
    assert cc.stop_recording(UUID).text == f"uuid_record {UUID} stop all"
    assert cc.send_dtmf(UUID, "12#").text == f"uuid_send_dtmf {UUID} 12#"


def test_originate_sets_the_uuid_up_front_and_escapes_free_text() -> None:
    command = cc.originate(
        UUID,
        "1000",
        "example.com",
        "1001",
        "default",
        caller_id_name="Smith, Anna",
        caller_id_number="+4930123",
        auto_answer=True,
        variables={"crm_ticket": "T 42"},
    )
    assert command.name == "originate"
    assert command.argument == (
        "{crm_ticket=T\\s42,origination_uuid=" + UUID + ",originate_timeout=30,"
        "cti_originate=true,sip_auto_answer=true,origination_caller_id_name=Smith\\,\\sAnna,"
        "origination_caller_id_number=+4930123}user/1000@example.com 1001 XML default"
    )
    words = split_blank(command.argument)
    assert words[1:] == ["1001", "XML", "default"]
    variables, dial = read_dial(words[0])
    assert dial == "user/1000@example.com"
    assert variables["origination_caller_id_name"] == "Smith, Anna"
    assert variables["crm_ticket"] == "T 42"


def test_eavesdrop_modes() -> None:
    listen = cc.eavesdrop(UUID, "2000", "example.com", UUID)
    assert listen.argument.endswith(f"}}user/2000@example.com &eavesdrop({UUID})")
    assert "whisper" not in listen.argument
    for mode in ("listen", "whisper", "barge"):  # the keypad cannot change the mode
        pinned = cc.eavesdrop(UUID, "2000", "example.com", UUID, mode).argument
        assert "eavesdrop_enable_dtmf=false" in pinned
    whisper = cc.eavesdrop(UUID, "2000", "example.com", UUID, "whisper").argument
    assert "eavesdrop_whisper_aleg=true" in whisper and "bleg" not in whisper
    barge = cc.eavesdrop(UUID, "2000", "example.com", UUID, "barge").argument
    assert "eavesdrop_whisper_aleg=true" in barge and "eavesdrop_whisper_bleg=true" in barge


def test_reply_error() -> None:
    assert cc.reply_error("+OK\n") is None
    assert cc.reply_error("+OK Success\n") is None
    assert cc.reply_error("-ERR No such channel!\n") == "No such channel!"
    assert cc.reply_error("-USAGE: <uuid> [cause]\n") == "-USAGE: <uuid> [cause]"
    assert cc.reply_error("INVALID COMMAND!\n") == "INVALID COMMAND!"
    assert cc.reply_error("") == "empty reply"


# -- refused arguments --------------------------------------------------------------------

INJECTIONS = [
    "1001\nbgapi system rm -rf /",
    "1001\r\nbgapi system x",
    "1001 XML evil",
    "${system(id)}",
    "1001}",
    "{x=y}",
    "a,b",
    "a|b",
    "'quoted'",
    'dq"',
    "back\\slash",
    "",
    "x" * 65,
    "1001\x00",
]


@pytest.mark.parametrize("value", INJECTIONS)
def test_destination_context_and_digits_refuse_injections(value: str) -> None:
    for check in (cc.destination, cc.context, cc.digits, cc.extension, cc.cause, cc.uuid):
        with pytest.raises(cc.ArgumentError):
            check(value, "field")


@pytest.mark.parametrize(
    "value", ["a\nb", "a\rb", "${x}", "a}b", "a{b", "a'b", 'a"b', "a\\b", "a|b", "a=b", " a", "a\t"]
)
def test_free_text_refuses_what_would_break_out(value: str) -> None:
    with pytest.raises(cc.ArgumentError):
        cc.text(value, "caller_id_name")


def test_uuid_must_be_canonical() -> None:
    assert cc.uuid(UUID.upper(), "channel") == UUID
    for bad in (UUID + "\n", UUID[:-1], "{" + UUID + "}", UUID.replace("-", ""), f" {UUID}"):
        with pytest.raises(cc.ArgumentError):
            cc.uuid(bad, "channel")


def test_server_set_variables_cannot_be_overridden() -> None:
    for name in ("origination_uuid", "cti_originate", "sip_auto_answer", "eavesdrop_whisper_aleg"):
        with pytest.raises(cc.ArgumentError):
            cc.variable_name(name, "variables", ("*",))
    assert cc.variable_name("crm_ticket", "variables", ("crm_*",)) == "crm_ticket"


@pytest.mark.parametrize(
    "name",
    [
        # FreeSWITCH runs these as API commands / dialplan applications on the leg:
        # api_on_answer=system touch /tmp/x would run a shell command on its host.
        "api_on_answer",
        "api_hangup_hook",
        "execute_on_answer",
        "exec_after_bridge_app",
        "record_post_process_exec_api",
        "session_in_hangup_hook",
        "transfer_after_bridge",
        "sip_route_uri",
        "user_context",
    ],
)
def test_only_allowed_variables_may_be_set(name: str) -> None:
    """A denylist cannot know every variable FreeSWITCH acts on: names are allowed only
    when listed (exactly, or by a ``prefix*``) in ``events.control.variables``."""
    with pytest.raises(cc.ArgumentError, match=r"events\.control\.variables"):
        cc.variable_name(name, "variables", ())
    with pytest.raises(cc.ArgumentError):
        cc.variable_name(name, "variables", ("crm_*", "agent_id"))
    assert cc.variable_name("agent_id", "variables", ("crm_*", "agent_id")) == "agent_id"
    assert cc.variable_name("crm_x", "variables", ("crm_*", "agent_id")) == "crm_x"
    with pytest.raises(cc.ArgumentError):
        cc.variable_name("agent_idx", "variables", ("agent_id",))


@pytest.mark.parametrize("value", ["-bleg", "-both", "-1001"])
def test_a_destination_cannot_pass_for_a_flag(value: str) -> None:
    """uuid_transfer reads an argument starting with '-' as -bleg/-both and shifts the
    destination, dialplan and context one place (mod_commands transfer_function)."""
    with pytest.raises(cc.ArgumentError):
        cc.destination(value, "destination")


@pytest.mark.parametrize(
    "path",
    ["../etc/passwd.wav", "/etc/x.wav", "a/../../x.wav", "a//b.wav", "x.sh", "a b.wav", ".wav/x"],
)
def test_recording_path_stays_under_the_directory(path: str) -> None:
    with pytest.raises(cc.ArgumentError):
        cc.recording_path(path, "/var/rec", "path", "x.wav")


def test_recording_path_joins_under_the_directory() -> None:
    assert cc.recording_path("", "/var/rec", "path", f"{UUID}.wav") == f"/var/rec/{UUID}.wav"
    assert cc.recording_path("2026/05/a-1.mp3", "/var/rec", "path", "x") == (
        "/var/rec/2026/05/a-1.mp3"
    )


def test_ring_seconds() -> None:
    assert cc.ring_seconds(0, "f") == cc.DEFAULT_RING_SECONDS
    assert cc.ring_seconds(45, "f") == 45
    for bad in (-1, cc.MAX_RING_SECONDS + 1):
        with pytest.raises(cc.ArgumentError):
            cc.ring_seconds(bad, "f")


# -- no argument can add a command or shift another ---------------------------------------

HOSTILE = st.text(
    alphabet=st.sampled_from(
        [*list("abcXYZ019 _.,@+-:/#*'\"\\{}[]<>|$=();&\n\r\t\x00^%"), "é", "ß", "中", "\u2028"]
    ),
    max_size=24,
)


def _no_line_break(command: cc.Command) -> None:
    text = command.text
    assert "\n" not in text and "\r" not in text and "\x00" not in text
    assert all(c.isprintable() for c in text)


@settings(max_examples=400, deadline=None)
@given(destination=HOSTILE, context=HOSTILE, cause=HOSTILE, dtmf=HOSTILE)
def test_channel_commands_read_back_exactly(
    destination: str, context: str, cause: str, dtmf: str
) -> None:
    built = []
    with contextlib.suppress(cc.ArgumentError):
        built.append(
            (
                cc.transfer(UUID, cc.destination(destination, "d"), cc.context(context, "c")),
                [UUID, destination, "XML", context],
            )
        )
    with contextlib.suppress(cc.ArgumentError):
        built.append((cc.hangup(UUID, cc.cause(cause, "c")), [UUID, cause]))
    with contextlib.suppress(cc.ArgumentError):
        built.append((cc.send_dtmf(UUID, cc.digits(dtmf, "d")), [UUID, dtmf]))
    for command, expected in built:
        _no_line_break(command)
        assert split_blank(command.argument) == expected


@settings(max_examples=400, deadline=None)
@given(
    name=HOSTILE,
    number=HOSTILE,
    var_name=HOSTILE,
    var_value=HOSTILE,
    user=HOSTILE,
    domain=HOSTILE,
    destination=HOSTILE,
)
def test_originate_reads_back_exactly(
    name: str, number: str, var_name: str, var_value: str, user: str, domain: str, destination: str
) -> None:
    try:
        command = cc.originate(
            UUID,
            cc.extension(user, "u"),
            cc.domain(domain, "d"),
            cc.destination(destination, "to"),
            "default",
            caller_id_name=cc.text(name, "n"),
            caller_id_number=cc.text(number, "n"),
            variables={cc.variable_name(var_name, "v", ("*",)): cc.text(var_value, "v")},
        )
    except cc.ArgumentError:
        return
    _no_line_break(command)
    words = split_blank(command.argument)
    assert words[1:] == [destination, "XML", "default"]
    variables, dial = read_dial(words[0])
    assert dial == f"user/{user}@{domain}"
    assert variables["origination_uuid"] == UUID
    assert variables[var_name] == var_value
    assert variables.get("origination_caller_id_name", "") == name
    assert variables.get("origination_caller_id_number", "") == number
    assert len(variables) == 3 + len({var_name}) + bool(name) + bool(number)


@settings(max_examples=200, deadline=None)
@given(path=HOSTILE)
def test_recording_path_reads_back_exactly(path: str) -> None:
    try:
        full = cc.recording_path(path, "/var/rec", "path", "x.wav")
    except cc.ArgumentError:
        return
    command = cc.start_recording(UUID, full, 10)
    _no_line_break(command)
    assert split_blank(command.argument) == [UUID, "start", full, "10"]
    assert full.startswith("/var/rec/") and "/../" not in full
