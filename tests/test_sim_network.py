"""The simulator's network model (testbed/sim/network.py) against closed forms and the emulator's measurements."""
import math

import pytest

from testbed.channels.radio import GilbertElliott
from testbed.net.linkstate import LinkState
from testbed.net.shaping import FRAME
from testbed.net.topology import LinkSpec, NodeSpec, Topology
from testbed.sim.network import HEADER, MSS, RTO_MIN, SimNetwork, segments, zmtp_bytes

ROLES = {"h1": "drafter", "h2": "verifier", "h3": "drafter", "s1": "switch"}


def topo(*links):
    """Links as (a, b, rate Mbit/s, extra LinkSpec fields)."""
    specs = [LinkSpec(a=a, b=b, rate_up_mbps=r, rate_down_mbps=r, **kw) for a, b, r, kw in links]
    nodes = {n: NodeSpec(role=ROLES[n]) for s in specs for n in (s.a, s.b)}
    return Topology(name="t", nodes=nodes, links=specs)


def full(n):
    """Frame bytes whose ZMTP stream is exactly n full segments."""
    return n * MSS - 9


def bits(nbytes):
    stream = zmtp_bytes(nbytes)
    return 8 * (stream + HEADER * len(segments(stream)))


def test_framing():
    assert zmtp_bytes(255) == 257 and zmtp_bytes(256) == 265
    assert segments(0) == [0] and segments(MSS) == [MSS] and segments(MSS + 1) == [MSS, 1]
    assert MSS + HEADER == FRAME


# -- serialization + propagation --------------------------------------------------------------------------
def test_one_link_wire_is_size_over_rate_plus_delay():
    net = SimNetwork(topo(("h1", "h2", 10, {"delay_ms": 5})), shaper="wire")
    assert net.deliver_at("h1", "h2", 10_000, 0.0) == pytest.approx(bits(10_000) / 10e6 + 0.005, abs=1e-12)


def test_one_link_htb_releases_at_charge_time_with_its_burst():
    # HTB sends while tokens >= 0 and charges after: the last of n frames leaves (S_{n-1} - burst) / rate in.
    net = SimNetwork(topo(("h1", "h2", 10, {"delay_ms": 5})))
    sizes = [s + HEADER for s in segments(zmtp_bytes(10_000))]
    expect = (sum(sizes[:-1]) - 2 * FRAME) * 8 / 10e6 + 0.005     # burst at 10 Mbit/s: two frames
    assert net.deliver_at("h1", "h2", 10_000, 0.0) == pytest.approx(expect, abs=1e-12)
    assert net.deliver_at("h1", "h2", 100, 1.0) == pytest.approx(1.005, abs=1e-12)   # a lone frame: no wait


def test_multi_hop_wire_is_store_and_forward():
    net = SimNetwork(topo(("h1", "s1", 10, {"delay_ms": 2}), ("s1", "h2", 5, {"delay_ms": 3})), shaper="wire")
    s = 8 * FRAME
    # pipelined: the first frame's time at the fast hop, then every frame at the bottleneck
    assert net.deliver_at("h1", "h2", full(4), 0.0) == pytest.approx(s / 10e6 + 4 * s / 5e6 + 0.005, abs=1e-12)


def test_multi_hop_htb_costs_the_bottleneck_once():
    net = SimNetwork(topo(("h1", "s1", 100, {"delay_ms": 2}), ("s1", "h2", 10, {"delay_ms": 3})))
    n = 10
    per_hop = [max(0.0, ((n - 1) * FRAME - burst) * 8 / r) for r, burst in ((100e6, 12_500), (10e6, 2 * FRAME))]
    assert net.deliver_at("h1", "h2", full(n), 0.0) == pytest.approx(max(per_hop) + 0.005, abs=1e-12)


@pytest.mark.parametrize("measured_ms, req, rep", [(59.28, 50_000, 100), (98.03, 50_000, 50_000), (20.94, 100, 100)])
def test_matches_the_emulator_measurements(measured_ms, req, rep):
    """netemu.md §5: two 10 Mbit/s links, 10 ms one-way each way, offloads off, pyzmq request and reply."""
    net = SimNetwork(topo(("h1", "s1", 10, {"delay_ms": 10}), ("s1", "h2", 10, {})))
    back = net.deliver_at("h2", "h1", rep, net.deliver_at("h1", "h2", req, 0.0))
    assert back * 1e3 == pytest.approx(measured_ms, abs=1.0)    # the daemons add ~0.25 ms per element


