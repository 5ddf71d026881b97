"""Pools (`count: N` in a topology), parameter distributions (pool links, `drafters.distributions`), and the
mininet/local backends refusing scenarios one machine cannot host.

Distributions are checked statistically over many members: bounds exactly, means within generous tolerances
(the draws are deterministic, so these never flake).
"""
from __future__ import annotations

import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testbed.common.distributions import parse, stream
from testbed.common.errors import ConfigError
from testbed.net.pools import build
from testbed.net.topology import load_topology
from testbed.run.experiment import check_file, load_experiment
from testbed.run.node_configs import drafter_config

ROOT = Path(__file__).resolve().parent.parent

BASE = """\
name: pools
seed: SEED
addressing: {subnet: 10.0.0.0/20}
nodes:
  core: {role: switch}
  v1: {role: verifier}
  d: {role: drafter, count: COUNT}
links:
  - {a: v1, b: core, rate_up_mbps: 1000, rate_down_mbps: 1000}
  - {a: d, b: core, rate_up_mbps: {uniform: [5, 40]}, rate_down_mbps: {uniform: [5, 40]}, delay_ms: {uniform: [2, 14]}}
"""


def topo_file(tmp_path: Path, text: str = BASE, name: str = "t.yaml", seed: int = 0, count: int = 50) -> Path:
    p = tmp_path / name
    p.write_text(text.replace("SEED", str(seed)).replace("COUNT", str(count)))
    return p


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_topology(path)
    return [str(p) for p in e.value.problems]


def draws(spec: dict, n: int = 20000, **kw) -> list:
    dist, found = parse(spec, **kw)
    assert dist is not None, found
    return [dist.draw(stream("test", i)) for i in range(n)]


# ------------------------------------------------------------------------------------------ expansion

def test_pool_expands_into_members_and_links(tmp_path):
    topo = load_topology(topo_file(tmp_path))
    assert list(topo.nodes) == ["core", "v1"] + [f"d{i}" for i in range(1, 51)]
    assert all(topo.nodes[f"d{i}"].role == "drafter" for i in range(1, 51))
    assert len(topo.links) == 51
    assert [l.link_name for l in topo.links[1:4]] == ["d1-core", "d2-core", "d3-core"]
    for link in topo.links[1:]:
        assert link.b == "core" and 5 <= link.rate_up_mbps <= 40 and 2 <= link.delay_ms <= 14
    assert len({l.rate_up_mbps for l in topo.links[1:]}) == 50           # each member draws its own
    assert topo.addresses()["d50"] == topo.addresses()["v1"] + 50


def test_draws_are_deterministic_and_follow_the_seed(tmp_path):
    def rates(seed):
        return [l.rate_up_mbps for l in load_topology(topo_file(tmp_path, seed=seed)).links[1:]]
    assert rates(0) == rates(0)
    assert rates(0) != rates(1)


def test_members_draws_do_not_depend_on_other_pools_fields_or_count(tmp_path):
    before = load_topology(topo_file(tmp_path, count=20))
    text = BASE.replace("  d: {role", "  u: {role: user, count: 5}\n  d: {role").replace(
        "delay_ms: {uniform: [2, 14]}", "delay_ms: {uniform: [2, 14]}, loss_pct: {uniform: [0, 1]}")
    text += "  - {a: u, b: core, rate_up_mbps: {uniform: [1, 2]}, rate_down_mbps: 1}\n"
    after = load_topology(topo_file(tmp_path, text, count=30))
    for i in range(1, 21):
        a, b = before.link(f"d{i}-core"), after.link(f"d{i}-core")
        assert (a.rate_up_mbps, a.rate_down_mbps, a.delay_ms) == (b.rate_up_mbps, b.rate_down_mbps, b.delay_ms)
    assert after.link("u5-core").rate_up_mbps >= 1 and after.nodes["u3"].role == "user"


def test_link_name_on_a_pool_link_gets_the_index(tmp_path):
    text = BASE.replace("{a: d, b: core,", "{a: core, b: d, name: acc,")
    topo = load_topology(topo_file(tmp_path, text, count=3))
    assert [l.link_name for l in topo.links] == ["v1-core", "acc1", "acc2", "acc3"]
    assert [l.b for l in topo.links[1:]] == ["d1", "d2", "d3"]


