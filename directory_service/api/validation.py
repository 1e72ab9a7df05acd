"""Pure checks of names and values written through the directory API.

Each failure is an INVALID_ARGUMENT :class:`~cti.grpc_server.ApiError` naming the field
(``extension.params.auth-acl``), so an operator knows what to fix. Nothing here touches
Redis: conflicts (ALREADY_EXISTS) and missing templates (FAILED_PRECONDITION) are decided
by :mod:`directory_service.api.store`, which sees the stored state.

``user-agent-filter`` is compiled with Python's :mod:`re`. FreeSWITCH uses PCRE; the two
agree on the syntax operators write in practice (classes, groups, alternation, anchors,
quantifiers). A pattern using a PCRE-only construct (possessive quantifiers, ``\\K``,
recursion) is refused here even though FreeSWITCH would take it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from cti.directory_entry import DirectoryEntry
from cti.text import excerpt
from directory_service.api.errors import invalid_argument
from directory_service.api.passwords import A1_HASH, PASSWORD, SECRET_PARAMS
from directory_service.lookup import render

EXTENSION_ID = re.compile(r"[a-z0-9][a-z0-9._+-]{0,63}")
STORED_ID = re.compile(r"[^/\s\x00-\x1f\x7f]{1,256}")
ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
TEMPLATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
DOMAIN_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
MAP_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:+-]{0,127}")
ACL_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
A1_HASH_VALUE = re.compile(r"[0-9a-f]{32}")
POSITIVE_INT = re.compile(r"[1-9][0-9]{0,8}")
MILLISECONDS = re.compile(r"[0-9]{1,12}")
MAX_VALUE_LENGTH = 4096
MAX_MAP_ENTRIES = 200
"""Per params/variables/attributes map: FreeSWITCH users carry a few dozen at most."""
MAX_NAME_LENGTH = 600
"""A resource name: ``domains/`` + 253 + ``/extensions/`` + 256, rounded up."""
MAX_PREFIX_LENGTH = 256

EXTENSIONS_COLLECTION = "extensions"
TEMPLATE_PREFIX = "templates/"
DOMAIN_PREFIX = "domains/"
ALL_DOMAINS = "-"


# ---------------------------------------------------------------------------------------
# Resource names


def check_domain(domain: str, field: str) -> str:
    """A DNS name or an IP address (the SIP domain, also the digest realm)."""
    if not domain:
        raise invalid_argument(field, "a domain is required")
    if len(domain) > 253:
        raise invalid_argument(field, "domain longer than 253 characters")
    try:
        ipaddress.ip_address(domain)
        return domain
    except ValueError:
        pass
    if not all(DOMAIN_LABEL.fullmatch(label) for label in domain.split(".")):
        raise invalid_argument(
            field,
            f"{excerpt(domain)} is not a domain name (letters, digits, '-', labels joined by '.')",
        )
    return domain


def check_extension_id(extension_id: str, field: str) -> str:
    if not EXTENSION_ID.fullmatch(extension_id):
        raise invalid_argument(
            field,
            f"{excerpt(extension_id)} is not an extension id: 1-64 of lower-case letters, "
            "digits and '._+-', starting with a letter or digit (FreeSWITCH matches ids "
            "case-insensitively, so ids are kept lower-case)",
        )
    return extension_id


def check_template_id(template: str, field: str) -> str:
    if not TEMPLATE_ID.fullmatch(template):
        raise invalid_argument(
            field, f"{excerpt(template)} is not a template id: 1-64 of letters, digits and '._-'"
        )
    return template


def parse_domain_name(name: str, field: str, allow_all: bool = False) -> str:
    """``domains/{domain}`` -> domain (``-`` = every domain, when ``allow_all``)."""
    _check_name_length(name, field)
    if not name.startswith(DOMAIN_PREFIX):
        raise invalid_argument(field, f"{excerpt(name)} is not a domain name (domains/{{domain}})")
    domain = name[len(DOMAIN_PREFIX) :]
    if allow_all and domain == ALL_DOMAINS:
        return domain
    return check_domain(domain, field)


def parse_extension_name(name: str, field: str) -> tuple[str, str]:
    """``domains/{domain}/extensions/{extension}`` -> (domain, extension id).

    Names an existing extension, so the id may be anything an entry written by hand uses
    (say ``Alice``), short of ``/``, whitespace and control characters; only *new* ids
    must pass :func:`check_extension_id`."""
    _check_name_length(name, field)
    parts = name.split("/")
    if len(parts) != 4 or parts[0] != "domains" or parts[2] != EXTENSIONS_COLLECTION:
        raise invalid_argument(
            field,
            f"{excerpt(name)} is not an extension name (domains/{{domain}}/extensions/{{id}})",
        )
    if not STORED_ID.fullmatch(parts[3]):
        raise invalid_argument(field, f"{excerpt(parts[3])} is not an extension id")
    return check_domain(parts[1], field), parts[3]


def parse_template_name(name: str, field: str, allow_bare: bool = False) -> str:
    """``templates/{template}`` -> template id; a bare id too when ``allow_bare``."""
    _check_name_length(name, field)
    if name.startswith(TEMPLATE_PREFIX):
        return check_template_id(name[len(TEMPLATE_PREFIX) :], field)
    if allow_bare:
        return check_template_id(name, field)
    raise invalid_argument(
        field, f"{excerpt(name)} is not a template name (templates/{{template}})"
    )


def _check_name_length(name: str, field: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise invalid_argument(field, f"longer than {MAX_NAME_LENGTH} characters")


def check_id_prefix(prefix: str, field: str) -> str:
    if len(prefix) > MAX_PREFIX_LENGTH or not STORED_ID.fullmatch(prefix or "x"):
        raise invalid_argument(
            field, f"at most {MAX_PREFIX_LENGTH} characters, no '/', whitespace or control"
        )
    return prefix


def extension_name(domain: str, extension_id: str) -> str:
    return f"{DOMAIN_PREFIX}{domain}/{EXTENSIONS_COLLECTION}/{extension_id}"


def domain_name(domain: str) -> str:
    return f"{DOMAIN_PREFIX}{domain}"


def template_name(template: str) -> str:
    return f"{TEMPLATE_PREFIX}{template}"


# ---------------------------------------------------------------------------------------
# Values


def check_password(password: str, field: str) -> str:
    if not password:
        raise invalid_argument(field, "must not be empty (an empty password lets anyone in)")
    if (
        len(password) > 256
        or any(ord(c) < 32 or ord(c) == 127 for c in password)
        or render.text_problem(password) is not None
    ):
        raise invalid_argument(field, "at most 256 printable characters")
    return password


def check_auth_acl(value: str, field: str) -> None:
    """Comma-separated CIDR networks or named ACL lists; a bare address needs its /32."""
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        if "/" in item:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise invalid_argument(
                    field, f"{excerpt(item)} is not a CIDR network (e.g. 192.168.0.100/32)"
                ) from None
            continue
        try:
            ipaddress.ip_address(item)
        except ValueError:
            pass
        else:
            raise invalid_argument(field, f"{excerpt(item)}: write an address as CIDR ({item}/32)")
        if not ACL_NAME.fullmatch(item):
            raise invalid_argument(
                field, f"{excerpt(item)} is neither a CIDR network nor an ACL name"
            )


def check_user_agent_filter(value: str, field: str) -> None:
    try:
        re.compile(value)
    except re.error as exc:
        raise invalid_argument(field, f"not a valid regular expression: {exc}") from None


def _check_map(values: Mapping[str, str], field: str) -> None:
    """Bounded names and values, each of which the directory's XML can carry."""
    if len(values) > MAX_MAP_ENTRIES:
        raise invalid_argument(field, f"at most {MAX_MAP_ENTRIES} entries")
    for key, value in values.items():
        if not MAP_KEY.fullmatch(key):
            raise invalid_argument(
                f"{field}.{key}" if key and len(key) <= 128 else field,
                f"{excerpt(key)} is not a valid name (letters, digits and '_.:+-', at most 128)",
            )
        if len(value) > MAX_VALUE_LENGTH:
            raise invalid_argument(f"{field}.{key}", f"at most {MAX_VALUE_LENGTH} characters")
        problem = render.text_problem(value)
        if problem is not None:
            raise invalid_argument(f"{field}.{key}", f"the value {problem}")


