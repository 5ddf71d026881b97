"""Experiment files: the schema, cross-field checks, `--set` overrides, sweeps, and the resolved config.

Each file in tests/data/bad_experiments/ starts with one `# expect: <line>` comment per problem, in order, with
the file's path written as `{file}` and its directory as `{dir}`. The `testbed run` CLI prints exactly these
lines (one per `Problem`) and exits 2; here they are checked through `check_file` and `load_experiment`.
Paths are given relative to the repository root (conftest.py makes it the working directory), as a user would.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from testbed.common.errors import ConfigError
from nodes.config import BUILTIN_PROMPTS, DRAFTER_SETTINGS
from testbed.run.experiment import Experiment, check_file, experiment_from_dict, load_experiment
from testbed.run.schema import DrafterOverride, LinkOverride
from testbed.run.sweep import parse_path
from testbed.net.topology import LinkSpec

ROOT = Path(__file__).resolve().parent.parent
BAD = Path("tests") / "data" / "bad_experiments"
BAD_FILES = sorted(BAD.glob("*.yaml"))
DEMO = Path("experiments") / "demo.yaml"
STAR = ROOT / "topologies" / "star-wifi-4.yaml"

WHOLE_FILE = ("invalid YAML: ", "file is empty", "expected a mapping of fields at the top level", "cannot read file")
FIELD_PATH = r"[A-Za-z_][A-Za-z0-9_.*\[\]-]*"      # link names may hold '-', '.'; '*' is "every link"


def expected_lines(path: Path) -> list[str]:
    out = []
    for line in path.read_text().splitlines():
        if not line.startswith("# expect: "):
            break
        out.append(line.removeprefix("# expect: ").replace("{file}", str(path)).replace("{dir}", str(path.parent)))
    return out


def write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text.replace("STAR", str(STAR)))
    return p


# ------------------------------------------------------------------------------------------ bad files

def test_enough_bad_files():
    assert len(BAD_FILES) >= 12
    for p in BAD_FILES:
        assert expected_lines(p), f"{p.name} has no leading '# expect:' line"


@pytest.mark.parametrize("path", BAD_FILES, ids=[p.stem for p in BAD_FILES])
def test_bad_experiment(path: Path):
    expected = expected_lines(path)
    got = check_file(path)
    assert got == expected, "\nexpected:\n  " + "\n  ".join(expected) + "\ngot:\n  " + "\n  ".join(got)
    with pytest.raises(ConfigError) as e:
        load_experiment(path)
    assert [str(p) for p in e.value.problems] == expected
    for line in got:
        if any(m in line for m in WHOLE_FILE):
            assert re.fullmatch(r"\S+:[1-9]\d*: .+", line), line
        else:
            # a problem inside a referenced topology file names that file
            assert re.fullmatch(rf"\S+\.yaml:[1-9]\d*: {FIELD_PATH}: \S.*", line), \
                f"not of the form file:line: field.path: message: {line!r}"


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    assert check_file(path) == [f"{path}: cannot read file: No such file or directory"]


def test_all_problems_reported_together():
    lines = check_file(BAD / "bad_types.yaml")
    assert len(lines) >= 10
    assert [l.split(": ", 2)[1] for l in lines[:3]] == ["name", "backend", "speculation.gamma"]


# ------------------------------------------------------------------------------------------ the demo

def test_demo_loads_with_twelve_points():
    exp = load_experiment(DEMO)
    assert exp.name == "demo" and exp.backend == "mininet"
    points = exp.points()
    assert len(points) == 12 and all(p.sweep is None for p in points)
    assert [p.speculation.gamma for p in points] == [0, 4, 8, 4] * 3
    assert [p.topology_obj().link("ap1-verifier").delay_ms for p in points] == [3] * 4 + [18] * 4 + [48] * 4
    assert points[0].label == "wan_ms=3 gamma=0 policy=static"
    assert points[3].speculation.policy == {"policy": "network", "gamma_max": 8}
    hashes = [p.config_hash() for p in points]
    assert len(set(hashes)) == 12 and all(re.fullmatch(r"[0-9a-f]{12}", h) for h in hashes)


def test_demo_settings():
    """The demo models a stated system: profiled compute (H100 verifier, L4 drafters), replayed acceptance, and
    RTTs of 10, 40 and 100 ms through the Wi-Fi hop and the WAN."""
    from testbed.run.manifest import configured_paths
    exp = load_experiment(DEMO)
    assert exp.verifier.backend == "synthetic"
    assert exp.verifier.profile == {"device": "h100-sxm", "model": "qwen3-14b"}
    assert exp.drafter_nodes() == ["d1", "d2", "d3", "d4"]
    for d in exp.drafter_nodes():
        s = exp.drafter_settings(d)
        assert s["profile"] == {"device": "l4", "model": "qwen3-0.6b"} and s["alpha"] == {"trace": "smollm2-135m-int8/humaneval"}
    w = exp.workload
    assert (w.prompts.endswith("humaneval") or w.prompts == "humaneval") and w.temperature == 0.0
    assert exp.speculation.proactive and exp.batching.rule == "fifo"
    rtts = [{p["rtt_ms"] for p in configured_paths(point).values()} for point in exp.points()[::4]]
    assert rtts == [{10}, {40}, {100}]


def test_demo_lossless_settings():
    exp = load_experiment(Path("experiments") / "demo-lossless.yaml")
    assert exp.verifier.backend == "hf" and exp.workload.temperature == 0.0     # greedy: one reference output
    assert all(exp.drafter_settings(d)["model"] == "smollm2-135m:int8" for d in exp.drafter_nodes())
    topo = exp.topology_obj()
    for d in exp.drafter_nodes():
        assert 2 * (topo.link(f"{d}-ap1").delay_ms + topo.link("ap1-verifier").delay_ms) == 40


def test_same_config_same_hash():
    a = [p.config_hash() for p in load_experiment(DEMO).points()]
    b = [p.config_hash() for p in load_experiment(DEMO).points()]
    assert a == b
    assert load_experiment(DEMO).config_hash() == load_experiment(DEMO).config_hash()


def test_resolved_is_json():
    point = load_experiment(DEMO).points()[1]
    r = point.resolved()
    assert json.loads(json.dumps(r)) == r
    assert r["topology"]["name"] == "edge-wan-4"
    assert {l["name"]: l["delay_ms"] for l in r["topology"]["links"]}["ap1-verifier"] == 3
    assert r["topology"]["nodes"]["verifier"]["ip"] == "10.0.0.1"        # addresses filled in
    assert set(r["drafters"]) == {"d1", "d2", "d3", "d4"}
    assert set(r["drafters"]["d1"]) == set(DRAFTER_SETTINGS)
    assert r["speculation"]["gamma"] == 4 and r["label"] == "wan_ms=3 gamma=4 policy=static" and "sweep" not in r
    assert r["workload"]["prompts_sha256"] and r["verifier"]["node"] == "verifier"


# ------------------------------------------------------------------------------------------ --set

def test_set_overrides():
    exp = load_experiment(DEMO, ["workload.max_new=16", "backend=local"])
    assert exp.backend == "local"
    assert {p.workload.max_new for p in exp.points()} == {16} and len(exp.points()) == 12
    # setting a swept field replaces that sweep axis
    exp = load_experiment(DEMO, ["links.ap1-verifier.delay_ms=10"])
    assert [p.speculation.gamma for p in exp.points()] == [0, 4, 8, 4]
    assert {p.topology_obj().link("ap1-verifier").delay_ms for p in exp.points()} == {10}
    # requests and duration_s are alternatives: setting one drops the other
    exp = load_experiment(DEMO, ["workload.duration_s=30"])
    assert (exp.workload.duration_s, exp.workload.requests) == (30, None)
    # YAML scalars: bools, floats, null
    exp = load_experiment(DEMO, ["speculation.proactive=false", "verifier.threads=null", "workload.temperature=0.5",
                                 "speculation.payload=topk:8"])
    assert (exp.speculation.proactive, exp.verifier.threads, exp.workload.temperature) == (False, None, 0.5)
    assert len(load_experiment(DEMO, ["sweep=null"]).points()) == 1


def test_set_on_an_aliased_mapping_changes_only_that_link():
    # demo-lossless.yaml writes d2 as a YAML alias of d1's mapping: overriding d1 must not move the other
    topo = load_experiment(Path("experiments") / "demo-lossless.yaml", ["links.d1-ap1.delay_ms=30"]).topology_obj()
    assert topo.link("d1-ap1").delay_ms == 30 and topo.link("d2-ap1").delay_ms == 15


def test_set_reaches_into_an_inline_topology():
    zhu = Path("experiments") / "papers" / "zhu" / "system.yaml"
    exp = load_experiment(zhu, ["topology.nodes.u.count=7", "topology.nodes.ap1.radio.band_mhz=0.5",
                                "topology.links.0.rate_up_mbps={uniform: [0.5, 5]}"])
    topo = exp.topology_obj()
    users = [n for n in topo.hosts() if topo.nodes[n].role == "user"]
    assert len(users) == 7 and topo.nodes["ap1"].radio.band_mhz == 0.5
    assert all(0.5 <= topo.link(f"{u}-ap1").rate_up_mbps <= 5 for u in users)
    with pytest.raises(ConfigError, match="topology.links is a list of 5: expected an index 0-4, got '9'"):
        load_experiment(zhu, ["topology.links.9.rate_up_mbps=3"])
    with pytest.raises(ConfigError, match="topology is a file here: setting fields inside it needs an inline topology"):
        load_experiment(DEMO, ["topology.nodes.d1.role=user"])
    with pytest.raises(ConfigError, match=r"--set topology.nodes.u.count=0: expected a whole number of hosts from 1"):
        load_experiment(zhu, ["topology.nodes.u.count=0"])


@pytest.mark.parametrize("item, message", [
    ("speculation.gamma=x", "expected a valid integer, unable to parse string as an integer, got 'x'"),
    ("speculation.gamma=65", "expected a number less than or equal to 64, got 65"),
    ("speculation.gama=1", "unknown field 'gama' in speculation (fields: gamma, payload, proactive, policy, mode, fused_dwell, batch_drafting)"),
    ("gamma", "expected PATH=VALUE, e.g. speculation.gamma=8"),
    ("workload.temperature=0.7", "temperature 0.7 needs speculation.payload 'topk:K' or 'full' (sampling is "
                                 "verified against the draft's probabilities); payload is 'ids'"),
    ("verifier.node=d1", "d1 is a drafter; expected a host with role verifier (verifier)"),
    ("links.d1-ap1.jitter_ms=20", "expected jitter_ms <= delay_ms (2), got 20"),
    ("drafters.nodes=[d1, d7]", "[1]: unknown node 'd7'; drafter hosts: d1, d2, d3, d4"),
    ("sweep={speculation.gamma: [0, 99]}", "speculation.gamma[1]: expected a number less than or equal to 64, got 99"),
])
def test_bad_set(item, message):
    with pytest.raises(ConfigError) as e:
        load_experiment(DEMO, [item])
    assert [str(p) for p in e.value.problems] == [f"--set {item}: {message}"]
    assert check_file(DEMO, [item]) == [f"--set {item}: {message}"]


# ------------------------------------------------------------------------------------------ features

INLINE = """
name: inline
topology:
  name: tiny
  nodes:
    sw: {role: switch}
    v: {role: verifier}
    a: {role: drafter}
    b: {role: drafter}
  links:
    - {a: a, b: sw, rate_up_mbps: 10, rate_down_mbps: 10, delay_ms: 3}
    - {a: b, b: sw, rate_up_mbps: 10, rate_down_mbps: 10, delay_ms: 4, jitter_ms: 1}
    - {a: v, b: sw, rate_up_mbps: 100, rate_down_mbps: 100}
