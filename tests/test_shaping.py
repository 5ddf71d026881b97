"""Shaping plans: the exact tc / iptables / ethtool commands and delay-daemon settings, for both delay backends.

Nothing here needs root or Mininet: plans are data.

Golden files: tests/data/golden/star-wifi-4.<backend>.txt hold, one per line, `str(cmd)` of every set-up command
of topologies/star-wifi-4.yaml (run id 'abcd'), then one `[host] nfqdelay --queue SPEC` line per delay-daemon
queue. When a change to the commands is intended, rewrite them with

    SPECNET_UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_shaping.py -k golden

and review the diff line by line before keeping it.
"""
from __future__ import annotations

import difflib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.net.delayd import QueueParams
from testbed.net.linkstate import LinkState
from testbed.net.netplan import NetPlan
from testbed.net.shaping import BACKENDS, FRAME, PathDelay, ShapingPlan, burst_bytes, htb_class
from testbed.net.topology import load_topology

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "data" / "golden"
STAR = ROOT / "topologies" / "star-wifi-4.yaml"
M2M = ROOT / "topologies" / "many-to-many.yaml"


def plan(path: Path, backend: str, run: str = "abcd", **kw) -> ShapingPlan:
    return ShapingPlan(NetPlan(load_topology(path), run), backend, **kw)


def write_topology(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topo.yaml"
    path.write_text(text)
    return path


# -- golden files -----------------------------------------------------------------------------------
def render(backend: str) -> str:
    shaping = plan(STAR, backend)
    lines = [str(cmd) for cmd in shaping.setup_commands()]
    for host, queues in shaping.daemons().items():
        lines += [f"[{host}] nfqdelay --queue {q.spec()}" for q in queues]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("backend", BACKENDS)
def test_golden_commands(backend):
    path = GOLDEN / f"star-wifi-4.{backend}.txt"
    got = render(backend)
    if os.environ.get("SPECNET_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    want = path.read_text()
    if got != want:
        diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                            f"{path.name} (golden)", f"{path.name} (generated)"))
        pytest.fail(f"shaping commands differ from {path}; if intended, rerun with SPECNET_UPDATE_GOLDEN=1 "
                    f"and review:\n{diff}")


def test_golden_spot_checks():
    """A few facts from the golden files restated independently, so a wrongly regenerated file is caught."""
    nfq = render("nfqueue").splitlines()
    netem = render("netem").splitlines()
    # queue numbers are the source's index among the hosts: verifier 0, d1 1, d2 2, d3 3, d4 4
    assert "[verifier] nfqdelay --queue 1,delay=10.0,jitter=0.0,loss=0.0" in nfq                  # d1 -> verifier
    assert "[d4] nfqdelay --queue 3,delay=25.0,jitter=2.0,loss=0.01" in nfq                        # d3 -> d4
    assert "[d3] nfqdelay --queue 4,delay=25.0,jitter=2.0,loss=0.01" in nfq                        # d4 -> d3
    assert ("[root] tc qdisc add dev snabcds1-eth3 parent 5:1 handle 10: netem limit 100 delay 10ms 2ms "
            "loss 0%") in netem
    assert not any("nfqdelay" in l or "iptables" in l for l in netem)
    assert not any("netem" in l for l in nfq)
    # 5 links x 2 ends of ethtool, 5 links x 2 directions x 3 tc commands; nfqueue adds 5 x 4 rules and queues
    assert len(netem) == 10 + 30
    assert len(nfq) == 10 + 30 + 20 + 20


# -- PathDelay composition on a two-AP topology --------------------------------------------------------
TWO_AP = """\
name: two-ap
nodes:
  ap1: {role: ap}
  ap2: {role: ap}
  h1:  {role: drafter}
  h2:  {role: verifier}
  h3:  {role: user}
links:
  - {a: h1, b: ap1, kind: wireless, rate_up_mbps: 10, rate_down_mbps: 20, delay_ms: 10, jitter_ms: 3, loss_pct: 10}
  - {a: ap1, b: ap2, name: bridge, rate_up_mbps: 100, rate_down_mbps: 100, delay_ms: 4, jitter_ms: 4, loss_pct: 20}
  - {a: h2, b: ap2, kind: wireless, rate_up_mbps: 10, rate_down_mbps: 10, delay_ms: 20, jitter_ms: 12, loss_pct: 50}
  - {a: h3, b: ap1, rate_up_mbps: 10, rate_down_mbps: 10}
"""


