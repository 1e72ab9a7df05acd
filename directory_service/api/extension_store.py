"""The store's extension part: get, list (HSCAN pages), and batch create / update / delete
with the alias index and template usage counts kept in the same transaction."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import cast

from redis.client import Pipeline

from cti import redis_keys
from cti.directory_entry import DirectoryEntry, ExtensionFormatError, parse_entry
from cti.text import redis_text
from directory_service.api import errors
from directory_service.api.stored import (
    ListPosition,
    Raw,
    StoreBase,
    StoredExtension,
    check_etag,
    etag_of,
    parse_stored,
    raw_bytes,
)
from directory_service.api.validation import domain_name, extension_name, template_name
from directory_service.api.write_plan import Bracket, ExtensionWrite, extension_brackets
from directory_service.lookup import render
from directory_service.unusable import report_unusable

log = logging.getLogger(__name__)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class ExtensionStore(StoreBase):
    """Extension reads and writes."""

    def get_extension(self, domain: str, extension_id: str) -> StoredExtension:
        raw = self.client.hget(redis_keys.extensions(domain), extension_id)
        name = extension_name(domain, extension_id)
        if raw is None:
            raise errors.not_found("extension", name)
        key = redis_keys.extensions(domain)
        entry = parse_stored(name, raw, (key, extension_id), extension_id)
        return StoredExtension(domain, extension_id, entry, etag_of(raw))

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
            items = [(raw_bytes(k), v) for k, v in cast(dict[Raw, Raw], batch).items()]
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
            check_etag(name, etag, raw)
            old = parse_stored(
                name, raw, (redis_keys.extensions(domain), extension_id), extension_id
            )
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
            check_etag(name, etag, raw)
            try:
                old = parse_entry(raw)
            except ExtensionFormatError:
                old = DirectoryEntry()  # an unreadable entry can still be deleted
            return [ExtensionWrite(extension_id, old, None)]

        self._write_extensions(domain, plan_writes, [extension_id], name, deadline)
