"""Argument helpers the ctictl commands share: names, NAME=VALUE pairs, sections, masks."""

from __future__ import annotations

import argparse
from typing import Any

from ctictl.client import ApiClient


def extension_name(reference: str) -> str:
    """``1001@example.com`` -> ``domains/example.com/extensions/1001``."""
    if reference.startswith("domains/"):
        return reference
    extension_id, sep, domain = reference.rpartition("@")
    if not sep or not extension_id or not domain:
        raise argparse.ArgumentTypeError(f"{reference!r}: expected ID@DOMAIN")
    return f"domains/{domain}/extensions/{extension_id}"


def channel_name(reference: str) -> str:
    """``<uuid>`` -> ``channels/<uuid>`` (the server checks the uuid)."""
    if reference.startswith("channels/"):
        return reference
    if not reference or "/" in reference:
        raise argparse.ArgumentTypeError(f"{reference!r}: expected a channel uuid")
    return f"channels/{reference}"


def pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r}: expected NAME=VALUE")
    return key, value


def sections_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "params": dict(args.param or ()),
        "variables": dict(args.var or ()),
        "attributes": dict(getattr(args, "attr", None) or ()),
    }


def add_section_flags(parser: argparse.ArgumentParser, attributes: bool = True) -> None:
    parser.add_argument("--param", action="append", type=pair, metavar="NAME=VALUE")
    parser.add_argument("--var", action="append", type=pair, metavar="NAME=VALUE")
    if attributes:
        parser.add_argument("--attr", action="append", type=pair, metavar="NAME=VALUE")


def add_unset_flags(parser: argparse.ArgumentParser, attributes: bool = True) -> None:
    parser.add_argument("--unset-param", action="append", default=[], metavar="NAME")
    parser.add_argument("--unset-var", action="append", default=[], metavar="NAME")
    if attributes:
        parser.add_argument("--unset-attr", action="append", default=[], metavar="NAME")


def update_mask(args: argparse.Namespace, sections: dict[str, Any]) -> list[str]:
    """Each key set or unset on the command line, as a single-key mask path."""
    unset = {
        "params": args.unset_param,
        "variables": args.unset_var,
        "attributes": getattr(args, "unset_attr", []),
    }
    paths = [f"{name}.{key}" for name, values in sections.items() for key in values]
    paths += [f"{name}.{key}" for name, keys in unset.items() for key in keys]
    return paths


def page_all(client: ApiClient, method: str, request: Any, items: str, limit: int) -> list[Any]:
    found: list[Any] = []
    while True:
        response = client.call(method, request)
        found += list(getattr(response, items))
        if not response.next_page_token or (limit and len(found) >= limit):
            return found[:limit] if limit else found
        request.page_token = response.next_page_token