def test_integer_fields_are_rounded(tmp_path):
    text = BASE.replace("delay_ms: {uniform: [2, 14]}", "queue_pkts: {uniform: [10, 13]}")
    topo = load_topology(topo_file(tmp_path, text, count=400))
    q = [l.queue_pkts for l in topo.links[1:]]
    assert all(isinstance(x, int) for x in q) and set(q) == {10, 11, 12, 13}


def test_pool_inline_in_an_experiment(tmp_path):
    topo = yaml.safe_load(BASE.replace("SEED", "0").replace("COUNT", "8"))
    p = tmp_path / "e.yaml"
    p.write_text(yaml.safe_dump({"name": "e", "backend": "sim", "topology": topo}))
    exp = load_experiment(p)
    assert exp.drafter_nodes() == [f"d{i}" for i in range(1, 9)]
    assert exp.topology_obj().link("d8-core").rate_up_mbps == load_topology(
        topo_file(tmp_path, count=8)).link("d8-core").rate_up_mbps


def test_hundred_thousand_members_in_bounded_time():
    data = yaml.safe_load(BASE.replace("SEED", "0").replace("COUNT", "100000").replace("/20", "/14"))
    t = time.perf_counter()
    topo, found, _ = build(data)
    elapsed = time.perf_counter() - t
    assert not found and len(topo.links) == 100_001
    assert elapsed < 10, f"{elapsed:.1f} s"


# ------------------------------------------------------------------------------------------ distributions

def test_uniform_bounds_and_mean():
    x = draws({"uniform": [5, 40]})
    assert 5 <= min(x) and max(x) <= 40
    assert statistics.fmean(x) == pytest.approx(22.5, abs=0.3)


def test_normal_mean_std_and_clip():
    x = draws({"normal": {"mean": 10, "std": 2}})
    assert statistics.fmean(x) == pytest.approx(10, abs=0.05)
    assert statistics.pstdev(x) == pytest.approx(2, abs=0.05)
    y = draws({"normal": {"mean": 10, "std": 2, "min": 9, "max": 11}})
    assert min(y) == 9 and max(y) == 11
    assert sum(v == 9 for v in y) / len(y) == pytest.approx(0.3085, abs=0.015)   # P(Z < -0.5)


def test_lognormal_takes_the_underlying_normal():
    x = draws({"lognormal": {"mean": 1, "sigma": 0.5}})
    assert min(x) > 0
    assert statistics.median(x) == pytest.approx(math.e, rel=0.03)
    assert statistics.fmean(x) == pytest.approx(math.exp(1 + 0.5 ** 2 / 2), rel=0.03)
    assert max(draws({"lognormal": {"mean": 1, "sigma": 2, "max": 50}}, 2000)) == 50


def test_choice_weights_and_integers():
    x = draws({"choice": [50, 100], "weights": [1, 3]})
    assert set(x) == {50, 100} and x.count(50) / len(x) == pytest.approx(0.25, abs=0.015)
    y = draws({"choice": ["cpu", "cuda"]}, numbers_only=False)
    assert y.count("cpu") / len(y) == pytest.approx(0.5, abs=0.015)
    assert set(draws({"choice": [1.4, 2.6]}, 200, integer=True)) == {1, 3}
    assert set(draws({"choice": [7]}, 10)) == {7}
    assert set(draws({"choice": [1, 2], "weights": [0, 1]}, 500)) == {2}


# ------------------------------------------------------------------------------------------ malformed specs

