"""Link-capacity traces (Mahimahi-style): load, query, convert (plots: testbed/channels/traceplot.py).

A Trace answers "how many bytes can the link deliver in [t0, t1)" in O(log n) (cumulative arrays and
np.searchsorted), because the emulation asks every 100 ms of hours-long runs. It repeats with its period
(loop=True), or is played once (loop=False): a rate trace then holds its last rate forever, while a mahimahi
trace has no opportunities after its end, so its rate there is 0.

mahimahi traces follow Mahimahi exactly: opportunity i of loop k is at ms[i] + k * period. An opportunity at
ms == period thus falls on the next loop's start: in every loop but the first, the per-period ("steady
state") view puts it at offset 0, which is the view conversions use.

Formats and their parsing live in traceformats.py; reading and writing files only in load_trace/save_trace.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from testbed.channels import traceformats as F
from testbed.common.errors import ConfigError, Problem, UnreadableInput, read_text
from testbed.channels.traceformats import FORMATS, SUFFIXES

PACKET_BYTES = 1500
BYTES_PER_S_PER_MBPS = 125_000.0
MAX_TRACE_BYTES = 128 << 20   # an hour of 100 Mbit/s as Mahimahi lines is ~240 MB; real traces are far smaller
_CHUNK_MS = 1_000_000       # bounds memory when turning hours of rate into ms opportunities
_EPS_PACKETS = 1e-6         # float slack when bytes owed land exactly on a packet boundary


def _frozen(values, dtype=float) -> np.ndarray | None:
    if values is None:
        return None
    a = np.array(values, dtype=dtype)
    a.setflags(write=False)
    return a


def _snap_ms(t_s: np.ndarray) -> np.ndarray:
    """Seconds -> ms, snapping float noise (0.1 + 0.2 s) onto whole ms so boundary opportunities land in
    the bin they belong to."""
    m = np.asarray(t_s, dtype=float) * 1000.0
    r = np.round(m)
    return np.where(np.abs(m - r) < 1e-6, r, m)


def _count_before(ms: np.ndarray, t_ms: np.ndarray) -> np.ndarray:
    """How many integer timestamps in sorted `ms` are < t_ms. The key is made int64 (s < x iff s < ceil(x)):
    a float key would make numpy convert the whole array on every call, O(n) instead of O(log n)."""
    return np.searchsorted(ms, np.ceil(t_ms).astype(np.int64), side="left")


@dataclass(frozen=True, eq=False)
class Trace:
    """Either rate steps (csv, series) or mahimahi opportunities; build with from_steps/from_opportunities."""
    format: str
    source: str
    loop: bool
    period_s: float
    times_s: np.ndarray | None = None            # step starts, from 0 (rate traces)
    rates_mbps: np.ndarray | None = None
    delay_ms: np.ndarray | None = None           # None: the link keeps its own delay
    loss_pct: np.ndarray | None = None
    opportunities_ms: np.ndarray | None = None   # mahimahi traces
    notes: tuple[str, ...] = ()
    _prefix: dict = field(default_factory=dict, init=False, repr=False)   # cumulative arrays, set once

    @classmethod
    def from_steps(cls, times_s: Sequence[float], rates_mbps: Sequence[float], period_s: float, *,
                   delay_ms: Sequence[float] | None = None, loss_pct: Sequence[float] | None = None,
                   loop: bool = True, format: str = "csv", source: str = "", notes: tuple[str, ...] = ()) -> Trace:
        return cls(format, source, loop, float(period_s), _frozen(times_s), _frozen(rates_mbps), _frozen(delay_ms),
                   _frozen(loss_pct), None, tuple(notes))

    @classmethod
    def from_opportunities(cls, ms: Sequence[int], *, loop: bool = True, source: str = "",
                           notes: tuple[str, ...] = ()) -> Trace:
        ms = _frozen(ms, np.int64)
        return cls("mahimahi", source, loop, float(ms[-1]) / 1000.0 if len(ms) else 0.0,
                   opportunities_ms=ms, notes=tuple(notes))

    def __post_init__(self):
        if self.is_mahimahi:
            self._init_opportunities()
        else:
            self._init_steps()

    def _init_opportunities(self) -> None:
        ms = self.opportunities_ms
        if not len(ms) or ms[0] < 0 or np.any(np.diff(ms) < 0) or ms[-1] <= 0:
            raise ValueError("opportunities must be non-decreasing ms >= 0, the last (the period) > 0")
        period = int(ms[-1])
        self._prefix["mod"] = _frozen(np.sort(ms % period), np.int64)   # steady-state loop, sorted
        self._prefix["at_period"] = int(np.sum(ms == period))

    def _init_steps(self) -> None:
        t, r = self.times_s, self.rates_mbps
        if t is None or r is None or len(t) == 0 or len(t) != len(r):
            raise ValueError("a rate trace needs as many step times as rates, at least one")
        if t[0] != 0 or np.any(np.diff(t) <= 0) or not self.period_s > t[-1]:
            raise ValueError("step times must start at 0, increase, and end before the period")
        if np.any(r < 0):
            raise ValueError("rates must be >= 0")
        for extra in (self.delay_ms, self.loss_pct):
            if extra is not None and len(extra) != len(t):
                raise ValueError("delay_ms/loss_pct need one value per step")
        if self.loss_pct is not None and self.delay_ms is None:
            raise ValueError("loss_pct needs delay_ms too: csv columns are positional")
        durations = np.diff(np.append(t, self.period_s))
        for name, v in (("bytes", r * BYTES_PER_S_PER_MBPS), ("delay", self.delay_ms), ("loss", self.loss_pct)):
            if v is not None:
                self._prefix[name] = (v, np.concatenate(([0.0], np.cumsum(v * durations))))

    # --- what it is -------------------------------------------------------------------------------------
    @property
    def is_mahimahi(self) -> bool:
        return self.opportunities_ms is not None

    @property
    def has_delay(self) -> bool:
        """Whether any step sets a delay (an empty csv field, NaN, keeps the link's own)."""
        return self.delay_ms is not None and not bool(np.all(np.isnan(self.delay_ms)))

    @property
    def has_loss(self) -> bool:
        return self.loss_pct is not None

    @property
    def bytes_per_period(self) -> float:
        if self.is_mahimahi:
            return float(PACKET_BYTES * len(self.opportunities_ms))
        return float(self._prefix["bytes"][1][-1])

    @property
    def mean_rate_mbps(self) -> float:
        return self.bytes_per_period / BYTES_PER_S_PER_MBPS / self.period_s

    # --- queries ----------------------------------------------------------------------------------------
    def cumulative_bytes(self, t_s) -> np.ndarray:
        """Bytes deliverable in [0, t) for each t >= 0 (vectorized)."""
        t = np.asarray(t_s, dtype=float)
        if np.any(t < 0):
            raise ValueError("trace time must be >= 0")
        return self._cum_opportunities(t) if self.is_mahimahi else self._cum_steps(t)

    def bytes_between(self, t0: float, t1: float) -> float:
        """Bytes deliverable in [t0, t1)."""
        if not t1 > t0:
            raise ValueError(f"empty interval [{t0}, {t1})")
        c = self.cumulative_bytes(np.array([t0, t1]))
        return float(c[1] - c[0])

    def rate_between(self, t0: float, t1: float) -> float:
        """Mean deliverable rate in Mbit/s over [t0, t1)."""
        return self.bytes_between(t0, t1) / BYTES_PER_S_PER_MBPS / (t1 - t0)

    def extras_at(self, t: float) -> tuple[float | None, float | None]:
        """(delay_ms, loss_pct) in force at t; None where the trace has no such column."""
        if self.is_mahimahi or (self.delay_ms is None and self.loss_pct is None):
            return None, None
        u = t % self.period_s if self.loop else t
        i = int(np.searchsorted(self.times_s, u, side="right")) - 1
        pick = lambda v: None if v is None or math.isnan(v[i]) else float(v[i])  # noqa: E731   NaN: link's own
        return pick(self.delay_ms), pick(self.loss_pct)

    def binned(self, interval_s: float):
        """One period cut into interval_s bins (the last may be shorter): (edges, mean rate Mbit/s, mean delay,
        mean loss), delay/loss None if absent. Delivered bytes per bin are kept exactly."""
        n = max(1, int(math.floor(self.period_s / interval_s + 1e-9)))
        edges = interval_s * np.arange(n + 1)
        edges[-1] = min(edges[-1], self.period_s)
        if self.period_s - edges[-1] > 1e-9:
            edges = np.append(edges, self.period_s)
        width = np.diff(edges)
        rates = np.diff(self._period_bytes(edges)) / BYTES_PER_S_PER_MBPS / width
        rates = np.where(np.abs(rates) < 1e-9, 0.0, rates)   # float noise must not write "-1e-13"
        means = [None if name not in self._prefix else np.diff(self._step_integral(name, edges)) / width
                 for name in ("delay", "loss")]
        return edges, rates, means[0], means[1]

    # --- internals --------------------------------------------------------------------------------------
    def _step_integral(self, name: str, u: np.ndarray) -> np.ndarray:
        """Integral of a step column from 0 to u; past the period the last value goes on."""
        values, prefix = self._prefix[name]
        i = np.searchsorted(self.times_s, u, side="right") - 1
        return prefix[i] + values[i] * (u - self.times_s[i])

    def _period_bytes(self, u: np.ndarray) -> np.ndarray:
        """Bytes in [0, u) of a steady-state loop, u in [0, period]."""
        if self.is_mahimahi:
            return PACKET_BYTES * _count_before(self._prefix["mod"], _snap_ms(u)).astype(float)
        return self._step_integral("bytes", u)

    def _cum_steps(self, t: np.ndarray) -> np.ndarray:
        if not self.loop:
            return self._step_integral("bytes", t)
        k = np.floor(t / self.period_s)
        u = np.clip(t - k * self.period_s, 0.0, self.period_s)
        return k * self.bytes_per_period + self._step_integral("bytes", u)

    def _cum_opportunities(self, t: np.ndarray) -> np.ndarray:
        tm = _snap_ms(t)
        if not self.loop:
            return PACKET_BYTES * _count_before(self.opportunities_ms, tm).astype(float)
        period = float(self.opportunities_ms[-1])
        k = np.floor(tm / period)
        u = tm - k * period
        steady = k * len(self.opportunities_ms) + _count_before(self._prefix["mod"], u)
        # Exact Mahimahi: opportunities at ms == period come at the end of the first loop, not at t = 0.
        return PACKET_BYTES * (steady - np.where(tm > 0, self._prefix["at_period"], 0)).astype(float)


# --- files -------------------------------------------------------------------------------------------------
def infer_format(path: str | Path) -> str:
    fmt = SUFFIXES.get(Path(path).suffix.lower())
    if fmt is None:
        known = ", ".join(f"{s} ({f})" for s, f in SUFFIXES.items())
        raise ConfigError([Problem(str(path), "", f"cannot tell the trace format from the name; known suffixes: "
                                   f"{known}; else name the format ({', '.join(FORMATS)})")])
    return fmt


def _check_format(fmt: str, path: str | Path) -> str:
    if fmt not in FORMATS:
        raise ConfigError([Problem(str(path), "", f"unknown trace format {fmt!r}: expected one of {', '.join(FORMATS)}")])
    return fmt


def _check_interval(interval_s: float, path: str | Path) -> None:
    if not (math.isfinite(interval_s) and interval_s > 0):
        raise ConfigError([Problem(str(path), "interval_s", f"expected seconds > 0, got {interval_s!r}")])


def parse_trace(text: str, fmt: str, source: str = "<text>", loop: bool = True, interval_s: float = 1.0) -> Trace:
    """A Trace from a file's text (load_trace without the file)."""
    _check_format(fmt, source)
    _check_interval(interval_s, source)
    if fmt == "mahimahi":
        return Trace.from_opportunities(F.parse_mahimahi(text, source), loop=loop, source=source)
    steps = F.parse_csv(text, source) if fmt == "csv" else F.parse_series(text, source, interval_s)
    return Trace.from_steps(steps.times_s, steps.rates_mbps, steps.period_s, delay_ms=steps.delay_ms,
                            loss_pct=steps.loss_pct, loop=loop, format=fmt, source=source, notes=steps.notes)


def load_trace(path: str | Path, fmt: str | None = None, loop: bool = True, interval_s: float = 1.0) -> Trace:
    """Read a trace; the format comes from the suffix unless fmt names it. interval_s: a one-column series'
    interval (and a two-column series' single row's duration)."""
    fmt = _check_format(fmt, path) if fmt else infer_format(path)
    try:
        text = read_text(path, MAX_TRACE_BYTES, f"a {fmt} trace")
    except UnreadableInput as e:
        raise ConfigError([Problem(str(path), "", str(e))]) from None
    return parse_trace(text, fmt, str(path), loop, interval_s)


def _dropped_extras(trace: Trace, fmt: str) -> list[str]:
    cols = [c for c, has in (("delay", trace.has_delay), ("loss", trace.has_loss)) if has]
    return [f"{'/'.join(cols)} column(s) dropped: {fmt} has none"] if cols else []


def _opportunities_from_rate(trace: Trace) -> tuple[list[int], list[str]]:
    """ms opportunities whose cumulative bytes track the rate integral: one in ms m for each 1500-byte
    boundary the owed bytes cross during (m, m+1] ms, so bytes per bin stay within a packet."""
    warnings = []
    period_ms = int(round(trace.period_s * 1000))
    if abs(period_ms - trace.period_s * 1000) > 1e-6:
        warnings.append(f"period {trace.period_s:g} s is not a whole number of ms: rounded to {period_ms} ms")
    first_ms = float(trace._period_bytes(np.array([min(1e-3, trace.period_s)]))[0])
    # A mahimahi period ends at its last opportunity, and one at ms == period plays at offset 0 of the next
    # loop: a phase that puts the first packet in ms 0 lets it close the period without moving anything.
    phase = PACKET_BYTES - first_ms if 0 < first_ms < PACKET_BYTES else 0.0
    chunks, owed_before = [], 0
    for start in range(0, period_ms, _CHUNK_MS):
        ends = np.arange(start + 1, min(start + _CHUNK_MS, period_ms) + 1)
        owed = np.floor((trace._period_bytes(np.minimum(ends / 1000, trace.period_s)) + phase) / PACKET_BYTES
                        + _EPS_PACKETS).astype(np.int64)
        counts = np.diff(owed, prepend=owed_before)
        chunks.append(np.repeat(ends - 1, counts))
        owed_before = int(owed[-1])
    ms = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
    if not len(ms):
        raise ConfigError([Problem(trace.source, "", "the trace delivers no bytes: a mahimahi trace needs at "
                                   "least one opportunity")])
    if ms[0] == 0:
        ms = np.append(ms[1:], period_ms)
    else:   # starts in an outage: keep the period (no drift over loops) by delaying the last packet
        warnings.append(f"the trace starts at rate 0 and a mahimahi period ends at its last opportunity: the "
                        f"last opportunity moved from {ms[-1]} ms to {period_ms} ms to keep the period")
        ms[-1] = period_ms
    return ms.tolist(), warnings


def _rows_keeping_period(edges: np.ndarray, cols: list[np.ndarray | None]):
    """Row starts and values for csv/series. The last row lasts as long as the step before it, so when the
    last bin is shorter (or alone), split the bin before it (or it) so that rule yields the true period."""
    starts, width = edges[:-1], np.diff(edges)
    if len(width) == 1 or abs(width[-1] - width[-2]) > 1e-9:
        i = len(width) - 2 if len(width) > 1 else 0
        cut = edges[i + 1] - width[-1] if len(width) > 1 else edges[0] + width[0] / 2
        starts = np.insert(starts, i + 1, cut)
        cols = [None if c is None else np.insert(c, i + 1, c[i]) for c in cols]
    return starts, cols


def _render(trace: Trace, fmt: str, interval_s: float) -> tuple[str, list[str]]:
    if fmt == "mahimahi":
        warnings = _dropped_extras(trace, fmt)
        if trace.is_mahimahi:
            return F.format_mahimahi(trace.opportunities_ms.tolist()), warnings
        ms, more = _opportunities_from_rate(trace)
        return F.format_mahimahi(ms), warnings + more
    edges, rates, delay, loss = trace.binned(interval_s)
    warnings = []
    if trace.is_mahimahi:
        warnings.append(f"opportunities binned into {interval_s:g} s mean rates (delivered bytes per bin kept)")
    elif np.any(np.abs(trace.times_s / interval_s - np.round(trace.times_s / interval_s)) > 1e-9):
        warnings.append(f"steps finer than the {interval_s:g} s bins averaged (delivered bytes per bin kept)")
    starts, (rates, delay, loss) = _rows_keeping_period(edges, [rates, delay, loss])
    if fmt == "csv":
        return F.format_csv(starts, rates, delay, loss, comment=f"from {trace.source} ({trace.format})"), warnings
    return F.format_series(starts, rates), warnings + _dropped_extras(trace, fmt)


def dump_trace(trace: Trace, fmt: str, interval_s: float = 1.0) -> str:
    """The trace as text of format fmt; csv/series are binned at interval_s (mean rate per bin)."""
    _check_format(fmt, trace.source)
    _check_interval(interval_s, trace.source)
    return _render(trace, fmt, interval_s)[0]


def save_trace(trace: Trace, path: str | Path, fmt: str | None = None, interval_s: float = 1.0) -> list[str]:
    """Write the trace (format from the suffix unless named); returns warnings about what the format lost."""
    fmt = _check_format(fmt, path) if fmt else infer_format(path)
    _check_interval(interval_s, path)
    text, warnings = _render(trace, fmt, interval_s)
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise ConfigError([Problem(str(path), "", f"cannot write the trace: {e}")]) from None
    return warnings


def convert_trace(src_path: str | Path, dst_path: str | Path, src_fmt: str | None = None,
                  dst_fmt: str | None = None, interval_s: float = 1.0) -> tuple[Trace, list[str]]:
    """convert, also returning the source trace (the CLI summarizes it)."""
    dst_fmt = _check_format(dst_fmt, dst_path) if dst_fmt else infer_format(dst_path)   # fail before reading
    trace = load_trace(src_path, src_fmt, interval_s=interval_s)
    return trace, list(trace.notes) + save_trace(trace, dst_path, dst_fmt, interval_s)


def convert(src_path: str | Path, dst_path: str | Path, src_fmt: str | None = None, dst_fmt: str | None = None,
            interval_s: float = 1.0) -> list[str]:
    """Read one format, write another; returns warnings (what was dropped, shifted or moved)."""
    return convert_trace(src_path, dst_path, src_fmt, dst_fmt, interval_s)[1]