def _check_params(params: Mapping[str, str], field: str) -> None:
    _check_map(params, field)
    if "auth-acl" in params:
        check_auth_acl(params["auth-acl"], f"{field}.auth-acl")
    if params.get("user-agent-filter"):
        check_user_agent_filter(params["user-agent-filter"], f"{field}.user-agent-filter")
    limit = params.get("max-registrations-per-extension")
    if limit is not None and not POSITIVE_INT.fullmatch(limit):
        raise invalid_argument(
            f"{field}.max-registrations-per-extension",
            f"{excerpt(limit)} is not a positive integer",
        )


def _check_attributes(attributes: Mapping[str, str], field: str) -> None:
    _check_map(attributes, field)
    for key in attributes:
        if not render.is_xml_name(key):
            raise invalid_argument(
                field,
                f"{excerpt(key)}: an attribute name starts with a letter or '_' and "
                "holds only letters, digits and '-_.' (it is an XML attribute)",
            )
    cidr = attributes.get(render.CIDR_ATTRIBUTE)
    if cidr is not None:
        problem = render.cidr_problem(cidr)
        if problem is not None:
            raise invalid_argument(f"{field}.{render.CIDR_ATTRIBUTE}", problem)
    cacheable = attributes.get("cacheable", "")
    if cacheable and cacheable != "true" and not MILLISECONDS.fullmatch(cacheable):
        raise invalid_argument(
            f"{field}.cacheable",
            f"{excerpt(cacheable)}: milliseconds or 'true' "
            "(FreeSWITCH caches any other value forever)",
        )
    alias = attributes.get("number-alias", "")
    if alias and not ALIAS.fullmatch(alias):
        raise invalid_argument(
            f"{field}.number-alias",
            f"{excerpt(alias)} is not an alias: 1-64 of letters, digits and '._+-'",
        )
    if "id" in attributes:
        raise invalid_argument(f"{field}.id", "the id is the extension's name, not an attribute")


