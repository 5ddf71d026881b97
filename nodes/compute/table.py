"""A measured compute profile: a CSV of forward-pass times, interpolated.

Format (written by `testbed profile MODEL`):

    # model: smollm2-135m
    # device: cpu-x86
    # dtype: fp32
    batch,tokens,context,seconds
    1,1,0,0.031
    ...

`#` lines at the top carry `key: value` metadata; then a header naming the four columns (any order); then one
row per measured point: the median wall time of one forward pass of `batch` sequences, each feeding `tokens`
new tokens after `context` cached ones.
"""
from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from pathlib import Path

from nodes.compute.costs import Seqs, check_seqs
from nodes.compute.profiles import ProfileError
from testbed.common.errors import Problem

COLUMNS = ("batch", "tokens", "context", "seconds")
Point = tuple[int, int, int]      # (batch, tokens, context)


def _interp(xs: list[float], ys: list[float], x: float) -> float:
    """Linear within the points, linear extrapolation from the two end points past them."""
    if len(xs) == 1:
        return ys[0]
    i = min(max(bisect.bisect_right(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


MAX_TABLE_BYTES = 64 << 20
MAX_PASS_S = 3600.0      # one forward pass; past an hour a time is garbage (or in ms) and would stall a run


@dataclass(frozen=True)
class TableCost:
    points: dict[Point, float]
    metadata: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @classmethod
    def load(cls, path: str | Path) -> "TableCost":
        path = Path(path)
        file = str(path)
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_TABLE_BYTES + 1)
        except OSError as e:
            raise ProfileError([Problem(file, "", f"cannot read file: {e.strerror}")]) from None
        if len(raw) > MAX_TABLE_BYTES:
            raise ProfileError([Problem(file, "", f"file is over {MAX_TABLE_BYTES >> 20} MiB: expected a CSV table "
                                                  "of measured passes")])
        try:
            lines = raw.decode("utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ProfileError([Problem(file, "", f"not a text file: byte {e.start} is not UTF-8; expected a CSV "
                                                  "table of measured passes")]) from None
        metadata: dict[str, str] = {}
        problems: list[Problem] = []
        points: dict[Point, float] = {}
        first_line: dict[Point, int] = {}
        header: list[str] | None = None
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                key, sep, value = line[1:].partition(":")
                if sep and header is None:
                    metadata[key.strip()] = value.strip()
                continue
            cells = [c.strip() for c in line.split(",")]
            if header is None:
                header = cells
                if sorted(header) != sorted(COLUMNS):
                    problems.append(Problem(file, "header", f"expected the columns {','.join(COLUMNS)}, "
                                                            f"got {line!r}", number))
                    break
                continue
            point = cls._parse_row(file, number, header, cells, problems)
            if point is None:
                continue
            key, seconds = point
            if key in points:
                problems.append(Problem(file, "batch,tokens,context", f"expected each point once, got "
                                        f"{key} again (first on line {first_line[key]})", number))
                continue
            points[key], first_line[key] = seconds, number
        if header is None:
            problems.append(Problem(file, "header", f"expected a header line {','.join(COLUMNS)}, got none"))
        elif not points and not problems:
            problems.append(Problem(file, "", "expected at least one measured row, got none", len(lines) or None))
        if problems:
            raise ProfileError(problems)
        return cls(points=points, metadata=metadata, path=file)

    @staticmethod
    def _parse_row(file: str, number: int, header: list[str], cells: list[str],
                   problems: list[Problem]) -> tuple[Point, float] | None:
        if len(cells) != len(header):
            problems.append(Problem(file, "", f"expected {len(header)} comma-separated fields, got {len(cells)}",
                                    number))
            return None
        row, ok = dict(zip(header, cells)), True
        values: dict[str, float] = {}
        for name in COLUMNS:
            text = row[name]
            try:
                value = float(text)
            except ValueError:
                value = math.nan
            if not math.isfinite(value):
                problems.append(Problem(file, name, f"expected a number, got {text!r}", number))
                ok = False
                continue
            if name != "seconds" and value != int(value):
                problems.append(Problem(file, name, f"expected a whole number, got {text!r}", number))
                ok = False
            elif name == "context" and value < 0:
                problems.append(Problem(file, name, f"expected a number >= 0, got {text!r}", number))
                ok = False
            elif name != "context" and value <= 0:
                problems.append(Problem(file, name, f"expected a number > 0, got {text!r}", number))
                ok = False
            elif name == "seconds" and value > MAX_PASS_S:
                problems.append(Problem(file, name, f"expected seconds per pass <= {MAX_PASS_S:g}, got {text!r}",
                                        number))
                ok = False
            values[name] = value
        if not ok:
            return None
        return (int(values["batch"]), int(values["tokens"]), int(values["context"])), values["seconds"]

    def lookup(self, batch: int, tokens: int, context: int) -> float:
        """Nested 1-D linear interpolation: along context within each measured (batch, tokens) line, then
        along tokens within each batch, then along batch. It needs no complete grid; past the measured
        range it extrapolates linearly, never below the smallest measured time."""
        by_batch: dict[int, dict[int, list[tuple[int, float]]]] = {}
        for (b, t, c), s in sorted(self.points.items()):
            by_batch.setdefault(b, {}).setdefault(t, []).append((c, s))
        batch_xs, batch_ys = [], []
        for b, by_tokens in sorted(by_batch.items()):
            token_xs, token_ys = [], []
            for t, line in sorted(by_tokens.items()):
                token_xs.append(t)
                token_ys.append(_interp([c for c, _ in line], [s for _, s in line], context))
            batch_xs.append(b)
            batch_ys.append(_interp(token_xs, token_ys, tokens))
        return max(_interp(batch_xs, batch_ys, batch), min(self.points.values()))

    def pass_s(self, seqs: Seqs) -> float:
        # A padded batch: every sequence is as long as the longest, attends over the longest context.
        seqs = [s for s in check_seqs(seqs) if s[1] > 0]
        if not seqs:
            return 0.0
        return self.lookup(len(seqs), max(t for _, t in seqs), max(c for c, _ in seqs))

    def draft_s(self, context: int, k: int) -> float:
        if context < 0 or k < 0:
            raise ValueError(f"expected context >= 0 and k >= 0, got context={context}, k={k}")
        return sum(self.lookup(1, 1, context + j) for j in range(k))

    def describe(self) -> str:
        meta = ", ".join(f"{k} {self.metadata[k]}" for k in ("model", "device", "dtype") if k in self.metadata)
        return f"table {self.path}" + (f" ({meta})" if meta else "")