def test_path_delay_composition(tmp_path):
    shaping = plan(write_topology(tmp_path, TWO_AP), "nfqueue")
    paths = {(p.src, p.dst): p for p in shaping.paths}
    p = paths[("h1", "h2")]
    assert p.hops == (("h1-ap1", "up"), ("bridge", "up"), ("h2-ap2", "down"))
    assert (p.src_ip, p.intf, p.queue) == ("10.0.0.1", "h2-eth0", 0)     # hosts in node order: h1, h2, h3
    q = p.params(shaping.states)
    assert q.queue == 0
    assert q.delay_ms == pytest.approx(10 + 4 + 20)                          # delays add
    assert q.jitter_ms == pytest.approx(math.sqrt(3 ** 2 + 4 ** 2 + 12 ** 2)) == pytest.approx(13)
    assert q.loss == pytest.approx(1 - 0.9 * 0.8 * 0.5) == pytest.approx(0.64)   # losses compound
    # the reverse direction crosses the same link states
    r = paths[("h2", "h1")].params(shaping.states)
    assert (r.queue, r.delay_ms, r.jitter_ms, r.loss) == (1, q.delay_ms, q.jitter_ms, q.loss)
    # h3's own link has no delay element, but its paths cross h1-ap1 / bridge / h2-ap2, which do
    h3h1 = paths[("h3", "h1")].params(shaping.states)
    assert (h3h1.delay_ms, h3h1.jitter_ms, h3h1.loss) == pytest.approx((10, 3, 0.1))
    assert set(paths) == {(s, d) for s in ("h1", "h2", "h3") for d in ("h1", "h2", "h3") if s != d}


def test_path_delay_params_direct():
    path = PathDelay("a", "b", "10.0.0.1", "b-eth0", 7, (("x", "up"), ("y", "down")))
    states = {"x": LinkState(10, 10, delay_ms=1.5, jitter_ms=0.5, loss_pct=1),
              "y": LinkState(10, 10, delay_ms=2.5, jitter_ms=1.2, loss_pct=2)}
    q = path.params(states)
    assert q == QueueParams(7, 4.0, round(math.hypot(0.5, 1.2), 6), round(1 - 0.99 * 0.98, 9))
    assert q.loss == pytest.approx(0.0298)
    assert path.rule() == ("iptables", "-w", "-t", "raw", "-A", "PREROUTING", "-i", "b-eth0", "-s", "10.0.0.1/32",
                           "-j", "NFQUEUE", "--queue-num", "7")


# -- live updates --------------------------------------------------------------------------------------
def test_update_rate_change_one_class_change_per_changed_direction():
    for backend in BACKENDS:
        shaping = plan(STAR, backend)
        old = shaping.states["d1-ap1"]
        up = shaping.update("d1-ap1", old.with_(rate_up_mbps=15))
        assert up.tc_lines == {"d1": ["class change dev d1-eth0 parent 5: classid 5:1 htb rate 15000kbit "
                                      "ceil 15000kbit burst 3028 cburst 3028 quantum 1514"]}
        assert up.daemon_sets == []
        down = shaping.update("d1-ap1", old.with_(rate_up_mbps=15, rate_down_mbps=200))   # bridge port sends down
        assert down.tc_lines == {None: ["class change dev snabcds1-eth1 parent 5: classid 5:1 htb rate 200000kbit "
                                        "ceil 200000kbit burst 25000 cburst 25000 quantum 1514"]}
        assert down.daemon_sets == []
        both = shaping.update("ap1-verifier", shaping.states["ap1-verifier"].with_(rate_up_mbps=1, rate_down_mbps=2))
        assert sorted(both.tc_lines, key=str) == [None, "verifier"]
        assert [len(v) for v in both.tc_lines.values()] == [1, 1]
        assert both.tc_lines[None][0].startswith("class change dev snabcds1-eth5 parent 5: classid 5:1 htb rate 1000kbit ")
        assert both.tc_lines["verifier"][0].startswith("class change dev verifier-eth0 parent 5: classid 5:1 htb rate 2000kbit ")
        assert both.daemon_sets == []
        same = shaping.update("ap1-verifier", shaping.states["ap1-verifier"])
        assert same.tc_lines == {} and same.daemon_sets == []