@pytest.mark.parametrize("shaper", ["wire", "htb"])
def test_back_to_back_messages_queue(shaper):
    net = SimNetwork(topo(("h1", "h2", 10, {"delay_ms": 5})), shaper=shaper)
    first = net.deliver_at("h1", "h2", full(5), 0.0)
    second = net.deliver_at("h1", "h2", full(5), 0.0)
    if shaper == "wire":
        assert first == pytest.approx(5 * 8 * FRAME / 10e6 + 0.005)
        assert second == pytest.approx(10 * 8 * FRAME / 10e6 + 0.005)
    else:    # one train of 10 frames: the k-th leaves (k - 1 - 2) frame times in (a bucket of two frames)
        assert first == pytest.approx(2 * 8 * FRAME / 10e6 + 0.005)
        assert second == pytest.approx(7 * 8 * FRAME / 10e6 + 0.005)


def test_a_later_message_fills_idle_time_at_a_shared_hop():
    # h1's big message trickles into s1 at 1 Mbit/s; h3's small one, sent later, need not wait for all of it.
    net = SimNetwork(topo(("h1", "s1", 1, {}), ("h3", "s1", 100, {}), ("s1", "h2", 100, {})))
    big = net.deliver_at("h1", "h2", full(20), 0.0)
    small = net.deliver_at("h3", "h2", 100, 0.001)
    assert big > 0.2 and small == pytest.approx(0.001, abs=1e-4)


def test_rate_change_applies_to_later_messages():
    net = SimNetwork(topo(("h1", "h2", 10, {"delay_ms": 5})), shaper="wire")
    assert net.deliver_at("h1", "h2", 20_000, 0.0) == pytest.approx(bits(20_000) / 10e6 + 0.005)
    net.set_link("h1-h2", LinkState(5, 10, delay_ms=5), 1.0)
    assert net.deliver_at("h1", "h2", 20_000, 1.0) == pytest.approx(1 + bits(20_000) / 5e6 + 0.005)
    assert net.deliver_at("h2", "h1", 20_000, 2.0) == pytest.approx(2 + bits(20_000) / 10e6 + 0.005)


# -- jitter ---------------------------------------------------------------------------------------------
def test_jitter_never_reorders_and_stays_in_bounds():
    net = SimNetwork(topo(("h1", "h2", 1000, {"delay_ms": 20, "jitter_ms": 15})), seed=3)
    sent = [i * 0.001 for i in range(400)]
    got = [net.deliver_at("h1", "h2", 100, t) for t in sent]
    assert all(b >= a for a, b in zip(got, got[1:]))
    assert all(0.005 - 1e-9 <= g - t <= 0.035 + 1e-9 for g, t in zip(got, sent))
    assert any(b == a for a, b in zip(got, got[1:]))        # held back behind the one ahead: FIFO at work
    assert len(set(round(g - t, 9) for g, t in zip(got, sent))) > 100


def test_path_jitter_is_one_uniform_of_the_summed_variance():
    # shaping.PathDelay: jitters J1, J2 become +-sqrt(J1^2 + J2^2); variance (J1^2 + J2^2) / 3.
    net = SimNetwork(topo(("h1", "s1", 1000, {"delay_ms": 10, "jitter_ms": 3}),
                          ("s1", "h2", 1000, {"delay_ms": 10, "jitter_ms": 3})), seed=1)
    d = [net.deliver_at("h1", "h2", 100, i * 0.1) - i * 0.1 for i in range(4000)]   # spaced: FIFO never binds
    half = math.sqrt(18) / 1e3
    assert 0.020 - half - 1e-9 <= min(d) and max(d) <= 0.020 + half + 1e-9 and max(d) - min(d) > 0.0075
    mean = sum(d) / len(d)
    assert mean == pytest.approx(0.020, abs=2e-4)
    assert sum((x - mean) ** 2 for x in d) / len(d) == pytest.approx(18e-6 / 3, rel=0.1)


# -- queue overflow -------------------------------------------------------------------------------------
@pytest.mark.parametrize("shaper, passes", [("wire", 1), ("htb", 3)])
def test_queue_overflow_drops_the_burst_beyond_the_queue(shaper, passes):
    # 30 frames hit a 1 Mbit/s hop with a 14-packet pfifo at once: `passes` go straight through (the wire
    # starts serving one; HTB's 2-frame bucket lets 3 out), 14 wait, the rest are dropped; TCP resends those
    # after the queue has drained (a tail loss: probe, then the rest on its SACK), so no second round drops.
    q, n = 14, 30
    net = SimNetwork(topo(("h1", "s1", 1000, {}), ("s1", "h2", 1, {"queue_pkts": q})), shaper=shaper)
    t = net.deliver_at("h1", "h2", full(n), 0.0)
    st = net.stats()
    assert st["s1-h2"]["up"]["drops"] == n - passes - q
    assert st["h1-s1"]["up"]["drops"] == 0 and st["s1-h2"]["up"]["retransmits"] == n - passes - q
    assert net.connection_stats()["h1->h2"]["tlp"] == 1
    assert t > (passes + q) * 8 * FRAME / 1e6


