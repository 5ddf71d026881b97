"""`testbed calibrate`: measure every link direction of a running emulation against its configuration.

For each link and direction we pick two hosts whose path crosses the link that way, choosing the pair whose
other hops are fastest, so that the link itself is the bottleneck wherever the topology allows it:
- rate: a TCP bulk transfer (testbed/net/netprobe.py) saturates the path while we read the byte counter of the
  link's HTB class twice; counter bytes / elapsed time is the rate on the wire (Ethernet header included, as
  tc counts it). The sink's goodput is reported beside it;
- RTT: UDP probes timed by the application (plain `ping` takes kernel receive timestamps taken *before* the
  ingress delay, so it under-reports); compared with the sum of the path's one-way delays both ways;
- loss: the probe split by direction (the echo server reports how many probes it got).
Results are only trusted when calibration passes.
"""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from testbed.net import netprobe
from testbed.net.netplan import DIRECTIONS, LinkPlan

PROBE_PORT, SINK_PORT = 47001, 47002
PROBE_BYTES = 64


@dataclass
class Tolerance:
    rate: float = 0.05          # |measured / configured - 1|
    rtt_ms: float = 1.0         # |median RTT - configured RTT|
    loss_sigmas: float = 3.0    # binomial standard deviations for the loss check


@dataclass
class Row:
    link: str
    direction: str
    src: str
    dst: str
    bottleneck: str             # the path's slowest hop; the rate measures that hop
    rate_mbps: float
    rtt_ms: float
    loss_pct: float
    measured_rate_mbps: float | None = None
    goodput_mbps: float | None = None
    measured_rtt_p50_ms: float | None = None
    measured_rtt_p99_ms: float | None = None
    measured_loss_pct: float | None = None
    probes: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def rate_ratio(self) -> float | None:
        return None if self.measured_rate_mbps is None else self.measured_rate_mbps / self.rate_mbps

    def as_dict(self) -> dict:
        return {**asdict(self), "rate_ratio": self.rate_ratio, "ok": self.ok}


def _side(plan, link: LinkPlan, start: str) -> list[str]:
    """Hosts reachable from `start` without crossing `link` (the network is a tree)."""
    return [h for h in plan.topo.hosts() if all(l.name != link.name for l, _ in plan.path(start, h))]


def plan_row(plan, states, link: LinkPlan, direction: str) -> Row:
    """Choose the measuring pair for one link direction and compute what the configuration predicts."""
    sender, receiver = link.ends(direction)
    best = None
    for src in _side(plan, link, sender.node):
        for dst in _side(plan, link, receiver.node):
            hops = plan.path(src, dst)
            others = min((states[l.name].rate_mbps(d) for l, d in hops if l.name != link.name), default=math.inf)
            if best is None or others > best[0]:
                best = (others, src, dst, hops)
    _, src, dst, hops = best
    rates = [(states[l.name].rate_mbps(d), l.name) for l, d in hops]
    back = plan.path(dst, src)
    one_way = sum(states[l.name].delay_ms for l, _ in hops) + sum(states[l.name].delay_ms for l, _ in back)
    keep = math.prod(1 - states[l.name].loss(d) / 100 for l, d in hops)
    rate, bottleneck = min(rates)
    # No serialisation term: HTB is a token bucket, so a lone small probe leaves at once, as measured.
    return Row(link.name, direction, src, dst, bottleneck, rate, one_way, 100 * (1 - keep))


