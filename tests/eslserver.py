"""A fake FreeSWITCH event socket (mod_event_socket's inbound protocol) on loopback TCP.

Speaks what a real one does: ``Content-Type: auth/request`` on connect, ``auth <pw>`` ->
``command/reply`` ``+OK accepted`` (or ``-ERR invalid`` and close; with ``acl_denied`` a
``text/rude-rejection`` instead of the auth request, as apply-inbound-acl does),
``event plain <names>`` -> ``+OK event listener enabled plain``, ``api <cmd>`` ->
``api/response`` with a ``Content-Length`` body, events as ``text/event-plain`` frames
whose ``Content-Length`` counts BYTES. Tests script it: :meth:`send_event` /
:meth:`send_raw` to subscribed clients, :attr:`api_replies` (command prefix -> body or
callable), :meth:`drop` (cut every client), :attr:`core_uuid` (stamped on events it
builds; change it to play a restart).

``bgapi <cmd>`` (with the client's ``Job-UUID`` header) is answered ``+OK Job-UUID: <id>``
at once, then the result -- looked up in :attr:`api_replies` like an ``api`` command --
comes as a BACKGROUND_JOB event to every client subscribed to it. :attr:`bgapi` lists
(command, Job-UUID) as received; with :attr:`hold_jobs` set, results wait until
:meth:`release_jobs` (to play a slow job).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote

from tests.support import ESL_DIR

ApiReply = str | Callable[[str], str]


def encode_event(headers: Mapping[str, str], body: str = "") -> bytes:
    """A complete ``text/event-plain`` frame for these (decoded) headers, and the event's
    own body if any (a BACKGROUND_JOB's result: an inner ``Content-Length``, as
    ``esl_event_serialize`` writes it)."""
    text = "".join(f"{name}: {quote(value, safe='')}\n" for name, value in headers.items())
    if body:
        text += f"Content-Length: {len(body.encode())}\n\n{body}"
    else:
        text += "\n"
    data = text.encode()
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(data) + data


def read_frame_file(path: Path) -> bytes:
    """A captured frame file (``Content-Length`` + ``Content-Type`` + body) as sent."""
    return path.read_bytes()


def fixture_frames() -> list[bytes]:
    return [read_frame_file(p) for p in sorted(ESL_DIR.glob("[0-9]*.txt"))]


def frame_headers(frame: bytes) -> dict[str, str]:
    """Decoded headers of a ``text/event-plain`` frame (test helper)."""
    from urllib.parse import unquote

    _, _, body = frame.partition(b"\n\n")
    headers = {}
    for line in body.decode().split("\n"):
        name, sep, value = line.partition(": ")
        if sep:
            headers[name] = unquote(value)
    return headers


_A_LEG_EVENTS = (2, 5, 6)
"""The captured A-leg's CHANNEL_CREATE, CHANNEL_ANSWER, CHANNEL_HANGUP_COMPLETE (003,
006, 007): an extension's call out, answered, hung up."""


def call_events(
    uuid_: str, extension: str = "1000", domain: str = "127.0.0.1"
) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """A fresh call of ``extension`` (create, answer, hangup) built from the captured
    frames: only the uuid and the extension differ. Stamp ``Event-Date-Timestamp`` (µs)
    when sending it (:func:`stamped`)."""
    frames = fixture_frames()
    built = []
    for index in _A_LEG_EVENTS:
        headers = frame_headers(frames[index])
        for name, value in list(headers.items()):
            if value == _CAPTURED_A_LEG:
                headers[name] = uuid_
        headers["variable_user_name"] = extension
        headers["variable_domain_name"] = domain
        headers["Caller-Username"] = extension
        headers["Caller-Caller-ID-Number"] = extension
        headers["Channel-Presence-ID"] = f"{extension}@{domain}"
        built.append(headers)
    return built[0], built[1], built[2]


