"""The store's settings part: templates (``cti_template``) and domain settings
(``cti_domain``), one hash field each, written through one decide-then-bracket path."""

from __future__ import annotations

from collections.abc import Callable

from redis.client import Pipeline

from cti import redis_keys
from cti.changes import ChangeKind, ChangeOp
from cti.directory_entry import DirectoryEntry, ExtensionFormatError, parse_entry
from cti.text import redis_text
from directory_service.api import errors
from directory_service.api.stored import (
    Raw,
    StoreBase,
    StoredDomain,
    StoredTemplate,
    check_etag,
    etag_of,
    parse_stored,
)
from directory_service.api.validation import domain_name, extension_name, template_name
from directory_service.api.write_plan import Bracket, settings_bracket
from directory_service.lookup import render
from directory_service.unusable import report_unusable


class SettingsStore(StoreBase):
    """Template and domain-settings reads and writes."""

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
        entry = parse_stored(name, raw, (redis_keys.TEMPLATES, template))
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
            check_etag(name, etag, raw)
            return change(parse_stored(name, raw, (redis_keys.TEMPLATES, template)))

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
            check_etag(name, etag, raw)

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
            parse_stored(name, raw, (redis_keys.DOMAINS, domain))
            if raw is not None
            else DirectoryEntry()
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
            check_etag(name, etag, raw)
            stored = (
                parse_stored(name, raw, (redis_keys.DOMAINS, domain)) if raw is not None else None
            )
            return change(stored or DirectoryEntry())

        new, _ = self._write_settings("domain", redis_keys.DOMAINS, domain, name, decide, deadline)
        assert new is not None
        return StoredDomain(domain, new, etag_of(new.to_json().encode()), count)

    def delete_domain(
        self,
        domain: str,
        etag: str = "",
        deadline: float | None = None,
        check: Callable[[DirectoryEntry], None] | None = None,
    ) -> None:
        """``check(stored settings)`` may refuse the deletion by raising."""
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
            check_etag(name, etag, raw)
            if check is not None:
                check(parse_stored(name, raw, (redis_keys.DOMAINS, domain)))

        self._write_settings("domain", redis_keys.DOMAINS, domain, name, decide, deadline)