class _Server:
    """A netprobe server in a host, started and waited for until it prints 'ready'."""

    def __init__(self, emu, host: str, argv: list[str]):
        self.proc = emu.popen(host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"netprobe {argv[2]} on {host} did not start: {line} {self.proc.stderr.read()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _probe_cmd(*args: str) -> list[str]:
    return [sys.executable, str(Path(netprobe.__file__).resolve()), *args]


def _congestion_control() -> list[str]:
    """BBR keeps a lossy link full where loss-based control would back off; use it where the kernel has it."""
    try:
        available = Path("/proc/sys/net/ipv4/tcp_available_congestion_control").read_text().split()
    except OSError:
        return []
    return ["--cc", "bbr"] if "bbr" in available else []


def measure_rate(emu, row: Row, duration_s: float) -> None:
    ip = str(emu.net_plan.ip(row.dst))
    bottleneck_dir = next(d for l, d in emu.net_plan.path(row.src, row.dst) if l.name == row.bottleneck)
    sink = _Server(emu, row.dst, _probe_cmd("sink", "--port", str(SINK_PORT), "--exit-on-stdin-eof"))
    try:
        bulk = emu.popen(row.src, _probe_cmd("bulk", "--to", ip, "--port", str(SINK_PORT), "--duration",
                                             str(duration_s), *_congestion_control()),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        # Skip the first second (slow start), then count what the shaper sent until just before the end.
        time.sleep(max(0.0, min(1.0, duration_s / 3)))
        b1, t1 = emu.sent_bytes(row.bottleneck, bottleneck_dir), time.monotonic()
        time.sleep(max(0.1, t0 + duration_s - 0.2 - time.monotonic()))
        b2, t2 = emu.sent_bytes(row.bottleneck, bottleneck_dir), time.monotonic()
        out, err = bulk.communicate(timeout=duration_s + 35)
        if bulk.returncode != 0:
            raise RuntimeError(f"bulk transfer {row.src} -> {row.dst} failed: {err.strip()}")
        report = json.loads(out)["sink"]
        row.measured_rate_mbps = (b2 - b1) * 8 / (t2 - t1) / 1e6
        row.goodput_mbps = report["goodput_mbps"]
    finally:
        sink.stop()


def measure_rtt(emu, row: Row, probes: int, interval_s: float = 0.005) -> None:
    ip = str(emu.net_plan.ip(row.dst))
    echo = _Server(emu, row.dst, _probe_cmd("echo", "--port", str(PROBE_PORT), "--exit-on-stdin-eof"))
    try:
        r = emu.run(row.src, _probe_cmd("rtt", "--to", ip, "--port", str(PROBE_PORT), "--count", str(probes),
                                        "--interval", str(interval_s), "--size", str(PROBE_BYTES)),
                    timeout=probes * interval_s + 30)
        res = json.loads(r.stdout)
    finally:
        echo.stop()
    row.probes = res["sent"]
    row.measured_rtt_p50_ms = res["rtt_ms"]["p50"] if res["received"] else None
    row.measured_rtt_p99_ms = res["rtt_ms"]["p99"] if res["received"] else None
    if res["loss_up"] is not None:
        row.measured_loss_pct = 100 * res["loss_up"]


def judge(row: Row, tol: Tolerance) -> None:
    if row.measured_rate_mbps is not None and abs(row.rate_ratio - 1) > tol.rate:
        row.problems.append(f"rate {row.measured_rate_mbps:.2f} Mbit/s is not within {tol.rate:.0%} of {row.rate_mbps:g}")
    if row.measured_rtt_p50_ms is None:
        row.problems.append("no probe came back")
    elif abs(row.measured_rtt_p50_ms - row.rtt_ms) > tol.rtt_ms:
        row.problems.append(f"median RTT {row.measured_rtt_p50_ms:.2f} ms is not within {tol.rtt_ms:g} ms of {row.rtt_ms:.2f}")
    if row.measured_loss_pct is not None and row.probes:
        p = row.loss_pct / 100
        allowed = tol.loss_sigmas * math.sqrt(max(p * (1 - p), 1 / row.probes) / row.probes)
        if abs(row.measured_loss_pct / 100 - p) > allowed:
            row.problems.append(f"loss {row.measured_loss_pct:.2f} % is not within {100 * allowed:.2f} points of {row.loss_pct:.2f} %")


def calibrate(emu, links: list[str] | None = None, duration_s: float = 3.0, probes: int = 400,
              tolerance: Tolerance | None = None, progress: Callable[[str], None] = lambda m: None) -> list[Row]:
    tol = tolerance or Tolerance()
    plan, states = emu.net_plan, emu.shaping.states
    rows = []
    for link in plan.links:
        if links and link.name not in links:
            continue
        for d in DIRECTIONS:
            row = plan_row(plan, states, link, d)
            progress(f"calibrating {row.link} {d}: {row.src} -> {row.dst} (bottleneck {row.bottleneck})")
            measure_rate(emu, row, duration_s)
            measure_rtt(emu, row, probes)
            judge(row, tol)
            rows.append(row)
    return rows


def _f(v, fmt=".2f") -> str:
    return "-" if v is None else format(v, fmt)


def format_table(rows: list[Row]) -> str:
    head = (f"{'link':<16} {'dir':<4} {'path':<20} {'rate cfg':>8} {'meas':>7} {'ratio':>6} {'goodput':>7}  "
            f"{'RTT cfg':>7} {'p50':>7} {'p99':>7}  {'loss cfg':>8} {'meas':>6}  ok")
    out = [head, "-" * len(head)]
    for r in rows:
        rate_cfg = f"{r.rate_mbps:g}" + ("" if r.bottleneck == r.link else "*")
        out.append(f"{r.link:<16} {r.direction:<4} {r.src + '->' + r.dst:<20} {rate_cfg:>8} "
                   f"{_f(r.measured_rate_mbps):>7} {_f(r.rate_ratio, '.3f'):>6} {_f(r.goodput_mbps):>7}  "
                   f"{r.rtt_ms:>7.2f} {_f(r.measured_rtt_p50_ms):>7} {_f(r.measured_rtt_p99_ms):>7}  "
                   f"{r.loss_pct:>8.2f} {_f(r.measured_loss_pct):>6}  {'yes' if r.ok else 'NO'}")
    if any(r.bottleneck != r.link for r in rows):
        out.append("* the path's bottleneck is another link, so the rate shown is that link's (named in JSON)")
    for r in rows:
        for p in r.problems:
            out.append(f"  {r.link} {r.direction}: {p}")
    return "\n".join(out)
