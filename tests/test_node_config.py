"""One typed config for the nodes: every node default is the experiment default, the runner's node configs carry
the experiment's values (and only run-specific fields differ from the node defaults), the manual flags build the
same defaults, config files round-trip, and a bad config file is refused with one line per problem."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import nodes.drafter
import nodes.verifier
from nodes.config import (Batching, DraftModel, DrafterConfig, Routing, Scheduling, Speculation, VerifierConfig,
                          VerifierModel, Workload, build_config, load_config, write_config)
from testbed.policies.stopping import ThresholdStop
from testbed.run.experiment import experiment_from_dict
from testbed.run.node_configs import drafter_config, node_argv, verifier_config, write_node_config
from testbed.run.schema import DrafterDefaults, DrafterOverride, Experiment, VerifierSpec
from testbed.run.schema import Routing as ExperimentRouting

REPO = Path(__file__).resolve().parent.parent
TINY = {"name": "tiny", "nodes": {"sw": {"role": "switch"}, "v": {"role": "verifier"},
                                  "a": {"role": "drafter"}, "b": {"role": "drafter"}},
        "links": [{"a": "a", "b": "sw", "rate_up_mbps": 10, "rate_down_mbps": 10},
                  {"a": "b", "b": "sw", "rate_up_mbps": 10, "rate_down_mbps": 10},
                  {"a": "v", "b": "sw", "rate_up_mbps": 100, "rate_down_mbps": 100}]}
ENDPOINT = "tcp://10.0.0.3:5555"


def minimal(**fields) -> Experiment:
    return experiment_from_dict({"name": "x", "topology": TINY, **fields})


def part(model, obj):
    """The fields of `model` in `obj` (an experiment model that extends a node model)."""
    return model.model_validate(obj.model_dump(include=set(model.model_fields)))


# ------------------------------------------------------------------------------------------ (a) one set of defaults

def test_experiment_defaults_are_the_node_defaults():
    f = Experiment.model_fields
    assert f["workload"].default == Workload() == DrafterConfig().workload
    assert f["speculation"].default == Speculation() == DrafterConfig().speculation == VerifierConfig().speculation
    assert f["batching"].default == Batching() == VerifierConfig().batching
    assert f["scheduling"].default == Scheduling() == VerifierConfig().scheduling
    assert part(VerifierModel, VerifierSpec()) == VerifierModel() == VerifierConfig().model
    assert part(DraftModel, DrafterDefaults()) == DraftModel() == DrafterConfig().model
    assert part(Routing, ExperimentRouting()) == Routing() == DrafterConfig().routing
    # the experiment's groups are the node models themselves, not copies of them
    assert (f["workload"].annotation, f["speculation"].annotation, f["batching"].annotation,
            f["scheduling"].annotation) == (Workload, Speculation, Batching, Scheduling)
    assert issubclass(VerifierSpec, VerifierModel) and issubclass(DrafterDefaults, DraftModel)
    assert issubclass(ExperimentRouting, Routing)


RUN_SPECIFIC_DRAFTER = {"name", "connect", "prompt_offset", "seed", "timeout_s", "log", "out", "start_gate"}
RUN_SPECIFIC_VERIFIER = {"name", "bind", "seed", "link_state", "log"}


def test_runner_configs_of_a_minimal_experiment_are_the_node_defaults(tmp_path):
    exp = minimal()
    d = drafter_config(exp, "a", 0, [ENDPOINT], tmp_path)
    default = DrafterConfig()
    for field in set(DrafterConfig.model_fields) - RUN_SPECIFIC_DRAFTER - {"workload"}:
        assert getattr(d, field) == getattr(default, field), field
    assert d.workload.model_copy(update={"prompts": "builtin"}) == default.workload   # prompts: the run's copy
    v = verifier_config(exp, "verifier", "tcp://10.0.0.1:5555", tmp_path, tmp_path / "linkstate.json")
    default = VerifierConfig()
    for field in set(VerifierConfig.model_fields) - RUN_SPECIFIC_VERIFIER - {"model"}:
        assert getattr(v, field) == getattr(default, field), field
    # the experiment resolves verifier.vocab_size (null: the drafters'), as the node does on its own
    assert v.model == default.model.model_copy(update={"vocab_size": DraftModel().vocab_size})


def test_runner_configs_carry_the_run_specific_values(tmp_path):
    exp = minimal(seed=3, limits={"ready_timeout_s": 40}, backend="local",
                  drafters={"backend": "synthetic", "alpha": 0.6, "dtype": "bfloat16",
                            "overrides": {"b": {"alpha": [[0, 0.9], [5, 0.5]], "threads": None}}},
                  verifier={"backend": "synthetic", "verify_base_ms": 7, "threads": 2},
                  workload={"duration_s": 20, "arrivals": "poisson", "rate_per_s": 2, "max_new": 9},
                  speculation={"gamma": 3, "payload": "topk:4", "proactive": False},
                  batching={"rule": "window", "window_ms": 2}, scheduling={"scheduler": "random", "budget": 9})
    d = drafter_config(exp, "b", 1, [ENDPOINT], tmp_path)
    assert (d.name, d.connect, d.prompt_offset, d.seed, d.timeout_s) == ("b", [ENDPOINT], 1, 3001, 40)
    assert (d.log, d.out) == (str(tmp_path / "events/b.jsonl"), str(tmp_path / "outputs/b.jsonl"))
    assert d.workload == exp.workload.model_copy(update={"prompts": str(tmp_path / "prompts.jsonl")})
    assert d.speculation == exp.speculation
    assert d.model == DraftModel(**exp.drafter_settings("b"))
    assert (d.model.alpha, d.model.threads, d.model.dtype) == ([[0, 0.9], [5, 0.5]], None, "bfloat16")
    assert drafter_config(exp, "a", 0, [ENDPOINT], tmp_path).model.threads == 1
    v = verifier_config(exp, "verifier", "tcp://127.0.0.1:5555", tmp_path)
    assert (v.seed, v.link_state, v.log) == (3, None, str(tmp_path / "events/verifier.jsonl"))
    assert (v.batching, v.scheduling, v.speculation) == (exp.batching, exp.scheduling, exp.speculation)
    assert v.model == part(VerifierModel, exp.verifier) and v.model.threads == 2


def test_routing_travels_without_the_verifier_list(tmp_path):
    topo = {**TINY, "nodes": {**TINY["nodes"], "v2": {"role": "verifier"}},
            "links": TINY["links"] + [{"a": "v2", "b": "sw", "rate_up_mbps": 100, "rate_down_mbps": 100}]}
    exp = experiment_from_dict({"name": "r", "topology": topo, "routing": {"policy": "jsq-d", "d": 1}})
    d = drafter_config(exp, "a", 0, ["tcp://x:1", "tcp://y:1"], tmp_path)
    assert d.routing == Routing(policy="jsq-d", d=1) and type(d.routing) is Routing


# ------------------------------------------------------------------------------------------ (b) manual flags

def test_no_flags_build_the_default_configs():
    assert build_config(DrafterConfig, nodes.drafter.config_from_flags(nodes.drafter.flags([])), "flags") == \
        DrafterConfig()
    assert build_config(VerifierConfig, nodes.verifier.config_from_flags(nodes.verifier.flags([])), "flags") == \
        VerifierConfig()


# ------------------------------------------------------------------------------------------ (c) overrides

def test_drafter_override_fields_are_draft_model_fields():
    # and a drafter's own prompt set (drafters.overrides.<node>.prompts)
    assert [f for f in DrafterOverride.model_fields if f != "prompts"] == list(DraftModel.model_fields)
    assert set(DrafterDefaults.model_fields) == set(DraftModel.model_fields) | {"nodes", "overrides", "distributions"}


# ------------------------------------------------------------------------------------------ (d) bad config files

def start(kind: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"nodes.{kind}", "--config", str(path)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)


@pytest.mark.parametrize("kind, config", [("drafter", DrafterConfig()), ("verifier", VerifierConfig())])
def test_a_bad_config_file_exits_2_with_one_line_per_problem(tmp_path, kind, config):
    data = json.loads(config.model_dump_json())
    data["colour"] = "blue"
    if kind == "drafter":
        data["workload"]["max_new"] = -1
        expected = [f"{tmp_path / 'bad.json'}: workload.max_new: expected a number greater than or equal to 1, got -1",
                    f"{tmp_path / 'bad.json'}: colour: unknown field"]
    else:
        data["batching"]["max_batch"] = 0
        expected = [f"{tmp_path / 'bad.json'}: batching.max_batch: expected a number greater than or equal to 1, "
                    "got 0", f"{tmp_path / 'bad.json'}: colour: unknown field"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    r = start(kind, tmp_path / "bad.json")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 2 and all(l.startswith(e) for l, e in zip(lines, expected)), r.stderr

    (tmp_path / "torn.json").write_text('{"name": "x", ')
    r = start(kind, tmp_path / "torn.json")
    assert r.returncode == 2
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'torn.json'))}: not valid JSON \(.+\)", r.stderr.strip()), r.stderr

    r = start(kind, tmp_path / "missing.json")
    assert r.returncode == 2
    assert r.stderr.strip() == f"{tmp_path / 'missing.json'}: cannot read the config: No such file or directory"


# ------------------------------------------------------------------------------------------ (e) round trip

def test_runner_configs_round_trip_through_their_files(tmp_path):
    (tmp_path / "acc.jsonl").write_text('{"gamma": 4, "accepted": 2}\n')
    exp = experiment_from_dict({
        "name": "x", "topology": TINY, "drafters": {"backend": "synthetic", "alpha": [[0, 0.9], [5, 0.5]],
                                                    "overrides": {"b": {"alpha": {"replay": "acc.jsonl"}}}},
        "verifier": {"backend": "synthetic"}, "routing": {"policy": "random"},
        "speculation": {"policy": {"policy": "threshold", "bound": 0.4, "allowed": [2, 4, 8]}, "payload": "topk:8"},
        "workload": {"temperature": 0.5}, "scheduling": {"scheduler": "goodspeed", "max_s": 6}}, base_dir=tmp_path)
    configs = [verifier_config(exp, "v", "tcp://10.0.0.1:5555", tmp_path, tmp_path / "linkstate.json"),
               *(drafter_config(exp, n, i, [ENDPOINT], tmp_path) for i, n in enumerate(exp.drafter_nodes()))]
    assert configs[2].model.alpha == {"replay": str((tmp_path / "acc.jsonl").resolve())}
    for config in configs:
        argv = write_node_config(config, tmp_path)
        path = tmp_path / "nodes" / f"{config.name}.json"
        assert argv == node_argv(config, path) == [sys.executable, "-m", f"nodes.{type(config).__name__[:-6].lower()}",
                                                   "--config", str(path)]
        assert load_config(type(config), path) == config
        write_config(config, tmp_path / "again.json")
        assert (tmp_path / "again.json").read_text() == path.read_text()


# ------------------------------------------------------------------------------------------ (f) policies travel typed

@pytest.mark.parametrize("policy, bound, cap", [
    ({"policy": "threshold", "bound": 0.55, "gamma_max": 8}, 0.55, 8),
    ({"policy": "threshold", "bound": 0.3, "allowed": [2, 4, 6]}, 0.3, 6),
    ("threshold", ThresholdStop().bound, 16),
])
def test_threshold_policy_splits_into_the_drafters_stop_rule_and_the_verifiers_cap(tmp_path, policy, bound, cap):
    exp = minimal(speculation={"policy": policy})
    d = drafter_config(exp, "a", 0, [ENDPOINT], tmp_path)
    assert d.stop_rule_spec() == {"rule": "threshold", "bound": bound, "gamma_min": 1}
    v = verifier_config(exp, "verifier", ENDPOINT, tmp_path)
    assert v.window_policy_spec() == {"policy": "static", "gamma": cap, "gamma_max": cap}
    assert load_config(DrafterConfig, write_config(d, tmp_path / "d.json")).stop_rule_spec() == d.stop_rule_spec()


def test_other_policies_have_no_stop_rule(tmp_path):
    d = drafter_config(minimal(speculation={"policy": "backoff"}), "a", 0, [ENDPOINT], tmp_path)
    assert d.stop_rule_spec() is None


def test_the_runner_copies_no_policy_constants():
    """Policy parameters travel in the config: no default of a policy is restated in testbed/run."""
    for path in (REPO / "testbed" / "run").glob("*.py"):
        assert not re.search(r"(?<![\d.])0\.7(?!\d)", path.read_text()), f"{path}: ThresholdStop's bound copied?"


def test_verifier_overrides_give_each_verifier_its_own_compute(tmp_path):
    """verifier.overrides.<host>: heterogeneous targets (DSD-Sim's fleets); the rest stays the shared default."""
    topo = {**TINY, "nodes": {**TINY["nodes"], "v2": {"role": "verifier"}},
            "links": TINY["links"] + [{"a": "v2", "b": "sw", "rate_up_mbps": 100, "rate_down_mbps": 100}]}
    exp = experiment_from_dict({"name": "r", "topology": topo, "routing": {"policy": "jsq"},
                                "drafters": {"backend": "synthetic"}, "verifier": {"backend": "synthetic", "verify_base_ms": 7, "threads": 2,
                                             "overrides": {"v2": {"verify_base_ms": 20,
                                                                  "verify_per_token_ms": 3}}}})
    v1 = verifier_config(exp, "v", "tcp://x:1", tmp_path)
    v2 = verifier_config(exp, "v2", "tcp://y:1", tmp_path)
    assert (v1.model.verify_base_ms, v2.model.verify_base_ms) == (7, 20)
    assert v2.model.verify_per_token_ms == 3 and v1.model.verify_per_token_ms == VerifierModel().verify_per_token_ms
    assert v1.model.threads == v2.model.threads == 2
    assert v1.model == part(VerifierModel, exp.verifier)
