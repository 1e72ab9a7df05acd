"""What to answer for which lookup, from one domain's data as read from Redis. Pure: no I/O.

A :class:`DomainView` wraps the raw bytes of a domain (``HGETALL cti_exten@<domain>``, its
``cti_domain`` settings, the templates) and derives lazily, once, what lookups need: the
case-insensitive id / number-alias index, the effective (template-merged) entries and the
rendered documents. The cache keeps views between lookups and tells them what changed; an
uncached lookup builds a throw-away view.

Matching follows FreeSWITCH's ``find_user_in_tag``: the key matches a user's ``id`` or its
``number-alias`` attribute, case-insensitively (an exact id wins, then a case-insensitive
id, then an alias).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cti import redis_keys
from cti.directory_entry import DirectoryEntry, ExtensionFormatError
from cti.text import excerpt
from directory_service.lookup import render
from directory_service.lookup.request import DirectoryRequest

GROUP_VARIABLE = "callgroup"
"""The user variable naming the groups (comma-separated) an extension belongs to, as in
FreeSWITCH's stock directory; ``group_call`` answers from it."""
CIDR_ATTRIBUTE = render.CIDR_ATTRIBUTE

ErrorSink = Callable[[str, str, str], None]
"""``(redis key, hash field, problem)``: how a view reports a broken stored document. The
problem text never contains a stored value (see :mod:`cti.directory_entry`)."""


def _ignore_errors(key: str, field: str, problem: str) -> None:
    return None


@dataclass
class DomainData:
    """One domain's extensions as read from Redis (``HGETALL cti_exten@<domain>``), or
    only the one an uncached lookup fetched."""

    name: str
    extensions: dict[str, bytes]


@dataclass(frozen=True)
class SharedData:
    """What every domain's answers depend on: ``cti_template`` and ``cti_domain`` (both
    small), raw; possibly only the fields an uncached lookup fetched."""

    templates: Mapping[str, bytes] = field(default_factory=dict)
    domains: Mapping[str, bytes] = field(default_factory=dict)


@dataclass
class _Index:
    by_lower_id: dict[str, str] = field(default_factory=dict)
    by_alias: dict[str, str] = field(default_factory=dict)
    alias_of: dict[str, str] = field(default_factory=dict)

    def add(self, user_id: str, alias: str) -> None:
        self.by_lower_id.setdefault(user_id.lower(), user_id)
        if alias:
            self.alias_of[user_id] = alias
            self.by_alias.setdefault(alias.lower(), user_id)

    def remove(self, user_id: str) -> None:
        if self.by_lower_id.get(user_id.lower()) == user_id:
            del self.by_lower_id[user_id.lower()]
        alias = self.alias_of.pop(user_id, "")
        if alias and self.by_alias.get(alias.lower()) == user_id:
            del self.by_alias[alias.lower()]