links:
  a-sw: {delay_ms: 9}
  "*": {delay_ms: 7, loss_pct: 0.5}
"""


def test_inline_topology_and_star_override(tmp_path):
    exp = load_experiment(write(tmp_path, INLINE))
    assert exp.verifier.node == "v" and exp.drafter_nodes() == ["a", "b"]
    topo = exp.topology_obj()
    # "*" applies to every link; a named entry wins over "*" whatever their order in the file
    assert {l.link_name: (l.delay_ms, l.loss_pct) for l in topo.links} == \
        {"a-sw": (9, 0.5), "b-sw": (7, 0.5), "v-sw": (7, 0.5)}
    assert topo.link("b-sw").jitter_ms == 1
    r = exp.resolved()
    assert r["topology_file"] is None and r["topology"]["name"] == "tiny"
    assert exp.points()[0].label == "base"


def test_inline_topology_errors_are_under_topology(tmp_path):
    text = INLINE.replace("{role: switch}", "{role: hub}")
    p = write(tmp_path, text)
    assert check_file(p) == [f"{p}:6: topology.nodes.sw.role: expected one of 'verifier', 'drafter', 'user', "
                             "'ap' or 'switch', got 'hub'"]
    p = write(tmp_path, INLINE.replace("jitter_ms: 1}", "jitter_ms: 5}"))
    assert check_file(p) == [f"{p}:12: topology.links[1].jitter_ms: expected jitter_ms <= delay_ms (4), got 5"]


def test_zip_sweep(tmp_path):
    p = write(tmp_path, "name: z\ntopology: STAR\nsweep:\n  zip:\n    speculation.gamma: [0, 4]\n"
                        "    workload.max_new: [16, 32]\n")
    points = load_experiment(p).points()
    assert [(x.speculation.gamma, x.workload.max_new) for x in points] == [(0, 16), (4, 32)]
    assert [x.label for x in points] == ["gamma=0, max_new=16", "gamma=4, max_new=32"]


def test_grid_order_and_label_template(tmp_path):
    p = write(tmp_path, "name: g\ntopology: STAR\nlabel: 'g{speculation.gamma}-n{workload.max_new}'\nsweep:\n"
                        "  speculation.gamma: [0, 2]\n  workload.max_new: [16, 32]\n")
    points = load_experiment(p).points()
    assert [(x.speculation.gamma, x.workload.max_new) for x in points] == [(0, 16), (0, 32), (2, 16), (2, 32)]
    assert [x.label for x in points] == ["g0-n16", "g0-n32", "g2-n16", "g2-n32"]
    assert len({x.config_hash() for x in points}) == 4


def test_sweep_of_link_fields_and_colliding_short_names(tmp_path):
    p = write(tmp_path, "name: l\ntopology: STAR\nsweep:\n  links.d1-ap1.delay_ms: [1, 2]\n"
                        "  links.d2-ap1.delay_ms: [3]\n")
    points = load_experiment(p).points()
    assert [x.label for x in points] == ["links.d1-ap1.delay_ms=1, links.d2-ap1.delay_ms=3",
                                         "links.d1-ap1.delay_ms=2, links.d2-ap1.delay_ms=3"]
    assert [x.topology_obj().link("d1-ap1").delay_ms for x in points] == [1, 2]


def test_synthetic_drafters_and_overrides(tmp_path):
    (tmp_path / "acc.jsonl").write_text('{"gamma": 4, "accepted": 2}\n')
    p = write(tmp_path, """
