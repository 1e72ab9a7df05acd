"""FreeSWITCH commands of the call-control API, built from validated arguments (pure).

Nothing from a request is pasted into a command: every argument is checked against a
restricted alphabet first (a uuid as a uuid, an extension, a dialplan destination, ...) and
refused with :class:`ArgumentError` otherwise. What reaches FreeSWITCH can therefore never
hold a line break (which would end the ``bgapi`` line and run the rest as a second
command), a space that shifts the positional arguments, ``$`` (variable expansion), braces
or brackets (variable blocks), ``|`` / ``,`` between legs, or a quote.

Free text (a caller-id name, a channel variable value) may hold spaces and commas; they are
escaped the way FreeSWITCH's ``switch_separate_string`` reads them: ``\\s`` for a space
(the command line is split on blanks, which turns ``\\s`` back into a space) and ``\\,``
for a comma (kept through the blank split, unescaped when ``{a=b,c=d}`` is split on
commas).

Commands and the modules that provide them: ``uuid_kill``, ``uuid_transfer``,
``uuid_hold``, ``uuid_record``, ``uuid_send_dtmf``, ``originate`` (mod_commands); the
``user/`` endpoint and the ``eavesdrop`` application (mod_dptools).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from cti.settings import matches_pattern

MAX_RING_SECONDS = 300
DEFAULT_RING_SECONDS = 30
ORIGINATE_MARK = "cti_originate"
"""Channel variable set on every leg the API originates; the state records such a leg as
``callout`` (the extension placed the call) though FreeSWITCH calls it outbound."""

TransferLeg = Literal["", "bleg", "both"]
EavesdropMode = Literal["listen", "whisper", "barge"]


class ArgumentError(ValueError):
    """One argument is not acceptable; ``field`` names it (a request field path)."""

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description


@dataclass(frozen=True)
class Command:
    """One API command: ``name`` and its single-line ``argument``."""

    name: str
    argument: str

    @property
    def text(self) -> str:
        return f"{self.name} {self.argument}"


# -- validators ---------------------------------------------------------------------------

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(\.{_LABEL}){{0,15}}")
# Not starting with "-": uuid_transfer takes such an argument for its -bleg/-both flag and
# reads the destination, dialplan and context one place further on.
_DESTINATION = re.compile(r"[A-Za-z0-9+*#_.][A-Za-z0-9+*#_.-]{0,63}")
_CONTEXT = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CAUSE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_DIGITS = re.compile(r"[0-9A-Da-d*#wW]{1,64}")
_VARIABLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PATH_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_TEXT_PUNCTUATION = frozenset(" _.,@+-:/#*")
_RESERVED_PREFIXES = ("origination_", "originate_", "cti_", "sip_auto_answer", "eavesdrop_")
RECORDING_SUFFIXES = (".wav", ".mp3", ".ogg")
MAX_TEXT = 128


def _match(pattern: re.Pattern[str], value: str, field: str, what: str) -> str:
    # fullmatch, not match + "$": "$" also matches before a trailing newline.
    if not pattern.fullmatch(value):
        raise ArgumentError(field, f"{what}, got {value!r}")
    return value


def uuid(value: str, field: str) -> str:
    """A channel uuid, canonical lower-case form (FreeSWITCH's own)."""
    return _match(_UUID, value.lower(), field, "must be a uuid (8-4-4-4-12 hex digits)")


def extension(value: str, field: str) -> str:
    return _match(_EXTENSION, value, field, "must be letters, digits and _ . + - (at most 64)")


def domain(value: str, field: str) -> str:
    return _match(_DOMAIN, value, field, "must be a host name or IPv4 address")


def destination(value: str, field: str) -> str:
    return _match(
        _DESTINATION, value, field, "must be letters, digits and + * # _ . - (1-64, not - first)"
    )


def context(value: str, field: str) -> str:
    return _match(_CONTEXT, value, field, "must be letters, digits and _ . - (1-64)")


def cause(value: str, field: str) -> str:
    return _match(_CAUSE, value, field, "must be a FreeSWITCH hangup cause such as USER_BUSY")


def digits(value: str, field: str) -> str:
    return _match(_DIGITS, value, field, "must be 1-64 of 0-9 * # A-D w W")


def request_id(value: str, field: str) -> str:
    return _match(_REQUEST_ID, value, field, "must be 1-64 letters, digits, _ or -")


def text(value: str, field: str) -> str:
    """Free text for a variable value: letters and digits of any script, space and a few
    punctuation marks; no control characters, quotes, braces, ``$``, ``\\`` or ``|``."""
    if len(value) > MAX_TEXT:
        raise ArgumentError(field, f"at most {MAX_TEXT} characters")
    bad = sorted({c for c in value if not (c.isalnum() or c in _TEXT_PUNCTUATION)})
    if bad:
        raise ArgumentError(
            field, f"characters not allowed: {''.join(bad)!r} (letters, digits, space, _.,@+-:/#*)"
        )
    if value != value.strip():
        raise ArgumentError(field, "no leading or trailing space")
    return value


def variable_name(value: str, field: str, allowed: Sequence[str]) -> str:
    """A channel variable a request may set: well formed, not one the server sets, and
    listed in ``allowed`` (exact names, or prefixes ending in ``*``; the server's
    ``events.control.variables``). An allowlist because FreeSWITCH acts on far too many
    variables to refuse them one by one: ``api_on_answer`` / ``api_hangup_hook`` run an API
    command (``system ...`` is a shell), ``execute_on_*`` an application, ``user_context``
    or ``sip_route_uri`` send the call elsewhere."""
    _match(_VARIABLE_NAME, value, field, "must be a letter then letters, digits, _ (at most 64)")
    if value.lower().startswith(_RESERVED_PREFIXES):
        raise ArgumentError(field, f"{value!r} is set by the server")
    if not matches_pattern(value, tuple(allowed)):
        raise ArgumentError(
            field,
            f"{value!r} may not be set: the server's events.control.variables lists the "
            f"variables a request may set ({', '.join(allowed) or 'none'})",
        )
    return value


def recording_path(value: str, directory: str, field: str, default_name: str) -> str:
    """``value`` (relative, or empty = ``default_name``) joined under ``directory``; refused
    if it would leave it or is not a plain .wav/.mp3/.ogg file name."""
    relative = value or default_name
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts) or relative.startswith("/"):
        raise ArgumentError(field, "must be a relative path with no empty, . or .. segment")
    for part in parts:
        _match(_PATH_SEGMENT, part, field, "path segments are letters, digits and _ . -")
    if not relative.endswith(RECORDING_SUFFIXES):
        raise ArgumentError(field, f"must end with one of {', '.join(RECORDING_SUFFIXES)}")
    if len(parts) > 8:
        raise ArgumentError(field, "at most 8 path segments")
    root = PurePosixPath(directory)
    if not root.is_absolute() or not all(_PATH_SEGMENT.fullmatch(p) for p in root.parts[1:]):
        raise ArgumentError(field, "recordings directory is not configured correctly")
    return str(root.joinpath(*parts))