def test_the_senders_own_queue_never_drops():
    # TCP small queues keep a socket's segments out of a full qdisc: back-pressure, not loss.
    net = SimNetwork(topo(("h1", "h2", 1, {"queue_pkts": 2})), shaper="wire")
    assert net.deliver_at("h1", "h2", full(20), 0.0) == pytest.approx(20 * 8 * FRAME / 1e6)
    assert net.stats()["h1-h2"]["up"]["drops"] == 0


# -- loss -----------------------------------------------------------------------------------------------
def within_binomial(k, n, p, z=4.0):
    return abs(k - n * p) <= z * math.sqrt(n * p * (1 - p))


def test_bernoulli_loss_rate_per_direction():
    net = SimNetwork(topo(("h1", "h2", 1000, {"delay_ms": 1})),
                     {"h1-h2": LinkState(1000, 1000, delay_ms=1, loss_pct=5, loss_down_pct=20)}, seed=7)
    for i in range(3000):
        net.deliver_at("h1", "h2", 100, 2.0 * i)
        net.deliver_at("h2", "h1", 100, 2.0 * i + 1)
    st = net.stats()["h1-h2"]
    for d, p in (("up", 0.05), ("down", 0.20)):
        assert within_binomial(st[d]["losses"], st[d]["segments"], p)
        assert st[d]["retransmits"] == st[d]["losses"]       # every loss was resent, and nothing else


def test_gilbert_elliott_loss_as_the_channel_plan_applies_it():
    # The channel plan steps the chain once per tick and sets the tick's loss_pct; so does this test (1 s ticks).
    ge = GilbertElliott(0.05, 0.25, loss_good=0.01, loss_bad=0.30, seed=11)
    net = SimNetwork(topo(("h1", "h2", 1000, {"delay_ms": 1})), seed=5)
    expected = realized = 0.0
    ticks, per_tick = 3000, 10
    for k in range(ticks):
        p = ge.step()
        realized += p / ticks
        net.set_link("h1-h2", LinkState(1000, 1000, delay_ms=1, loss_pct=100 * p), float(k))
        before = net.stats()["h1-h2"]["up"]["segments"]
        for j in range(per_tick):    # sent early in a long tick, so their retransmissions stay in it too
            net.deliver_at("h1", "h2", 100, k + j * 0.01)
        expected += p * (net.stats()["h1-h2"]["up"]["segments"] - before)
    st = net.stats()["h1-h2"]["up"]
    # given the ticks' loss, the count is a sum of Bernoullis: variance at most the expected count
    assert abs(st["losses"] - expected) <= 4 * math.sqrt(expected)
    # and the chain's average loss is its steady state (Markov CLT: variance x (1 + lam) / (1 - lam))
    pb, lam = ge.steady_state_bad, 1 - 0.05 - 0.25
    sd = math.sqrt(pb * (1 - pb) * 0.29 ** 2 / ticks * (1 + lam) / (1 - lam))
    assert realized == pytest.approx(ge.mean_loss, abs=4 * sd)
    assert st["losses"] / st["segments"] == pytest.approx(ge.mean_loss, abs=4 * sd + 0.01)


# -- TCP recovery ---------------------------------------------------------------------------------------
D = 0.010     # one-way delay; 1000 Mbit/s and HTB: every frame here leaves at once, so times are exact


def lossy(lose):
    """A network that loses the transmissions `lose` names: {(segment, attempt), ...}."""
    return SimNetwork(topo(("h1", "h2", 1000, {"delay_ms": D * 1e3})),
                      loss_hook=lambda link, d, src, dst, seg, attempt: (seg, attempt) in lose)


def rto0():
    # SRTT = base RTT = 2D, RTTVAR = D: RTO = SRTT + max(rto_min, 4 RTTVAR)
    return 2 * D + max(RTO_MIN, 4 * D)


def test_lone_segment_loss_costs_a_probe_at_the_rto():
    net = lossy({(0, 0)})
    assert net.base_rtt("h1", "h2") == pytest.approx(2 * D)
    # one segment out: PTO = 2 SRTT + rto_min, capped at the RTO; the probe repairs it
    pto = min(2 * 2 * D + RTO_MIN, rto0())
    assert net.deliver_at("h1", "h2", 100, 0.0) == pytest.approx(pto + D, abs=1e-9)
    assert net.connection_stats()["h1->h2"]["tlp"] == 1


def test_lost_probe_waits_an_rto_then_backs_off():
    net = lossy({(0, 0), (0, 1), (0, 2)})
    pto = min(2 * 2 * D + RTO_MIN, rto0())
    assert net.deliver_at("h1", "h2", 100, 0.0) == pytest.approx(pto + rto0() + 2 * rto0() + D, abs=1e-9)
    c = net.connection_stats()["h1->h2"]
    assert (c["tlp"], c["rto"], c["retransmits"]) == (1, 2, 3)


