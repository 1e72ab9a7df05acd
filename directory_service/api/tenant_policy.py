"""What a domain-limited ("tenant") token may write into its own directory entries.

FreeSWITCH acts on what the directory holds: it expands ``${...}`` in a ``dial-string``
(``${system(...)}`` runs a shell command), runs ``api_on_answer`` / ``execute_on_*``, and
routes by ``user_context``. So a tenant token writes only the names the operator listed in
``directory.tenant_writes`` (:class:`cti.settings.TenantWriteSettings`), never a value that
FreeSWITCH would expand or parse as a channel-variable block, and attaches only the listed
templates. Full-access tokens are not limited.

A write is judged by what it changes (old entry -> new entry), so a tenant may resend an
entry unchanged, operator-set keys included; removing a key counts as writing it (an
operator's ``user_context`` must not be dropped by the tenant it confines). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import grpc

from cti.api_errors import ApiError, FieldViolation
from cti.directory_entry import DirectoryEntry
from cti.settings import (
    NEVER_FOR_TENANT_PARAMS,
    TenantWriteSettings,
    matches_pattern,
    never_for_tenants,
)
from cti.text import excerpt
from directory_service.api.errors import invalid_argument
from directory_service.api.passwords import PASSWORD

WRITE_NOT_ALLOWED = "TENANT_WRITE_NOT_ALLOWED"
VALUE_NOT_ALLOWED = "TENANT_VALUE_NOT_ALLOWED"
UNSAFE_VALUE = re.compile(r"\$\{|[{}\[\]<>]")
"""``${`` / ``$${`` (expanded by FreeSWITCH) and the brackets of ``{a=b}``, ``[a=b]`` and
``<a=b>`` channel-variable blocks (a value pasted into a dial string would add variables)."""
SECTIONS = ("params", "variables", "attributes")
SETTING = "directory.tenant_writes"


def write_denied(path: str, scope_name: str, what: str) -> ApiError:
    description = f"a tenant token may not {what} (the server's {SETTING} lists what it may)"
    return ApiError(
        grpc.StatusCode.PERMISSION_DENIED,
        WRITE_NOT_ALLOWED,
        f"{path}: this token ({scope_name}) is limited to some domains; {description}",
        (FieldViolation(path, description),),
        metadata={"field": path},
    )


def _path(field: str, section: str, key: str) -> str:
    if section == "params" and key == PASSWORD:
        return f"{field}.password"  # clients set it through the password field
    return f"{field}.{section}.{key if len(key) <= 128 else key[:128] + '...'}"


def _allowed(policy: TenantWriteSettings, section: str, key: str) -> bool:
    patterns: tuple[str, ...] = getattr(policy, section)
    # Never these, even if a pattern covers them (the start-up check refuses most).
    if section == "variables" and never_for_tenants(key):
        return False
    if section == "params" and key in NEVER_FOR_TENANT_PARAMS:
        return False
    return matches_pattern(key, patterns)


def check_write(
    policy: TenantWriteSettings,
    scope_name: str,
    old: DirectoryEntry | None,
    new: DirectoryEntry | None,
    field: str,
) -> None:
    """Refuse a tenant's change from ``old`` to ``new`` (``None``: absent, i.e. a create or
    a delete) unless every key it adds, changes or removes is allowed and every value it
    writes is plain text: PERMISSION_DENIED ``TENANT_WRITE_NOT_ALLOWED`` for a name or
    template, INVALID_ARGUMENT ``TENANT_VALUE_NOT_ALLOWED`` for a value."""
    before = old or DirectoryEntry()
    after = new or DirectoryEntry()
    for section in SECTIONS:
        old_values: Mapping[str, str] = getattr(before, section)
        new_values: Mapping[str, str] = getattr(after, section)
        for key in sorted(set(old_values) | set(new_values)):
            value = new_values.get(key)
            if old_values.get(key) == value:
                continue
            path = _path(field, section, key)
            if not _allowed(policy, section, key):
                action = "set" if value is not None else "remove"
                raise write_denied(path, scope_name, f"{action} {section[:-1]} {excerpt(key)}")
            if value is not None and UNSAFE_VALUE.search(value):
                raise invalid_argument(
                    path,
                    "a tenant token may not write '${', '{', '}', '[', ']', '<' or '>' "
                    "(FreeSWITCH expands them or reads them as channel variables)",
                    VALUE_NOT_ALLOWED,
                )
    if before.template != after.template:
        for template in (before.template, after.template):
            if template and template not in policy.templates:
                raise write_denied(
                    f"{field}.template",
                    scope_name,
                    f"attach or detach template {excerpt(template)}",
                )
