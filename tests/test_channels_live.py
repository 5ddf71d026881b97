"""Channels applied live to real Mininet links: a rate trace, a loss trace and a moving station are measured on
the wire while the channel driver runs, second by second, against what the channel model said."""
import json
import subprocess
import time

import pytest

from testbed.net import calibrate as cal
from testbed.channels.driver import ChannelDriver
from testbed.channels.plan import ChannelPlan
from testbed.net.emulation import Emulation
from testbed.net.topology import load_topology
from tests.remeasure import remeasure

pytestmark = pytest.mark.root
LINK = "d1-ap1"

TOPO = """
name: chan
nodes:
  ap1: {{role: ap}}
  verifier: {{role: verifier}}
  d1: {{role: drafter}}
links:
  - {{a: d1, b: ap1, kind: wireless, rate_up_mbps: 20, rate_down_mbps: 20, delay_ms: 5, channel: {channel}}}
  - {{a: ap1, b: verifier, rate_up_mbps: 1000, rate_down_mbps: 1000}}
"""


def bring_up(tmp_path, channel: str, interval_s: float = 0.1):
    (tmp_path / "chan.yaml").write_text(TOPO.format(channel=channel))
    topo = load_topology(tmp_path / "chan.yaml")
    plan = ChannelPlan(topo, interval_s, seed=0)
    emu = Emulation(topo, delay_backend="auto", delay_elements=plan.live_delay_links())
    return plan, emu


def per_second_bytes(emu, driver, seconds: int) -> list[float]:
    """Wire bytes the link's uplink shaper sent in each whole second since the driver's tick 0."""
    counts = []
    for s in range(seconds + 1):
        time.sleep(max(0.0, driver.t0 + s - time.monotonic()))
        counts.append(emu.sent_bytes(LINK, "up"))
    return [b - a for a, b in zip(counts, counts[1:])]


def applied_mean(plan_states: list, second: int, per_s: int, key: str) -> float:
    ticks = plan_states[second * per_s:(second + 1) * per_s]
    return sum(getattr(s, key) for s in ticks) / len(ticks)


def bulk_upload(emu, seconds: float, port: int):
    ip = str(emu.net_plan.ip("verifier"))
    sink = cal._Server(emu, "verifier", cal._probe_cmd("sink", "--port", str(port), "--exit-on-stdin-eof"))
    bulk = emu.popen("d1", cal._probe_cmd("bulk", "--to", ip, "--port", str(port), "--duration", str(seconds),
                                          "--cc", "cubic"),
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return sink, bulk


def run_rate_case(plan, emu, seconds: int, port: int):
    """Saturate d1's uplink for `seconds` while the driver applies the plan; (measured, configured) Mbit/s per s."""
    with emu:
        sink, bulk = bulk_upload(emu, seconds + 1.5, port)
        driver = ChannelDriver(plan, emu.set_link)
        try:
            time.sleep(0.5)                               # TCP up to speed before tick 0
            driver.start()
            sent = per_second_bytes(emu, driver, seconds)
        finally:
            stats = driver.stop()
            bulk.communicate(timeout=60)
            sink.stop()
    assert stats["late_ticks"] <= 2, stats
    per_s = round(1 / plan.interval_s)
    replay = ChannelPlan(plan.topo, plan.interval_s, plan.seed)
    configured = [a.state for k in range(seconds * per_s) for a in replay.step(k) if a.link == LINK]
    measured = [8 * b / 1e6 for b in sent]
    return measured, [applied_mean(configured, s, per_s, "rate_up_mbps") for s in range(seconds)]


def test_step_trace_20_5_20_is_tracked_second_by_second(tmp_path):
    (tmp_path / "step.csv").write_text("t_s,rate_mbps\n0,20\n2,5\n4,20\n")

    def measure():
        plan, emu = bring_up(tmp_path, "{model: trace, up: step.csv, loop: false}")
        assert plan.live_delay_links() == []              # rate only: no delay element beyond d1's own delay
        measured, configured = run_rate_case(plan, emu, 6, 47110)
        assert configured == pytest.approx([20, 20, 5, 5, 20, 20])
        for s, (m, c) in enumerate(zip(measured, configured)):
            assert m == pytest.approx(c, rel=0.10), (s, measured, configured)
    remeasure(measure)


def test_moving_station_rate_falls_as_distance_grows(tmp_path):
    channel = ("{model: snr, band_mhz: 5, mobility: {waypoints: [[0, 5, 0], [6, 600, 0]]}, "
               "shadowing: {sigma_db: 0}, fading: {kind: none}, loss: {threshold_db: -15}}")

    def measure():
        plan, emu = bring_up(tmp_path, channel)
        measured, configured = run_rate_case(plan, emu, 6, 47111)
        assert configured == sorted(configured, reverse=True) and configured[0] > 3 * configured[-1]
        for s, (m, c) in enumerate(zip(measured, configured)):
            assert m == pytest.approx(c, rel=0.10), (s, measured, configured)
        assert measured[-1] < measured[0] / 3
    remeasure(measure)


def test_loss_trace_is_followed(tmp_path):
    (tmp_path / "loss.csv").write_text("t_s,rate_mbps,delay_ms,loss_pct\n0,20,5,0\n2,20,5,20\n4,20,5,0\n6,20,5,50\n")
    plan, emu = bring_up(tmp_path, "{model: trace, up: loss.csv, loop: false}")
    assert plan.live_delay_links() == [LINK]
    ip = None
    results = []
    with emu:
        ip = str(emu.net_plan.ip("verifier"))
        echo = cal._Server(emu, "verifier", cal._probe_cmd("echo", "--port", "47112", "--exit-on-stdin-eof"))
        driver = ChannelDriver(plan, emu.set_link)
        try:
            driver.start()
            for segment in range(4):
                # probe the middle of each 2 s segment: 1.2 s of probes starting 0.4 s in
                time.sleep(max(0.0, driver.t0 + 2 * segment + 0.4 - time.monotonic()))
                r = emu.run("d1", cal._probe_cmd("rtt", "--to", ip, "--port", "47112", "--count", "600",
                                                 "--interval", "0.002", "--timeout", "0.3"), timeout=30)
                results.append(json.loads(r.stdout))
        finally:
            driver.stop()
            echo.stop()
    for res, want in zip(results, (0.0, 0.20, 0.0, 0.50)):
        n = res["sent"]
        sd = (max(want * (1 - want), 1 / n) / n) ** 0.5
        assert abs(res["loss_up"] - want) <= 5 * sd + 0.01, (want, res["loss_up"], n)
