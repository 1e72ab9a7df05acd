"""Directory reads and writes in Redis, in the seed's layout.

- Extensions: hash ``cti_exten@<domain>``, field = id, value = the seed's JSON (one
  parser/serializer: :mod:`cti.directory_entry`). Reads always parse the stored
  value, so an entry written by hand (``redis-cli HSET``) is read like any other.
- Derived, same cluster slot as the domain's hash: the alias index
  ``{cti_exten@<domain>}:aliases`` (lower-cased alias -> id) and template usage counts
  ``{cti_exten@<domain>}:template-refs``. Only API writes maintain them. An index entry is
  trusted only after checking that the extension it names still has that alias, so a stale
  entry never blocks a write; an alias written by hand is not indexed, so a collision with
  it is not detected until the entry is rewritten through the API.
- Templates ``cti_template``, domain settings ``cti_domain`` (name -> JSON).

Every write is one ``WATCH``/``MULTI``/``EXEC`` transaction over one hash slot, retried on
``WatchError`` (a concurrent writer), sent bracketed as :mod:`directory_service.api.write_plan`
describes. Checks that involve another slot (does the template exist, does the domain still
have extensions) are read just before the transaction and are not atomic with it; see the
README for the narrow races that leaves.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

import redis
from redis.client import Pipeline

from cti import redis_keys
from cti.changes import ChangeKind, ChangeOp
from cti.directory_entry import DirectoryEntry, ExtensionFormatError, parse_entry
from cti.redis_client import publish_in_transaction
from cti.text import redis_text
from cti.transactions import watch_transaction
from directory_service.api import errors
from directory_service.api.validation import domain_name, extension_name, template_name
from directory_service.api.write_plan import (
    Bracket,
    ExtensionWrite,
    extension_brackets,
    settings_bracket,
)
from directory_service.lookup import render
from directory_service.unusable import report_unusable

log = logging.getLogger(__name__)

T = TypeVar("T")


Raw = bytes | str
"""A stored value as redis-py returns it (bytes: clients are made without decoding)."""


def _bytes(value: Raw) -> bytes:
    return value.encode() if isinstance(value, str) else value


ListPosition = tuple[str, str, str]
"""Where a listing continues: (domain, HSCAN cursor, last id returned from that batch)."""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def etag_of(raw: Raw | None) -> str:
    """A hash of the stored bytes: any change, by anyone, changes it."""
    return hashlib.blake2b(_bytes(raw or b""), digest_size=10).hexdigest()


@dataclass(frozen=True)
class StoredExtension:
    domain: str
    extension_id: str
    entry: DirectoryEntry
    etag: str

    @property
    def name(self) -> str:
        return extension_name(self.domain, self.extension_id)


@dataclass(frozen=True)
class StoredTemplate:
    template: str
    entry: DirectoryEntry
    etag: str
    usage_count: int = 0


@dataclass(frozen=True)
class StoredDomain:
    domain: str
    entry: DirectoryEntry
    etag: str
    extension_count: int = 0


def _parse(
    name: str, raw: Raw, where: tuple[str, str], user_id: str | None = None
) -> DirectoryEntry:
    """The stored entry at ``where`` (Redis key, field), or FAILED_PRECONDITION if it is
    broken (the same test as lookups: :func:`render.servable_entry`), logged once."""
    try:
        return render.servable_entry(raw, user_id)
    except ExtensionFormatError as exc:
        report_unusable(*where, str(exc))
        raise errors.stored_value_invalid(name, str(exc)) from None


def _check_etag(name: str, given: str, raw: Raw | None) -> None:
    if given and given != etag_of(raw):
        raise errors.etag_mismatch(name)


class DirectoryStore:
    """All directory reads and writes of the API. Thread-safe (redis-py pools)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    # -----------------------------------------------------------------------------------
    # Transactions

    def _transact(
        self,
        name: str,
        watch: Sequence[str],
        plan: Callable[[Pipeline], tuple[T, list[Bracket]]],
        deadline: float | None = None,
    ) -> T:
        """Run ``plan`` (reads under WATCH, raises ApiError to refuse) then send its
        brackets in one MULTI/EXEC; start over if a watched key changed meanwhile."""

        def write(pipe: Pipeline) -> T:
            result, brackets = plan(pipe)
            pipe.multi()
            for bracket in brackets:
                for command in bracket.redis_commands():
                    if command[0] == "PUBLISH":
                        publish_in_transaction(pipe, command[1], command[2], watch[0])
                    else:
                        pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            pipe.execute()
            return result

        return watch_transaction(self.client, watch, write, name=name, deadline=deadline)

    # -----------------------------------------------------------------------------------
    # Extensions: reads

    def get_extension(self, domain: str, extension_id: str) -> StoredExtension:
        raw = self.client.hget(redis_keys.extensions(domain), extension_id)
        name = extension_name(domain, extension_id)
        if raw is None:
            raise errors.not_found("extension", name)
        key = redis_keys.extensions(domain)
        entry = _parse(name, raw, (key, extension_id), extension_id)
        return StoredExtension(domain, extension_id, entry, etag_of(raw))

    def extension_domains(self) -> list[str]:
        """Every domain that has an extension hash, sorted."""
        found = {
            redis_keys.domain_of_extensions_key(redis_text(key))
            for key in self.client.scan_iter(match=redis_keys.EXTENSIONS_PREFIX + "*", count=1000)
        }
        return sorted(d for d in found if d)

    def list_extensions(
        self,
        domain: str | None,
        position: ListPosition | None,
        limit: int,
        template: str = "",
        id_prefix: str = "",
    ) -> tuple[list[StoredExtension], ListPosition | None]:
        """Up to ``limit`` extensions from ``position`` on; ``domain`` None = all domains
        (in name order). Within a domain the order is Redis's ``HSCAN`` order: a page costs
        O(page size) whatever the domain's size, and an entry present for the whole listing
        is returned at least once (a concurrent write may repeat or miss the entries it
        touches). Returns the page and where to continue (None at the end). Entries that
        do not parse are skipped with a warning (Get reports them)."""
        domains = [domain] if domain is not None else self.extension_domains()
        page: list[StoredExtension] = []
        for current in domains:
            if position is not None and current < position[0]:
                continue
            start = position if position is not None and current == position[0] else None
            resume = self._scan_domain(current, start, limit, template, id_prefix, page)
            if resume is not None:
                return page, resume
            if len(page) >= limit:
                # This domain is done: continue after it ("\0" sorts before any name).
                return page, (current + "\0", "0", "")
        return page, None

    def _scan_domain(
        self,
        domain: str,
        start: ListPosition | None,
        limit: int,
        template: str,
        id_prefix: str,
        page: list[StoredExtension],
    ) -> ListPosition | None:
        """Append ``domain``'s entries to ``page`` until it holds ``limit``; the position
        after the last one appended if the domain has more, else None."""
        key = redis_keys.extensions(domain)
        match = _glob_escape(id_prefix) + "*" if id_prefix else None
        cursor = int(start[1]) if start is not None else 0
        resume_after = start[2].encode() if start is not None and start[2] else None
        while True:
            next_cursor, batch = self.client.hscan(key, cursor, match=match, count=limit)
            items = [(_bytes(k), v) for k, v in cast(dict[Raw, Raw], batch).items()]
            if resume_after is not None:
                ids = [k for k, _ in items]
                # Skip through the last entry already returned; if it is gone, take the
                # whole batch again (a repeat rather than a miss).
                items = items[ids.index(resume_after) + 1 :] if resume_after in ids else items
                resume_after = None
            for index, (raw_id, raw) in enumerate(items):
                # Not UTF-8: decodes to lone surrogates, which servable_entry refuses.
                extension_id = redis_text(raw_id)
                try:
                    entry = render.servable_entry(raw, extension_id)
                except ExtensionFormatError as exc:
                    report_unusable(key, extension_id, str(exc))  # Get reports it too
                    continue
                if template and entry.template != template:
                    continue
                page.append(StoredExtension(domain, extension_id, entry, etag_of(raw)))
                if len(page) >= limit:
                    if index == len(items) - 1 and int(next_cursor) == 0:
                        return None
                    return (domain, str(cursor), extension_id)
            cursor = int(next_cursor)
            if cursor == 0:
                return None

    # -----------------------------------------------------------------------------------
    # Extensions: writes

    def _template_exists(self, template: str) -> bool:
        return bool(self.client.hexists(redis_keys.TEMPLATES, template))

    def _require_templates(self, entries: Iterable[DirectoryEntry]) -> None:
        for template in sorted({e.template for e in entries if e.template}):
            if not self._template_exists(template):
                raise errors.failed_precondition(
                    "TEMPLATE_NOT_FOUND",
                    f"template {template_name(template)} does not exist",
                    template=template_name(template),
                )

    @staticmethod
    def _watch_domain(domain: str) -> list[str]:
        return [
            redis_keys.extensions(domain),
            redis_keys.aliases(domain),
            redis_keys.template_refs(domain),
        ]

    def _alias_owners(
        self, pipe: Pipeline, domain: str, aliases: Sequence[str]
    ) -> dict[str, str | None]:
        """Lower-cased alias -> the id the index names, if that extension still has it."""
        if not aliases:
            return {}
        owners = [
            redis_text(o) if o is not None else None
            for o in pipe.hmget(redis_keys.aliases(domain), list(aliases))
        ]
        claimed = sorted({o for o in owners if o is not None})
        current: dict[str, str] = {}
        if claimed:
            for owner, raw in zip(
                claimed, pipe.hmget(redis_keys.extensions(domain), claimed), strict=True
            ):
                if raw is not None:
                    with contextlib.suppress(ExtensionFormatError):
                        current[owner] = parse_entry(raw).alias.lower()
        return {
            alias: owner if owner is not None and current.get(owner) == alias else None
            for alias, owner in zip(aliases, owners, strict=True)
        }

    def _check_names(
        self,
        pipe: Pipeline,
        domain: str,
        writes: Sequence[ExtensionWrite],
        owners: Mapping[str, str | None],
    ) -> None:
        """FreeSWITCH finds a user by id or alias, case-insensitively: a new id must not be
        another extension's alias, a new alias nobody else's id or alias (ALREADY_EXISTS)."""
        creating = {w.extension_id for w in writes if w.old is None}
        new_aliases = {
            w.extension_id: alias
            for w in writes
            if w.new is not None and (alias := w.new.alias.lower()) and alias != w.extension_id
        }
        as_ids = sorted(set(new_aliases.values()) - creating)
        stored_ids = (
            {
                a
                for a, raw in zip(
                    as_ids, pipe.hmget(redis_keys.extensions(domain), as_ids), strict=True
                )
                if raw
            }
            if as_ids
            else set()
        )
        for extension_id in sorted(creating):
            owner = owners.get(extension_id)
            if owner is not None and owner != extension_id:
                raise self._taken("ID_IS_AN_ALIAS", domain, extension_id, owner)
        claims: dict[str, str] = {}
        for extension_id, alias in new_aliases.items():
            if alias in stored_ids or alias in creating:
                other: str | None = alias
            else:
                other = owners.get(alias) or claims.get(alias)
            if other is not None and other != extension_id:
                raise self._taken("ALIAS_CONFLICT", domain, alias, other)
            claims[alias] = extension_id

    @staticmethod
    def _taken(reason: str, domain: str, wanted: str, owner: str) -> errors.ApiError:
        owner_name = extension_name(domain, owner)
        what = "number-alias" if reason == "ALIAS_CONFLICT" else "extension id"
        return errors.already_exists(
            reason,
            f"{what} {wanted!r} is already used by {owner_name} (FreeSWITCH matches ids and "
            "aliases alike, case-insensitively)",
            name=owner_name,
        )

    def _write_extensions(
        self,
        domain: str,
        plan_writes: Callable[[Mapping[str, Raw | None]], list[ExtensionWrite]],
        ids: Sequence[str],
        name: str,
        deadline: float | None,
    ) -> list[StoredExtension]:
        """The one write path: read ``ids``' stored values under WATCH, let ``plan_writes``
        decide (raising to refuse), check names, and commit with indexes and events."""

        def plan(pipe: Pipeline) -> tuple[list[StoredExtension], list[Bracket]]:
            key = redis_keys.extensions(domain)
            raws = dict(zip(ids, pipe.hmget(key, list(ids)), strict=True)) if ids else {}
            writes = plan_writes(raws)
            aliases = sorted(
                {
                    e.alias.lower()
                    for w in writes
                    for e in (w.old, w.new)
                    if e is not None and e.alias
                }
                | {w.extension_id for w in writes if w.old is None}
            )
            owners = self._alias_owners(pipe, domain, aliases)
            self._check_names(pipe, domain, writes, owners)
            templates = sorted(
                {e.template for w in writes for e in (w.old, w.new) if e is not None and e.template}
            )
            counts = (
                {
                    t: int(n or 0)
                    for t, n in zip(
                        templates,
                        pipe.hmget(redis_keys.template_refs(domain), templates),
                        strict=True,
                    )
                }
                if templates
                else {}
            )
            brackets = extension_brackets(domain, writes, counts, owners)
            stored = [
                StoredExtension(domain, w.extension_id, w.new, etag_of(w.new.to_json().encode()))
                for w in writes
                if w.new is not None
            ]
            return stored, brackets

        return self._transact(name, self._watch_domain(domain), plan, deadline)

    def create_extensions(
        self,
        domain: str,
        entries: Sequence[tuple[str, DirectoryEntry]],
        deadline: float | None = None,
    ) -> list[StoredExtension]:
        """Create all of ``entries`` or none (ALREADY_EXISTS names the first taken id)."""
        self._require_templates(e for _, e in entries)
        ids = [i for i, _ in entries]
        seen: set[str] = set()
        for extension_id in ids:
            if extension_id in seen:
                raise errors.invalid_argument(
                    "requests", f"extension id {extension_id!r} given twice"
                )
            seen.add(extension_id)

        def plan_writes(raws: Mapping[str, Raw | None]) -> list[ExtensionWrite]:
            for extension_id, _ in entries:
                if raws.get(extension_id) is not None:
                    name = extension_name(domain, extension_id)
                    raise errors.already_exists(
                        "EXTENSION_ALREADY_EXISTS", f"{name} already exists", name=name
                    )
            return [ExtensionWrite(i, None, e) for i, e in entries]

        name = extension_name(domain, ids[0]) if len(ids) == 1 else domain_name(domain)
        return self._write_extensions(domain, plan_writes, ids, name, deadline)

    def update_extension(
        self,
        domain: str,
        extension_id: str,
        change: Callable[[DirectoryEntry], DirectoryEntry],
        etag: str = "",
        deadline: float | None = None,
    ) -> StoredExtension:
        """Apply ``change`` (pure; may raise ApiError) to the stored entry, atomically."""
        name = extension_name(domain, extension_id)
        checked_templates: set[str] = set()

        def plan_writes(raws: Mapping[str, Raw | None]) -> list[ExtensionWrite]:
            raw = raws[extension_id]
            if raw is None:
                raise errors.not_found("extension", name)
            _check_etag(name, etag, raw)
            old = _parse(name, raw, (redis_keys.extensions(domain), extension_id), extension_id)
            new = change(old)
            if (
                new.template
                and new.template != old.template
                and new.template not in checked_templates
            ):
                self._require_templates([new])
                checked_templates.add(new.template)
            return [ExtensionWrite(extension_id, old, new)]

        (stored,) = self._write_extensions(domain, plan_writes, [extension_id], name, deadline)
        return stored

    def delete_extension(
        self, domain: str, extension_id: str, etag: str = "", deadline: float | None = None
    ) -> None:
        name = extension_name(domain, extension_id)

        def plan_writes(raws: Mapping[str, Raw | None]) -> list[ExtensionWrite]:
            raw = raws[extension_id]
            if raw is None:
                raise errors.not_found("extension", name)
            _check_etag(name, etag, raw)
            try:
                old = parse_entry(raw)
            except ExtensionFormatError:
                old = DirectoryEntry()  # an unreadable entry can still be deleted
            return [ExtensionWrite(extension_id, old, None)]

        self._write_extensions(domain, plan_writes, [extension_id], name, deadline)

    # -----------------------------------------------------------------------------------
    # Templates

    def _template_usage(self) -> dict[str, int]:
        """Template -> extensions using it, summed over domains (API-written ones)."""
        usage: dict[str, int] = {}
        for domain in self.extension_domains():
            for template, count in self.client.hgetall(redis_keys.template_refs(domain)).items():
                usage[redis_text(template)] = usage.get(redis_text(template), 0) + int(count)
        return usage

    def _template_user(self, template: str) -> str | None:
        """The name of one extension using ``template``, also among hand-written entries
        (a full scan: template deletion is rare, and a dangling template breaks lookups)."""
        for domain in self.extension_domains():
            refs = self.client.hget(redis_keys.template_refs(domain), template)
            if refs is not None and int(refs) > 0:
                return domain_name(domain)
            needle = f'"{template}"'.encode()
            for extension_id, raw in self.client.hscan_iter(
                redis_keys.extensions(domain), count=1000
            ):
                if needle in raw:
                    try:
                        if parse_entry(raw).template == template:
                            return extension_name(domain, redis_text(extension_id))
                    except ExtensionFormatError:
                        continue
        return None

    def get_template(self, template: str) -> StoredTemplate:
        raw = self.client.hget(redis_keys.TEMPLATES, template)
        name = template_name(template)
        if raw is None:
            raise errors.not_found("template", name)
        usage = self._template_usage().get(template, 0)
        entry = _parse(name, raw, (redis_keys.TEMPLATES, template))
        return StoredTemplate(template, entry, etag_of(raw), usage)

    def list_templates(self, after: str, limit: int) -> tuple[list[StoredTemplate], str | None]:
        stored = {redis_text(k): v for k, v in self.client.hgetall(redis_keys.TEMPLATES).items()}
        names = sorted(n for n in stored if n > after)
        usage = self._template_usage() if names else {}
        page: list[StoredTemplate] = []
        for template in names[:limit]:
            try:
                entry = render.servable_entry(stored[template])
            except ExtensionFormatError as exc:
                report_unusable(redis_keys.TEMPLATES, template, str(exc))
                continue
            page.append(
                StoredTemplate(template, entry, etag_of(stored[template]), usage.get(template, 0))
            )
        return page, (names[limit - 1] if len(names) > limit else None)

    def _write_settings(
        self,
        kind: ChangeKind,
        hash_key: str,
        key: str,
        name: str,
        decide: Callable[[Raw | None], DirectoryEntry | None],
        deadline: float | None,
    ) -> tuple[DirectoryEntry | None, Raw | None]:
        """A template or domain-settings write: ``decide(stored raw)`` -> new entry (None
        = delete), raising to refuse."""

        def plan(
            pipe: Pipeline,
        ) -> tuple[tuple[DirectoryEntry | None, Raw | None], list[Bracket]]:
            raw = pipe.hget(hash_key, key)
            new = decide(raw)
            op: ChangeOp = "delete" if new is None else ("create" if raw is None else "update")
            bracket = settings_bracket(kind, op, hash_key, key, new)
            return (new, raw), [bracket]

        return self._transact(name, [hash_key], plan, deadline)

    def create_template(
        self, template: str, entry: DirectoryEntry, deadline: float | None = None
    ) -> StoredTemplate:
        name = template_name(template)

        def decide(raw: Raw | None) -> DirectoryEntry:
            if raw is not None:
                raise errors.already_exists(
                    "TEMPLATE_ALREADY_EXISTS", f"{name} already exists", name=name
                )
            return entry

        self._write_settings("template", redis_keys.TEMPLATES, template, name, decide, deadline)
        return StoredTemplate(template, entry, etag_of(entry.to_json().encode()))

    def update_template(
        self,
        template: str,
        change: Callable[[DirectoryEntry], DirectoryEntry],
        etag: str = "",
        deadline: float | None = None,
    ) -> StoredTemplate:
        name = template_name(template)

        def decide(raw: Raw | None) -> DirectoryEntry:
            if raw is None:
                raise errors.not_found("template", name)
            _check_etag(name, etag, raw)
            return change(_parse(name, raw, (redis_keys.TEMPLATES, template)))

        new, _ = self._write_settings(
            "template", redis_keys.TEMPLATES, template, name, decide, deadline
        )
        assert new is not None
        usage = self._template_usage().get(template, 0)
        return StoredTemplate(template, new, etag_of(new.to_json().encode()), usage)

    def delete_template(self, template: str, etag: str = "", deadline: float | None = None) -> None:
        name = template_name(template)
        if self.client.hexists(redis_keys.TEMPLATES, template):
            user = self._template_user(template)
            if user is not None:
                raise errors.failed_precondition(
                    "TEMPLATE_IN_USE",
                    f"{name} is still used (e.g. by {user})",
                    name=name,
                    used_by=user,
                )

        def decide(raw: Raw | None) -> None:
            if raw is None:
                raise errors.not_found("template", name)
            _check_etag(name, etag, raw)

        self._write_settings("template", redis_keys.TEMPLATES, template, name, decide, deadline)

    # -----------------------------------------------------------------------------------
    # Domains

    def get_domain(self, domain: str) -> StoredDomain:
        name = domain_name(domain)
        raw = self.client.hget(redis_keys.DOMAINS, domain)
        count = int(self.client.hlen(redis_keys.extensions(domain)))
        if raw is None and count == 0:
            raise errors.not_found("domain", name)
        entry = (
            _parse(name, raw, (redis_keys.DOMAINS, domain)) if raw is not None else DirectoryEntry()
        )
        return StoredDomain(domain, entry, etag_of(raw), count)

    def list_domains(self, after: str, limit: int) -> tuple[list[StoredDomain], str | None]:
        settings = {redis_text(k): v for k, v in self.client.hgetall(redis_keys.DOMAINS).items()}
        names = sorted(n for n in set(settings) | set(self.extension_domains()) if n > after)
        page: list[StoredDomain] = []
        for domain in names[:limit]:
            raw = settings.get(domain)
            try:
                entry = render.servable_entry(raw) if raw is not None else DirectoryEntry()
            except ExtensionFormatError as exc:
                report_unusable(redis_keys.DOMAINS, domain, str(exc))
                entry = DirectoryEntry()
            count = int(self.client.hlen(redis_keys.extensions(domain)))
            page.append(StoredDomain(domain, entry, etag_of(raw), count))
        return page, (names[limit - 1] if len(names) > limit else None)

    def create_domain(
        self, domain: str, entry: DirectoryEntry, deadline: float | None = None
    ) -> StoredDomain:
        name = domain_name(domain)

        def decide(raw: Raw | None) -> DirectoryEntry:
            if raw is not None:
                raise errors.already_exists(
                    "DOMAIN_ALREADY_EXISTS", f"{name} already exists", name=name
                )
            return entry

        self._write_settings("domain", redis_keys.DOMAINS, domain, name, decide, deadline)
        count = int(self.client.hlen(redis_keys.extensions(domain)))
        return StoredDomain(domain, entry, etag_of(entry.to_json().encode()), count)

    def update_domain(
        self,
        domain: str,
        change: Callable[[DirectoryEntry], DirectoryEntry],
        etag: str = "",
        deadline: float | None = None,
    ) -> StoredDomain:
        """A domain that has extensions but no settings yet can be updated (settings are
        created)."""
        name = domain_name(domain)
        count = int(self.client.hlen(redis_keys.extensions(domain)))

        def decide(raw: Raw | None) -> DirectoryEntry:
            if raw is None and count == 0:
                raise errors.not_found("domain", name)
            _check_etag(name, etag, raw)
            stored = _parse(name, raw, (redis_keys.DOMAINS, domain)) if raw is not None else None
            return change(stored or DirectoryEntry())

        new, _ = self._write_settings("domain", redis_keys.DOMAINS, domain, name, decide, deadline)
        assert new is not None
        return StoredDomain(domain, new, etag_of(new.to_json().encode()), count)

    def delete_domain(self, domain: str, etag: str = "", deadline: float | None = None) -> None:
        name = domain_name(domain)
        count = int(self.client.hlen(redis_keys.extensions(domain)))
        if count:
            raise errors.failed_precondition(
                "DOMAIN_NOT_EMPTY",
                f"{name} still has {count} extension(s); delete them first",
                name=name,
            )

        def decide(raw: Raw | None) -> None:
            if raw is None:
                raise errors.not_found("domain", name)
            _check_etag(name, etag, raw)

        self._write_settings("domain", redis_keys.DOMAINS, domain, name, decide, deadline)
