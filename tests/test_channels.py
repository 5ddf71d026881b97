"""Channel models at run time (testbed/channels/plan.py), the driver (testbed/channels/driver.py) and their YAML,
without root: the plan is pure, so what a run would apply can be checked tick by tick."""
import json
import math
import textwrap

import pytest

from nodes.events import Done, Draft, EventLog, Verdict, encode
from testbed.channels import radio
from testbed.channels.driver import ChannelDriver, Telemetry
from testbed.channels.plan import ChannelPlan
from testbed.common.errors import ConfigError
from testbed.net.netplan import NetPlan
from testbed.net.shaping import ShapingPlan
from testbed.net.topology import load_topology

STAR = """
name: t
nodes:
  ap1: {{role: ap{radio}}}
  verifier: {{role: verifier}}
  d1: {{role: drafter}}
  d2: {{role: drafter}}
links:
  - {{a: d1, b: ap1, kind: wireless, rate_up_mbps: 20, rate_down_mbps: 20, delay_ms: 5{ch1}}}
  - {{a: ap1, b: d2, kind: wireless, rate_up_mbps: 10, rate_down_mbps: 10, loss_pct: 1{ch2}}}
  - {{a: ap1, b: verifier, rate_up_mbps: 1000, rate_down_mbps: 1000}}
"""
QUIET = "shadowing: {sigma_db: 0}, fading: {kind: none}"


def topo(tmp_path, radio_="", ch1="", ch2="", name="t.yaml"):
    path = tmp_path / name
    path.write_text(STAR.format(radio=radio_, ch1=ch1, ch2=ch2))
    return load_topology(path)


def states(plan, k, demands=None):
    return {a.link: a for a in plan.step(k, demands)}


def test_no_channel_no_radio_drives_nothing(tmp_path):
    plan = ChannelPlan(topo(tmp_path))
    assert plan.driven_links() == [] and plan.live_delay_links() == []


def test_snr_rate_falls_with_distance_along_waypoints(tmp_path):
    ch = f", channel: {{model: snr, band_mhz: 20, mobility: {{waypoints: [[0, 2, 0], [10, 300, 0]]}}, {QUIET}}}"
    plan = ChannelPlan(topo(tmp_path, ch1=ch), interval_s=0.5)
    seq = [states(plan, k)["d1-ap1"] for k in range(21)]
    dist = [a.info["distance_m"] for a in seq]
    rates = [a.state.rate_up_mbps for a in seq]
    assert dist == sorted(dist) and dist[-1] == pytest.approx(300)
    assert all(b <= a for a, b in zip(rates, rates[1:])) and rates[-1] < rates[0] / 4
    # the closed form, at one point: 20 dBm, PL 40 + 30 log10(d), noise -174 + 73 + 7 dBm
    a = seq[10]
    snr = 20 - (40 + 30 * math.log10(a.info["distance_m"])) - (-174 + 10 * math.log10(20e6) + 7)
    assert a.info["snr_up_db"] == pytest.approx(snr, abs=1e-3)
    eff = min(4.33, 0.6 * math.log2(1 + 10 ** (snr / 10)))
    assert a.state.rate_up_mbps == pytest.approx(max(0.05, eff * 20), abs=2e-3)


def test_same_seed_same_states_other_seed_other_states(tmp_path):
    ch = (", channel: {model: snr, band_mhz: 20, mobility: {random_waypoint: {area_m: [50, 50], speed_mps: [1, 2]}},"
          " shadowing: {sigma_db: 6}, fading: {kind: rayleigh, doppler_hz: 10},"
          " gilbert_elliott: {p_good_to_bad: 0.2, p_bad_to_good: 0.3}}")
    t = topo(tmp_path, ch1=ch)
    run = lambda seed: [states(ChannelPlan(t, 0.1, seed), k)["d1-ap1"].state for k in range(1)] + \
        [a.state for plan in [ChannelPlan(t, 0.1, seed)] for k in range(200) for a in plan.step(k) if a.link == "d1-ap1"]
    assert run(3) == run(3)
    assert run(3) != run(4)


