"""Pure conversions between ``cti.v1`` messages and :class:`DirectoryEntry`: resource
messages, field masks, page sizes and page tokens. No I/O."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from cti.directory_entry import DirectoryEntry
from cti.text import excerpt
from cti.v1 import directory_pb2
from directory_service.api.errors import ApiError, invalid_argument
from directory_service.api.passwords import SECRET_PARAMS
from directory_service.api.stored import StoredDomain, StoredExtension, StoredTemplate
from directory_service.api.validation import domain_name, parse_template_name, template_name

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
MAX_TOKEN_LENGTH = 4096
MAX_MASK_PATHS = 64
MAX_MASK_PATH = 200
SECTIONS = {"params": "params", "variables": "variables", "attributes": "attributes"}
"""Message map field -> :class:`DirectoryEntry` attribute."""


# ---------------------------------------------------------------------------------------
# Resources out


def extension_message(stored: StoredExtension, password: str = "") -> directory_pb2.Extension:
    """Secrets never leave: ``password``/``a1-hash`` are dropped from params and reported
    as ``has_password``; ``password`` is set only to return a generated one."""
    entry = stored.entry
    return directory_pb2.Extension(
        name=stored.name,
        params={k: v for k, v in entry.params.items() if k not in SECRET_PARAMS},
        variables=dict(entry.variables),
        attributes=dict(entry.attributes),
        template=template_name(entry.template) if entry.template else "",
        password=password,
        has_password=any(entry.params.get(k) for k in SECRET_PARAMS),
        etag=stored.etag,
    )


def template_message(stored: StoredTemplate) -> directory_pb2.ExtensionTemplate:
    return directory_pb2.ExtensionTemplate(
        name=template_name(stored.template),
        params=dict(stored.entry.params),
        variables=dict(stored.entry.variables),
        attributes=dict(stored.entry.attributes),
        usage_count=stored.usage_count,
        etag=stored.etag,
    )


def domain_message(stored: StoredDomain) -> directory_pb2.Domain:
    return directory_pb2.Domain(
        name=domain_name(stored.domain),
        params=dict(stored.entry.params),
        variables=dict(stored.entry.variables),
        extension_count=stored.extension_count,
        etag=stored.etag,
    )


# ---------------------------------------------------------------------------------------
# Resources in


def entry_from_message(message: Any, field: str, with_template: bool = False) -> DirectoryEntry:
    """The params/variables/attributes (and template) a client sent."""
    template = ""
    if with_template and message.template:
        template = parse_template_name(message.template, f"{field}.template", allow_bare=True)
    return DirectoryEntry(
        params=dict(message.params),
        variables=dict(message.variables),
        attributes=dict(getattr(message, "attributes", {})),
        template=template,
    )


def mask_paths(
    paths: Sequence[str], message: Any, allowed: Iterable[str], field: str = "update_mask"
) -> list[str]:
    """The checked paths; an empty mask means every populated field (AIP-134)."""
    allowed = tuple(allowed)
    if not paths:
        return [name for name in allowed if _populated(message, name)]
    if len(paths) > MAX_MASK_PATHS:
        raise invalid_argument(field, f"at most {MAX_MASK_PATHS} paths")
    for path in paths:
        top, _, key = path.partition(".")
        if top not in allowed or (key and top not in SECTIONS) or len(path) > MAX_MASK_PATH:
            raise invalid_argument(
                field,
                f"cannot update {excerpt(path)}: paths are {', '.join(allowed)} or <map>.<key>",
            )
    return list(paths)


def _populated(message: Any, name: str) -> bool:
    value = getattr(message, name)
    return bool(value)


def apply_mask(
    old: DirectoryEntry,
    new: DirectoryEntry,
    paths: Sequence[str],
    keep_params: Iterable[str] = (),
) -> DirectoryEntry:
    """``old`` with the masked parts taken from ``new``: a whole section, one map key
    (absent from ``new`` -> removed), or ``template``. ``keep_params`` survive a whole
    ``params`` replacement, or a mask naming them, unless ``new`` sets them (the hidden
    secrets: removing the only one would let any password in)."""
    sections: dict[str, dict[str, str]] = {
        name: dict(getattr(old, attribute)) for name, attribute in SECTIONS.items()
    }
    template = old.template
    for path in paths:
        top, _, key = path.partition(".")
        if top == "template":
            template = new.template
        elif top in SECTIONS:
            incoming: Mapping[str, str] = getattr(new, SECTIONS[top])
            if not key:
                kept = {
                    k: v for k, v in sections[top].items() if top == "params" and k in keep_params
                }
                sections[top] = {**kept, **incoming}
            elif key in incoming:
                sections[top][key] = incoming[key]
            elif not (top == "params" and key in keep_params):
                sections[top].pop(key, None)
    return replace(
        old,
        params=sections["params"],
        variables=sections["variables"],
        attributes=sections["attributes"],
        template=template,
    )


def with_secret(entry: DirectoryEntry, secret: Mapping[str, str]) -> DirectoryEntry:
    """``entry`` whose password/a1-hash are exactly ``secret`` (sofia prefers an a1-hash
    to a password, so a stale one must not survive a password change)."""
    params = {k: v for k, v in entry.params.items() if k not in SECRET_PARAMS}
    return replace(entry, params={**params, **secret})


# ---------------------------------------------------------------------------------------
# Paging


def page_size(requested: int, field: str = "page_size") -> int:
    if requested < 0:
        raise invalid_argument(field, "must not be negative")
    return min(requested or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def encode_token(query: Mapping[str, str], position: Sequence[str]) -> str:
    """An opaque token: where to continue, and the query it belongs to."""
    document = {"q": dict(query), "p": list(position)}
    return base64.urlsafe_b64encode(json.dumps(document).encode()).decode().rstrip("=")


def decode_token(token: str, query: Mapping[str, str], size: int) -> list[str] | None:
    """The position in ``token`` (None for no token); INVALID_ARGUMENT if it is not ours
    or was issued for another query. Whatever a client forges (any length, nesting or
    text) ends here, never in a Redis command."""
    if not token:
        return None
    position: Any = None
    ok = len(token) <= MAX_TOKEN_LENGTH
    if ok:
        try:
            padded = token + "=" * (-len(token) % 4)
            document = json.loads(base64.urlsafe_b64decode(padded.encode()))
            position = document["p"]
            ok = (
                document["q"] == dict(query)
                and isinstance(position, list)
                and len(position) == size
                and all(isinstance(p, str) and _is_text(p) for p in position)
            )
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            ok = False
    if not ok:
        raise invalid_token()
    return [str(p) for p in position]


def invalid_token() -> ApiError:
    return invalid_argument(
        "page_token", "not a page token of this query (same parent and filters)"
    )


def _is_text(value: str) -> bool:
    """Encodable as UTF-8 (JSON may carry a lone surrogate)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def is_scan_cursor(text: str) -> bool:
    """A cursor Redis's ``HSCAN`` takes: decimal, below 2**64."""
    return text.isascii() and text.isdigit() and len(text) <= 20 and int(text) < 2**64