name: syn
topology: STAR
verifier: {backend: synthetic}
drafters:
  nodes: [d1, d2, d3]
  backend: synthetic
  alpha: 0.8
  overrides:
    d2: {alpha: 0.5, threads: null}
    d3: {alpha: {replay: acc.jsonl}}
workload: {arrivals: poisson, rate_per_s: 2, duration_s: 20, prompts: prompts.jsonl}
""")
    (tmp_path / "prompts.jsonl").write_text('{"prompt": "hi"}\n')
    exp = load_experiment(p)
    assert exp.drafter_nodes() == ["d1", "d2", "d3"]
    assert exp.drafter_settings("d1")["alpha"] == 0.8 and exp.drafter_settings("d1")["threads"] == 1
    assert exp.drafter_settings("d2")["alpha"] == 0.5 and exp.drafter_settings("d2")["threads"] is None
    assert exp.drafter_settings("d3")["alpha"] == {"replay": str((tmp_path / "acc.jsonl").resolve())}
    assert exp.workload.prompts == str((tmp_path / "prompts.jsonl").resolve())
    assert exp.verifier.vocab_size == 32000 and exp.workload.requests is None
    with pytest.raises(KeyError):
        exp.drafter_settings("d4")
    json.dumps(exp.resolved())


def test_experiment_from_dict():
    exp = experiment_from_dict({"name": "x", "topology": str(STAR), "speculation": {"gamma": 2}})
    assert exp.points()[0].speculation.gamma == 2 and exp.workload.requests == 4
    with pytest.raises(ConfigError) as e:
        experiment_from_dict({"name": "x", "topology": str(STAR), "speculation": {"gamma": -1}})
    assert str(e.value.problems[0]) == "<experiment>: speculation.gamma: expected a number greater than or equal to 0, got -1"


def test_parse_path():
    assert parse_path("speculation.gamma") == ("speculation", "gamma")
    assert parse_path("links.d1.x-ap1.delay_ms") == ("links", "d1.x-ap1", "delay_ms")
    assert parse_path("links.*") == ("links", "*")
    assert parse_path("drafters.overrides.d2.alpha") == ("drafters", "overrides", "d2", "alpha")
    for bad in ("", "speculation..gamma", "seed.x", "links.d1-ap1.colour"):
        with pytest.raises(ValueError):
            parse_path(bad)


def test_override_models_mirror_the_settings():
    assert set(LinkOverride.model_fields) == set(LinkSpec.model_fields)
    assert set(DrafterOverride.model_fields) == set(DRAFTER_SETTINGS) | {"prompts"}   # + its own prompt set
    assert isinstance(load_experiment(DEMO), Experiment)


def test_builtin_prompts():
    lines = [json.loads(l) for l in BUILTIN_PROMPTS.read_text().splitlines() if l.strip()]
    assert len(lines) == 24
    assert all(set(l) == {"prompt"} and isinstance(l["prompt"], str) and l["prompt"] for l in lines)
    assert len({l["prompt"] for l in lines}) == 24


def test_awc_weights_path_is_relative_to_the_experiment_file(tmp_path, monkeypatch):
    fleet = Path("experiments/papers/dsd/fleet.yaml").resolve()
    monkeypatch.chdir(tmp_path)                  # wherever testbed runs from
    exp = load_experiment(fleet, ["speculation.policy={policy: awc, weights_path: awc_oracle.json}", "sweep=null"])
    assert exp.speculation.policy["weights_path"] == str(fleet.parent / "awc_oracle.json")
    with pytest.raises(ConfigError, match=f"awc weights {fleet.parent / 'nope.json'}: cannot read"):
        load_experiment(fleet, ["speculation.policy={policy: awc, weights_path: nope.json}", "sweep=null"])


@pytest.mark.parametrize("item, message", [
    ("workload.max_new=true", "workload: max_new: expected a number, got true"),
    ("speculation.gamma=false", "speculation: gamma: expected a number, got false"),
    ("verifier.verify_base_ms=true", "verifier: verify_base_ms: expected a number, got true"),
    ("links.d1-ap1.rate_up_mbps=true", "links.d1-ap1: rate_up_mbps: expected a number, got true"),
    ("limits.run_timeout_s=true", "limits: run_timeout_s: expected a number, got true"),
    ("seed=true", "seed: expected a number, got true"),
])
def test_a_boolean_is_never_a_number(item, message, tmp_path):
    """YAML's true is not 1 anywhere (issue 14: `rate_up_mbps: true` was a 1 Mbit/s link); given with --set, the
    --set item is blamed, in the file the field's line."""
    problems = check_file(DEMO, [item])
    value = item.split("=")[1]
    assert problems == [f"--set {item}: expected a number, got {value}"], problems
    path, value_yaml = item.split("=")
    keys = path.split(".")
    doc = yaml.safe_load(DEMO.read_text())
    doc["topology"] = str((DEMO.parent / doc["topology"]).resolve())
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = value == "true"
    f = tmp_path / "bool.yaml"
    f.write_text(yaml.safe_dump(doc))
    problems = check_file(f, ["sweep=null"])
    assert len(problems) == 1 and problems[0].endswith(message), problems


