"""speculation.batch_drafting: a drafter serving several sessions drafts every ready session's missing window
tokens in one compute (one batched forward pass per token step), not one session after another. The tokens are
the same; the drafting takes about one session's time for a memory-bound draft model."""
from __future__ import annotations

from pathlib import Path

import pytest

from nodes import events as E
from nodes.backends import Sampling, draft_batch
from nodes.backends.synthetic import (ComputeProfile, SyntheticDraft, SyntheticTarget, parse_alpha, session_key,
                                      true_token)
from nodes.compute import cost_model_from_spec
from nodes.compute.costs import LinearCost
from nodes.config import DrafterConfig, NodeConfigError, VerifierConfig, build_config
from nodes.core.actions import DraftBatch, DraftWork
from nodes.core.drafter import DrafterCore
from nodes.core.verifier import VerifierCore
from nodes.shell import paced_work, pace_event
from testbed.common.errors import ConfigError
from testbed.run.experiment import experiment_from_dict, load_experiment
from tests.test_cores import PROMPTS, V, ScriptedRun

MAX_NEW, GAMMA = 24, 4


class BatchRun(ScriptedRun):
    """test_cores' scripted clock with one drafter of `sessions` concurrent sessions; computes run as a driver
    runs them (a DraftBatch through nodes.backends.draft_batch) and are counted."""

    def __init__(self, batch: bool, sessions: int = 6, proactive: bool = True, draft_token_ms: float = 2.0,
                 verify_base_ms: float = 3.0, one_way_s: float = 0.01, alpha: float = 0.7):
        super().__init__(one_way_s=one_way_s, verify_base_ms=verify_base_ms)
        vcfg = VerifierConfig(model={"backend": "synthetic", "vocab_size": V, "verify_base_ms": verify_base_ms},
                              batching={"max_batch": 16})
        self.verifier = VerifierCore(vcfg, SyntheticTarget(V, ComputeProfile(verify_base_s=verify_base_ms / 1e3)))
        cfg = DrafterConfig(name="d0", model={"backend": "synthetic", "vocab_size": V, "alpha": alpha,
                                              "draft_token_ms": draft_token_ms},
                            workload={"requests": sessions, "sessions": sessions, "max_new": MAX_NEW},
                            prompt_texts=PROMPTS, speculation={"gamma": GAMMA, "proactive": proactive,
                                                               "batch_drafting": batch}, seed=7)
        backend = SyntheticDraft(V, parse_alpha(alpha), ComputeProfile(draft_token_s=draft_token_ms / 1e3),
                                 seed=cfg.seed, clock=lambda: self.now)
        texts = [f"{PROMPTS[0]} {i}" for i in range(sessions)]            # a prompt of its own per session
        self.drafters = {"d0": DrafterCore(cfg, backend, [(t, backend.encode(t)) for t in texts])}   # it alone
        self.works: list = []

    def compute(self, who, work) -> None:
        if who == "verifier":
            return super().compute(who, work)
        self.works.append(work)
        core = self.drafters[who]
        cost = core.backend.cost_s(work)
        result = draft_batch(core.backend, work) if isinstance(work, DraftBatch) else \
            core.backend.extend(work.session, work.tokens)
        self.at(self.now + cost, lambda: self.handle(who, core.on_compute_done(result, cost, self.now)))

    def tokens(self) -> dict[str, list[int]]:
        return {r["session"]: r["tokens"] for r in self.outputs}

    def end(self) -> float:
        return max(e.t for e in self.events["d0"] if isinstance(e, E.Finish))


