"""Text formats of link-capacity traces: parse (one Problem per bad line) and write. Pure text <-> numbers.

  mahimahi  one integer millisecond timestamp per line, non-decreasing; each line is one opportunity to
            deliver a 1500-byte packet at that ms; the trace repeats with period = its last timestamp.
  csv       rows `t_s,rate_mbps[,delay_ms[,loss_pct]]`, optionally under a header naming those columns;
            a row holds from its t_s on; the last row lasts as long as the step before it (1 s if alone).
  series    Mbit/s per interval ("cooked" throughput traces): one rate per line for consecutive intervals
            of interval_s, or two whitespace-separated columns `t_s rate_mbps`.

Blank lines and `#` comments are allowed in all three (for mahimahi this is our extension: Mahimahi itself
takes bare numbers, which is what format_mahimahi writes). No numpy here, so the CLI parser can name the
formats without paying for numpy; traces.py turns the lists into arrays.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from testbed.common.errors import ConfigError, Problem, shown

FORMATS = ("mahimahi", "csv", "series")
SUFFIXES = {".mahimahi": "mahimahi", ".mm": "mahimahi", ".up": "mahimahi", ".down": "mahimahi",
            ".csv": "csv", ".mbps": "series", ".series": "series"}
CSV_COLUMNS = ("t_s", "rate_mbps", "delay_ms", "loss_pct")
CSV_HINT = "t_s,rate_mbps[,delay_ms[,loss_pct]]"
MAX_RATE_MBPS = 10000.0
MAX_TRACE_S = 604_800.0     # a week, the longest run (limits.run_timeout_s): past it a time is a typo or garbage
MAX_TRACE_MS = int(MAX_TRACE_S * 1000)   # and the replay's arrays are sized by the period, so it bounds memory
MAX_DELAY_MS = 10_000.0     # as a link's delay_ms (testbed/net/topology.py)
MAX_PROBLEMS = 20           # a wrong file would otherwise print one line per line of a million-line trace

_INT = re.compile(r"[0-9]+")
_NUM = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NONFINITE = {"nan", "inf", "infinity"}


@dataclass(frozen=True)
class Steps:
    """A piecewise-constant rate: row i holds from times_s[i] until times_s[i+1] (the last row until period_s).
    delay_ms / loss_pct are None when the file has no such column (the link keeps its own value)."""
    times_s: list[float]
    rates_mbps: list[float]
    period_s: float
    delay_ms: list[float] | None = None
    loss_pct: list[float] | None = None
    notes: tuple[str, ...] = ()


class _Bad(Exception):
    """What is wrong with one line; the parse loops add the line number."""


class _Problems:
    def __init__(self, source: str):
        self.source = source
        self.items: list[Problem] = []

    def add(self, line: int | None, message: str) -> None:
        self.items.append(Problem(self.source, "", message, line=line))

    def check(self) -> None:
        if not self.items:
            return
        items = sorted(self.items, key=lambda p: p.line or 0)
        shown = items[:MAX_PROBLEMS]
        if len(items) > MAX_PROBLEMS:
            shown.append(Problem(self.source, "", f"... and {len(items) - MAX_PROBLEMS} more bad lines not shown"))
        raise ConfigError(shown)


def _data_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, content) of lines that hold data: comments cut, blank lines skipped."""
    for n, raw in enumerate(text.splitlines(), 1):
        content = raw.split("#", 1)[0].strip()
        if content:
            yield n, content


def _number(text: str, name: str) -> float:
    t = text.strip()
    if t.lstrip("+-").lower() in _NONFINITE:
        raise _Bad(f"{name}: expected a finite number, got {shown(t)}")
    if not _NUM.fullmatch(t):
        raise _Bad(f"{name}: expected a number, got {shown(t)}")
    v = float(t)
    if not math.isfinite(v):   # e.g. 1e999
        raise _Bad(f"{name}: expected a finite number, got {shown(t)}")
    return v


def _in_range(text: str, name: str, lo: float, hi: float, hi_open: bool, expected: str) -> float:
    v = _number(text, name)
    if v < lo or v > hi or (hi_open and v == hi):
        raise _Bad(f"{name}: expected {expected}, got {shown(text.strip())}")
    return v


def _time(text: str) -> float:
    return _in_range(text, "t_s", 0.0, MAX_TRACE_S, False, f"a time in seconds in [0, {MAX_TRACE_S:g}]")


def _rate(text: str) -> float:
    return _in_range(text, "rate_mbps", 0.0, MAX_RATE_MBPS, False, f"a rate in Mbit/s in [0, {MAX_RATE_MBPS:g}]")