def test_directions_differ_by_transmit_power_and_loss_is_per_direction(tmp_path):
    # d2 is end b: its uplink is the link's "down" direction. The AP transmits 10 dB more.
    ch = (f", channel: {{model: snr, band_mhz: 20, tx_power_dbm: 10, ap_tx_power_dbm: 20,"
          f" mobility: {{distance_m: 100}}, {QUIET}, loss: {{threshold_db: 5, retries: 0}}}}")
    a = states(ChannelPlan(topo(tmp_path, ch2=ch)), 0)["ap1-d2"]
    assert a.info["snr_up_db"] == pytest.approx(a.info["snr_down_db"] + 10)   # up = AP → d2
    assert a.state.rate_up_mbps > a.state.rate_down_mbps
    # each direction's channel loss compounds with the link's own 1 %
    for d in ("up", "down"):
        chan = radio.packet_loss(radio.bler(a.info[f"snr_{d}_db"], 5, 1.5, 0.1), 0)
        assert a.state.loss(d) == pytest.approx(100 * (1 - 0.99 * (1 - chan)), abs=0.05)   # info's SNR is rounded
    assert a.state.loss("down") > a.state.loss("up")


def test_mcs_table_rate_and_outage_floor(tmp_path):
    near = f", channel: {{model: snr, band_mhz: 20, mobility: {{distance_m: 3}}, rate: {{mode: mcs, table: wifi}}, {QUIET}}}"
    far = f", channel: {{model: snr, band_mhz: 20, mobility: {{distance_m: 5000}}, rate: {{mode: mcs, table: lte}}, {QUIET}}}"
    s = states(ChannelPlan(topo(tmp_path, ch1=near, ch2=far)), 0)
    top = radio.MCS_TABLES["wifi"][-1]
    assert s["d1-ap1"].state.rate_up_mbps == pytest.approx(top.bits_per_hz * 20, abs=1e-3)
    assert s["ap1-d2"].state.rate_up_mbps == 0.05           # outage: the floor, and heavy loss
    assert s["ap1-d2"].state.loss_pct > 50


def test_radio_ap_splits_its_band_by_policy(tmp_path):
    radio_ = ", radio: {band_mhz: 20, allocation_up: zhu, allocation_down: equal}"
    ch1 = f", channel: {{model: snr, mobility: {{distance_m: 5}}, {QUIET}}}"
    ch2 = f", channel: {{model: snr, mobility: {{distance_m: 60}}, {QUIET}}}"
    plan = ChannelPlan(topo(tmp_path, radio_=radio_, ch1=ch1, ch2=ch2))
    s = states(plan, 0, {("d1", "up"): 4000.0, ("d2", "up"): 1000.0})
    d1, d2 = s["d1-ap1"], s["ap1-d2"]
    # station uplink: d1's link "up", d2's link "down"
    assert d1.info["share_up"] + d2.info["share_down"] == pytest.approx(1)
    eff1, eff2 = d1.info["efficiency_up"], d2.info["efficiency_down"]
    want = math.sqrt(4000 / eff1) / (math.sqrt(4000 / eff1) + math.sqrt(1000 / eff2))
    assert d1.info["share_up"] == pytest.approx(want, abs=1e-5)
    assert d1.state.rate_up_mbps == pytest.approx(d1.info["share_up"] * eff1 * 20, abs=2e-3)
    assert d1.info["share_down"] == d2.info["share_up"] == 0.5    # equal downlink
    # unknown demands count as the mean of the known ones
    s = states(plan, 0, {("d1", "up"): 4000.0})
    assert s["ap1-d2"].info["demand_down"] == 4000.0


def test_static_stations_of_a_radio_ap_share_their_full_band_rate(tmp_path):
    plan = ChannelPlan(topo(tmp_path, radio_=", radio: {band_mhz: 20, demand: uniform}"))
    s = states(plan, 0)
    assert plan.driven_links() == ["d1-ap1", "ap1-d2"] and plan.live_delay_links() == []
    assert s["d1-ap1"].state.rate_up_mbps == 10 and s["ap1-d2"].state.rate_up_mbps == 5


