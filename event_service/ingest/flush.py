"""Directory change events -> ``xml_flush_cache`` on every FreeSWITCH we consume.

FreeSWITCH caches a ``cacheable`` user per key (id and alias cached separately) until it is
told to forget it, so each committed directory write must reach it. An extension change
flushes each of its ids (``xml_flush_cache id <user> <domain>``); a template or domain
change may affect any user, so it flushes the whole cache.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import redis

from cti import redis_client, redis_keys
from cti.changes import DirectoryChange

log = logging.getLogger(__name__)


def flush_commands(change: DirectoryChange) -> list[tuple[str, str]]:
    """(api command, argument) pairs for one change (pure).

    A name with whitespace or a control character cannot be one argument (a line break
    would even end the ``api`` command and start another on FreeSWITCH): such a change,
    which no API write produces, flushes the whole cache instead."""
    ids = change.flush_ids()
    if change.kind == "extension" and _word(change.domain) and ids and all(map(_word, ids)):
        return [("xml_flush_cache", f"id {user} {change.domain}") for user in ids]
    return [("xml_flush_cache", "")]


def _word(text: str) -> bool:
    return bool(text) and text.isprintable() and not any(c.isspace() for c in text)


class ChangeFlusher(threading.Thread):
    """Subscribes to the change channel and hands each flush to ``send`` (every node)."""

    def __init__(
        self,
        redis_url: str,
        send: Callable[[Sequence[tuple[str, str]]], None],
        stop: threading.Event,
    ) -> None:
        super().__init__(name="directory-flush", daemon=True)
        self.redis_url = redis_url
        self.send = send
        self.stop_event = stop
        self.subscribed = threading.Event()

    def run(self) -> None:
        warned = False
        lost = False
        while not self.stop_event.is_set():
            client = redis_client.connect(self.redis_url)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
                pubsub.subscribe(redis_keys.DIRECTORY_CHANGES_CHANNEL)
                self.subscribed.set()
                warned = False
                if lost:
                    # Pub/sub kept nothing for us while we were away: whatever changed
                    # then is unknown, so FreeSWITCH forgets every cached user.
                    lost = False
                    self.send([("xml_flush_cache", "")])
                while not self.stop_event.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self._handle(message["data"])
            except redis.RedisError as exc:
                self.subscribed.clear()
                lost = True
                if not warned:
                    log.warning("change subscription lost, retrying", extra={"error": str(exc)})
                    warned = True
                self.stop_event.wait(1.0)
            finally:
                client.close()

    def _handle(self, payload: bytes) -> None:
        try:
            change = DirectoryChange.from_json(payload)
        except ValueError as exc:
            log.warning("ignoring a malformed change event", extra={"error": str(exc)})
            return
        self.send(flush_commands(change))