def check_extension_input(entry: DirectoryEntry, field: str) -> None:
    """An extension as a client sends it: secrets only through ``password`` (an a1-hash
    computed elsewhere may be given as ``params.a1-hash``)."""
    if PASSWORD in entry.params:
        raise invalid_argument(f"{field}.params.password", "set the password field instead")
    check_extension(entry, field)


def check_extension(entry: DirectoryEntry, field: str) -> None:
    """An extension as it will be stored."""
    _check_params(entry.params, f"{field}.params")
    _check_map(entry.variables, f"{field}.variables")
    _check_attributes(entry.attributes, f"{field}.attributes")
    a1 = entry.params.get(A1_HASH)
    if a1 is not None and not A1_HASH_VALUE.fullmatch(a1):
        raise invalid_argument(f"{field}.params.a1-hash", "32 lower-case hex digits (an md5)")
    if entry.template:
        check_template_id(entry.template, f"{field}.template")


def check_template(entry: DirectoryEntry, field: str) -> None:
    """Shared defaults: no secrets and no alias (they must differ per extension)."""
    for secret in SECRET_PARAMS:
        if secret in entry.params:
            raise invalid_argument(f"{field}.params.{secret}", "a template cannot hold secrets")
    if "number-alias" in entry.attributes:
        raise invalid_argument(
            f"{field}.attributes.number-alias", "an alias must be unique: not in a template"
        )
    if entry.template:
        raise invalid_argument(f"{field}.template", "templates do not nest")
    check_extension(entry, field)


def check_domain_settings(entry: DirectoryEntry, field: str) -> None:
    for secret in SECRET_PARAMS:
        if secret in entry.params:
            raise invalid_argument(f"{field}.params.{secret}", "a domain cannot hold secrets")
    _check_params(entry.params, f"{field}.params")
    _check_map(entry.variables, f"{field}.variables")


def range_ids(first: str, last: str, field: str, limit: int) -> list[str]:
    """``"1000"``..``"1999"`` -> the ids, zero padding kept; at most ``limit``."""
    if not (first.isdigit() and last.isdigit() and first.isascii() and last.isascii()):
        raise invalid_argument(f"{field}.first", "first and last must be decimal numbers")
    if len(first) != len(last):
        raise invalid_argument(
            f"{field}.last", "first and last must have the same number of digits"
        )
    low, high = int(first), int(last)
    if high < low:
        raise invalid_argument(f"{field}.last", "last is before first")
    if high - low + 1 > limit:
        raise invalid_argument(f"{field}.last", f"at most {limit} extensions per call")
    return [str(n).zfill(len(first)) for n in range(low, high + 1)]
