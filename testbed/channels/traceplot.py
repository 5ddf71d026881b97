"""Plots of link-capacity traces (`testbed trace plot`): rate over time, with delay and loss when a trace has them."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from testbed.channels.traces import BYTES_PER_S_PER_MBPS, Trace

PLOT_BIN_S = 0.1            # mahimahi plotted as 100 ms mean rates: per-ms opportunities are noise


def rate_curve(trace: Trace, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Step edges and rates over [0, duration]: a rate trace's own steps (looped), mahimahi at 100 ms bins."""
    if trace.is_mahimahi:
        edges = np.minimum(PLOT_BIN_S * np.arange(math.ceil(duration_s / PLOT_BIN_S - 1e-9) + 1), duration_s)
        return edges, np.diff(trace.cumulative_bytes(edges)) / BYTES_PER_S_PER_MBPS / np.diff(edges)
    return _looped_steps(trace, trace.rates_mbps, duration_s)


def _looped_steps(trace: Trace, values: np.ndarray, duration_s: float) -> tuple[np.ndarray, np.ndarray]:
    loops = max(1, math.ceil(duration_s / trace.period_s)) if trace.loop else 1
    starts = np.concatenate([trace.times_s + k * trace.period_s for k in range(loops)])
    vals = np.tile(values, loops)
    keep = starts < duration_s
    return np.append(starts[keep], duration_s), vals[keep]


def plot_trace(traces: list[Trace], out_png: str | Path, labels: list[str] | None = None,
               duration_s: float | None = None) -> Path:
    """Rate over time of each trace (steps), and delay/loss in a second panel when any trace has them."""
    from testbed.common.figures import Figure, finish_axis, save   # matplotlib (Agg) only when plotting
    labels = labels or [Path(t.source).name or f"trace {i}" for i, t in enumerate(traces)]
    duration = duration_s or max((t.period_s for t in traces), default=1.0)
    extras = any(t.has_delay or t.has_loss for t in traces)
    fig = Figure(figsize=(9, 6.5 if extras else 4.5))
    axes = fig.subplots(2, 1, sharex=True) if extras else [fig.add_subplot()]
    for i, (trace, label) in enumerate(zip(traces, labels)):
        x, y = rate_curve(trace, duration)
        axes[0].step(x, np.append(y, y[-1:]), where="post", color=f"C{i % 10}", label=label)
    axes[0].set(ylabel="rate (Mbit/s)", title="Link capacity" + (" (mahimahi: 100 ms means)" if any(
        t.is_mahimahi for t in traces) else ""), xlim=(0, duration))
    finish_axis(axes[0], bool(traces))
    if extras:
        _plot_extras(axes[1], traces, labels, duration)
    axes[-1].set(xlabel="time (s)")
    return save(fig, Path(out_png))


def _plot_extras(ax, traces: list[Trace], labels: list[str], duration: float) -> None:
    from testbed.common.figures import finish_axis
    loss_ax = ax.twinx()
    for i, (trace, label) in enumerate(zip(traces, labels)):
        for target, values, style, what in ((ax, trace.delay_ms, "-", "delay"), (loss_ax, trace.loss_pct, ":", "loss")):
            if values is not None:
                x, y = _looped_steps(trace, values, duration)
                target.step(x, np.append(y, y[-1:]), where="post", color=f"C{i % 10}", linestyle=style,
                            label=f"{label} {what}")
    ax.set(ylabel="delay (ms), solid")
    loss_ax.set(ylabel="loss (%), dotted")
    finish_axis(ax, any(t.has_delay for t in traces), loc="upper left")
    if any(t.has_loss for t in traces):
        loss_ax.legend(loc="upper right", fontsize="small")