def escape_value(value: str) -> str:
    """A validated :func:`text` value as one ``{name=value}`` element on a command line."""
    return value.replace(",", "\\,").replace(" ", "\\s")


# -- commands -----------------------------------------------------------------------------


def hangup(channel: str, hangup_cause: str = "") -> Command:
    return Command("uuid_kill", f"{channel} {hangup_cause or 'NORMAL_CLEARING'}")


def transfer(channel: str, to: str, dialplan_context: str, leg: TransferLeg = "") -> Command:
    flag = f"-{leg} " if leg else ""
    return Command("uuid_transfer", f"{channel} {flag}{to} XML {dialplan_context}")


def hold(channel: str) -> Command:
    return Command("uuid_hold", channel)


def unhold(channel: str) -> Command:
    return Command("uuid_hold", f"off {channel}")


def start_recording(channel: str, path: str, max_seconds: int = 0) -> Command:
    limit = f" {max_seconds}" if max_seconds else ""
    return Command("uuid_record", f"{channel} start {path}{limit}")


def stop_recording(channel: str, path: str = "") -> Command:
    return Command("uuid_record", f"{channel} stop {path or 'all'}")


def send_dtmf(channel: str, dtmf: str) -> Command:
    return Command("uuid_send_dtmf", f"{channel} {dtmf}")


