"""What one directory write sends to Redis, computed from the state read under WATCH.

Pure: given the old and new entries (and the derived indexes as read), produce the Redis
commands and the change events. :mod:`directory_service.api.store` reads, calls these, and
sends the result inside one MULTI/EXEC, bracketed as every API write must be::

    MULTI
    PUBLISH cti:directory:write-begin <domain>
    <the commands of this write>
    PUBLISH cti:directory:changes <DirectoryChange JSON>   (one per extension)
    EXEC

Directory replicas rely on that bracket: keyspace notifications between the two
publishes are explained by the change events that follow.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cti import redis_keys
from cti.changes import ChangeKind, ChangeOp, DirectoryChange
from cti.directory_entry import DirectoryEntry

Command = tuple[str, ...]


@dataclass
class Bracket:
    """One bracketed write: ``domain`` is published first ("" for a template write, which
    concerns every domain), then ``commands``, then the change event(s)."""

    domain: str
    commands: list[Command] = field(default_factory=list)
    changes: list[DirectoryChange] = field(default_factory=list)

    def redis_commands(self) -> list[Command]:
        """Everything between MULTI and EXEC, in order."""
        return [
            ("PUBLISH", redis_keys.DIRECTORY_WRITE_BEGIN_CHANNEL, self.domain),
            *self.commands,
            *(("PUBLISH", redis_keys.DIRECTORY_CHANGES_CHANNEL, c.to_json()) for c in self.changes),
        ]


@dataclass(frozen=True)
class ExtensionWrite:
    """One extension's transition: ``old`` None = create, ``new`` None = delete."""

    extension_id: str
    old: DirectoryEntry | None
    new: DirectoryEntry | None

    @property
    def op(self) -> ChangeOp:
        if self.old is None:
            return "create"
        return "delete" if self.new is None else "update"


def _alias_key(entry: DirectoryEntry | None) -> str:
    return entry.alias.lower() if entry is not None else ""


def extension_brackets(
    domain: str,
    writes: Sequence[ExtensionWrite],
    template_counts: Mapping[str, int],
    alias_owners: Mapping[str, str | None],
) -> list[Bracket]:
    """One bracket per extension of ``writes`` (distinct ids, one domain), to be sent in
    one transaction. Each bracket holds exactly one change event, as the replicas' cache
    expects; the template usage counts (derived, not watched by replicas) go in the last.

    ``template_counts``: the stored usage counts of every template an old or new entry
    names. ``alias_owners``: the stored alias-index owner of every old alias (lower-cased),
    so an index entry is removed only when it points at this extension.
    """
    key = redis_keys.extensions(domain)
    aliases_key = redis_keys.aliases(domain)
    counts = dict(template_counts)
    brackets: list[Bracket] = []
    for write in writes:
        commands: list[Command] = []
        if write.new is None:
            commands.append(("HDEL", key, write.extension_id))
        else:
            commands.append(("HSET", key, write.extension_id, write.new.to_json()))
        old_alias, new_alias = _alias_key(write.old), _alias_key(write.new)
        if (
            old_alias != new_alias
            and old_alias
            and alias_owners.get(old_alias) == write.extension_id
        ):
            commands.append(("HDEL", aliases_key, old_alias))
        if new_alias and (
            old_alias != new_alias or alias_owners.get(new_alias) != write.extension_id
        ):
            commands.append(("HSET", aliases_key, new_alias, write.extension_id))
        old_template = write.old.template if write.old is not None else ""
        new_template = write.new.template if write.new is not None else ""
        if old_template != new_template:
            if old_template:
                counts[old_template] = counts.get(old_template, 0) - 1
            if new_template:
                counts[new_template] = counts.get(new_template, 0) + 1
        brackets.append(Bracket(domain, commands, [_extension_change(domain, write)]))
    if brackets:
        brackets[-1].commands += _count_commands(
            redis_keys.template_refs(domain), template_counts, counts
        )
    return brackets


def _extension_change(domain: str, write: ExtensionWrite) -> DirectoryChange:
    old_alias = write.old.alias if write.old is not None else ""
    new_alias = write.new.alias if write.new is not None else ""
    if write.new is None:  # a delete: FreeSWITCH may have cached the user under its alias
        new_alias, old_alias = old_alias, ""
    return DirectoryChange(
        kind="extension",
        op=write.op,
        domain=domain,
        extension=write.extension_id,
        alias=new_alias,
        old_alias=old_alias if old_alias.lower() != new_alias.lower() else "",
    )


def _count_commands(key: str, before: Mapping[str, int], after: Mapping[str, int]) -> list[Command]:
    changed = {name: n for name, n in after.items() if before.get(name, 0) != n}
    drop = sorted(name for name, n in changed.items() if n <= 0)
    keep = [item for name, n in sorted(changed.items()) if n > 0 for item in (name, str(n))]
    commands: list[Command] = []
    if drop:
        commands.append(("HDEL", key, *drop))
    if keep:
        commands.append(("HSET", key, *keep))
    return commands


def settings_bracket(
    kind: ChangeKind, op: ChangeOp, hash_key: str, name: str, new: DirectoryEntry | None
) -> Bracket:
    """A template (``kind="template"``, hash ``cti_template``) or domain settings
    (``kind="domain"``, hash ``cti_domain``) write."""
    command: Command = (
        ("HDEL", hash_key, name) if new is None else ("HSET", hash_key, name, new.to_json())
    )
    if kind == "template":
        return Bracket("", [command], [DirectoryChange(kind="template", op=op, template=name)])
    return Bracket(name, [command], [DirectoryChange(kind="domain", op=op, domain=name)])
