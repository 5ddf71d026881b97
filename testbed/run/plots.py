"""Plots of one run from its event logs (matplotlib, Agg: no display needed).

    make_plots(run_dir) -> [RUN/plots/goodput.png, acceptance.png, latency_cdf.png, links.png (if link states
                            were logged), channels.png (if a channel driver ran: link rate and goodput per drafter),
                            utility.png (if a budget scheduler ran)]

Time is seconds since the run's first session start (the first drafter `start` event). An experiment's link
faults (testbed/channels/faults.py), as logged by their `fault` start and end events, are shaded on every time axis.
"""
from __future__ import annotations

import math
from pathlib import Path

from nodes.events import LINKS_FILE, Fault, Link, fault_marks, RunLogs, Schedule, Start, Verdict, load_run, of_type, read_events
from testbed.common.figures import Figure, finish_axis, no_data, save
from testbed.run import metrics as M

ROLLING = 20          # rounds in the rolling mean of acceptance
PLOT_NAMES = ("goodput.png", "acceptance.png", "latency_cdf.png")
LINKS_PLOT = "links.png"
CHANNELS_PLOT = "channels.png"
UTILITY_PLOT = "utility.png"


def plot_names(run_dir: str | Path) -> list[str]:
    """The files make_plots writes for this run (the runner lists them in summary.md before drawing them)."""
    return _names(load_run(run_dir))


def _names(run: RunLogs) -> list[str]:
    has_channels = any(e.node == "channel" for e in run.links)
    has_schedule = any(isinstance(e, Schedule) for e in run.verifiers)
    return [*PLOT_NAMES, *([LINKS_PLOT] if run.links else []), *([CHANNELS_PLOT] if has_channels else []),
            *([UTILITY_PLOT] if has_schedule else [])]


def t0_of(run: RunLogs) -> float:
    starts = [e.t for evs in run.drafters.values() for e in of_type(evs, Start)]
    if starts:
        return min(starts)
    ts = [e.t for evs in run.drafters.values() for e in evs] + [e.t for e in run.verifiers]
    return min(ts) if ts else 0.0


