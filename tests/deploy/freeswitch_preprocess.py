"""FreeSWITCH's configuration pre-processor, re-done in Python to check shipped files.

It follows ``preprocess()`` / ``preprocess_glob()`` / ``preprocess_exec_set()`` of
``src/switch_xml.c`` (FreeSWITCH 1.10), including the parts that surprise people:

- the file is read line by line, before any XML parsing;
- ``$${name}`` is expanded on every line first, comments included (unset: empty string);
- a line containing ``<include>``, ``</include>`` or ``<?`` is dropped whole;
- a line naming ``X-PRE-PROCESS`` (any case) is consumed: run when ``<`` precedes the name,
  dropped otherwise, even inside a comment; the tag ends at the first ``/>``;
- a relative ``include`` is a glob from the including file's folder; a pattern matching
  nothing is an error line in FreeSWITCH's log and nothing else;
- ``exec-set`` runs its command with ``/bin/sh -c`` and sets the variable to its output
  without trailing spaces and newlines, unless the output is empty.

Only the commands the shipped files use are accepted (``set``, ``exec-set``,
``include``): anything else is an error here rather than a silent guess.
"""

from __future__ import annotations

import glob
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

_VARIABLE = re.compile(r"\$\$\{([^}]*)\}")
_TAG_NAME = re.compile("x-pre-process", re.I)
_QUOTED_AFTER = r"{}\s*=\s*\"([^\"]*)\""


class PreprocessError(Exception):
    """Something FreeSWITCH would only log, or a command this re-implementation lacks."""


@dataclass
class Preprocessor:
    """One run over a configuration tree: ``resolve(conf / "freeswitch.xml")``.

    ``exec_command`` may rewrite an ``exec-set`` command before it runs (tests point the
    shipped ``/etc/freeswitch/secrets`` paths at a temporary folder)."""

    exec_command: Callable[[str], str] = lambda command: command
    variables: dict[str, str] = field(default_factory=dict)
    undefined: list[tuple[str, str]] = field(default_factory=list)
    """``(file, name)`` of every ``$${name}`` expanded while ``name`` was not set."""
    missing_includes: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    """What ``exec-set`` commands printed on stderr (FreeSWITCH's own stderr)."""

    def resolve(self, path: Path) -> str:
        return self._file(path, path.parent)

    def _file(self, path: Path, cwd: Path) -> str:
        out: list[str] = []
        for line in path.read_text().splitlines(keepends=True):
            expanded = _VARIABLE.sub(lambda m: self._value(path, m.group(1)), line)
            if "<include>" in line or "</include>" in line or "<?" in line:
                continue
            found = _TAG_NAME.search(expanded)
            if found is not None:
                if found.start() > 0 and expanded[found.start() - 1] == "<":
                    out.append(self._command(expanded[found.start() :], cwd))
                continue
            out.append(expanded)
        return "".join(out)

    def _value(self, path: Path, name: str) -> str:
        if name not in self.variables:
            self.undefined.append((path.name, name))
        return self.variables.get(name, "")

    def _command(self, tag: str, cwd: Path) -> str:
        tag = tag.split("/>", 1)[0]
        cmd = re.search(_QUOTED_AFTER.format("cmd"), tag, re.I)
        data = re.search(_QUOTED_AFTER.format("data"), tag, re.I)
        if cmd is None or data is None:
            raise PreprocessError(f"unreadable pre-process tag: {tag!r}")
        command, argument = cmd.group(1).lower(), data.group(1)
        if command == "set":
            name, _, value = argument.partition("=")
            self.variables[name.strip()] = value.strip(" ")
            return ""
        if command == "exec-set":
            self._exec_set(argument)
            return ""
        if command == "include":
            return self._include(argument, cwd)
        raise PreprocessError(f"pre-process command {command!r} is not modelled here")

    def _exec_set(self, argument: str) -> None:
        name, _, command = argument.partition("=")
        ran = subprocess.run(
            ["/bin/sh", "-c", self.exec_command(command.strip(" "))],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if ran.stderr:
            self.stderr.append(ran.stderr)
        value = ran.stdout.rstrip(" \n")
        if ran.returncode == 0 and value:
            self.variables[name.strip()] = value

    def _include(self, pattern: str, cwd: Path) -> str:
        full = pattern if pattern.startswith("/") else f"{cwd}/{pattern}"
        matches = sorted(glob.glob(full)) or [full]  # GLOB_NOCHECK
        out = []
        for match in matches:
            path = Path(match)
            if not path.is_file():
                self.missing_includes.append(match)
                continue
            out.append(self._file(path, path.parent))
        return "".join(out)
