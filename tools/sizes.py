"""Modules and functions over the size limits: ``python tools/sizes.py [PACKAGE ...]``.

A module over :data:`MAX_MODULE_LINES` or a function over :data:`MAX_FUNCTION_LINES`
(decorators and docstring included) is printed with its size; the exit status is 1 if any
is. Functions that only build an argument parser (``argparse`` tables) are exempt. Default
packages: ``cti``, ``directory_service`` and ``event_service``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PACKAGES = ("cti", "directory_service", "event_service")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 50


def _is_parser_table(function: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function whose calls are mostly ``add_argument`` / ``add_parser``."""
    calls = [n for n in ast.walk(function) if isinstance(n, ast.Call)]
    table = [
        c
        for c in calls
        if isinstance(c.func, ast.Attribute)
        and c.func.attr in ("add_argument", "add_parser", "add_subparsers")
    ]
    return bool(calls) and len(table) * 2 >= len(calls)


def oversized(path: Path) -> Iterator[str]:
    """One line per limit ``path`` exceeds."""
    source = path.read_text()
    relative = path.relative_to(ROOT)
    lines = len(source.splitlines())
    if lines > MAX_MODULE_LINES:
        yield f"{relative}: {lines} lines (module limit {MAX_MODULE_LINES})"
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = (node.end_lineno or node.lineno) - first + 1
            if length > MAX_FUNCTION_LINES and not _is_parser_table(node):
                yield (
                    f"{relative}:{node.lineno}: {node.name} {length} lines "
                    f"(function limit {MAX_FUNCTION_LINES})"
                )


def main(packages: Sequence[str]) -> int:
    found = [
        line
        for package in packages or DEFAULT_PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for line in oversized(path)
    ]
    print("\n".join(found) if found else "all within limits")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