def goodput_bins(verdicts: list[Verdict], t0: float, n_bins: int | None = None, width: float = 1.0):
    """Bin starts (s since t0) and tokens/s in each `width`-second bin."""
    last = max((v.t for v in verdicts), default=t0)
    n = n_bins if n_bins is not None else max(1, math.ceil((last - t0) / width + 1e-12))
    tokens = [0.0] * n
    for v in verdicts:
        i = int((v.t - t0) // width)
        if 0 <= i < n:
            tokens[i] += v.tokens
    return [i * width for i in range(n)], [x / width for x in tokens]


def colors(run: RunLogs) -> dict[str, str]:
    """One colour per drafter, the same in every plot of the run."""
    return {name: f"C{i % 10}" for i, name in enumerate(sorted(run.drafters))}


def step_edges(x: list[float], y: list[float], width: float = 1.0):
    """Bin starts/values extended by the last bin's end, so a post-step plot draws the last bin too."""
    return (x + [x[-1] + width], y + [y[-1]]) if x else (x, y)


def cdf(values: list[float]):
    xs = sorted(values)
    return xs, [(i + 1) / len(xs) for i in range(len(xs))]


def _by_link(links: list[Link]) -> dict[str, list[Link]]:
    by_link: dict[str, list[Link]] = {}
    for e in links:
        by_link.setdefault(e.link, []).append(e)
    return by_link


def fault_spans(run_dir: str | Path, run: RunLogs) -> list[tuple[float, float, str]]:
    """(start t, end t, label) of each fault logged in events/links.jsonl; one the run outlived ends at the
    last event."""
    marks = fault_marks(run_dir)
    ends = {(e.fault, e.repeat): e.t for e in marks if e.edge == "end"}
    ts = [e.t for evs in run.drafters.values() for e in evs] + [e.t for e in marks]
    last = max(ts, default=0.0)
    return [(e.t, ends.get((e.fault, e.repeat), last), f"{e.kind} {e.link or e.target}")
            for e in marks if e.edge == "start"]


def shade_faults(ax, faults: list[tuple[float, float, str]], t0: float) -> None:
    """A red band per fault, labelled once per kind and link (the legend says what each band is)."""
    seen = set()
    for a, b, label in faults:
        ax.axvspan(a - t0, b - t0, color="red", alpha=0.12, lw=0,
                   label=None if label in seen else f"fault: {label}")
        seen.add(label)


def plot_goodput(run: RunLogs, t0: float, path: Path, faults=()) -> Path:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    all_v = [v for evs in run.drafters.values() for v in of_type(evs, Verdict)]
    n = len(goodput_bins(all_v, t0)[0])
    col = colors(run)
    for name, evs in sorted(run.drafters.items()):
        ax.step(*step_edges(*goodput_bins(of_type(evs, Verdict), t0, n)), where="post", color=col[name], label=name)
    if len(run.drafters) > 1:
        ax.step(*step_edges(*goodput_bins(all_v, t0, n)), where="post", color="black", linestyle="--",
                label="total")
    if not all_v:
        no_data(ax)
    shade_faults(ax, faults, t0)
    ax.set(xlabel="time since first request (s)", ylabel="goodput (tokens/s, 1 s bins)",
           title="Goodput over time per drafter")
    finish_axis(ax, bool(all_v))
    return save(fig, path)


def plot_acceptance(run: RunLogs, t0: float, path: Path, faults=()) -> Path:
    fig = Figure(figsize=(9, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    any_data = False
    col = colors(run)
    for name, evs in sorted(run.drafters.items()):
        rounds = [v for v in of_type(evs, Verdict) if v.round >= 1]
        spec = [v for v in rounds if v.gamma > 0]
        if spec:
            any_data = True
            rate = [v.accepted / v.gamma for v in spec]
            roll = [sum(rate[max(0, i - ROLLING + 1):i + 1]) / (i + 1 - max(0, i - ROLLING + 1))
                    for i in range(len(rate))]
            ax1.plot([v.t - t0 for v in spec], roll, color=col[name], label=name)
            ax1.scatter([v.t - t0 for v in spec], rate, s=4, alpha=0.15, color=col[name])
        if rounds:
            any_data = True
            ax2.step([v.t - t0 for v in rounds], [v.gamma for v in rounds], where="post",
                     color=col[name], label=name)
    ax1.set(ylabel="accepted / γ per round", ylim=(-0.05, 1.05),
            title=f"Acceptance per round (dots) and its rolling mean over {ROLLING} rounds (lines)")
    ax2.set(xlabel="time since first request (s)", ylabel="γ (draft tokens per round)",
            title="Draft window γ per round")
    for ax in (ax1, ax2):
        shade_faults(ax, faults, t0)
        finish_axis(ax, any_data)
    return save(fig, path)


def plot_latency_cdfs(run: RunLogs, path: Path) -> Path:
    fig = Figure(figsize=(13, 4.2))
    axes = fig.subplots(1, 3)
    per = {name: M._Drafter(name, evs).latencies() for name, evs in sorted(run.drafters.items())}
    col = colors(run)
    specs = [("TTFT", "time to first token (ms)", 1e3), ("TPOT", "time per output token (ms)", 1e3),
             ("end-to-end latency", "request latency (s)", 1.0)]
    for i, (ax, (title, xlabel, scale)) in enumerate(zip(axes, specs)):
        drawn = False
        for name, lat in per.items():
            if lat[i]:
                xs, ys = cdf([x * scale for x in lat[i]])
                ax.step(xs, ys, where="post", color=col[name], label=f"{name} (n={len(xs)})")
                drawn = True
        pooled = [x * scale for lat in per.values() for x in lat[i]]
        if len(per) > 1 and pooled:
            xs, ys = cdf(pooled)
            ax.step(xs, ys, where="post", color="black", linestyle="--", label=f"all (n={len(xs)})")
        ax.set(xlabel=xlabel, ylabel="fraction of requests ≤ x", title=f"{title} CDF", ylim=(0, 1.02))
        finish_axis(ax, drawn, loc="lower right")
    return save(fig, path)


def plot_links(run: RunLogs, t0: float, path: Path, faults=()) -> Path:
    fig = Figure(figsize=(9, 4.5))
    ax = fig.add_subplot()
    ts = [e.t for evs in run.drafters.values() for e in evs] + [e.t for e in run.links]
    end = max(ts) - t0 if ts else 0.0
    by_link = _by_link(run.links)
    for i, (link, evs) in enumerate(sorted(by_link.items())):
        color = f"C{i % 10}"
        for direction, style, width, alpha in (("up", "-", 4.0, 0.4), ("down", "--", 1.5, 1.0)):  # both seen when equal
            pts = [(e.t - t0, e.rate_mbps(direction)) for e in evs]
            xs = [x for x, _ in pts] + [max(end, pts[-1][0])]
            ys = [y for _, y in pts] + [pts[-1][1]]
            ax.step(xs, ys, where="post", color=color, linestyle=style, linewidth=width, alpha=alpha,
                    label=f"{link} {direction}")
    shade_faults(ax, faults, t0)
    ax.set(xlabel="time since first request (s)", ylabel="link rate (Mbit/s)", title="Link rate over time")
    finish_axis(ax, bool(by_link))
    return save(fig, path)


def plot_channels(run: RunLogs, t0: float, path: Path, faults=()) -> Path:
    """Per drafter: the rate its link was given each interval (up solid, down dashed) and its goodput (bars,
    right axis), so a fade or a smaller band share can be seen against the tokens it cost."""
    drafters = sorted(run.drafters)
    channel = [e for e in run.links if e.node == "channel"]
    fig = Figure(figsize=(9, 2.4 * max(1, len(drafters)) + 0.6))
    axes = fig.subplots(max(1, len(drafters)), 1, sharex=True, squeeze=False)[:, 0]
    col = colors(run)
    for ax, d in zip(axes, drafters):
        mine = [e for e in channel if d in (e.a, e.b)]
        for link, evs in sorted(_by_link(mine).items()):
            for direction, style in (("up", "-"), ("down", "--")):
                ax.step([e.t - t0 for e in evs], [e.rate_mbps(direction) for e in evs], where="post",
                        linestyle=style, color=col.get(d, "C0"), label=f"{link} {direction} (Mbit/s)")
        shade_faults(ax, faults, t0)
        ax.set_ylabel("link rate (Mbit/s)")
        ax.set_title(d, fontsize=10, loc="left")
        verdicts = of_type(run.drafters[d], Verdict)
        twin = ax.twinx()
        if verdicts:
            xs, ys = goodput_bins(verdicts, t0)
            twin.bar(xs, ys, width=1.0, align="edge", color="grey", alpha=0.3, label="goodput (tokens/s)")
        twin.set_ylabel("goodput (tokens/s)")
        ax.set_zorder(twin.get_zorder() + 1)      # rates drawn over the goodput bars, not hidden by them
        ax.patch.set_visible(False)
        handles = ax.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
        finish_axis(ax, bool(mine), loc="upper right", handles=handles)
    axes[-1].set_xlabel("time since first request (s)")
    return save(fig, path)


def plot_utility(run: RunLogs, path: Path) -> Path:
    """A budget scheduler's rounds: each session's window (top), its goodput estimate X_i (middle) and the
    utility Σ log X_i over the sessions present (bottom), from the verifier's "schedule" events."""
    sched = of_type(run.verifiers, Schedule)
    fig = Figure(figsize=(9, 8))
    ax_s, ax_x, ax_u = fig.subplots(3, 1, sharex=True)
    sessions = sorted({k for e in sched for k in e.allocation})
    for i, key in enumerate(sessions):
        color = f"C{i % 10}"
        pts = [(n, e.allocation[key]) for n, e in enumerate(sched, 1) if key in e.allocation]
        ax_s.step([n for n, _ in pts], [v for _, v in pts], where="post", color=color, label=key)
        xs = [(n, e.estimates[key][1]) for n, e in enumerate(sched, 1) if key in e.estimates]
        ax_x.plot([n for n, _ in xs], [v for _, v in xs], color=color, label=key)
    ax_s.set(ylabel="window S_i (tokens)", title=f"{sched[0].scheduler if sched else '?'} scheduling, budget "
                                                  f"{sched[0].budget if sched else '?'}")
    ax_x.set(ylabel="goodput estimate X_i\n(tokens/round)")
    util = [(n, sum(math.log(v[1]) for v in e.estimates.values())) for n, e in enumerate(sched, 1)
            if e.estimates]
    ax_u.plot([n for n, _ in util], [u for _, u in util], color="black", label="Σ log X_i (sessions present)")
    ax_u.set(xlabel="scheduling round", ylabel="utility")
    finish_axis(ax_s, bool(sched), loc="upper right")
    finish_axis(ax_x, bool(sched), loc="upper right")
    finish_axis(ax_u, bool(util), loc="lower right")
    return save(fig, path)


def make_plots(run_dir: str | Path) -> list[Path]:
    """Write the run's plots under RUN/plots/ and return their paths."""
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    run = load_run(run_dir)
    t0 = t0_of(run)
    faults = fault_spans(run_dir, run)
    paths = [plot_goodput(run, t0, out / "goodput.png", faults),
             plot_acceptance(run, t0, out / "acceptance.png", faults),
             plot_latency_cdfs(run, out / "latency_cdf.png")]
    names = _names(run)
    if LINKS_PLOT in names:
        paths.append(plot_links(run, t0, out / LINKS_PLOT, faults))
    if CHANNELS_PLOT in names:
        paths.append(plot_channels(run, t0, out / CHANNELS_PLOT, faults))
    if UTILITY_PLOT in names:
        paths.append(plot_utility(run, out / UTILITY_PLOT))
    return paths