def test_a_boolean_is_never_a_number_in_a_node_config_or_topology(tmp_path):
    from nodes.config import ClientConfig, DrafterConfig, NodeConfigError, load_config
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"name": "d1", "timeout_s": True}))
    with pytest.raises(NodeConfigError, match="timeout_s: expected a number, got true"):
        load_config(DrafterConfig, path)
    path.write_text(json.dumps({"name": "u1", "requests": [{"request": "r", "prompt_tokens": True, "max_new": 4}]}))
    with pytest.raises(NodeConfigError, match="prompt_tokens: expected a number, got true"):
        load_config(ClientConfig, path)
    from testbed.net.topology import load_topology
    topo = Path("topologies/zhu-4.yaml").read_text().replace("delay_ms: 2,", "delay_ms: false,", 1)
    (tmp_path / "t.yaml").write_text(topo)
    with pytest.raises(ConfigError, match="delay_ms: expected a number, got false"):
        load_topology(tmp_path / "t.yaml")


@pytest.mark.parametrize("sets, message", [
    (["verifier.backend=synthetic", "verifier.profile={table: FILE}"],
     "bad table profile: FILE: not a text file: byte 0 is not UTF-8; expected a CSV table of measured passes"),
    (["drafters.backend=synthetic", "verifier.backend=synthetic", "drafters.alpha={replay: FILE}"],
     "bad replay file: FILE: not a text file (byte 0 is not UTF-8): expected JSON lines of gamma and accepted"),
])
def test_a_binary_profile_or_replay_file_is_one_line(tmp_path, sets, message):
    path = tmp_path / "garbage.bin"
    path.write_bytes(bytes(range(128, 256)) * 40)
    problems = check_file(DEMO, [s.replace("FILE", str(path)) for s in sets])
    assert len(problems) == 1 and problems[0].endswith(message.replace("FILE", str(path))), problems