def test_update_delay_nfqueue_sets_exactly_the_crossing_paths():
    shaping = plan(STAR, "nfqueue")
    u = shaping.update("d3-ap1", shaping.states["d3-ap1"].with_(delay_ms=20))
    assert u.tc_lines == {}                                  # delay lives in the daemons, not in tc
    ip_queue = {"verifier": 0, "d1": 1, "d2": 2, "d3": 3, "d4": 4}
    got = {(dst, q.queue): (q.delay_ms, q.jitter_ms, q.loss) for dst, q in u.daemon_sets}
    assert len(got) == len(u.daemon_sets) == 8
    expect = {}
    other_delay = {"verifier": 5, "d1": 5, "d2": 5, "d4": 15}   # the other link on each path
    for other, d in other_delay.items():
        loss = 0.01 if other == "d4" else 0.0
        expect[(other, ip_queue["d3"])] = (20 + d, 2.0, loss)    # d3 -> other
        expect[("d3", ip_queue[other])] = (20 + d, 2.0, loss)    # other -> d3
    assert got == expect                                     # params are rounded, so exact
    # the state is recorded: the daemons' next start would use it too
    assert shaping.states["d3-ap1"].delay_ms == 20
    assert {q.queue: q.delay_ms for q in shaping.daemons()["d4"]}[ip_queue["d3"]] == 35


def test_update_delay_netem_changes_leaves():
    shaping = plan(STAR, "netem")
    u = shaping.update("d3-ap1", shaping.states["d3-ap1"].with_(delay_ms=20, jitter_ms=3, loss_pct=0.5))
    assert u.daemon_sets == []
    assert u.tc_lines == {
        "d3": ["qdisc change dev d3-eth0 parent 5:1 handle 10: netem limit 100 delay 20ms 3ms loss 0.5%"],
        None: ["qdisc change dev snabcds1-eth3 parent 5:1 handle 10: netem limit 100 delay 20ms 3ms loss 0.5%"],
    }


NO_DELAY = """\
name: plain
nodes:
  sw: {role: switch}
  h1: {role: drafter}
  h2: {role: verifier}
links:
  - {a: h1, b: sw, rate_up_mbps: 10, rate_down_mbps: 10}
  - {a: h2, b: sw, rate_up_mbps: 10, rate_down_mbps: 10}
"""


def test_update_delay_without_delay_elements(tmp_path):
    path = write_topology(tmp_path, NO_DELAY)
    shaping = plan(path, "nfqueue")
    assert shaping.paths == [] and shaping.daemons() == {}
    with pytest.raises(ValueError, match="delay_elements='all'"):
        shaping.update("h1-sw", shaping.states["h1-sw"].with_(delay_ms=5))
    assert shaping.states["h1-sw"].delay_ms == 0            # a refused change is not recorded

    shaping = plan(path, "nfqueue", delay_elements="all")
    assert len(shaping.paths) == 2
    assert shaping.daemons() == {"h2": [QueueParams(0, 0, 0, 0)], "h1": [QueueParams(1, 0, 0, 0)]}
    u = shaping.update("h1-sw", shaping.states["h1-sw"].with_(delay_ms=5, loss_pct=2))
    assert u.tc_lines == {}
    assert sorted(u.daemon_sets, key=lambda s: s[0]) == [("h1", QueueParams(1, 5, 0, 0.02)),
                                                       ("h2", QueueParams(0, 5, 0, 0.02))]


def test_update_delay_partially_covered_link(tmp_path):
    """h3's link has no delay and only some of its paths (those to/from h1) got a delay element."""
    shaping = plan(write_topology(tmp_path, TWO_AP.replace("{a: h2, b: ap2, kind: wireless, rate_up_mbps: 10, "
                                                           "rate_down_mbps: 10, delay_ms: 20, jitter_ms: 12, "
                                                           "loss_pct: 50}",
                                                           "{a: h2, b: ap2, rate_up_mbps: 10, rate_down_mbps: 10}")
                                  .replace("delay_ms: 4, jitter_ms: 4, loss_pct: 20", "")), "nfqueue")
    assert {(p.src, p.dst) for p in shaping.paths} == {("h1", "h2"), ("h2", "h1"), ("h1", "h3"), ("h3", "h1")}
    with pytest.raises(ValueError, match="delay_elements='all'"):
        shaping.update("h3-ap1", shaping.states["h3-ap1"].with_(delay_ms=1))


# -- small pieces --------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate, burst", [(1, 2 * FRAME), (20, 2 * FRAME), (100, 12_500), (1000, 125_000)])
def test_burst_bytes(rate, burst):
    assert burst_bytes(rate) == burst
    cls = htb_class("add", "x-eth0", rate)
    assert cls[cls.index("rate") + 1] == f"{rate * 1000}kbit"
    assert cls[cls.index("burst") + 1] == cls[cls.index("cburst") + 1] == str(burst)