RATE = "rate_up_mbps: {uniform: [5, 40]}"
BAD_TOPOLOGIES = [
    # (what to replace in BASE, by what, field path, message fragment)
    (RATE, "rate_up_mbps: {uniforn: [5, 40]}", "links[1].rate_up_mbps.uniforn", "unknown distribution 'uniforn'"),
    (RATE, "rate_up_mbps: {uniform: [40, 5]}", "links[1].rate_up_mbps.uniform", "expected lo <= hi"),
    (RATE, "rate_up_mbps: {uniform: [5]}", "links[1].rate_up_mbps.uniform", "expected [lo, hi], two numbers"),
    (RATE, "rate_up_mbps: {uniform: [true, 5]}", "links[1].rate_up_mbps.uniform", "two numbers, got [True, 5]"),
    (RATE, "rate_up_mbps: {uniform: 5}", "links[1].rate_up_mbps.uniform", "expected [lo, hi]"),
    (RATE, "rate_up_mbps: {normal: {mean: 5, std: -1}}", "links[1].rate_up_mbps.normal.std", "expected a number >= 0"),
    (RATE, "rate_up_mbps: {normal: {mean: 5}}", "links[1].rate_up_mbps.normal.std", "required field is missing"),
    (RATE, "rate_up_mbps: {normal: {mean: x, std: 1}}", "links[1].rate_up_mbps.normal.mean", "expected a number"),
    (RATE, "rate_up_mbps: {normal: {mean: 5, std: 1, mn: 1}}", "links[1].rate_up_mbps.normal.mn", "unknown field"),
    (RATE, "rate_up_mbps: {normal: {mean: 5, std: 1, min: 9, max: 2}}", "links[1].rate_up_mbps.normal.min",
     "expected min <= max"),
    (RATE, "rate_up_mbps: {lognormal: {mean: 1, sigma: false}}", "links[1].rate_up_mbps.lognormal.sigma",
     "expected a number, got False"),
    (RATE, "rate_up_mbps: {choice: []}", "links[1].rate_up_mbps.choice", "expected a non-empty list"),
    (RATE, "rate_up_mbps: {choice: [5, fast]}", "links[1].rate_up_mbps.choice[1]", "expected a number"),
    (RATE, "rate_up_mbps: {choice: [5, 10], weights: [1]}", "links[1].rate_up_mbps.weights",
     "one weight per value (2), got 1"),
    (RATE, "rate_up_mbps: {choice: [5, 10], weights: [0, 0]}", "links[1].rate_up_mbps.weights", "weight > 0"),
    (RATE, "rate_up_mbps: {uniform: [5, 40], weights: [1]}", "links[1].rate_up_mbps.weights", "with choice only"),
    (RATE, "rate_up_mbps: {uniform: [5, 40], normal: {mean: 1, std: 1}}", "links[1].rate_up_mbps",
     "one distribution, got uniform and normal"),
    (RATE, "rate_up_mbps: {}", "links[1].rate_up_mbps", "expected a distribution"),
    (RATE, RATE + ", kind: {choice: [wired, wireless]}", "links[1].kind", "kind does not take a distribution"),
    ("rate_up_mbps: 1000", "rate_up_mbps: {uniform: [1, 2]}", "links[0].rate_up_mbps",
     "this link joins no pool"),
    ("count: COUNT", "count: 0", "nodes.d.count", "expected a whole number of hosts from 1 to 100000, got 0"),
    ("count: COUNT", "count: many", "nodes.d.count", "got 'many'"),
    ("count: COUNT", "count: true", "nodes.d.count", "got True"),
    ("count: COUNT", "count: 100001", "nodes.d.count", "from 1 to 100000"),
    ("v1: {role: verifier}", "v1: {role: verifier, count: 2}", "nodes.v1.count",
     "for role drafter or user, got role 'verifier'"),
    ("count: COUNT", "count: COUNT, ip: 10.0.0.5", "nodes.d.ip", "give no ip"),
    ("seed: SEED", "seed: -1", "seed", "expected a whole number from 0"),
    (RATE, "rate_up_mbps: {normal: {mean: 5, std: 10}}", "links[1].rate_up_mbps",
     "drawn for d"),
    ("subnet: 10.0.0.0/20", "subnet: 10.0.0.0/27", "addressing.subnet",
     "30 host addresses, too few for 51 hosts: widen addressing.subnet, e.g. to 10.0.0.0/26 (62 hosts)"),
]