@pytest.mark.parametrize("proactive", [True, False])
def test_batched_drafting_is_lossless_and_drafts_several_sessions_in_one_compute(proactive):
    one, batched = BatchRun(False, proactive=proactive).run(), BatchRun(True, proactive=proactive).run()
    assert one.drafters["d0"].done and batched.drafters["d0"].done
    assert batched.tokens() == one.tokens() and len(one.tokens()) == 6
    for r in batched.outputs:                            # the target's own continuation
        key = session_key(r["prompt_tokens"], 7)
        assert r["tokens"] == [true_token(key, j, V) for j in range(MAX_NEW)]

    assert not any(isinstance(w, DraftBatch) for w in one.works)
    batches = [w for w in batched.works if isinstance(w, DraftBatch)]
    assert max(len(b.items) for b in batches) >= 4       # the sessions whose verdicts came back together
    assert all(len({i.session for i in b.items}) == len(b.items) and all(0 < i.tokens <= GAMMA for i in b.items)
               for b in batches)
    # windows are drafted in batches only; per-session computes are the proactive token-ahead ones
    assert all(w.tokens == 1 for w in batched.works if isinstance(w, DraftWork))
    assert proactive or all(isinstance(w, DraftBatch) for w in batched.works)
    assert len(batched.works) < len(one.works)
    assert batched.end() < 0.9 * one.end()               # drafting many sessions costs one session's passes

    drafts = [e for e in batched.events["d0"] if isinstance(e, E.Draft)]
    assert all(e.gamma == GAMMA and e.pre_drafted is not None and 0 <= e.pre_drafted <= GAMMA for e in drafts)
    # pre_drafted is what the window had before its batch: the batches drafted exactly the rest of every window
    assert sum(i.tokens for b in batches for i in b.items) == sum(GAMMA - e.pre_drafted for e in drafts)
    if proactive:
        assert any(e.pre_drafted > 0 for e in drafts)    # proactive drafts still count as drafted ahead
    else:                                                # each session waited for its whole batch: 4 passes
        assert all(e.pre_drafted == 0 and e.draft_s == pytest.approx(GAMMA * 2e-3) for e in drafts)


def test_a_batch_costs_one_pass_per_step_over_the_sessions_still_drafting():
    for cost in (cost_model_from_spec({"device": "l4", "model": "llama-3.2-1b"}, Path(".")),
                 LinearCost(base_s=2e-3, per_token_s=1e-5, per_seq_s=1e-5)):
        d = SyntheticDraft(V, 0.8, cost=cost)
        for i in range(8):
            d.open(f"s{i}", list(range(20 + i)), Sampling())
        single = d.cost_s(DraftWork("s0", 4))
        batch = DraftBatch(tuple(DraftWork(f"s{i}", 4) for i in range(8)))
        together = d.cost_s(batch)
        assert single <= together < 8 * single / 3                 # far less than eight sessions one by one
        # steps where only some sessions still draft charge only those: a batch of 8 x 1 + 1 x 3 more tokens
        ragged = DraftBatch((DraftWork("s0", 4),) + tuple(DraftWork(f"s{i}", 1) for i in range(1, 8)))
        expected = cost.pass_s([(20 + i, 1) for i in range(8)]) + sum(cost.pass_s([(20 + j, 1)]) for j in (1, 2, 3))
        assert d.cost_s(ragged) == pytest.approx(expected)
        assert d.cost_s(DraftBatch((DraftWork("s3", 2),))) == pytest.approx(d.cost_s(DraftWork("s3", 2)))
        # the cost is asked before drafting: the contexts it charges are those the batch starts from
        before = d.cost_s(batch)
        out = draft_batch(d, batch)
        assert [len(x) for x in out] == [4] * 8 and [len(d.chain(f"s{i}")) for i in range(8)] == [4] * 8
        assert d.cost_s(batch) > before or isinstance(cost, LinearCost)    # (a linear cost ignores the context)
    linear = SyntheticDraft(V, 0.8, ComputeProfile(draft_token_s=2e-3))   # no batch term: the longest item's steps
    assert linear.cost_s(DraftBatch((DraftWork("a", 4), DraftWork("b", 2)))) == pytest.approx(8e-3)


