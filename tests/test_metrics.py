"""Metrics, plots and reports: hand-made event logs whose metrics are worked out on paper, partial logs,
CSV/JSON agreement, PNG output, run comparison, and one real run of node processes (synthetic backend)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from testbed.run import metrics as M
from testbed.run.plots import make_plots, plot_names
from testbed.run.report import compare, overlay_plots
from tests.nodeproc import finish, read_jsonl, start_drafter, verifier

T = 1000.0           # event times are T + offsets: small enough that float differences stay exact to ~1e-13
PNG = b"\x89PNG\r\n\x1a\n"


def approx(x):
    return pytest.approx(x, rel=1e-9, abs=1e-12)


def ev(t, node, event, **kw):
    return {"t": T + t, "node": node, "event": event, **kw}


def verdict(t, session, rnd, gamma, accepted, tokens, rtt, *, hit=0, wasted=0, bytes_in=50, done=False, node="a"):
    return ev(t, node, "verdict", session=session, round=rnd, gamma=gamma, accepted=accepted, token=7,
              rtt_s=rtt, queue_s=0.01, verify_s=0.02, batch=1, one_way_s=0.01, hit=hit, kept=0, wasted=wasted,
              bytes_in=bytes_in, done=done, tokens=tokens)


# Drafter a: speculative, two concurrent sessions. Drafter b: autoregressive (gamma 0), one session.
A_EVENTS = [
    ev(-0.5, "a", "welcome", verifier="verifier", model="synthetic"),
    ev(0.0, "a", "start", session="a-s0", prompt_tokens=3, bytes_out=100),
    ev(0.0, "a", "start", session="a-s1", prompt_tokens=3, bytes_out=100),
    verdict(0.1, "a-s0", 0, 0, 0, 1, 0.1),
    ev(0.15, "a", "draft", session="a-s0", round=1, gamma=4, pre_drafted=0, draft_s=0.05, bytes_out=200),
    verdict(0.2, "a-s1", 0, 0, 0, 1, 0.2),
    ev(0.25, "a", "draft", session="a-s1", round=1, gamma=4, pre_drafted=2, draft_s=0.1, bytes_out=200),
    verdict(0.5, "a-s0", 1, 4, 4, 5, 0.4, hit=1),
    ev(0.5, "a", "draft", session="a-s0", round=2, gamma=4, pre_drafted=4, draft_s=0.0, bytes_out=200),
    verdict(0.6, "a-s1", 1, 4, 1, 2, 0.4, wasted=3),
    ev(0.9, "a", "draft", session="a-s1", round=2, gamma=2, pre_drafted=0, draft_s=0.2, bytes_out=120),
    verdict(0.9, "a-s0", 2, 4, 2, 3, 0.4, wasted=2, done=True),
    ev(1.0, "a", "finish", session="a-s0", tokens=9, rounds=2, proposed=8, accepted=6, hits=1, wasted=2),
    verdict(1.4, "a-s1", 2, 2, 0, 1, 0.8, wasted=1, done=True),
    ev(1.4, "a", "finish", session="a-s1", tokens=4, rounds=2, proposed=6, accepted=1, hits=0, wasted=4),
    ev(1.5, "a", "done", sessions=2, idle_s=0.3),
]
B_EVENTS = [
    ev(0.4, "b", "welcome", verifier="verifier", model="synthetic"),
    ev(0.5, "b", "start", session="b-s0", prompt_tokens=3, bytes_out=80),
    verdict(0.7, "b-s0", 0, 0, 0, 1, 0.2, bytes_in=40, node="b"),
    ev(0.7, "b", "draft", session="b-s0", round=1, gamma=0, pre_drafted=0, draft_s=0.0, bytes_out=60),
    verdict(0.9, "b-s0", 1, 0, 0, 1, 0.2, bytes_in=40, node="b"),
    ev(0.9, "b", "draft", session="b-s0", round=2, gamma=0, pre_drafted=0, draft_s=0.0, bytes_out=60),
    verdict(1.2, "b-s0", 2, 0, 0, 1, 0.3, bytes_in=40, node="b", done=True),
    ev(1.3, "b", "finish", session="b-s0", tokens=3, rounds=2, proposed=0, accepted=0, hits=0, wasted=0),
    ev(1.3, "b", "done", sessions=1, idle_s=0.1),
]


def verify(t, drafter, session, rnd, tokens, batch, batch_id, verify_s):
    return ev(t, "verifier", "verify", drafter=drafter, session=session, round=rnd, gamma=0, accepted=0,
              tokens=tokens, done=False, t_draft_sent=T, t_arrived=T, queue_s=0.0, verify_s=verify_s, batch=batch,
              batch_id=batch_id, bytes_in=0, bytes_out=50, next_gamma=4)


V_EVENTS = [
    ev(-1.0, "verifier", "ready", endpoint="tcp://127.0.0.1:1", model="synthetic", batching="fifo"),
    verify(0.09, "a", "a-s0", 0, 1, 1, 1, 0.02),
    verify(0.19, "a", "a-s1", 0, 1, 1, 2, 0.02),
    verify(0.49, "a", "a-s0", 1, 5, 2, 3, 0.04),
    verify(0.49, "a", "a-s1", 1, 2, 2, 3, 0.04),
    verify(0.69, "b", "b-s0", 0, 1, 1, 4, 0.02),
    verify(0.89, "a", "a-s0", 2, 3, 2, 5, 0.05),
    verify(0.89, "b", "b-s0", 1, 1, 2, 5, 0.05),
    verify(1.19, "b", "b-s0", 2, 1, 1, 6, 0.03),
    verify(1.39, "a", "a-s1", 2, 1, 1, 7, 0.03),
]
LINKS = [
    {"t": T - 0.2, "node": "runner", "event": "link", "link": "a-ap", "rate_up_mbps": 10, "rate_down_mbps": 20,
     "delay_ms": 5, "jitter_ms": 0, "loss_pct": 0},
    {"t": T + 0.7, "node": "runner", "event": "link", "link": "a-ap", "rate_up_mbps": 2, "rate_down_mbps": 4,
     "delay_ms": 5, "jitter_ms": 0, "loss_pct": 0},
    {"t": T - 0.2, "node": "runner", "event": "link", "link": "b-ap", "rate_up_mbps": 5, "rate_down_mbps": 5,
     "delay_ms": 10, "jitter_ms": 1, "loss_pct": 0.5},
]


def write_jsonl(path: Path, events) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(e) + "\n" for e in events))


def make_run(root: Path, label="handmade", links=True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.json").write_text(json.dumps({
        "experiment": "unit", "label": label, "config_hash": "abc123", "seed": 1,
        "config": {"verifier": {"batching": "fifo", "max_batch": 8}, "drafters": [{"name": "a", "gamma": 4},
                                                                                   {"name": "b", "gamma": 0}]}}))
    write_jsonl(root / "events" / "a.jsonl", A_EVENTS)
    write_jsonl(root / "events" / "b.jsonl", B_EVENTS)
    write_jsonl(root / "events" / "verifier.jsonl", V_EVENTS)
    if links:
        write_jsonl(root / "events" / "links.jsonl", LINKS)
    return root


@pytest.fixture
def run(tmp_path):
    return make_run(tmp_path / "run")


# ---------------------------------------------------------------------------------------------- on paper

def test_drafter_a_metrics(run):
    a = M.compute(run)["drafters"]["a"]
    assert a["complete"] is True
    assert a["tokens"] == 13 and a["requests_started"] == 2 and a["requests_completed"] == 2
    assert a["window_s"] == approx(1.4)
    assert a["goodput_tps"] == approx(13 / 1.4)
    assert (a["rounds"], a["spec_rounds"], a["proposed"], a["accepted"]) == (4, 4, 14, 7)
    assert a["mean_gamma"] == approx(3.5)
    assert a["acceptance_rate"] == approx(0.5)
    assert a["alpha_hat"] == approx(7 / 10)              # 3 rounds stopped early
    assert a["mean_accepted_len"] == approx(1.75)
    assert a["tokens_per_round"] == approx(11 / 4)
    # TTFT 0.1, 0.2; TPOT (0.9-0.1)/8 = 0.1, (1.4-0.2)/3 = 0.4; e2e 1.0, 1.4
    assert (a["ttft_p50_s"], a["ttft_p95_s"], a["ttft_p99_s"]) == (approx(0.1), approx(0.2), approx(0.2))
    assert a["ttft_mean_s"] == approx(0.15)
    assert (a["tpot_p50_s"], a["tpot_p99_s"]) == (approx(0.1), approx(0.4))
    assert (a["e2e_p50_s"], a["e2e_p95_s"], a["e2e_mean_s"]) == (approx(1.0), approx(1.4), approx(1.2))
    assert a["rtt_mean_s"] == approx((0.1 + 0.2 + 0.4 + 0.4 + 0.4 + 0.8) / 6)
    assert (a["bytes_out"], a["bytes_in"]) == (920, 300)
    assert a["bytes_per_token"] == approx(1220 / 13)
    assert (a["hits"], a["hit_rate"], a["wasted"]) == (1, approx(0.25), 6)
    mu = (1 - 0.7 ** 4.5) / 0.3
    assert a["mu"] == approx(mu)
    # rtt + min(draft_s, t(draft) - t(previous verdict)): 0.4 + 0.05, 0.4 + min(0.1, 0.05), 0.4 + 0, 0.8 + 0.2
    assert a["t_round_s"] == approx(0.45)
    assert a["bound_session_tps"] == approx(mu / 0.45)
    assert a["concurrency"] == approx(2.4 / 1.4)         # sessions open 1.0 s and 1.4 s
    assert a["bound_tps"] == approx(mu / 0.45 * 2.4 / 1.4)
    assert a["measured_over_bound"] == approx((13 / 1.4) / (mu / 0.45 * 2.4 / 1.4))
    assert a["jain"] is None and a["verifier_mean_batch"] is None


def test_autoregressive_drafter_b(run):
    b = M.compute(run)["drafters"]["b"]
    assert b["tokens"] == 3 and b["goodput_tps"] == approx(3 / 0.7)
    assert (b["rounds"], b["spec_rounds"], b["proposed"], b["accepted"]) == (2, 0, 0, 0)
    assert b["acceptance_rate"] is None and b["alpha_hat"] is None and b["mean_accepted_len"] is None
    assert b["hit_rate"] is None
    assert b["mean_gamma"] == 0 and b["tokens_per_round"] == approx(1.0)
    assert b["ttft_p50_s"] == approx(0.2) and b["tpot_p50_s"] == approx(0.25) and b["e2e_p50_s"] == approx(0.8)
    assert b["mu"] == 1.0 and b["t_round_s"] == approx(0.25) and b["bound_session_tps"] == approx(4.0)
    assert b["concurrency"] == approx(0.8 / 0.7)
    assert b["measured_over_bound"] == approx(3 / 3.2)
    assert b["bytes_per_token"] == approx(320 / 3)


def test_totals(run):
    m = M.compute(run)
    t = m["total"]
    assert m["complete"] is True and m["issues"] == [] and t["complete"] is True
    assert t["tokens"] == 16 and t["window_s"] == approx(1.4) and t["goodput_tps"] == approx(16 / 1.4)
    assert t["acceptance_rate"] == approx(0.5) and t["alpha_hat"] == approx(0.7)
    assert t["mean_gamma"] == approx(14 / 6) and t["tokens_per_round"] == approx(13 / 6)
    # pooled requests: TTFT [0.1, 0.2, 0.2], TPOT [0.1, 0.25, 0.4], e2e [0.8, 1.0, 1.4]
    assert (t["ttft_p50_s"], t["ttft_p95_s"]) == (approx(0.2), approx(0.2))
    assert (t["tpot_p50_s"], t["tpot_p95_s"]) == (approx(0.25), approx(0.4))
    assert (t["e2e_p50_s"], t["e2e_p99_s"]) == (approx(1.0), approx(1.4))
    assert t["jain"] == approx(361 / 410)                # goodputs 13/1.4 and 6/1.4
    assert t["sum_log_goodput"] == approx(math.log(13 / 1.4) + math.log(3 / 0.7))
    assert t["bytes_per_token"] == approx(1540 / 16)
    assert t["verifier_batches"] == 7 and t["verifier_mean_batch"] == approx(9 / 7)
    assert t["verifier_busy_fraction"] == approx(0.21 / 1.39)
    assert t["verifier_tokens"] == 16
    a, b = m["drafters"]["a"], m["drafters"]["b"]      # each drafter's bound over its own active window
    assert t["bound_tps"] == approx((a["bound_tps"] * a["window_s"] + b["bound_tps"] * b["window_s"]) / t["window_s"])
    assert a["window_s"] != b["window_s"]                  # so the weighting is tested, not a plain sum
    assert t["measured_over_bound"] == approx((16 / 1.4) / t["bound_tps"])
    assert t["concurrency"] == approx(3.2 / 1.4)
    assert (t["hits"], t["wasted"]) == (1, 6)


def assert_consistent(m):
    rows = m["drafters"].values()
    assert sum(r["tokens"] for r in rows) == m["total"]["tokens"]
    for r in [*rows, m["total"]]:
        if r["tokens"]:
            assert r["goodput_tps"] == pytest.approx(r["tokens"] / r["window_s"], rel=0.01)


def test_consistency(run):
    assert_consistent(M.compute(run))


def test_helpers():
    xs = list(range(1, 101))
    assert [M.percentile(xs, p) for p in (50, 95, 99, 100)] == [50, 95, 99, 100]
    assert M.percentile([3.0], 99) == 3.0 and M.percentile([], 50) is None
    assert M.percentile([1, 2, 3, 4], 50) == 2        # nearest rank: ceil(0.5 * 4) = 2nd
    assert M.mu(4, 0.8) == approx(1 + 0.8 + 0.64 + 0.512 + 0.4096)
    assert M.mu(3, 1.0) == 4.0 and M.mu(0, 0.9) == 1.0 and M.mu(4, None) == 1.0 and M.mu(2, 0.0) == 1.0
    assert M.mu(3, 1 - 1e-13) == 4.0 and M.mu(-1, 0.5) == 1.0     # acceptance.mu's edge rule; γ <= 0: one token
    assert M.jain([1.0, 1.0, 1.0]) == approx(1.0) and M.jain([1.0, 0.0]) == approx(0.5)


# ---------------------------------------------------------------------------------------------- partial logs

def test_truncated_last_line(run):
    path = run / "events" / "b.jsonl"
    kept = "".join(json.dumps(e) + "\n" for e in B_EVENTS[:-2])      # lose finish and done
    path.write_text(kept + '{"t": 1001.3, "node": "b", "event": "fin')
    m = M.compute(run)
    assert m["complete"] is False and m["total"]["complete"] is False
    assert any("truncated last line" in i for i in m["issues"])
    assert any("b: no 'done'" in i for i in m["issues"])
    b = m["drafters"]["b"]
    assert b["complete"] is False and b["tokens"] == 3 and b["requests_completed"] == 0
    assert b["e2e_p50_s"] is None and b["tpot_p50_s"] is None and b["ttft_p50_s"] == approx(0.2)
    assert b["concurrency"] == approx(1.0)               # open until its last verdict
    assert m["drafters"]["a"]["complete"] is True
    assert_consistent(m)
    M.write(run, m)
    M.write_summary(run, None, m)
    assert len(make_plots(run)) == 4


def test_garbage_line_inside_and_crash(run):
    lines = (run / "events" / "a.jsonl").read_text().splitlines()
    lines.insert(3, "not json")
    lines.append(json.dumps(ev(1.6, "a", "crash", error="boom")))
    (run / "events" / "a.jsonl").write_text("\n".join(lines) + "\n")
    m = M.compute(run)
    assert m["complete"] is False
    assert any("unparsable line 4" in i for i in m["issues"]) and any("boom" in i for i in m["issues"])
    assert m["drafters"]["a"]["tokens"] == 13


def test_empty_run(tmp_path):
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "a.jsonl").write_text("")
    m = M.compute(tmp_path)
    assert m["complete"] is False and m["total"]["tokens"] == 0 and m["total"]["goodput_tps"] == 0.0
    M.write(tmp_path, m)
    M.write_summary(tmp_path, {}, m)
    assert all(p.read_bytes().startswith(PNG) for p in make_plots(tmp_path))


# ---------------------------------------------------------------------------------------------- outputs

def test_csv_matches_json(run):
    m = M.compute(run)
    jpath, cpath = M.write(run, m)
    from_json = json.loads(jpath.read_text())
    from_csv = M.read_csv(cpath)
    assert list(from_csv) == ["a", "b", "total"]
    for name, row in from_csv.items():
        ref = from_json["total"] if name == "total" else from_json["drafters"][name]
        assert list(row) == M.COLUMNS
        for c in M.COLUMNS:
            assert row[c] == ref[c], (name, c)


def test_summary(run):
    m = M.compute(run)
    text = M.write_summary(run, json.loads((run / "manifest.json").read_text()), m, plot_names(run)).read_text()
    for s in ("unit", "handmade", "abc123", "| a |", "| b |", "total", "verifier.max_batch: 8",
              "plots/goodput.png", "plots/links.png", "Jain"):
        assert s in text, s


def test_plots_are_pngs(run):
    paths = make_plots(run)
    assert {p.name for p in paths} == {"goodput.png", "acceptance.png", "latency_cdf.png", "links.png"}
    for p in paths:
        assert p.parent == run / "plots"
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, p


def test_compare_and_overlays(tmp_path):
    r1 = make_run(tmp_path / "r1", label="fifo-gamma4")
    r2 = make_run(tmp_path / "r2", label="window-gamma2", links=False)
    M.write(r1, M.compute(r1))                           # r2 has no metrics.json: computed on the fly
    text = compare([r1, r2])
    assert "fifo-gamma4" in text and "window-gamma2" in text
    assert "total goodput" in text and "measured / bound" in text
    assert f"{16 / 1.4:.4g}" in text
    same = compare([r1, r1])
    assert "fifo-gamma4 (r1)" in same
    # rows of features these runs do not use (fused mode, users' clients) are left out, not a row of zeros
    assert "fused" not in text and "users' requests" not in text and "upload" not in text
    paths = overlay_plots([r1, r2], tmp_path / "cmp")
    assert [p.name for p in paths] == ["goodput_overlay.png", "e2e_cdf_overlay.png"]
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000


# ---------------------------------------------------------------------------------------------- real run

def test_real_run_with_synthetic_nodes(tmp_path):
    run = tmp_path / "real"
    (run / "events").mkdir(parents=True)
    (run / "outputs").mkdir()
    (run / "manifest.json").write_text(json.dumps({"experiment": "real", "label": "synthetic", "config": {},
                                                   "config_hash": "x"}))
    alphas = {"d80": 0.8, "d50": 0.5}
    with verifier("--backend", "synthetic", "--max-batch", "8", log=run / "events" / "verifier.jsonl") as (vp, ep):
        procs = [start_drafter(ep, name, run / "outputs" / f"{name}.jsonl", "--backend", "synthetic",
                               "--alpha", str(alpha), "--gamma", "4", "--prompt", f"prompt of {name}",
                               "--requests", "4", "--sessions", "2", "--max-new", "160", "--timeout", "30",
                               log=run / "events" / f"{name}.jsonl")
                 for name, alpha in alphas.items()]
        finish(procs, timeout=60)
        assert vp.poll() is None, "verifier died"
    m = M.compute(run)
    M.write(run, m)
    assert set(m["drafters"]) == set(alphas)
    assert m["drafters"]["d80"]["complete"] and m["drafters"]["d50"]["complete"]
    assert_consistent(m)
    for name, alpha in alphas.items():
        d = m["drafters"][name]
        out_tokens = sum(len(r["tokens"]) for r in read_jsonl(run / "outputs" / f"{name}.jsonl"))
        assert d["tokens"] == out_tokens == 4 * 160
        assert d["requests_completed"] == 4
        assert abs(d["alpha_hat"] - alpha) < 0.1, (name, d["alpha_hat"])
        assert d["acceptance_rate"] < d["alpha_hat"]      # the truncation bias, visibly
        assert d["measured_over_bound"] is not None and d["measured_over_bound"] > 0
    assert m["total"]["verifier_tokens"] == m["total"]["tokens"]
    assert 0 < m["total"]["verifier_busy_fraction"] <= 1
    assert m["total"]["verifier_mean_batch"] >= 1
    assert len(make_plots(run)) == 3
    shutil.rmtree(run / "plots")


def test_slo_attainment_on_paper(tmp_path):
    """TTFT: a-s0 0.1 s, a-s1 0.2, b-s0 0.2; TPOT: a-s0 (0.9-0.1)/8 = 0.1, a-s1 (1.4-0.2)/3 = 0.4,
    b-s0 (1.2-0.7)/2 = 0.25. DSD-Sim's 300 ms / 35 ms by default; the run's config `slo` otherwise."""
    run = make_run(tmp_path / "run")
    m = M.compute(run)
    t = m["total"]
    assert m["slo"] == {"ttft_ms": 300.0, "tpot_ms": 35.0}
    assert t["slo_ttft_attainment"] == 1.0 and t["slo_tpot_attainment"] == 0.0
    assert t["slo_attainment"] == 0.0 and t["slo_goodput_rps"] == 0.0
    man = json.loads((run / "manifest.json").read_text())
    man["config"]["slo"] = {"ttft_ms": 150, "tpot_ms": 300}
    (run / "manifest.json").write_text(json.dumps(man))
    m = M.compute(run)
    a, b, t = m["drafters"]["a"], m["drafters"]["b"], m["total"]
    assert (a["slo_ttft_attainment"], b["slo_ttft_attainment"], t["slo_ttft_attainment"]) == (0.5, 0.0, approx(1 / 3))
    assert (a["slo_tpot_attainment"], b["slo_tpot_attainment"], t["slo_tpot_attainment"]) == (0.5, 1.0, approx(2 / 3))
    assert (a["slo_attainment"], b["slo_attainment"], t["slo_attainment"]) == (0.5, 0.0, approx(1 / 3))
    assert t["slo_goodput_rps"] == approx(1 / 1.4) and b["slo_goodput_rps"] == 0.0
    assert_consistent(m)
    text = M.write_summary(run, man, m).read_text()
    assert "SLO (TTFT <= 150 ms, TPOT <= 300 ms): 0.333 of requests within both" in text


def test_slo_is_an_experiment_field_with_checked_values():
    from testbed.common.errors import ConfigError
    from testbed.run.experiment import experiment_from_dict
    base = {"name": "slo", "backend": "sim",
            "topology": {"name": "t", "nodes": {"s": {"role": "switch"}, "v": {"role": "verifier"},
                                                 "d": {"role": "drafter"}},
                         "links": [{"a": n, "b": "s", "rate_up_mbps": 10, "rate_down_mbps": 10} for n in "vd"]},
            "verifier": {"backend": "synthetic"}, "drafters": {"backend": "synthetic"}}
    assert experiment_from_dict(base).slo.ttft_ms == 300.0
    assert experiment_from_dict({**base, "slo": {"tpot_ms": 50}}).slo.tpot_ms == 50.0
    for bad, field in (({"ttft_ms": 0}, "slo.ttft_ms"), ({"tpot_ms": "fast"}, "slo.tpot_ms"),
                       ({"p99_ms": 3}, "slo.p99_ms")):
        with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
            experiment_from_dict({**base, "slo": bad})
