"""`testbed trace ...`: convert, plot and show link-capacity traces (see traces.py for the formats).

Handlers return an exit code; a ConfigError (bad file, bad line) propagates to the main CLI, which prints one
line per problem and exits 2. numpy/matplotlib load only when a trace command runs.
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from testbed.channels.traceformats import FORMATS


def _interval(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return v


def summary(trace) -> str:
    """One line to compare a trace before and after conversion."""
    return (f"{trace.source} ({trace.format}): {trace.period_s:g} s per loop, mean {trace.mean_rate_mbps:.4f} "
            f"Mbit/s, {trace.bytes_per_period:,.0f} bytes per loop")


def describe(trace) -> list[str]:
    """What `trace show` prints."""
    import numpy as np
    from testbed.channels.traceplot import PLOT_BIN_S, rate_curve
    _, rates = rate_curve(trace, trace.period_s)
    how = f"over {PLOT_BIN_S * 1000:g} ms bins" if trace.is_mahimahi else "over its steps"
    lines = [f"{trace.source}: {trace.format}, {'loops every' if trace.loop else 'plays once,'} {trace.period_s:g} s",
             f"rate: mean {trace.mean_rate_mbps:.4g}, min {np.min(rates):.4g}, max {np.max(rates):.4g} Mbit/s ({how})",
             f"bytes per loop: {trace.bytes_per_period:,.0f}"
             + (f" ({len(trace.opportunities_ms)} opportunities of 1500 B)" if trace.is_mahimahi else "")]
    for name, values, has, unit in (("delay", trace.delay_ms, trace.has_delay, "ms"),
                                    ("loss", trace.loss_pct, trace.has_loss, "%")):
        lines.append(f"{name}: " + (f"{np.nanmin(values):g} to {np.nanmax(values):g} {unit}" if has
                                    else "none (the link keeps its own)"))
    return lines + [f"note: {n}" for n in trace.notes]


def cmd_trace_convert(args) -> int:
    from testbed.channels.traces import convert_trace, infer_format, load_trace
    src, warnings = convert_trace(args.input, args.output, args.src_fmt, args.dst_fmt, args.interval)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    out = load_trace(args.output, args.dst_fmt or infer_format(args.output), interval_s=args.interval)
    print(f"in:  {summary(src)}")
    print(f"out: {summary(out)}")
    return 0


def cmd_trace_plot(args) -> int:
    from testbed.channels.traceplot import plot_trace
    from testbed.channels.traces import load_trace
    traces = [load_trace(f, args.format, interval_s=args.interval) for f in args.files]
    out = Path(args.output) if args.output else Path(args.files[0]).with_suffix(".png")
    plot_trace(traces, out, labels=list(args.files), duration_s=args.duration)
    print(f"wrote {out}")
    return 0


def cmd_trace_show(args) -> int:
    from testbed.channels.traces import load_trace
    print("\n".join(describe(load_trace(args.file, args.format, interval_s=args.interval))))
    return 0


def cmd_trace_synth(args) -> int:
    from testbed.channels.traces import infer_format, save_trace
    from testbed.channels.synth import load_channel, synthesize
    fmt = args.format or infer_format(args.output)
    trace = synthesize(load_channel(args.channel), args.duration, args.step, args.seed, args.direction,
                       with_loss=not args.no_loss)
    for w in save_trace(trace, args.output, fmt, interval_s=args.step):
        print(f"warning: {w}", file=sys.stderr)
    print(f"wrote {args.output}: {args.channel}, seed {args.seed}, {args.direction}, "
          f"{args.duration:g} s at {args.step:g} s steps; mean {trace.mean_rate_mbps:.4g} Mbit/s")
    return 0


def add_trace_parser(subparsers) -> argparse._SubParsersAction:
    """Add `trace` to the main CLI's subparsers; returns trace's own subparsers, where more subcommands
    (e.g. `trace synth`) are added the same way: sub.add_parser(...).set_defaults(func=handler)."""
    p = subparsers.add_parser("trace", help="link-capacity traces: convert between formats, plot, show",
                              description=f"formats: {', '.join(FORMATS)} (inferred from the file suffix)")
    sub = p.add_subparsers(dest="trace_command", required=True)
    interval = dict(type=_interval, default=1.0, metavar="S",
                    help="interval of a one-column series, and the bin width when writing csv/series (default 1)")
    s = sub.add_parser("convert", help="convert a trace to another format; prints both summaries to compare")
    s.add_argument("input")
    s.add_argument("output")
    s.add_argument("--from", dest="src_fmt", choices=FORMATS, help="format of INPUT (default: from its suffix)")
    s.add_argument("--to", dest="dst_fmt", choices=FORMATS, help="format of OUTPUT (default: from its suffix)")
    s.add_argument("--interval", **interval)
    s.set_defaults(func=cmd_trace_convert)
    s = sub.add_parser("plot", help="plot traces' rate (and delay/loss) over time")
    s.add_argument("files", nargs="+", metavar="FILE")
    s.add_argument("-o", "--output", metavar="PNG", help="output image (default: FILE with suffix .png)")
    s.add_argument("--format", choices=FORMATS, help="format of every FILE (default: from each suffix)")
    s.add_argument("--interval", **interval)
    s.add_argument("--duration", type=_interval, metavar="S", help="seconds to plot, looping (default: longest period)")
    s.set_defaults(func=cmd_trace_plot)
    s = sub.add_parser("show", help="a trace's period, mean/min/max rate, delay and loss")
    s.add_argument("file")
    s.add_argument("--format", choices=FORMATS, help="format of FILE (default: from its suffix)")
    s.add_argument("--interval", **interval)
    s.set_defaults(func=cmd_trace_show)
    from testbed.channels.synth import PRESETS
    s = sub.add_parser("synth", help="write a trace from a channel model (a preset or a YAML channel mapping)")
    s.add_argument("channel", metavar="CHANNEL", help=f"a preset ({', '.join(PRESETS)}) or a YAML file holding "
                                                      "a link's `channel:` mapping (model snr needs band_mhz)")
    s.add_argument("-o", "--output", required=True, help="trace file; its suffix picks the format")
    s.add_argument("--format", choices=FORMATS, help="format of OUTPUT (default: from its suffix)")
    s.add_argument("--duration", type=_interval, default=60.0, metavar="S", help="seconds of trace (default 60)")
    s.add_argument("--step", type=_interval, default=0.1, metavar="S", help="model step and trace resolution "
                                                                             "(default 0.1)")
    s.add_argument("--seed", type=int, default=0, help="seed of mobility, shadowing, fading, bursts (default 0)")
    s.add_argument("--direction", choices=("up", "down"), default="up", help="station → AP (up) or back")
    s.add_argument("--no-loss", action="store_true", help="write the rate only")
    s.set_defaults(func=cmd_trace_synth)
    return sub