def stamped(headers: Mapping[str, str]) -> dict[str, str]:
    """The event with ``Event-Date-Timestamp`` = now (µs), as FreeSWITCH stamps it."""
    return {**headers, "Event-Date-Timestamp": str(time.time_ns() // 1000)}


_CAPTURED_A_LEG = "0b7b74e2-c831-4fcf-b4c2-07630968a707"


class _Client:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()
        self.subscribed = False
        self.events: str = ""

    def send(self, data: bytes) -> None:
        with self.lock:
            self.sock.sendall(data)


class FakeFreeSwitch:
    def __init__(self, password: str = "ClueCon", acl_denied: bool = False) -> None:
        self.password = password
        self.acl_denied = acl_denied
        self.core_uuid = str(uuid.uuid4())
        self.api_replies: dict[str, ApiReply] = {}
        self.commands: list[str] = []
        self.bgapi: list[tuple[str, str]] = []
        self.hold_jobs = False
        self._held_jobs: list[tuple[str, str]] = []
        self.connections = 0
        self.sent = 0
        """Events sent with :meth:`send_event` / :meth:`send_events` (to count against)."""
        self._clients: list[_Client] = []
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.set_state()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- scripting ------------------------------------------------------------------------

    def set_state(
        self,
        registrations: Mapping[str, Sequence[Mapping[str, str]]] | None = None,
        channels: Sequence[Mapping[str, str]] | None = None,
        dumps: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        """What the reconcile commands answer: sofia profiles with their registration rows
        (``call-id``, ``user`` = user@host, ``contact``, ...), ``show channels`` rows, and
        the ``uuid_dump`` headers per uuid."""
        regs = {"internal": []} if registrations is None else dict(registrations)
        self.api_replies["sofia xmlstatus profile"] = lambda cmd: _profile_reg_xml(regs, cmd)
        self.api_replies["sofia xmlstatus"] = lambda _cmd: _profiles_xml(list(regs))
        self.api_replies["show channels as json"] = _channels_json(channels or [])
        dumped = dict(dumps or {})
        self.api_replies["uuid_dump"] = lambda cmd: _dump(dumped, cmd)
        self.api_replies.setdefault("xml_flush_cache", "+OK\n")

    def start(self) -> FakeFreeSwitch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        # close() alone does not wake a thread blocked in accept(): the socket would go on
        # listening (and serving) until the next connection. shutdown() wakes it.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self.drop()

    def subscribed_clients(self) -> int:
        with self._lock:
            return sum(1 for c in self._clients if c.subscribed)

    def wait_subscribed(self, count: int = 1, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.subscribed_clients() < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} subscriber(s) expected on {self.address}")
            time.sleep(0.01)

    def send_raw(self, data: bytes) -> None:
        """Send bytes (whole frames) to every subscribed client."""
        with self._lock:
            clients = [c for c in self._clients if c.subscribed]
        for client in clients:
            with contextlib.suppress(OSError):
                client.send(data)

    def send_event(self, headers: Mapping[str, str]) -> None:
        self.send_events([headers])

    def send_events(self, events: Sequence[Mapping[str, str]]) -> None:
        """Several events in one write (stamped with this server's Core-UUID)."""
        frames = [encode_event({**headers, "Core-UUID": self.core_uuid}) for headers in events]
        self.send_raw(b"".join(frames))
        self.sent += len(frames)

    def send_frames(self, frames: list[bytes], restamp: bool = True) -> None:
        """Replay captured frames (re-stamped with this server's Core-UUID by default)."""
        for frame in frames:
            if restamp:
                self.send_event(frame_headers(frame))
            else:
                self.send_raw(frame)

    def release_jobs(self) -> None:
        """Send the BACKGROUND_JOB results held back by :attr:`hold_jobs`."""
        with self._lock:
            held, self._held_jobs = self._held_jobs, []
        for command, job_uuid in held:
            self._job_result(command, job_uuid)

    def _job_result(self, command: str, job_uuid: str) -> None:
        name, _, argument = command.partition(" ")
        headers = {
            "Event-Name": "BACKGROUND_JOB",
            "Core-UUID": self.core_uuid,
            "Job-UUID": job_uuid,
            "Job-Command": name,
            "Job-Command-Arg": argument,
        }
        frame = encode_event(headers, self._api(command))
        with self._lock:
            clients = [
                c for c in self._clients if c.subscribed and "BACKGROUND_JOB" in c.events.split()
            ]
        for client in clients:
            with contextlib.suppress(OSError):
                client.send(frame)

    def drop(self) -> None:
        """Cut every connection, as a FreeSWITCH restart or a network fault would."""
        with self._lock:
            clients, self._clients = self._clients, []
        for client in clients:
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)
            client.sock.close()

    # -- protocol -------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            client = _Client(sock)
            with self._lock:
                self._clients.append(client)
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: _Client) -> None:
        try:
            if self.acl_denied:  # mod_event_socket's words, before any password is asked
                message = b"Access Denied, go away.\n"
                client.send(
                    b"Content-Type: text/rude-rejection\nContent-Length: %d\n\n" % len(message)
                    + message
                )
                return
            client.send(b"Content-Type: auth/request\n\n")
            reader = client.sock.makefile("rb")
            authed = False
            while True:
                lines = _read_command(reader)
                if lines is None:
                    return
                command = " ".join(lines).rstrip()
                if command.startswith("bgapi "):
                    self._bgapi(client, lines)
                    continue
                self.commands.append(command)
                if not authed:
                    if command == f"auth {self.password}":
                        authed = True
                        client.send(_reply("+OK accepted"))
                    else:
                        client.send(_reply("-ERR invalid"))
                        return
                elif command.startswith("event plain "):
                    client.events = command[len("event plain ") :]
                    client.subscribed = True
                    client.send(_reply("+OK event listener enabled plain"))
                elif command.startswith("api "):
                    body = self._api(command[4:]).encode()
                    client.send(
                        b"Content-Type: api/response\nContent-Length: %d\n\n" % len(body) + body
                    )
                elif command == "exit":
                    client.send(_reply("+OK bye"))
                    return
                else:
                    client.send(_reply("+OK"))
        except OSError:
            return
        finally:
            client.subscribed = False
            with contextlib.suppress(OSError):
                client.sock.close()

    def _bgapi(self, client: _Client, lines: list[str]) -> None:
        command = lines[0][len("bgapi ") :].rstrip()
        headers = dict(line.partition(": ")[::2] for line in lines[1:])
        job_uuid = headers.get("Job-UUID") or str(uuid.uuid4())
        self.commands.append(lines[0].rstrip())
        with self._lock:
            self.bgapi.append((command, job_uuid))
        client.send(_reply(f"+OK Job-UUID: {job_uuid}", {"Job-UUID": job_uuid}))
        if self.hold_jobs:
            with self._lock:
                self._held_jobs.append((command, job_uuid))
        else:
            self._job_result(command, job_uuid)

    def _api(self, command: str) -> str:
        for prefix in sorted(self.api_replies, key=len, reverse=True):
            if command.startswith(prefix):
                reply = self.api_replies[prefix]
                return reply(command) if callable(reply) else reply
        return f"-ERR {command.split()[0]} Command not found!\n"


def _read_command(reader: object) -> list[str] | None:
    """One command: its lines up to the blank line (the command, then any headers)."""
    lines: list[str] = []
    while True:
        line = reader.readline()  # type: ignore[attr-defined]
        if not line:
            return None
        text = line.decode().rstrip("\r\n")
        if not text:
            if lines:
                return lines
            continue
        lines.append(text)


def _reply(text: str, headers: Mapping[str, str] | None = None) -> bytes:
    extra = "".join(f"{name}: {value}\n" for name, value in (headers or {}).items())
    return f"Content-Type: command/reply\nReply-Text: {text}\n{extra}\n".encode()


# -- reconcile replies in FreeSWITCH's own formats (mod_sofia.c, mod_commands.c) -------------


def _xml_escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def _profiles_xml(profiles: list[str]) -> str:
    out = ['<?xml version="1.0" encoding="ISO-8859-1"?>', "<profiles>"]
    for name in profiles:
        out.append(
            f"<profile>\n<name>{name}</name>\n<type>profile</type>\n"
            f"<data>sip:mod_sofia@127.0.0.1:5060</data>\n<state>RUNNING (0)</state>\n</profile>"
        )
        out.append(
            f"<alias>\n<name>127.0.0.1</name>\n<type>alias</type>\n<data>{name}</data>\n"
            "<state>ALIASED</state>\n</alias>"
        )
    out.append("</profiles>\n")
    return "\n".join(out)


def _profile_reg_xml(regs: Mapping[str, Sequence[Mapping[str, str]]], command: str) -> str:
    words = command.split()  # sofia xmlstatus profile <name> reg
    name = words[3] if len(words) > 3 else ""
    if name not in regs:
        return "Invalid Profile!\n"
    out = [
        '<?xml version="1.0" encoding="ISO-8859-1"?>',
        "<profile>",
        f"  <profile-info>\n    <name>{name}</name>\n    <domain-name>N/A</domain-name>\n"
        f"    <registrations>{len(regs[name])}</registrations>\n  </profile-info>",
        "  <registrations>",
    ]
    for row in regs[name]:
        out.append("    <registration>")
        out.append(f"        <call-id>{row.get('call-id', '')}</call-id>")
        out.append(f"        <user>{row['user']}</user>")
        out.append(f"        <contact>{_xml_escape(row.get('contact', ''))}</contact>")
        out.append(f"        <agent>{_xml_escape(row.get('agent', ''))}</agent>")
        out.append(
            f"        <status>{row.get('status', 'Registered(UDP)')}(unknown) "
            "exp(2026-11-26 07:41:49) expsecs(3590)</status>"
        )
        out.append("        <ping-status>Reachable</ping-status>")
        out.append("        <ping-time>0.00</ping-time>")
        out.append(f"        <host>{row.get('host', 'vm')}</host>")
        out.append(f"        <network-ip>{row.get('network-ip', '127.0.0.1')}</network-ip>")
        out.append(f"        <network-port>{row.get('network-port', '5060')}</network-port>")
        auth_user = quote(row.get("sip-auth-user", row["user"].split("@")[0]), safe="")
        out.append(f"        <sip-auth-user>{auth_user}</sip-auth-user>")
        realm = row.get("sip-auth-realm", row["user"].partition("@")[2])
        out.append(f"        <sip-auth-realm>{realm}</sip-auth-realm>")
        out.append(f"        <mwi-account>{row['user']}</mwi-account>")
        out.append("    </registration>")
    out.append("  </registrations>")
    out.append("</profile>\n")
    return "\n".join(out)


_CHANNEL_COLUMNS = [
    "uuid",
    "direction",
    "created",
    "created_epoch",
    "name",
    "state",
    "cid_name",
    "cid_num",
    "ip_addr",
    "dest",
    "application",
    "application_data",
    "dialplan",
    "context",
    "read_codec",
    "read_rate",
    "read_bit_rate",
    "write_codec",
    "write_rate",
    "write_bit_rate",
    "secure",
    "hostname",
    "presence_id",
    "presence_data",
    "accountcode",
    "callstate",
    "callee_name",
    "callee_num",
    "callee_direction",
    "call_uuid",
    "sent_callee_name",
    "sent_callee_num",
    "initial_cid_name",
    "initial_cid_num",
    "initial_ip_addr",
    "initial_dest",
    "initial_dialplan",
    "initial_context",
]


def _channels_json(rows: Sequence[Mapping[str, str]]) -> str:
    import json

    if not rows:
        return json.dumps({"row_count": 0}) + "\n"
    full = [{column: str(row.get(column, "")) for column in _CHANNEL_COLUMNS} for row in rows]
    return json.dumps({"row_count": len(full), "rows": full}, indent="\t") + "\n"


def _dump(dumps: Mapping[str, Mapping[str, str]], command: str) -> str:
    words = command.split()
    headers = dumps.get(words[1]) if len(words) > 1 else None
    if headers is None:
        return "-ERR No such channel!\n"
    return "".join(f"{name}: {quote(value, safe='')}\n" for name, value in headers.items())