def test_gilbert_elliott_loss_is_bursty_and_compounds(tmp_path):
    ch = ", channel: {gilbert_elliott: {p_good_to_bad: 0.05, p_bad_to_good: 0.25, loss_bad_pct: 40}}"
    plan = ChannelPlan(topo(tmp_path, ch2=ch))
    losses = [states(plan, k)["ap1-d2"].state.loss_pct for k in range(4000)]
    assert sorted(set(losses)) == [1.0, pytest.approx(100 * (1 - 0.99 * 0.6))]
    bad = sum(l > 1 for l in losses) / len(losses)
    assert bad == pytest.approx(0.05 / 0.30, abs=0.05)     # steady state 1/6; ±0.05 is > 5 sd here
    assert plan.live_delay_links() == ["ap1-d2"]


def test_live_links_get_delay_elements_only_where_needed(tmp_path):
    ch = ", channel: {gilbert_elliott: {p_good_to_bad: 0.05, p_bad_to_good: 0.25}}"
    path = tmp_path / "t.yaml"
    path.write_text(STAR.format(radio="", ch1="", ch2=ch).replace("loss_pct: 1", "loss_pct: 0"))
    t = load_topology(path)
    live = ChannelPlan(t).live_delay_links()
    plain = ShapingPlan(NetPlan(t, "0000"), "nfqueue")
    driven = ShapingPlan(NetPlan(t, "0000"), "nfqueue", live)
    pairs = lambda sp: {(p.src, p.dst) for p in sp.paths}
    assert ("d2", "verifier") not in pairs(plain)        # d1's delay only: d2 ↔ verifier needs none at start
    assert {("d2", "verifier"), ("verifier", "d2"), ("d1", "d2"), ("d2", "d1")} <= pairs(driven)
    with pytest.raises(ValueError, match="no such link"):
        ShapingPlan(NetPlan(t, "0000"), "nfqueue", ["nope"])


@pytest.mark.parametrize("fragment, field, message", [
    (("", "", ", channel: {model: snr, mobility: {distance_m: 5}}"), "links[1].channel.band_mhz", "needs a band"),
    (("", "", ", channel: {model: snr, band_mhz: 20}"), "links[1].channel", "needs `mobility`"),
    (("", "", ", channel: {model: trace}"), "links[1].channel", "needs `up`"),
    (("", "", ", channel: {model: static, up: x.csv}"), "links[1].channel", "belongs to model trace"),
    (("", "", ", channel: {model: snr, band_mhz: 5, mobility: {distance_m: 1, waypoints: [[0, 1, 1]]}}"),
     "links[1].channel.mobility", "exactly one of"),
    (("", "", ", channel: {model: snr, band_mhz: 5, mobility: {distance_m: 1}, fading: {kind: rayleigh}}"),
     "links[1].channel.fading", "doppler_hz or coherence_ms"),
    (("", "", ", channel: {model: trace, up: missing.csv}"), "links[1].channel.up", "trace file not found"),
    ((", radio: {band_mhz: 20}, band_up_mbps: 50, band_down_mbps: 50", "", ""), "nodes.ap1.radio", "not both"),
    ((", radio: {band_mhz: 20, allocation_up: fair}", "", ""), "nodes.ap1.radio.allocation_up", "expected one of"),
    (("", "", ", channel: {model: snr, band_mhz: 5, mobility: {waypoints: [[1, 0, 0], [0, 1, 1]]}}"),
     "links[1].channel.mobility", "strictly increasing"),
])
def test_bad_channel_yaml_names_file_line_and_field(tmp_path, fragment, field, message):
    with pytest.raises(ConfigError) as e:
        topo(tmp_path, *fragment)
    text = str(e.value)
    assert "t.yaml:" in text and field in text and message in text, text


