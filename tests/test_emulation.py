"""Real Mininet, real tc, real delay daemons on star-wifi-4: shaping does what the topology says.

Rates are measured on the wire by the link's HTB byte counter during a TCP bulk transfer; RTTs with
application timers (testbed/net/netprobe.py); loss with per-direction probe counts.
"""
import time

import pytest

from testbed.net import calibrate as cal
from testbed.net.emulation import Emulation
from testbed.common.errors import ShapingError
from testbed.net.linkstate import LinkState
from testbed.net.runs import links_of, processes_of
from testbed.net.shaping import Cmd
from testbed.net.tcbatch import TcBatch
from testbed.net.topology import load_topology
from tests.remeasure import remeasure

pytestmark = pytest.mark.root
LINK = "d1-ap1"


@pytest.fixture(scope="module")
def emu():
    e = Emulation(load_topology("topologies/star-wifi-4.yaml"), delay_backend="auto")
    e.start()
    try:
        # The backhaul keeps its delay element but gets no delay, so d1's own link sets the RTT.
        e.set_link("ap1-verifier", LinkState(1000, 1000, queue_pkts=1000))
        yield e
    finally:
        e.stop()


def row(emu, direction="up"):
    return cal.plan_row(emu.net_plan, emu.shaping.states, emu.net_plan.link(LINK), direction)


@pytest.mark.parametrize("rate", [20, 5])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_rate_within_5_percent(emu, rate, direction):
    emu.set_link(LINK, LinkState(rate, rate, delay_ms=5))
    r = row(emu, direction)
    assert r.bottleneck == LINK and r.rate_mbps == rate

    def measure():
        cal.measure_rate(emu, r, duration_s=3.0)
        assert r.measured_rate_mbps == pytest.approx(rate, rel=0.05), r
        assert r.goodput_mbps < r.measured_rate_mbps   # goodput excludes headers: a sanity check on the counter
    remeasure(measure)


@pytest.mark.parametrize("rtt_ms", [10, 40])
def test_rtt_matches_configured(emu, rtt_ms):
    emu.set_link(LINK, LinkState(20, 20, delay_ms=rtt_ms / 2))
    r = row(emu)
    assert r.rtt_ms == rtt_ms   # configured: the path's one-way delays, both ways

    def measure():
        cal.measure_rtt(emu, r, probes=300, interval_s=0.005)
        # 2 ms, not the 1 ms accuracy target: that target is measured by `make bench` (RTT error median +0.3 to
        # +0.9 ms here); in a full test run on a loaded 2-core machine the median was seen at +1.14 ms. A delay
        # applied once instead of per direction, or twice, is still caught: it is off by rtt/2.
        assert abs(r.measured_rtt_p50_ms - r.rtt_ms) <= 2.0, r
        assert r.measured_loss_pct == 0
    remeasure(measure)


def test_loss_5_percent_each_direction(emu):
    emu.set_link(LINK, LinkState(20, 20, delay_ms=2, loss_pct=5))
    r = row(emu)
    cal.measure_rtt(emu, r, probes=2000, interval_s=0.002)
    assert 3 <= r.measured_loss_pct <= 7, r
    stats = emu.daemon_stats()
    dropped_at_verifier = sum(q["dropped"] for q in stats["verifier"]["queues"].values())
    dropped_at_d1 = sum(q["dropped"] for q in stats["d1"]["queues"].values())
    assert dropped_at_verifier > 0 and dropped_at_d1 > 0    # both directions lose packets
    emu.set_link(LINK, LinkState(20, 20, delay_ms=2))


def test_live_rate_change_shows_in_next_second(emu):
    import subprocess
    ip = str(emu.net_plan.ip("verifier"))

    def measure():
        emu.set_link(LINK, LinkState(20, 20, delay_ms=5))
        sink = cal._Server(emu, "verifier", cal._probe_cmd("sink", "--port", "47010", "--exit-on-stdin-eof"))
        try:
            bulk = emu.popen("d1", cal._probe_cmd("bulk", "--to", ip, "--port", "47010", "--duration", "4"),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            t0 = time.monotonic()
            time.sleep(1.0)
            b1, t1 = emu.sent_bytes(LINK, "up"), time.monotonic()
            time.sleep(max(0.0, t0 + 2.0 - time.monotonic()))
            b2, t2 = emu.sent_bytes(LINK, "up"), time.monotonic()
            change_started = time.perf_counter()
            emu.set_link(LINK, LinkState(5, 20, delay_ms=5))
            change_ms = (time.perf_counter() - change_started) * 1e3
            b3, t3 = emu.sent_bytes(LINK, "up"), time.monotonic()
            time.sleep(1.0)
            b4, t4 = emu.sent_bytes(LINK, "up"), time.monotonic()
            bulk.communicate(timeout=40)
        finally:
            sink.stop()
        before = (b2 - b1) * 8 / (t2 - t1) / 1e6
        after = (b4 - b3) * 8 / (t4 - t3) / 1e6
        assert before == pytest.approx(20, rel=0.05), (before, after)
        assert after == pytest.approx(5, rel=0.10), (before, after)
        assert change_ms < 100    # a line into a running tc batch, not a rebuild
    remeasure(measure)


def test_failed_command_raises_with_stderr(emu):
    with pytest.raises(ShapingError) as err:
        emu.exec(Cmd("d1", ("tc", "qdisc", "add", "dev", "nosuch0", "root", "handle", "5:", "htb")))
    assert "nosuch0" in str(err.value) and err.value.stderr


def test_failed_live_change_raises(emu):
    batch = TcBatch(emu.prefix("d1"), "d1-eth0")
    try:
        with pytest.raises(ShapingError, match="Cannot find device|No such"):
            batch.apply(["class change dev nosuch0 parent 5: classid 5:1 htb rate 1000kbit"])
    finally:
        batch.close()


def test_a_tc_batch_is_replaced_after_its_lines_and_keeps_applying(emu):
    """tc -batch grows by every line it reads (testbed/net/tcbatch.py): after recycle_lines a fresh process takes
    over, and changes still apply and still raise."""
    batch = TcBatch(emu.prefix("d1"), "d1-eth0", recycle_lines=6)
    try:
        first = batch.proc.pid
        for rate in (1000, 2000, 3000, 4000):
            batch.apply([f"class change dev d1-eth0 parent 5: classid 5:1 htb rate {rate}kbit"])
        assert batch.recycled >= 1 and batch.proc.pid != first
        shown = emu.run("d1", ["tc", "class", "show", "dev", "d1-eth0", "classid", "5:1"]).stdout
        assert "rate 4Mbit" in shown, shown
        with pytest.raises(ShapingError):
            batch.apply(["class change dev nosuch0 parent 5: classid 5:1 htb rate 1000kbit"])
    finally:
        batch.close()


def test_stop_leaves_nothing():
    e = Emulation(load_topology("topologies/star-wifi-4.yaml"))
    e.start()
    rid = e.run_info.id
    assert links_of(rid) and processes_of(rid)
    e.stop()
    deadline = time.monotonic() + 3
    while processes_of(rid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert links_of(rid) == [] and processes_of(rid) == []
    assert not e.run_info.file.exists()
