"""Errors a user can act on: each problem names the file, the field path, the line, and what was expected."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MAX_SHOWN = 1000        # characters of one part of a problem line: a 3 MB bad line is named, not echoed
_NEWLINES = re.compile(r"\s*[\r\n]+\s*")


def one_line(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` on one line (a YAML error's caret diagram, a value with newlines) and at most `limit` characters,
    so every problem stays one line of bounded length whatever the input held."""
    text = _NEWLINES.sub(" ", text)
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit:,} more characters)"
    return text


def shown(value: object, limit: int = 80) -> str:
    """repr() of a bad value for a message, clipped: the message says what was found without echoing a giant."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


@dataclass(frozen=True)
class Problem:
    file: str
    path: str          # dotted field path, e.g. "links[2].rate_up_mbps"; "" for the whole file
    message: str       # what was expected (and what was found)
    line: int | None = None

    def __str__(self) -> str:
        file = one_line(self.file)
        where = file if self.line is None else f"{file}:{self.line}"
        field = f" {one_line(self.path)}:" if self.path else ""
        return f"{where}:{field} {one_line(self.message)}"


class ConfigError(Exception):
    """Bad user input. The CLI prints one line per problem and exits with status 2."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ShapingError(RuntimeError):
    """A tc/iptables/ethtool command failed: the run must not go on unshaped."""

    def __init__(self, command: str, returncode: int, stderr: str):
        self.command, self.returncode, self.stderr = command, returncode, stderr.strip()
        super().__init__(f"command failed (exit {returncode}): {command}\n  {self.stderr}")


class UnreadableInput(ValueError):
    """A user's file that cannot be read as text: missing, over its size limit, or binary. The message names no
    file (the caller adds it in its own form)."""


def read_text(path: str | Path, limit: int, expected: str) -> str:
    """A user's text file, read in bounded memory: a file over `limit` bytes (a sparse file claims 200 MB
    without holding it) is refused before it is read, a binary one (not UTF-8, or NUL bytes) with the offset
    of its first bad byte. `expected` says what the file should have been, e.g. "a CSV trace"."""
    try:
        size = os.stat(path).st_size
        if size <= limit:
            with open(path, "rb") as f:
                raw = f.read(limit + 1)       # a file can grow between stat and read, or be a pipe
    except OSError as e:
        raise UnreadableInput(f"cannot read file: {e.strerror or e}") from None
    over = f"file is over {limit >> 20} MiB" if limit >= 1 << 20 else f"file is over {limit:,} bytes"
    if size > limit or len(raw) > limit:
        raise UnreadableInput(f"{over}: expected {expected}")
    nul = raw.find(b"\0")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableInput(f"not a text file: byte {e.start} is not UTF-8; expected {expected}") from None
    if nul >= 0:
        raise UnreadableInput(f"not a text file: byte {nul} is NUL; expected {expected}")
    return text