def test_the_shell_runs_and_paces_a_batch():
    d = SyntheticDraft(V, 0.8, ComputeProfile(draft_token_s=1e-4))
    for s in ("a", "b", "c"):
        d.open(s, [1, 2, 3], Sampling())
    work = DraftBatch((DraftWork("a", 3), DraftWork("b", 1), DraftWork("c", 2)))
    result, elapsed, profile = paced_work(d, work)
    assert [len(r) for r in result] == [3, 1, 2] and profile == pytest.approx(3e-4) and elapsed >= profile
    pace = pace_event("d0", work, profile, elapsed, 0.0)
    assert (pace.work, pace.tokens, pace.batch) == ("draft", 6, 3)


def sim_experiment(batch: bool) -> dict:
    from testbed.run.validate import star
    return {"name": "batchdraft", "topology": star(1, 100, 5), "backend": "sim", "seed": 0,
            "verifier": {"backend": "synthetic", "vocab_size": 4000, "verify_base_ms": 10, "verify_per_token_ms": 0.2},
            "drafters": {"backend": "synthetic", "vocab_size": 4000, "alpha": 0.8, "draft_token_ms": 3},
            "workload": {"requests": 16, "sessions": 8, "max_new": 32},
            "speculation": {"gamma": 4, "batch_drafting": batch}, "batching": {"max_batch": 16},
            "sim": {"frame_costs": "none"}}


def simulate(data: dict, run_dir: Path) -> tuple[dict, dict, list]:
    from testbed.run.simrun import SimRun
    from testbed.run.workload_files import write_run_files
    from testbed.sim.network import SimNetwork
    exp = experiment_from_dict(data).points()[0]
    for sub in ("events", "outputs"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    write_run_files(exp, run_dir)
    sim = SimRun(exp, run_dir, SimNetwork(exp.topology_obj(), seed=exp.seed))
    stats = sim.run(120)
    assert stats["unfinished"] == []
    events, issues = E.read_events(run_dir / "events" / "d1.jsonl")
    assert not issues
    return stats, {r["session"]: r["tokens"] for r in sim.outputs["d1"]}, events


def test_the_simulator_drafts_a_batch_in_one_compute_and_finishes_sooner(tmp_path):
    one_stats, one_tokens, one_events = simulate(sim_experiment(False), tmp_path / "one")
    stats, tokens, events = simulate(sim_experiment(True), tmp_path / "batch")
    assert tokens == one_tokens and len(tokens) == 16
    assert stats["simulated_s"] < 0.85 * one_stats["simulated_s"], (stats["simulated_s"], one_stats["simulated_s"])
    assert stats["computes"] < one_stats["computes"]
    drafts = [e for e in events if isinstance(e, E.Draft)]
    assert drafts and all(e.pre_drafted is not None for e in drafts)


def test_batch_drafting_config():
    cfg = build_config(DrafterConfig, {"speculation": {"batch_drafting": True}}, "x")
    assert cfg.speculation.batch_drafting and not DrafterConfig().speculation.batch_drafting
    with pytest.raises(NodeConfigError, match="batch_drafting: not with a stop rule"):
        build_config(DrafterConfig, {"speculation": {"batch_drafting": True, "policy": "threshold"}}, "x")
    with pytest.raises(NodeConfigError, match="speculation.batch_drafting: expected a valid boolean"):
        build_config(DrafterConfig, {"speculation": {"batch_drafting": "maybe"}}, "x")
    demo = Path("experiments") / "demo.yaml"
    assert load_experiment(demo, ["speculation.batch_drafting=true"]).speculation.batch_drafting
    with pytest.raises(ConfigError, match="batch_drafting=true: not with a stop rule"):
        load_experiment(demo, ["speculation.batch_drafting=true", "speculation.policy=threshold"])
    with pytest.raises(ConfigError, match="batch_drafting"):
        load_experiment(demo, ["speculation.batch_drafting=[1]"])