def _delay(text: str) -> float:
    # An empty delay field means "the link's own delay": a trace can then carry loss alone (csv columns are
    # positional, so the delay column has to be there).
    if not text.strip():
        return math.nan
    return _in_range(text, "delay_ms", 0.0, MAX_DELAY_MS, False,
                     f"a delay in ms in [0, {MAX_DELAY_MS:g}] (or empty: the link's own)")


def _loss(text: str) -> float:
    return _in_range(text, "loss_pct", 0.0, 100.0, True, "a loss in percent in [0, 100)")


def _fields(fields: Sequence[str], parsers) -> list[float]:
    """Parse every field, reporting all bad ones of the line together."""
    values, errors = [], []
    for text, parse in zip(fields, parsers):
        try:
            values.append(parse(text))
        except _Bad as e:
            errors.append(str(e))
    if errors:
        raise _Bad("; ".join(errors))
    return values


def _period(times: list[float], single_row_s: float) -> float:
    """The last row lasts as long as the step before it, so a hand-written file needs no end marker."""
    return times[-1] + (times[-1] - times[-2]) if len(times) > 1 else times[-1] + single_row_s


def _increasing(rows: list[tuple[int, list[float]]], probs: _Problems) -> list[tuple[int, list[float]]]:
    """Rows whose time increases; each that doesn't is a problem on its own line."""
    kept: list[tuple[int, list[float]]] = []
    for line, values in rows:
        if kept and values[0] <= kept[-1][1][0]:
            probs.add(line, f"t_s must increase: {values[0]:g} after {kept[-1][1][0]:g} (line {kept[-1][0]})")
        else:
            kept.append((line, values))
    return kept


def _no_data(probs: _Problems, what: str) -> None:
    probs.add(None, f"empty trace: no data lines (expected {what})")


def _mahimahi_fast(text: str) -> list[int] | None:
    """Hours-long traces have millions of lines: a valid bare file (ASCII digits and newlines only, as
    Mahimahi writes them) is read in C-speed passes; anything else (comments, blank lines, a bad line) goes
    through the line-by-line parse that says what is wrong where."""
    digits = text.replace("\n", "")
    if not (digits.isascii() and digits.isdigit()):
        return None
    try:
        values = list(map(int, text.splitlines()))
    except ValueError:   # a blank line
        return None
    if 0 < values[-1] <= MAX_TRACE_MS and all(a <= b for a, b in zip(values, values[1:])):
        return values
    return None


def parse_mahimahi(text: str, source: str) -> list[int]:
    """Millisecond timestamps, validated: integers >= 0, non-decreasing, the last (the period) > 0."""
    fast = _mahimahi_fast(text)
    if fast is not None:
        return fast
    probs = _Problems(source)
    values: list[int] = []
    last_line = 0
    for line, s in _data_lines(text):
        if not _INT.fullmatch(s):
            probs.add(line, f"expected a millisecond timestamp (integer >= 0), got {shown(s)}")
            continue
        if len(s.lstrip("0")) > len(str(MAX_TRACE_MS)) or int(s) > MAX_TRACE_MS:   # no int() of 5000 digits
            probs.add(line, f"expected a millisecond timestamp of at most {MAX_TRACE_MS} (a week), got {shown(s)}")
            continue
        v = int(s)
        if values and v < values[-1]:
            probs.add(line, f"timestamps must not decrease: {v} after {values[-1]} (line {last_line})")
            continue
        values.append(v)
        last_line = line
    if not values and not probs.items:
        _no_data(probs, "one millisecond timestamp per line")
    elif values and values[-1] == 0:
        probs.add(last_line, "the last timestamp is the trace's period (ms) and must be > 0, got 0")
    probs.check()
    return values


def _is_header(first_field: str) -> bool:
    return first_field[:1].isalpha() and first_field.lower() not in _NONFINITE


def _csv_row(fields: list[str], ncols: int | None, ncols_from: str) -> list[float]:
    if not 2 <= len(fields) <= 4:
        raise _Bad(f"expected 2 to 4 comma-separated columns {CSV_HINT}, got {len(fields)}")
    if ncols is not None and len(fields) != ncols:
        raise _Bad(f"expected {ncols} columns as in {ncols_from}, got {len(fields)}")
    return _fields(fields, (_time, _rate, _delay, _loss))


