"""Latency profiles in experiments: `verifier.profile`, `drafters.profile` and per-drafter overrides, checked
against the catalogue and the table files, and paced by synthetic nodes to what nodes/compute predicts."""
import json
from pathlib import Path

import pytest

from nodes.compute import RooflineCost, get_device, get_model
from nodes.events import Pace, read_events
from testbed.common.errors import ConfigError
from testbed.run.experiment import experiment_from_dict
from tests.test_runner import experiment, run, run_dirs

REPO = Path(__file__).resolve().parent.parent
TABLE = "# model: toy\nbatch,tokens,context,seconds\n1,1,16,0.010\n1,5,16,0.012\n4,1,16,0.015\n4,5,16,0.020\n" \
        "1,1,128,0.011\n1,5,128,0.013\n4,1,128,0.017\n4,5,128,0.024\n"


def exp_dict(**fields):
    d = {"name": "p", "topology": str(REPO / "topologies/star-wifi-4.yaml"), "backend": "local",
         "verifier": {"backend": "synthetic", "profile": {"device": "h100-sxm", "model": "llama-3.1-70b-awq"}},
         "drafters": {"backend": "synthetic", "profile": {"device": "jetson-agx-orin", "model": "llama-3.2-1b"}}}
    for k, v in fields.items():
        d[k] = {**d.get(k, {}), **v}
    return d


def problems(data, base_dir="."):
    with pytest.raises(ConfigError) as e:
        experiment_from_dict(data, base_dir, "exp.yaml")
    return [str(p) for p in e.value.problems]


def test_roofline_profiles_validate_and_reach_the_manifest():
    exp = experiment_from_dict(exp_dict(drafters={"overrides": {"d2": {"profile": {"device": "l4",
                                                                                   "model": "qwen3-0.6b"}}}}))
    resolved = exp.resolved()
    assert resolved["verifier"]["profile"] == {"device": "h100-sxm", "model": "llama-3.1-70b-awq"}
    assert resolved["drafters"]["d1"]["profile"]["device"] == "jetson-agx-orin"
    assert resolved["drafters"]["d2"]["profile"] == {"device": "l4", "model": "qwen3-0.6b"}   # heterogeneous edge


def test_unknown_names_list_the_known_ones():
    (p,) = problems(exp_dict(verifier={"profile": {"device": "h1000", "model": "llama-3.1-70b-awq"}}))
    assert p.startswith("exp.yaml: verifier.profile:") and "h100-sxm" in p and "jetson-orin-nano" in p
    (p,) = problems(exp_dict(drafters={"profile": {"device": "l4", "model": "gpt-5"}}))
    assert "drafters.profile" in p and "qwen3-0.6b" in p and "'gpt-5'" in p
    (p,) = problems(exp_dict(drafters={"profile": {"table": "t.csv", "device": "l4"}}))
    assert "expected {table: FILE} alone" in p


def test_table_paths_resolve_against_the_experiment_file(tmp_path):
    (tmp_path / "t.csv").write_text(TABLE)
    exp = experiment_from_dict(exp_dict(verifier={"profile": {"table": "t.csv"}}), tmp_path)
    assert exp.verifier.profile == {"table": str((tmp_path / "t.csv").resolve())}
    (p,) = problems(exp_dict(verifier={"profile": {"table": "missing.csv"}}), tmp_path)
    assert "verifier.profile" in p and "not found" in p and "testbed profile" in p
    (tmp_path / "bad.csv").write_text("batch,tokens,context,seconds\n1,1,16,-3\n")
    (p,) = problems(exp_dict(drafters={"overrides": {"d3": {"profile": {"table": "bad.csv"}}}}), tmp_path)
    assert "drafters.overrides.d3.profile" in p and "bad.csv:2" in p


def test_synthetic_nodes_pace_to_the_roofline(tmp_path):
    """A local run with roofline profiles: every drafter step's profile is k decode passes of the 1B model on an
    Orin at the session's context, and the verifier's batches cost what the 70B model on an H100 costs."""
    path = experiment(tmp_path, "roof", backend="local", verifier=exp_dict()["verifier"],
                      drafters={**exp_dict()["drafters"], "nodes": ["d1", "d2"], "alpha": 0.8},
                      workload={"requests": 2, "max_new": 24})
    r = run(path, tmp_path / "results")
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = run_dirs(tmp_path / "results", "roof")
    draft = RooflineCost(get_device("jetson-agx-orin"), get_model("llama-3.2-1b"))
    verify = RooflineCost(get_device("h100-sxm"), get_model("llama-3.1-70b-awq"))
    paces = [e for e in read_events(d / "events" / "d1.jsonl")[0] if isinstance(e, Pace)]
    assert paces and all(e.work == "draft" for e in paces)
    for e in paces:   # contexts here lie between the prompt (< 200 tokens) and prompt + 24
        assert draft.draft_s(0, e.tokens) <= e.profile_s <= draft.draft_s(400, e.tokens), e
        assert e.realised_s >= e.profile_s
    vpaces = [e for e in read_events(d / "events" / "verifier.jsonl")[0] if isinstance(e, Pace)]
    assert vpaces and all(verify.pass_s([(0, 1)]) * 0.99 <= e.profile_s for e in vpaces)
    m = json.loads((d / "metrics.json").read_text())
    assert m["pacing"]["compute"] == "profiled" and m["pacing"]["steps"] == len(paces) + len(vpaces) + \
        sum(1 for e in read_events(d / "events" / "d2.jsonl")[0] if isinstance(e, Pace))