def test_three_later_segments_trigger_fast_retransmit():
    net = lossy({(0, 0)})
    # the 3rd SACK is back at 2D; the resent segment arrives D later
    assert net.deliver_at("h1", "h2", full(5), 0.0) == pytest.approx(3 * D, abs=1e-9)
    assert net.connection_stats()["h1->h2"]["fast"] == 1


def test_one_later_segment_waits_racks_reordering_window():
    net = lossy({(3, 0)})
    reo = min(2 * D / 4, 2 * D)                       # min_rtt / 4
    assert net.deliver_at("h1", "h2", full(5), 0.0) == pytest.approx(2 * D + reo + D, abs=1e-9)


def test_tail_loss_probe_after_the_last_ack():
    net = lossy({(4, 0)})
    # ACKs of 0-3 at 2D re-arm the probe: one segment out, so min(2 SRTT + rto_min, RTO) after them
    srtt, rttvar = 2 * D, D * 0.75 ** 4                 # four samples of exactly SRTT
    pto = min(2 * srtt + RTO_MIN, srtt + max(RTO_MIN, 4 * rttvar))
    assert net.deliver_at("h1", "h2", full(5), 0.0) == pytest.approx(2 * D + pto + D, abs=1e-9)


def test_two_tail_losses_probe_then_rack():
    net = lossy({(3, 0), (4, 0)})
    # two out: PTO = 2 SRTT + 2 ms; the probe resends segment 4, whose SACK (2D later) exposes segment 3
    probe = 2 * D + 2 * 2 * D + 0.002
    assert net.deliver_at("h1", "h2", full(5), 0.0) == pytest.approx(probe + 2 * D + D, abs=1e-9)
    c = net.connection_stats()["h1->h2"]
    assert (c["tlp"], c["fast"], c["retransmits"]) == (1, 1, 2)


def test_delivery_is_in_order_per_connection():
    calls = []
    net = SimNetwork(topo(("h1", "h2", 1000, {"delay_ms": D * 1e3})),
                     loss_hook=lambda *args: calls.append(args) or len(calls) == 1)   # the very first is lost
    first = net.deliver_at("h1", "h2", 100, 0.0)                # repaired by a probe 220 ms later
    assert first == pytest.approx(min(2 * 2 * D + RTO_MIN, rto0()) + D)
    assert net.deliver_at("h1", "h2", 100, 0.001) == first      # TCP holds the next one behind it
    assert net.deliver_at("h1", "h2", 100, 0.5) == pytest.approx(0.5 + D)   # not on the wire: sent at once


def test_an_outage_tick_does_not_hold_a_message_past_the_next_tick():
    # 10 s of clean ticks, then one at 99.99 % loss: the first send is lost, but its probe goes after the tick
    # and sees the link's time-averaged loss (about 0.1 %), as the emulator's next tick would have given it.
    net = SimNetwork(topo(("h1", "h2", 1000, {"delay_ms": D * 1e3})), seed=2)
    for k in range(100):
        net.set_link("h1-h2", LinkState(1000, 1000, delay_ms=D * 1e3), k * 0.1)
    net.set_link("h1-h2", LinkState(1000, 1000, delay_ms=D * 1e3, loss_pct=99.99), 10.0)
    assert 10.0 + D < net.deliver_at("h1", "h2", 100, 10.0) < 10.5
    assert net.stats()["h1-h2"]["up"]["losses"] == 1


# -- determinism ----------------------------------------------------------------------------------------
def run(seed):
    t = topo(("h1", "s1", 20, {"delay_ms": 5, "jitter_ms": 4, "loss_pct": 3}), ("h3", "s1", 20, {"delay_ms": 2}),
             ("s1", "h2", 50, {"delay_ms": 1, "jitter_ms": 1, "loss_pct": 1, "queue_pkts": 20}))
    net = SimNetwork(t, seed=seed)
    out = []
    for i in range(300):
        out.append(net.deliver_at("h1" if i % 2 else "h3", "h2", 500 + 97 * i, i * 0.01))
        out.append(net.deliver_at("h2", "h1", 120, i * 0.01 + 0.005))
    return out, net.stats()


def test_same_seed_same_times():
    assert run(4) == run(4)
    assert run(4)[0] != run(5)[0]


def test_time_must_not_go_backwards_and_hosts_must_exist():
    net = SimNetwork(topo(("h1", "h2", 10, {})))
    net.deliver_at("h1", "h2", 100, 1.0)
    with pytest.raises(ValueError):
        net.deliver_at("h1", "h2", 100, 0.5)
    with pytest.raises(KeyError):
        net.deliver_at("h1", "nope", 100, 1.0)
    with pytest.raises(KeyError):
        net.set_link("nope", LinkState(1, 1), 1.0)