class DomainView:
    """Lookups over one domain's data; memoizes everything it derives."""

    def __init__(
        self,
        data: DomainData,
        shared: SharedData,
        default_params: Mapping[str, str],
        on_error: ErrorSink = _ignore_errors,
    ) -> None:
        self.data = data
        self.shared = shared
        self.default_params = default_params
        self.on_error = on_error
        self._settings: DirectoryEntry | None = None
        self._entries: dict[str, DirectoryEntry | None] = {}
        self._index: _Index | None = None
        # User documents by resolved id (a change of one user drops one entry); documents
        # that list users (groups, network lists) or none (the domain) apart.
        self._user_documents: dict[str, bytes] = {}
        self._listings: dict[tuple[str, str], bytes] = {}
        # A domain name XML cannot carry (from the request) can be served nothing.
        self._servable_name = render.text_problem(data.name) is None

    # -- answering -------------------------------------------------------------------

    def answer(self, request: DirectoryRequest) -> bytes:
        kind = request.kind
        if kind == "invalid" or kind == "gateways" or not self.exists or not self._servable_name:
            # Gateways are not stored in this schema: "not found" lets sofia go on with the
            # gateways of its own XML.
            return render.NOT_FOUND
        if kind == "user":
            return self.user_answer(request.user, request.key or "id")
        if kind == "group":
            if render.text_problem(request.group) is not None:
                return render.NOT_FOUND  # from the request: no stored entry is to blame
            return self._memo(("group", request.group), lambda: self._group(request.group))
        if kind == "network-list":
            return self._memo(("network-list", ""), self._network_list)
        return self._memo(("domain", ""), self._domain)

    def user_answer(self, user: str, key: str = "id") -> bytes:
        """``key`` is the user attribute FreeSWITCH matches ``user`` against: ``id`` (which
        also matches ``number-alias``), or another attribute (rare, e.g. ``mailbox``)."""
        user_id = self.resolve(user) if key == "id" else self._resolve_attribute(key, user)
        if user_id is None:
            return render.NOT_FOUND
        document = self._user_documents.get(user_id)
        if document is None:
            document = self._user_documents[user_id] = self._user(user_id)
        return document

    def resolve(self, key: str) -> str | None:
        """The extension id FreeSWITCH's matching would pick for ``key``, if any."""
        if key in self.data.extensions:
            return key
        index = self._built_index()
        lower = key.lower()
        return index.by_lower_id.get(lower) or index.by_alias.get(lower)

    def _resolve_attribute(self, attribute: str, value: str) -> str | None:
        wanted = value.lower()
        for user_id, entry in self._usable_entries():
            if entry.attributes.get(attribute, "").lower() == wanted:
                return user_id
        return None

    # -- derived data ----------------------------------------------------------------

    @property
    def exists(self) -> bool:
        """A domain exists if it has extensions or settings."""
        return bool(self.data.extensions) or self.data.name in self.shared.domains

    @property
    def settings(self) -> DirectoryEntry:
        """Domain params/variables: configured defaults, overridden by ``cti_domain``."""
        if self._settings is None:
            stored = DirectoryEntry()
            raw = self.shared.domains.get(self.data.name)
            if raw is not None:
                try:
                    stored = render.servable_entry(raw)
                except ExtensionFormatError as exc:
                    # Unusable settings are ignored (the configured defaults apply), as
                    # they were before they were written.
                    self.on_error(redis_keys.DOMAINS, self.data.name, str(exc))
            self._settings = DirectoryEntry(
                params={**self.default_params, **stored.params}, variables=stored.variables
            )
        return self._settings

    def entry(self, user_id: str) -> DirectoryEntry | None:
        """The extension merged over its template; ``None`` (and one error report) if it
        or its template cannot be used."""
        if user_id not in self._entries:
            self._entries[user_id] = self._effective_entry(user_id)
        return self._entries[user_id]

    def _effective_entry(self, user_id: str) -> DirectoryEntry | None:
        raw = self.data.extensions.get(user_id)
        if raw is None:
            return None
        key = redis_keys.extensions(self.data.name)
        try:
            entry = render.servable_entry(raw, user_id)
        except ExtensionFormatError as exc:
            self.on_error(key, user_id, str(exc))
            return None
        if not entry.template:
            return entry
        template_raw = self.shared.templates.get(entry.template)
        if template_raw is None:
            self.on_error(key, user_id, f"template {excerpt(entry.template)} does not exist")
            return None
        try:
            template = render.servable_entry(template_raw)
        except ExtensionFormatError as exc:
            self.on_error(redis_keys.TEMPLATES, entry.template, str(exc))
            return None
        return entry.merged_over(template)

    def _built_index(self) -> _Index:
        if self._index is None:
            index = _Index()
            for user_id in self.data.extensions:
                index.add(user_id, self._alias(user_id))
            self._index = index
        return self._index

    def _alias(self, user_id: str) -> str:
        raw = self.data.extensions.get(user_id, b"")
        if b"number-alias" not in raw and b"template" not in raw:
            # Most extensions have no alias: skip parsing them (building the index of a
            # 10,000-extension domain would otherwise block the event loop ~100 ms).
            return ""
        entry = self.entry(user_id)
        return entry.alias if entry is not None else ""

    def _memo(self, key: tuple[str, str], build: Callable[[], bytes]) -> bytes:
        document = self._listings.get(key)
        if document is None:
            document = self._listings[key] = build()
        return document

    # -- documents -------------------------------------------------------------------

    def _user(self, user_id: str) -> bytes:
        entry = self.entry(user_id)
        if entry is None:
            return render.NOT_FOUND
        try:
            return render.user_document(self.data.name, self.settings, user_id, entry)
        except ExtensionFormatError as exc:
            self.on_error(redis_keys.extensions(self.data.name), user_id, str(exc))
            return render.NOT_FOUND

    def _usable_entries(self) -> list[tuple[str, DirectoryEntry]]:
        pairs = ((i, self.entry(i)) for i in self.data.extensions)
        return sorted((i, e) for i, e in pairs if e is not None)

    def _group(self, group: str) -> bytes:
        wanted = group.lower()
        members = [
            user_id
            for user_id, entry in self._usable_entries()
            if wanted in _split_list(entry.variables.get(GROUP_VARIABLE, ""))
        ]
        if not members:
            return render.NOT_FOUND
        return self._render_or_not_found(
            lambda: render.group_document(self.data.name, self.settings, group, members)
        )

    def _network_list(self) -> bytes:
        cidrs = []
        for user_id, entry in self._usable_entries():
            cidr = entry.attributes.get(CIDR_ATTRIBUTE)
            if not cidr:
                continue
            problem = render.cidr_problem(cidr)
            if problem is None:
                cidrs.append((user_id, cidr))
            else:  # left out of the list alone (FreeSWITCH would refuse the whole list)
                key = redis_keys.extensions(self.data.name)
                self.on_error(key, user_id, f"attribute cidr: {problem}")
        if not cidrs:
            return render.NOT_FOUND
        return self._render_or_not_found(
            lambda: render.network_list_document(self.data.name, self.settings, cidrs)
        )

    def _domain(self) -> bytes:
        return self._render_or_not_found(
            lambda: render.domain_document(self.data.name, self.settings)
        )

    def _render_or_not_found(self, build: Callable[[], bytes]) -> bytes:
        try:
            return build()
        except ExtensionFormatError as exc:
            self.on_error(redis_keys.DOMAINS, self.data.name, str(exc))
            return render.NOT_FOUND

    # -- changes (the cache applies what Redis tells it) -----------------------------

    def replace_extension(self, user_id: str, raw: bytes | None) -> None:
        """Apply one extension's new stored value (``None``: deleted)."""
        if self._index is not None:
            self._index.remove(user_id)
        self._entries.pop(user_id, None)
        if raw is None:
            self.data.extensions.pop(user_id, None)
        else:
            self.data.extensions[user_id] = raw
            if self._index is not None:
                self._index.add(user_id, self._alias(user_id))
        # Other users' documents stay valid (O(1) per write: a writer at 100/s must not
        # cost a pass over 10,000 documents each time); listings of users go.
        self._user_documents.pop(user_id, None)
        self._listings = {key: doc for key, doc in self._listings.items() if key[0] == "domain"}

    def with_shared(self, shared: SharedData) -> DomainView:
        """The same raw extensions seen through other templates and domain settings
        (nothing derived is kept)."""
        return DomainView(self.data, shared, self.default_params, self.on_error)


def _split_list(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}