@pytest.mark.parametrize("old,new,path,fragment", BAD_TOPOLOGIES, ids=[c[2] + ":" + c[3][:20] for c in BAD_TOPOLOGIES])
def test_malformed_pool_specs_give_one_line(tmp_path, old, new, path, fragment):
    assert old in BASE
    f = topo_file(tmp_path, BASE.replace(old, new))
    lines = problems(f)
    assert len(lines) == 1, lines
    head, message = lines[0].split(": ", 1)[0], lines[0].split(": ", 2)
    assert head.startswith(f"{f}:") and head.rsplit(":", 1)[1].isdigit()
    assert message[1] == path and fragment in message[2], lines[0]


def test_member_names_too_long_name_the_pool_and_what_the_prefix_leaves(tmp_path):
    text = BASE.replace("  d: {role", "  drafter_x: {role").replace("{a: d,", "{a: drafter_x,")
    f = topo_file(tmp_path, text)
    assert problems(f) == [f"{f}:7: nodes.drafter_x: pool 'drafter_x' of 50 hosts: member names run up to "
                           "drafter_x50 (11 characters, at most 10); the prefix 'drafter_x' leaves 1 character "
                           "for the index and 50 needs 2: shorten the pool's name"]
    assert len(load_topology(topo_file(tmp_path, text, count=9)).nodes) == 11      # drafter_x1 .. drafter_x9


def test_drawn_value_outside_the_limits_names_member_and_count(tmp_path):
    f = topo_file(tmp_path, BASE.replace(RATE, "rate_up_mbps: {normal: {mean: 5, std: 10}}"), count=300)
    (line,) = problems(f)
    assert line.startswith(f"{f}:10: links[1].rate_up_mbps: expected a number greater than 0, got -")
    assert "more of pool d's 300 members from normal mean 5 std 10; narrow the distribution or clip it" in line


def test_pool_at_both_ends_and_member_clash(tmp_path):
    text = BASE.replace("v1: {role: verifier}", "v1: {role: verifier}\n  u: {role: user, count: 2}\n  d1: {role: user}")
    text += "  - {a: u, b: d, rate_up_mbps: 1, rate_down_mbps: 1}\n"
    lines = problems(topo_file(tmp_path, text))
    assert [l.split(": ", 2)[1] for l in lines] == ["nodes.d", "links[2]"]
    assert "member d1 of pool 'd' clashes with another node named d1" in lines[0]
    assert "a (u) and b (d) are both pools" in lines[1]