def test_snr_on_a_wired_link_is_refused(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(STAR.format(radio="", ch1="", ch2="").replace(
        "rate_up_mbps: 1000, rate_down_mbps: 1000}",
        "rate_up_mbps: 1000, rate_down_mbps: 1000, channel: {model: snr, band_mhz: 20, mobility: {distance_m: 3}}}"))
    with pytest.raises(ConfigError, match=r"links\[2\]\.channel\.model: model snr needs a wireless link"):
        load_topology(path)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_driver_applies_changes_only_and_logs_every_state(tmp_path):
    ch = ", channel: {gilbert_elliott: {p_good_to_bad: 0.5, p_bad_to_good: 0.5}}"
    plan = ChannelPlan(topo(tmp_path, ch2=ch), interval_s=0.1, seed=1)
    applied = []
    log = tmp_path / "links.jsonl"
    driver = ChannelDriver(plan, lambda link, st: applied.append((link, st)), log)
    driver._log = EventLog(log, "channel")
    for k in range(50):
        driver.tick(k)
    driver._log.close()
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert len(records) == 50 and all(r["event"] == "link" and r["node"] == "channel" for r in records)
    assert [r["tick"] for r in records] == list(range(50))
    changes = sum(1 for a, b in zip(records, records[1:]) if a["loss_pct"] != b["loss_pct"]) + 1
    assert len(applied) == changes < 50           # unchanged states are not re-applied
    again = ChannelPlan(plan.topo, 0.1, 1)
    assert [r["loss_pct"] for r in records] == [again.step(k)[0].state.loss_pct for k in range(50)]


def test_driver_thread_skips_ticks_it_is_late_for(tmp_path):
    plan = ChannelPlan(topo(tmp_path, radio_=", radio: {demand: uniform}"), interval_s=0.01)
    clock = FakeClock()
    seen = []
    driver = ChannelDriver(plan, lambda *a: None, tmp_path / "l.jsonl", clock=clock)
    driver.tick = lambda k, _orig=driver.tick: (seen.append(k), _orig(k))
    driver.start()
    clock.now = 1.0                                  # a 1 s stall: ticks 1..99 are past
    driver._stop.wait(0.3)
    stats = driver.stop()
    assert seen[0] == 0 and seen[1] >= 100 and stats["late_ticks"] >= 98
    assert any('"channel_late"' in l for l in (tmp_path / "l.jsonl").read_text().splitlines())


def test_telemetry_reads_frame_bytes_and_done(tmp_path):
    def draft(n):
        return encode(Draft(t=1.0, node="d1", session="s", round=1, gamma=0, bytes_out=n))

    (tmp_path / "d1.jsonl").write_bytes(
        draft(100) + encode(Verdict(t=1.1, node="d1", session="s", round=1, bytes_in=40)))
    tele = Telemetry(tmp_path, ["d1", "d2"], smoothing=0.5)
    assert tele.poll() == {("d1", "up"): 100.0, ("d1", "down"): 40.0}
    half = draft(200)
    with open(tmp_path / "d1.jsonl", "ab") as f:
        f.write(draft(300) + half[:9])                                                    # half a line
    assert tele.poll()[("d1", "up")] == 200.0
    with open(tmp_path / "d1.jsonl", "ab") as f:
        f.write(half[9:] + encode(Done(t=2.0, node="d1")))
    assert tele.poll()[("d1", "up")] == 0.0


def test_joint_allocation_splits_the_band_and_chooses_windows_from_drafter_stats(tmp_path):
    radio_ = ", radio: {band_mhz: 20, allocation_up: joint, joint_gamma_max: 8}"
    ch1 = f", channel: {{model: snr, mobility: {{distance_m: 5}}, {QUIET}}}"
    ch2 = f", channel: {{model: snr, mobility: {{distance_m: 60}}, {QUIET}}}"
    plan = ChannelPlan(topo(tmp_path, radio_=radio_, ch1=ch1, ch2=ch2))
    assert plan.uses_telemetry()
    s = states(plan, 0)                    # no stats yet: defaults, still a valid split
    assert s["d1-ap1"].info["share_up"] + s["ap1-d2"].info["share_down"] == pytest.approx(1)
    stats = {"d1": {"alpha": 0.9, "bytes_per_token": 2000.0, "per_token_s": 0.002, "rtt_s": 0.05},
             "d2": {"alpha": 0.3, "bytes_per_token": 2000.0, "per_token_s": 0.002, "rtt_s": 0.05}}
    s = {a.link: a for a in plan.step(1, None, stats)}
    d1, d2 = s["d1-ap1"].info, s["ap1-d2"].info
    assert d1["share_up"] + d2["share_down"] == pytest.approx(1)
    assert d1["station"] == "d1" and d2["station"] == "d2"
    assert 1 <= d2["gamma_joint"] < d1["gamma_joint"] <= 8      # the better draft model drafts longer