def parse_csv(text: str, source: str) -> Steps:
    probs = _Problems(source)
    rows: list[tuple[int, list[float]]] = []
    ncols, ncols_from, first = None, "", True
    for line, s in _data_lines(text):
        fields = [f.strip() for f in s.split(",")]
        if first and _is_header(fields[0]):
            first = False
            if 2 <= len(fields) <= 4 and tuple(fields) == CSV_COLUMNS[:len(fields)]:
                ncols, ncols_from = len(fields), f"the header (line {line})"
            else:
                probs.add(line, f"expected a header {CSV_HINT} (exactly these names) or numbers, got {shown(s)}")
            continue
        first = False
        try:
            values = _csv_row(fields, ncols, ncols_from)
        except _Bad as e:
            probs.add(line, str(e))
            continue
        if ncols is None:
            ncols, ncols_from = len(fields), f"line {line}"
        rows.append((line, values))
    rows = _increasing(rows, probs)
    if rows and rows[0][1][0] != 0:
        probs.add(rows[0][0], f"the first row must start at t_s = 0, got {rows[0][1][0]:g}")
    if not rows and not probs.items:
        _no_data(probs, f"rows {CSV_HINT}")
    probs.check()
    cols = list(zip(*(v for _, v in rows)))
    times = list(cols[0])
    return Steps(times, list(cols[1]), _period(times, 1.0),
                 delay_ms=list(cols[2]) if ncols and ncols >= 3 else None,
                 loss_pct=list(cols[3]) if ncols == 4 else None)


def parse_series(text: str, source: str, interval_s: float = 1.0) -> Steps:
    """One rate per line (intervals of interval_s), or `t_s rate_mbps` rows (a single row lasts interval_s)."""
    probs = _Problems(source)
    rows: list[tuple[int, list[float]]] = []
    ncols, ncols_line = None, 0
    for line, s in _data_lines(text):
        fields = s.split()
        try:
            if len(fields) not in (1, 2):
                raise _Bad(f"expected one rate (Mbit/s) or two columns 't_s rate_mbps', got {len(fields)} fields")
            if ncols is not None and len(fields) != ncols:
                raise _Bad(f"expected {ncols} column(s) as on line {ncols_line}, got {len(fields)}")
            values = _fields(fields, (_rate,) if len(fields) == 1 else (_time, _rate))
        except _Bad as e:
            probs.add(line, str(e))
            continue
        if ncols is None:
            ncols, ncols_line = len(fields), line
        rows.append((line, values))
    if ncols == 2:
        rows = _increasing(rows, probs)
    if not rows and not probs.items:
        _no_data(probs, "one rate in Mbit/s per line, or 't_s rate_mbps' rows")
    probs.check()
    if ncols == 1:
        rates = [v[0] for _, v in rows]
        return Steps([i * interval_s for i in range(len(rates))], rates, len(rates) * interval_s)
    times, rates = [v[0] for _, v in rows], [v[1] for _, v in rows]
    notes: tuple[str, ...] = ()
    if times[0] != 0:
        # Cooked traces often start at a capture's wall-clock offset; the rates, not the offset, are the trace.
        notes = (f"{source}: series starts at t = {times[0]:g} s: shifted to start at 0",)
        times = [t - times[0] for t in times]
    return Steps(times, rates, _period(times, interval_s), notes=notes)


def _num(x: float) -> str:
    """12 significant digits: drops float noise (0.30000000000000004) yet keeps bytes per bin to ~1e-12.
    NaN (only a delay can be: the link's own) is an empty field."""
    return "" if math.isnan(x) else f"{x:.12g}"


def format_mahimahi(ms: Sequence[int]) -> str:
    return "".join(f"{m}\n" for m in ms)


def format_csv(times_s: Sequence[float], rates_mbps: Sequence[float], delay_ms: Sequence[float] | None = None,
               loss_pct: Sequence[float] | None = None, comment: str = "") -> str:
    cols = [c for c in (times_s, rates_mbps, delay_ms, loss_pct) if c is not None]
    if loss_pct is not None and delay_ms is None:
        raise ValueError("a csv trace with loss_pct needs delay_ms too (columns are positional)")
    lines = [f"# {comment}"] if comment else []
    lines.append(",".join(CSV_COLUMNS[:len(cols)]))
    lines += [",".join(_num(v) for v in row) for row in zip(*cols)]
    return "\n".join(lines) + "\n"


def format_series(times_s: Sequence[float], rates_mbps: Sequence[float]) -> str:
    """Two columns `t_s rate_mbps`, no header: self-describing (no interval to remember) and the shape of
    the common cooked traces, so other tools read it too."""
    return "".join(f"{_num(t)} {_num(r)}\n" for t, r in zip(times_s, rates_mbps))