def test_cli_check_exits_2_without_traceback(tmp_path):
    cases = [topo_file(tmp_path, BASE.replace(old, new), name=f"bad{i}.yaml")
             for i, (old, new, _, _) in enumerate(BAD_TOPOLOGIES[::6])]
    procs = [subprocess.Popen([sys.executable, "-m", "testbed.cli", "check", str(p), "--delay-backend", "nfqueue"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for p in cases]
    for p, proc in zip(cases, procs):
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 2 and out == "" and "Traceback" not in err, err
        assert len(err.splitlines()) == 1 and err.startswith(f"{p}:")


# ------------------------------------------------------------------------------------------ experiments

EXP = """\
name: dist
topology: TOPO
backend: sim
verifier: {backend: synthetic, vocab_size: 32000}
drafters:
  backend: synthetic
  distributions:
    alpha: {uniform: [0.5, 0.9]}
    draft_token_ms: {normal: {mean: 3, std: 1, min: 0}}
    threads: {choice: [1, 2, 4]}
    device: {choice: [cpu, auto], weights: [3, 1]}
  overrides:
    d2: {alpha: 0.25}
seed: SEED
"""


def exp_file(tmp_path: Path, text: str = EXP, seed: int = 0, count: int = 200, name: str = "e.yaml") -> Path:
    topo = topo_file(tmp_path, count=count)
    p = tmp_path / name
    p.write_text(text.replace("TOPO", str(topo)).replace("SEED", str(seed)))
    return p


def test_drafter_settings_are_drawn_per_drafter(tmp_path):
    exp = load_experiment(exp_file(tmp_path))
    s = {n: exp.drafter_settings(n) for n in exp.drafter_nodes()}
    alphas = [v["alpha"] for n, v in s.items() if n != "d2"]
    assert all(0.5 <= a <= 0.9 for a in alphas) and statistics.fmean(alphas) == pytest.approx(0.7, abs=0.02)
    assert s["d2"]["alpha"] == 0.25                                      # an override wins over the draw
    assert s["d2"]["draft_token_ms"] == load_experiment(exp_file(tmp_path)).drafter_settings("d2")["draft_token_ms"]
    assert all(v["draft_token_ms"] >= 0 for v in s.values())
    assert {v["threads"] for v in s.values()} == {1, 2, 4}
    devices = [v["device"] for v in s.values()]
    assert set(devices) == {"cpu", "auto"} and devices.count("cpu") > devices.count("auto")
    # what the nodes are told (node configs: the emulator and the simulator) carries the draws
    cfg = drafter_config(exp, "d7", 6, ["tcp://v1:5555"], tmp_path)
    assert cfg.model.alpha == s["d7"]["alpha"] and cfg.model.threads == s["d7"]["threads"]
    assert exp.resolved()["drafters"]["d7"]["alpha"] == s["d7"]["alpha"]


def test_drafter_draws_follow_the_seed_and_are_independent_per_field(tmp_path):
    def alphas(text=EXP, seed=0):
        exp = load_experiment(exp_file(tmp_path, text, seed=seed))
        return [exp.drafter_settings(n)["alpha"] for n in exp.drafter_nodes()]
    assert alphas() == alphas()
    assert alphas(seed=1) != alphas()
    fewer = EXP.replace("    threads: {choice: [1, 2, 4]}\n", "").replace("    draft_token_ms", "    ngram_n: {choice: [2, 3]}\n    draft_token_ms")
    assert alphas(fewer) == alphas()
    assert load_experiment(exp_file(tmp_path, seed=0)).config_hash() != load_experiment(exp_file(tmp_path, seed=1)).config_hash()


BAD_EXPERIMENTS = [
    ("alpha: {uniform: [0.5, 0.9]}", "alpha: {uniform: [0.5, 1.5]}", "drafters.distributions.alpha",
     "expected alpha in [0, 1], got 1."),
    ("alpha: {uniform: [0.5, 0.9]}", "alpha: {unifrm: [0.5, 0.9]}", "drafters.distributions.alpha.unifrm",
     "unknown distribution 'unifrm'"),
    ("alpha: {uniform: [0.5, 0.9]}", "alpha: 0.5", "drafters.distributions.alpha", "expected a distribution"),
    ("alpha: {uniform: [0.5, 0.9]}", "alfa: {uniform: [0.5, 0.9]}", "drafters.distributions.alfa",
     "unknown drafter setting 'alfa'"),
    ("device: {choice: [cpu, auto], weights: [3, 1]}", "device: {uniform: [1, 2]}",
     "drafters.distributions.device.uniform", "it takes {choice: [...]} only"),
    ("device: {choice: [cpu, auto], weights: [3, 1]}", "device: {choice: [cpu, gpu]}",
     "drafters.distributions.device.choice[1]", "expected auto, cpu, mps, cuda or cuda:N, got 'gpu'"),
    ("threads: {choice: [1, 2, 4]}", "threads: {choice: [1, two]}", "drafters.distributions.threads.choice[1]",
     "expected a number"),
    ("threads: {choice: [1, 2, 4]}", "threads: {choice: [1, 2], weights: [1, -1]}",
     "drafters.distributions.threads.weights", "expected a list of numbers >= 0"),
    ("draft_token_ms: {normal: {mean: 3, std: 1, min: 0}}", "draft_token_ms: {normal: {mean: 3, std: 5}}",
     "drafters.distributions.draft_token_ms", "expected a number greater than or equal to 0"),
    ("threads: {choice: [1, 2, 4]}", "vocab_size: {choice: [32000, 50000]}", "drafters.distributions.vocab_size",
     "expected the verifier's vocab_size (32000), got 50000"),
]


@pytest.mark.parametrize("old,new,path,fragment", BAD_EXPERIMENTS, ids=[c[2] for c in BAD_EXPERIMENTS])
def test_malformed_drafter_distributions(tmp_path, old, new, path, fragment):
    assert old in EXP
    p = exp_file(tmp_path, EXP.replace(old, new))
    lines = check_file(p)
    assert len(lines) == 1, lines
    where, field, message = lines[0].split(": ", 2)
    assert where.startswith(f"{p}:") and where.rsplit(":", 1)[1].isdigit()
    assert field == path and fragment in message, lines[0]


def test_cli_run_dry_run_exits_2_on_a_bad_distribution(tmp_path):
    p = exp_file(tmp_path, EXP.replace("alpha: {uniform: [0.5, 0.9]}", "alpha: {normal: {mean: 0.5, std: -1}}"))
    r = subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(p), "--dry-run"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == [f"{p}:8: drafters.distributions.alpha.normal.std: expected a number >= 0, got -1"]


# ------------------------------------------------------------------------------------------ backend limits

@pytest.mark.parametrize("backend", ["mininet", "local"])
def test_emulating_backends_refuse_large_scenarios(tmp_path, backend):
    p = exp_file(tmp_path, EXP.replace("backend: sim", f"backend: {backend}"))
    (line,) = check_file(p)
    assert line == (f"{p}:5: drafters: 200 drafter and 1 verifier processes exceed what the {backend} backend "
                    "hosts on one machine (at most 64 node processes); use backend: sim (or --set backend=sim) "
                    "for scenarios this large")


def test_the_limit_counts_drafters_and_verifiers(tmp_path):
    assert check_file(exp_file(tmp_path, EXP.replace("backend: sim", "backend: mininet"), count=63)) == []
    assert len(check_file(exp_file(tmp_path, EXP.replace("backend: sim", "backend: mininet"), count=64))) == 1
    assert check_file(exp_file(tmp_path, count=2000)) == []                   # sim: no limit
    few = EXP.replace("backend: sim", "backend: mininet").replace("  backend: synthetic\n",
                                                                  "  backend: synthetic\n  nodes: [d1, d2]\n")
    (line,) = check_file(exp_file(tmp_path, few, count=100))               # mininet starts every host
    assert ": topology: topology pools has 101 hosts, more than the mininet backend emulates" in line
    assert "use backend: sim" in line
    assert check_file(exp_file(tmp_path, few.replace("backend: mininet", "backend: local"), count=100)) == []
    p = exp_file(tmp_path, count=200)
    with pytest.raises(ConfigError, match="use backend: sim"):
        load_experiment(p, ["backend=mininet"])


# ------------------------------------------------------------------------------------------ shipped files

def test_scale_experiment_has_a_thousand_drafters():
    exp = load_experiment(ROOT / "experiments" / "scale.yaml")
    assert exp.backend == "sim" and len(exp.drafter_nodes()) == 1000 and exp.verifier_nodes() == ["v1"]
    topo = exp.topology_obj()
    assert topo.link("v1-core").rate_up_mbps == 10_000 and topo.link("v1-core").queue_pkts == 100_000
    links = [topo.link(f"d{i}-core") for i in range(1, 1001)]
    assert all(5 <= l.rate_up_mbps <= 40 and 5 <= l.rate_down_mbps <= 40 and 2 <= l.delay_ms <= 14 for l in links)
    assert (exp.speculation.gamma, exp.speculation.proactive, exp.batching.max_batch) == (4, False, 64)
    assert (exp.workload.requests, exp.workload.max_new) == (2, 32)
    with pytest.raises(ConfigError, match=r"1000 drafter and 1 verifier processes .* use backend: sim"):
        load_experiment(ROOT / "experiments" / "scale.yaml", ["backend=mininet"])


def test_ten_verifier_pool_topology():
    topo = load_topology(ROOT / "topologies" / "pool-1000x10.yaml")
    roles = [s.role for s in topo.nodes.values()]
    assert roles.count("verifier") == 10 and roles.count("drafter") == 1000
    exp = load_experiment(ROOT / "experiments" / "scale.yaml",
                          ["topology=../topologies/pool-1000x10.yaml", "routing.policy=jsq"])
    assert len(exp.verifier_nodes()) == 10 and len(exp.drafter_nodes()) == 1000
