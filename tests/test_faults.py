"""Link faults (`faults:`, testbed/channels/faults.py): the schema's one-line errors, the overlay on the channel plan's
states, fault edges in the logs, the simulator's outages (lost until they end, then TCP recovers), their impact
metrics, and a simulated demo point with a 2 s outage that still produces the unfaulted run's tokens."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodes.events import Fault, Link, decode, encode, of_type, read_events
from testbed.channels.driver import ChannelDriver
from testbed.channels.plan import ChannelPlan
from testbed.common.errors import ConfigError
from nodes.events import EventLog
from testbed.net.linkstate import LinkState
from testbed.net.topology import Topology
from testbed.run import metrics
from testbed.run.experiment import experiment_from_dict
from testbed.channels.faults import DOWN_LOSS_PCT, FaultSchedule, FaultSpec, impact
from testbed.sim.network import SimNetwork

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
TOPO = {"name": "t", "nodes": {"d1": {"role": "drafter"}, "verifier": {"role": "verifier"}},
        "links": [{"a": "d1", "b": "verifier", "rate_up_mbps": 10, "rate_down_mbps": 20, "delay_ms": 5,
                   "loss_pct": 1}]}
BASE = LinkState(10, 20, 5, 0, 1)


def exp(faults, **extra):
    return experiment_from_dict({"name": "f", "topology": TOPO, "backend": "sim", "faults": faults, **extra},
                                REPO)


def errors(faults, **extra) -> list[str]:
    with pytest.raises(ConfigError) as e:
        exp(faults, **extra)
    return [str(p) for p in e.value.problems]


# ---------------------------------------------------------------------------------------------- schema

def test_a_valid_faults_section_loads_and_counts_in_the_config_hash():
    e = exp([{"kind": "outage", "link": "d1-verifier", "at_s": 1, "duration_s": 2}])
    assert e.faults[0].kind == "outage" and e.resolved()["faults"] == [
        {"kind": "outage", "link": "d1-verifier", "at_s": 1.0, "duration_s": 2.0}]
    assert e.config_hash() != exp([]).config_hash()
    assert "faults" not in exp([]).resolved()        # experiments without faults keep their hashes


@pytest.mark.parametrize("fault, where, says", [
    ({"link": "nope"}, "faults[0].link", "no link named 'nope' in the topology; links: d1-verifier"),
    ({"kind": "flap"}, "faults[0].down_s", "required for kind flap"),
    ({"rate_mbps": 1}, "faults[0].rate_mbps", "not a field of kind outage"),
    ({"kind": "rate_collapse"}, "faults[0].rate_mbps", "required for kind rate_collapse"),
    ({"kind": "loss_burst", "loss_pct": 100}, "faults[0].loss_pct", "less than 100"),
    ({"every_s": 5}, "faults[0].count", "every_s and count go together"),
    ({"every_s": 1, "count": 3}, "faults[0].every_s", "shorter than duration_s (2 s): the fault would overlap"),
    ({"duration_s": 0.05}, "faults[0].duration_s", "shorter than one channel interval (0.1 s"),
    ({"at_s": -1}, "faults[0].at_s", "greater than or equal to 0"),
    ({"at_s": True}, "faults[0]", "at_s: expected a number, got true"),   # the strict base's form
    ({"kind": "reboot"}, "faults[0].kind", "outage"),
    ({"sever": 1}, "faults[0].sever", "unknown field"),
    ({"kind": "outage", "direction": "up"}, "faults[0].direction", "not a field of kind outage"),
])
def test_every_bad_field_is_one_line_naming_it(fault, where, says):
    base = {"kind": "outage", "link": "d1-verifier", "at_s": 1, "duration_s": 2}
    errs = errors([{**base, **fault}])
    assert any(where in e and says in e for e in errs), errs
    assert all("\n" not in e for e in errs)


# ---------------------------------------------------------------------------------------------- overlay

def spec(**kw) -> FaultSpec:
    return FaultSpec(**{"link": "d1-verifier", "at_s": 1.0, "duration_s": 0.5, "kind": "outage", **kw})


def test_an_outage_is_down_on_its_ticks_only_and_edges_round_to_the_interval():
    s = FaultSchedule([spec(at_s=1.04, duration_s=0.5)], 0.1)     # 1.04 s -> tick 10, 1.54 s -> tick 15
    assert [k for k in range(30) if s.is_down("d1-verifier", k)] == list(range(10, 15))
    for k in (9, 15):
        assert s.overlay("d1-verifier", k, BASE) == (BASE, BASE)
    state, sim_state = s.overlay("d1-verifier", 10, BASE)
    assert state.losses == (DOWN_LOSS_PCT, DOWN_LOSS_PCT) and state.rate_up_mbps == 10
    assert sim_state == BASE                       # the simulator models the outage itself
    assert [(e.tick, e.edge) for e in s.edges(0, 100)] == [(10, "start"), (15, "end")]
    assert s.outage_windows() == {"d1-verifier": [(1.0, 1.5)]}


def test_rate_collapse_and_loss_burst_take_the_most_severe_value_per_direction():
    s = FaultSchedule([spec(kind="rate_collapse", rate_mbps=2, direction="up", duration_s=1),
                       spec(kind="rate_collapse", rate_mbps=50, duration_s=1),           # above the link's: no effect
                       spec(kind="loss_burst", loss_pct=30, direction="down", at_s=1.5, duration_s=1),
                       spec(kind="loss_burst", loss_pct=0.5, duration_s=1)], 0.1)        # below the link's 1 %
    state, _ = s.overlay("d1-verifier", 12, BASE)
    assert (state.rate_up_mbps, state.rate_down_mbps, state.losses) == (2, 20, (1, 1))
    state, _ = s.overlay("d1-verifier", 16, BASE)
    assert (state.rate_up_mbps, state.rate_down_mbps, state.losses) == (2, 20, (1, 30))
    state, _ = s.overlay("d1-verifier", 22, BASE)
    assert (state.rate_up_mbps, state.losses) == (10, (1, 30))
    assert s.outage_windows() == {} and s.loss_links() == ["d1-verifier"]


def test_an_outage_overlapping_a_rate_collapse_is_down_with_the_collapsed_rate():
    s = FaultSchedule([spec(kind="rate_collapse", rate_mbps=1, duration_s=2), spec(at_s=2)], 0.1)
    state, up = s.overlay("d1-verifier", 21, BASE)
    assert state.rate_up_mbps == 1 and state.loss_pct == DOWN_LOSS_PCT and up.losses == (1, 1)


def test_a_flap_alternates_down_and_up_and_repeats_on_its_schedule():
    s = FaultSchedule([spec(kind="flap", down_s=0.2, up_s=0.3, duration_s=1.0, every_s=5, count=2)], 0.1)
    down = [k for k in range(100) if s.is_down("d1-verifier", k)]
    assert down == [10, 11, 15, 16, 60, 61, 65, 66]
    assert [(e.tick, e.edge, e.occ.repeat) for e in s.edges(0, 100)] == [
        (10, "start", 0), (20, "end", 0), (60, "start", 1), (70, "end", 1)]


def test_a_faulted_link_without_a_channel_is_driven_and_needs_a_delay_element_only_for_loss():
    topo = Topology.model_validate({**TOPO, "links": TOPO["links"] + [
        {"a": "d1", "b": "verifier", "name": "spare", "rate_up_mbps": 5, "rate_down_mbps": 5}]})
    assert ChannelPlan(topo, 0.1).driven_links() == []
    plan = ChannelPlan(topo, 0.1, faults=[spec(at_s=0.3), spec(link="spare", kind="rate_collapse", rate_mbps=1)])
    assert sorted(plan.driven_links()) == ["d1-verifier", "spare"] and plan.live_delay_links() == ["d1-verifier"]
    at = {k: {a.link: a for a in plan.step(k)} for k in (0, 3, 10)}
    same = lambda x, y: (x.rate_up_mbps, x.rate_down_mbps, x.delay_ms, x.losses) == \
        (y.rate_up_mbps, y.rate_down_mbps, y.delay_ms, y.losses)
    assert same(at[0]["d1-verifier"].state, BASE) and same(at[0]["d1-verifier"].state_for_sim, BASE)
    assert at[3]["d1-verifier"].state.loss_pct == DOWN_LOSS_PCT and same(at[3]["d1-verifier"].state_for_sim, BASE)
    assert at[10]["spare"].state.rate_up_mbps == 1 and at[0]["spare"].state.rate_up_mbps == 5


def test_the_driver_logs_fault_edges_even_in_ticks_it_skipped(tmp_path):
    topo = Topology.model_validate(TOPO)
    plan = ChannelPlan(topo, 0.1, faults=[spec(at_s=0.3, duration_s=0.2)])
    applied = []
    driver = ChannelDriver(plan, lambda link, st: applied.append(st), tmp_path / "links.jsonl")
    driver._log = EventLog(tmp_path / "links.jsonl", "channel")
    driver.tick(0)
    driver.tick(4)            # ticks 1-3 skipped: the start at tick 3 is logged now
    driver.tick(9)
    driver._log.close()
    events = read_events(tmp_path / "links.jsonl")[0]
    assert [(e.edge, e.tick) for e in of_type(events, Fault)] == [("start", 3), ("end", 5)]
    assert [st.loss_pct for st in applied] == [1, DOWN_LOSS_PCT, 1]
    assert len(of_type(events, Link)) == 3


def test_the_fault_event_round_trips():
    e = Fault(t=1.0, node="channel", fault=0, repeat=1, kind="flap", link="l", edge="start", tick=3, down_s=0.2)
    assert decode(encode(e)) == e


# ---------------------------------------------------------------------------------------------- simulator

def test_a_message_sent_into_an_outage_arrives_after_it_ends_and_others_are_untouched():
    topo = Topology.model_validate({**TOPO, "links": [{**TOPO["links"][0], "loss_pct": 0}]})
    free = SimNetwork(topo)
    cut = SimNetwork(topo, outages={"d1-verifier": [(1.0, 3.0)]})
    for t in (0.0, 0.5):
        assert cut.deliver_at("d1", "verifier", 20_000, t) == free.deliver_at("d1", "verifier", 20_000, t)
    base = free.deliver_at("d1", "verifier", 20_000, 1.2) - 1.2
    got = cut.deliver_at("d1", "verifier", 20_000, 1.2)
    assert got > 3.0                   # nothing gets through until the outage ends ...
    assert got < 3.0 + 2.5             # ... and a backed-off RTO (the 4th: ~2 s) brings it soon after
    assert cut.connection_stats()["d1->verifier"]["rto"] >= 2      # backoff: several timeouts, not one
    assert base < 0.05
    assert cut.is_down("d1-verifier", 2.99) and not cut.is_down("d1-verifier", 3.0)


# ---------------------------------------------------------------------------------------------- impact

def test_impact_measures_the_dip_the_recovery_and_the_sessions_hit():
    # 10 tokens every 0.1 s, nothing in [10, 12) nor until 12.5, then back at full rate
    tokens = [(round(0.1 * i, 6), 10) for i in range(200) if not 100 <= i < 125]
    sessions = [("a/s0", 0.0, 9.0), ("a/s1", 9.0, 20.0), ("b/s0", 12.5, 20.0)]
    (row,) = impact([(0, 0, "outage", "l", 10.0, 12.0)], tokens, sessions, 0.0, 19.9)
    assert row["pre_goodput_tps"] == pytest.approx(100) and row["pre_window_s"] == 5.0
    assert row["during_goodput_tps"] == 0 and row["dip"] == 1.0
    assert row["recovery_s"] == pytest.approx(0.5)
    assert row["sessions"] == ["a/s1"] and row["sessions_affected"] == 1
    (never,) = impact([(0, 0, "outage", "l", 10.0, 12.0)], [t for t in tokens if t[0] < 10], sessions, 0.0, 19.9)
    assert never["recovery_s"] is None and never["dip"] == 1.0
    (early,) = impact([(0, 0, "outage", "l", 2.0, 3.0)], tokens, sessions, 0.0, 19.9)
    assert early["pre_window_s"] == 2.0          # only the time since the first start


def test_metrics_say_faults_were_not_applied_on_the_local_backend(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "manifest.json").write_text(json.dumps({"backend": "local", "config": {"faults": [{}]}}))
    m = metrics.compute(tmp_path)
    assert m["faults"]["applied"] is False and "not applied" in m["faults"]["why"]
    (tmp_path / "manifest.json").write_text(json.dumps({"backend": "sim", "config": {}}))
    assert "faults" not in metrics.compute(tmp_path)


# ---------------------------------------------------------------------------------------------- a simulated run

DEMO_POINT = ["experiments/demo.yaml", "--set", "backend=sim", "--set", "sweep=null", "--set", "speculation.gamma=4",
              "--set", "links.ap1-verifier.delay_ms=18", "--set", "workload.duration_s=null",
              "--set", "workload.requests=6"]
OUTAGE = "faults=[{kind: outage, link: ap1-verifier, at_s: 3, duration_s: 2}]"


def run_dir(args, results):
    r = subprocess.run(TESTBED + ["run", *args, "--results", str(results)], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = sorted(p for p in (results / "demo").iterdir() if (p / "manifest.json").exists())
    return d


def tokens_of(d: Path) -> dict:
    return {f.name: [json.loads(l)["tokens"] for l in f.read_text().splitlines()]
            for f in sorted((d / "outputs").glob("*.jsonl"))}


def test_a_2s_outage_on_sim_keeps_every_token_and_shows_a_dip_and_a_recovery(tmp_path):
    faulted = run_dir(DEMO_POINT + ["--set", OUTAGE], tmp_path / "faulted")
    clean = run_dir(DEMO_POINT, tmp_path / "clean")
    assert tokens_of(faulted) == tokens_of(clean) and len(tokens_of(faulted)) == 4
    assert all(len(v) == 6 for v in tokens_of(faulted).values())        # every session completed
    m = json.loads((faulted / "metrics.json").read_text())
    assert m["complete"] and m["total"]["requests_completed"] == 24
    (o,) = m["faults"]["occurrences"]
    assert o["kind"] == "outage" and o["ended"] and o["sessions_affected"] == 4
    assert o["dip"] > 0.9                   # the verifier's link carried nothing for 2 s
    # RTO backoff: the first retransmission after the outage comes up to a backed-off RTO after its end
    assert 0.2 < o["recovery_s"] < 4
    assert m["total"]["window_s"] > json.loads((clean / "metrics.json").read_text())["total"]["window_s"] + 2
    marks = of_type(read_events(faulted / "events" / "links.jsonl")[0], Fault)
    assert [(e.edge, e.t_model_s) for e in marks] == [("start", 3.0), ("end", 5.0)]
    downs = [e for e in of_type(read_events(faulted / "events" / "links.jsonl")[0], Link)
             if e.link == "ap1-verifier" and e.loss_pct == DOWN_LOSS_PCT]
    assert len(downs) == 20                  # 2 s of 100 ms ticks, as the emulator would apply them
    assert "## Faults" in (faulted / "summary.md").read_text()
    assert (faulted / "plots" / "goodput.png").exists()
