"""Errors a user can act on: each problem names the file, the field path, the line, and what was expected."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    file: str
    path: str          # dotted field path, e.g. "links[2].rate_up_mbps"; "" for the whole file
    message: str       # what was expected (and what was found)
    line: int | None = None

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


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