def test_netplan_names_and_paths():
    net = NetPlan(load_topology(M2M), "xy")
    assert net.bridges == {"ap1": "snxys1", "ap2": "snxys2", "core": "snxys3"}
    ends = {l.name: (l.a.intf, l.a.host, l.b.intf, l.b.host) for l in net.links}
    assert ends == {
        "d1-ap1": ("d1-eth0", "d1", "snxys1-eth1", None),
        "d2-ap1": ("d2-eth0", "d2", "snxys1-eth2", None),
        "d3-ap1": ("d3-eth0", "d3", "snxys1-eth3", None),
        "d4-ap2": ("d4-eth0", "d4", "snxys2-eth1", None),
        "d5-ap2": ("d5-eth0", "d5", "snxys2-eth2", None),
        "d6-ap2": ("d6-eth0", "d6", "snxys2-eth3", None),
        "ap1-core": ("snxys1-eth4", None, "snxys3-eth1", None),
        "ap2-core": ("snxys2-eth4", None, "snxys3-eth2", None),
        "core-v1": ("snxys3-eth3", None, "v1-eth0", "v1"),
        "core-v2": ("snxys3-eth4", None, "v2-eth0", "v2"),
    }
    assert {h: str(ip) for h, ip in net.addresses.items()} == {
        "v1": "10.0.2.1", "v2": "10.0.2.2", "d1": "10.0.2.3", "d2": "10.0.2.4", "d3": "10.0.2.5",
        "d4": "10.0.2.6", "d5": "10.0.2.7", "d6": "10.0.2.8"}

    def hops(src, dst):
        return [(l.name, d) for l, d in net.path(src, dst)]
    assert hops("d1", "v2") == [("d1-ap1", "up"), ("ap1-core", "up"), ("core-v2", "up")]
    assert hops("v2", "d6") == [("core-v2", "down"), ("ap2-core", "down"), ("d6-ap2", "down")]
    assert hops("d1", "d2") == [("d1-ap1", "up"), ("d2-ap1", "down")]
    assert hops("d3", "d5") == [("d3-ap1", "up"), ("ap1-core", "up"), ("ap2-core", "down"), ("d5-ap2", "down")]
    link = net.link("ap1-core")
    assert link.ends("up") == (link.a, link.b) and link.ends("down") == (link.b, link.a)
    with pytest.raises(KeyError):
        net.link("nope")


@pytest.mark.parametrize("kwargs, match", [
    (dict(rate_up_mbps=10, rate_down_mbps=10, delay_ms=2, jitter_ms=3), "must not exceed delay_ms"),
    (dict(rate_up_mbps=10, rate_down_mbps=10, loss_pct=100), "loss_pct"),
    (dict(rate_up_mbps=0, rate_down_mbps=10), "rate_up_mbps"),
    (dict(rate_up_mbps=10, rate_down_mbps=10_001), "rate_down_mbps"),
    (dict(rate_up_mbps=10, rate_down_mbps=10, delay_ms=-1), "delay_ms"),
    (dict(rate_up_mbps=10, rate_down_mbps=10, queue_pkts=0), "queue_pkts"),
])
def test_linkstate_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LinkState(**kwargs)


def test_shaping_plan_rejects_bad_arguments():
    net = NetPlan(load_topology(STAR), "abcd")
    with pytest.raises(ValueError, match="delay backend"):
        ShapingPlan(net, "tbf")
    with pytest.raises(ValueError, match="delay_elements"):
        ShapingPlan(net, "netem", delay_elements="some")


# -- `testbed check` prints the plan for the chosen backend ------------------------------------------------
def _check(backend: str) -> str:
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "check", str(STAR), "--delay-backend", backend],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    return r.stdout


def test_cli_check_netem():
    out = _check("netem")
    assert "delay backend: netem (forced on the command line)" in out
    assert "netem limit 100 delay 5ms loss 0%" in out
    assert "netem limit 100 delay 15ms loss 1%" in out
    assert "NFQUEUE" not in out and "delay daemon" not in out


def test_cli_check_nfqueue():
    out = _check("nfqueue")
    assert "delay backend: nfqueue (forced on the command line)" in out
    assert ("[verifier] iptables -w -t raw -A PREROUTING -i verifier-eth0 -s 10.0.0.2/32 -j NFQUEUE "
            "--queue-num 1") in out
    assert out.count("-j NFQUEUE") == 20
    assert "[d4] delay daemon" in out and "queue 3: delay 25 ms ±2, loss 1 %" in out
    assert "netem" not in out
