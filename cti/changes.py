"""The directory change event: the contract between the directory API (publisher), the
directory replicas' caches and the event service (which flushes FreeSWITCH's own cache).

Published on :data:`cti.redis_keys.DIRECTORY_CHANGES_CHANNEL` as one JSON object per
committed write, inside the write's transaction, e.g.::

    {"kind": "extension", "op": "update", "domain": "example.com",
     "extension": "1001", "alias": "alice", "old_alias": "al"}

``kind`` is ``extension``, ``template`` or ``domain``; ``op`` is ``create``, ``update`` or
``delete``. ``extension``/``alias``/``old_alias`` are empty when they do not apply;
``template`` names the template for ``kind=template``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Literal

from cti.text import excerpt

ChangeKind = Literal["extension", "template", "domain"]
ChangeOp = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class DirectoryChange:
    kind: ChangeKind
    op: ChangeOp
    domain: str = ""
    extension: str = ""
    alias: str = ""
    old_alias: str = ""
    template: str = ""

    def to_json(self) -> str:
        # Field by field rather than dataclasses.asdict: batch writes serialise thousands.
        return json.dumps(
            {
                "kind": self.kind,
                "op": self.op,
                "domain": self.domain,
                "extension": self.extension,
                "alias": self.alias,
                "old_alias": self.old_alias,
                "template": self.template,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, payload: str | bytes) -> DirectoryChange:
        """Raises ``ValueError`` for anything that is not a change event."""
        try:
            data = json.loads(payload)
        except RecursionError:  # anyone who may PUBLISH can nest it past the parser
            raise ValueError("change event nested too deeply") from None
        if not isinstance(data, dict):
            raise ValueError("change event must be a JSON object")
        if data.get("kind") not in ("extension", "template", "domain"):
            raise ValueError(f"unknown change kind {excerpt(str(data.get('kind')))}")
        if data.get("op") not in ("create", "update", "delete"):
            raise ValueError(f"unknown change op {excerpt(str(data.get('op')))}")
        fields = {
            name: str(data.get(name) or "")
            for name in ("domain", "extension", "alias", "old_alias", "template")
        }
        return cls(kind=data["kind"], op=data["op"], **fields)

    def flush_ids(self) -> tuple[str, ...]:
        """The user keys FreeSWITCH may have cached for this change (id and aliases)."""
        return tuple(dict.fromkeys(i for i in (self.extension, self.alias, self.old_alias) if i))
