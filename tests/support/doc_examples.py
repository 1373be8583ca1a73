"""The runnable examples of the documentation, read from the Markdown itself.

Every fenced ``bash``/``sh``/``shell``/``console`` block is split into commands (a backslash or an
open quote continues a command on the next line; comment lines are dropped) and every ``python``
block is one example. So a new or changed example in the README, ``prefixes/README.md`` or
``docs/*.md`` is picked up without touching a test: ``tests/support/example_plan.py`` decides how
each is run and checked, or why it cannot run here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

DOCS = ("README.md", "prefixes/README.md", "docs/*.md")  # the documents whose examples must work
SHELL = frozenset({"bash", "sh", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")


@dataclass(frozen=True)
class Example:
    """One command of a shell block (``text`` as written, comments and continuations included) or a
    whole python block; ``where`` is ``file:line`` of its first line."""

    where: str
    lang: str  # "shell" | "python"
    text: str

    @property
    def words(self) -> list[str]:
        """The shell words (quotes removed, comments dropped); empty for python."""
        return shlex.split(self.text, comments=True) if self.lang == "shell" else []

    @property
    def one_line(self) -> str:
        """The command on one line (continuations joined, comments dropped), to match and report."""
        if self.lang == "python":
            return " ".join(self.text.split())
        lines = [_without_comment(line).rstrip().removesuffix("\\") for line in self.text.splitlines()]
        return " ".join(" ".join(lines).split())


def _without_comment(line: str) -> str:
    """The line up to an unquoted ``#`` that starts a word (as bash reads it)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i]
    return line


def fenced_blocks(markdown: str) -> list[tuple[int, str, str]]:
    """(line of the block's first content line, language, content) of each fenced code block."""
    blocks: list[tuple[int, str, str]] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        opened = _FENCE.match(lines[i])
        if not opened:
            i += 1
            continue
        fence, indent, start = opened["fence"], len(opened["indent"]), i + 1
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            i += 1
        body = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[start:i])
        blocks.append((start + 1, opened["lang"].lower(), body))
        i += 1
    return blocks


def shell_commands(body: str) -> list[tuple[int, str]]:
    """(0-based line offset, text) of each command of a shell block."""
    commands: list[tuple[int, str]] = []
    pending: list[str] = []
    first = 0
    for offset, line in enumerate(body.splitlines()):
        if not pending:
            if not _without_comment(line).strip():
                continue  # a blank or comment-only line
            first = offset
        pending.append(line)
        text = "\n".join(pending)
        if _complete(text):
            commands.append((first, text))
            pending = []
    if pending:
        raise ValueError(f"unfinished shell command: {' '.join(pending)!r}")
    return commands


def _complete(text: str) -> bool:
    if _without_comment(text.splitlines()[-1]).rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on
        return False
    return True


def examples_in(path: Path, root: Path) -> list[Example]:
    """Every example of one Markdown file (``where`` relative to ``root``)."""
    name = path.relative_to(root).as_posix()
    found: list[Example] = []
    for line, lang, body in fenced_blocks(path.read_text(encoding="utf-8")):
        if lang == "python":
            found.append(Example(f"{name}:{line}", "python", body))
        elif lang in SHELL:
            found += [Example(f"{name}:{line + o}", "shell", t) for o, t in shell_commands(body)]
    return found


def doc_files(root: Path) -> list[Path]:
    return sorted({p for pattern in DOCS for p in root.glob(pattern) if p.is_file()})


def examples(root: Path) -> list[Example]:
    """Every example of the documentation under ``root``, in document order (README first)."""
    return [e for path in doc_files(root) for e in examples_in(path, root)]
