"""The commands the docs show: each line of a code block of README.md or docs/ (fenced, or indented four
spaces), a trailing backslash joining lines as the shell does. A command copied from the docs must run."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

from tools.cli import ROOT

SUBSTITUTION = re.compile(r"\$\((az [^()]*)\)")  # "$(az ... -o tsv)" inside a command
VARIABLE = re.compile(r"\$\w+")


def code_lines() -> Iterator[str]:
    for doc in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        fenced, pending = False, ""
        for line in doc.read_text().splitlines():
            if line.lstrip().startswith("```"):
                fenced = not fenced
                continue
            if not (fenced or line.startswith("    ") or pending):
                continue
            text = pending + line.strip()
            if text.endswith("\\"):
                pending = text[:-1]
                continue
            pending = ""
            yield text


def az_commands() -> list[list[str]]:
    """The arguments of each `az` command in a code block, those inside `$(...)` included; what a
    substitution or a variable would give is a stand-in (`X`), since only parsing is checked."""
    found = []
    for line in code_lines():
        found += [shlex.split(inner)[1:] for inner in SUBSTITUTION.findall(line)]
        outer = VARIABLE.sub("X", SUBSTITUTION.sub("X", line))
        if outer.startswith("az "):
            found.append(shlex.split(outer, comments=True)[1:])
    return found