def _variables(values: Mapping[str, str]) -> str:
    return "{" + ",".join(f"{name}={escape_value(v)}" for name, v in values.items()) + "}"


def originate(
    new_uuid: str,
    user: str,
    user_domain: str,
    to: str,
    dialplan_context: str,
    *,
    caller_id_name: str = "",
    caller_id_number: str = "",
    ring_seconds: int = DEFAULT_RING_SECONDS,
    auto_answer: bool = False,
    variables: Mapping[str, str] | None = None,
) -> Command:
    """``originate {vars}user/<user>@<domain> <to> XML <context>``: ring the extension (all
    its devices: the ``user/`` endpoint uses its dial-string), then send it to ``to``."""
    values = _leg_variables(new_uuid, ring_seconds, auto_answer, variables)
    if caller_id_name:
        values["origination_caller_id_name"] = caller_id_name
    if caller_id_number:
        values["origination_caller_id_number"] = caller_id_number
    return Command(
        "originate",
        f"{_variables(values)}user/{user}@{user_domain} {to} XML {dialplan_context}",
    )


def eavesdrop(
    new_uuid: str,
    user: str,
    user_domain: str,
    target: str,
    mode: EavesdropMode = "listen",
    *,
    auto_answer: bool = False,
) -> Command:
    """``originate {vars}user/<supervisor>@<domain> &eavesdrop(<uuid>)``; whisper and barge
    set mod_dptools' ``eavesdrop_whisper_aleg`` / ``_bleg`` (the target is the a-leg).
    ``eavesdrop_enable_dtmf=false`` pins the mode asked for: the supervisor's keypad cannot
    turn a listen into a whisper or a barge (mod_dptools' 1/2/3 digits)."""
    values = _leg_variables(new_uuid, DEFAULT_RING_SECONDS, auto_answer, None)
    values["eavesdrop_enable_dtmf"] = "false"
    if mode in ("whisper", "barge"):
        values["eavesdrop_whisper_aleg"] = "true"
    if mode == "barge":
        values["eavesdrop_whisper_bleg"] = "true"
    return Command(
        "originate", f"{_variables(values)}user/{user}@{user_domain} &eavesdrop({target})"
    )


def _leg_variables(
    new_uuid: str, ring_seconds: int, auto_answer: bool, variables: Mapping[str, str] | None
) -> dict[str, str]:
    values = dict(variables or {})
    values["origination_uuid"] = new_uuid
    values["originate_timeout"] = str(ring_seconds)
    values[ORIGINATE_MARK] = "true"
    if auto_answer:
        values["sip_auto_answer"] = "true"
    return values


def ring_seconds(value: int, field: str) -> int:
    if value == 0:
        return DEFAULT_RING_SECONDS
    if not 0 < value <= MAX_RING_SECONDS:
        raise ArgumentError(field, f"must be 1-{MAX_RING_SECONDS} seconds (0 = default)")
    return value


def reply_error(body: str) -> str | None:
    """FreeSWITCH's reason when a job result is an error (``-ERR No such channel!``,
    ``-USAGE: ...``), ``None`` for success."""
    stripped = body.strip()
    if stripped.startswith("+OK"):
        return None
    return stripped.removeprefix("-ERR").strip() or stripped or "empty reply"
