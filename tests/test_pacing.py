"""Compute pacing fidelity: the shell's pacer, the metrics over Pace events, the host-load sampler, and a run
whose pacing is forced to distort (CPU hogs beside synthetic nodes with sub-millisecond steps) being flagged."""
import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from nodes.backends import Sampling, VerifyRequest
from nodes.backends.synthetic import ComputeProfile, SyntheticDraft, SyntheticTarget
from nodes.core.actions import DraftWork, VerifyWork
from nodes.events import Load, Pace, RunLogs
from nodes.shell import Pacer, paced_work, pace_event
from testbed.run import hostload, metrics, pacing
from tests.test_runner import experiment, run, run_dirs


def _paces(node, ratios, profile_s=0.01):
    return [Pace(t=i, node=node, work="draft", profile_s=profile_s, realised_s=profile_s * r, tokens=1)
            for i, r in enumerate(ratios)]


def test_paced_work_reports_profile_and_realised():
    draft = SyntheticDraft(alpha=1.0, profile=ComputeProfile(draft_token_s=0.003))
    draft.open("a", [1, 2, 3], Sampling())
    tokens, elapsed, profile_s = paced_work(draft, DraftWork("a", 2), Pacer())
    assert len(tokens) == 2 and profile_s == pytest.approx(0.006)
    assert elapsed >= profile_s                                     # never early: the pacer waits out the profile
    e = pace_event("d1", DraftWork("a", 2), profile_s, elapsed, 5.0)
    assert (e.work, e.tokens, e.profile_s) == ("draft", 2, profile_s)
    target = SyntheticTarget(profile=ComputeProfile(verify_base_s=0.002))
    target.open("a", [1, 2, 3])
    work = VerifyWork((VerifyRequest("a", [], Sampling()),))
    _, _, cost = paced_work(target, work)
    assert cost == pytest.approx(0.002)
    assert pace_event("v", work, cost, 0.0021, 1.0).batch == 1


def test_real_backend_has_no_profile():
    class Real:
        def cost_s(self, work):
            return None

        def extend(self, session, k):
            return [0] * k
    assert paced_work(Real(), DraftWork("a", 3))[2] is None


def test_pacing_metrics_and_the_distortion_flag():
    fine = RunLogs(drafters={"d1": _paces("d1", [1.0, 1.01, 1.02] * 10)}, verifiers=_paces("v", [1.0] * 5),
                   load=[Load(t=0, node="runner", cpu_busy=0.5, cpus=2), Load(t=1, node="runner", cpu_busy=0.7, cpus=2)])
    p = pacing.pacing(fine)
    assert not p["distorted"] and p["compute"] == "profiled" and p["steps"] == 35
    assert p["cpu_busy_mean"] == pytest.approx(0.6) and p["cpu_busy_max"] == 0.7
    assert "distorted" not in "\n".join(pacing.summary_lines(p))
    slow_median = RunLogs(drafters={"d1": _paces("d1", [1.06] * 20)}, verifiers=_paces("v", [1.0] * 5))
    assert pacing.pacing(slow_median)["distorted"]
    tail = RunLogs(drafters={"d1": _paces("d1", [1.0] * 90 + [1.5] * 10)}, verifiers=[])
    p = pacing.pacing(tail)
    assert p["distorted"] and "p95" in p["why"] and p["compute"] == "mixed"
    assert any("compute pacing distorted" in line for line in pacing.summary_lines(p))
    real = pacing.pacing(RunLogs(drafters={"d1": []}, verifiers=[]))
    assert real["compute"] == "real" and not real["distorted"] and real["p50"] is None
    assert "real models" in pacing.summary_lines(real)[0]


def test_pacer_is_never_early():
    pacer = Pacer()
    for _ in range(50):
        start = time.perf_counter()
        pacer.sleep_until(start + 0.001)
        assert time.perf_counter() - start >= 0.001


def test_host_load_sampler(tmp_path):
    clock = [0.0]
    sampler = hostload.HostLoad(tmp_path, interval_s=1.0, clock=lambda: clock[0])
    assert sampler.poll() is None                                   # not a second yet
    sum(i * i for i in range(300_000))                              # some CPU time to see
    clock[0] = 1.5
    e = sampler.poll()
    sampler.close()
    assert e is not None and 0 <= e.cpu_busy <= 1 and e.cpus == os.cpu_count()
    line = json.loads((tmp_path / "load.jsonl").read_text())
    assert line["event"] == "load" and line["cpu_busy"] == e.cpu_busy


def _hog(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def test_an_overloaded_run_is_flagged_distorted(tmp_path):
    """Forced: three busy loops per CPU beside five synthetic nodes whose steps are 0.3 ms. The nodes' sleeps then
    wake a scheduler slice late, so realised/profile is far over the limits, and the run must say so."""
    exp = experiment(tmp_path, "hog", backend="local",
                     verifier={"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 0.3},
                     drafters={"backend": "synthetic", "vocab_size": 32000, "alpha": 0.8, "draft_token_ms": 0.3},
                     workload={"requests": 3, "max_new": 48})
    hogs = [multiprocessing.Process(target=_hog, args=(time.time() + 120,), daemon=True)
            for _ in range(3 * (os.cpu_count() or 1))]
    for h in hogs:
        h.start()
    try:
        r = run(exp, tmp_path / "results")
    finally:
        for h in hogs:
            h.terminate()
            h.join()
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = run_dirs(tmp_path / "results", "hog")
    m = json.loads((d / "metrics.json").read_text())
    assert m["pacing"]["compute"] == "profiled" and m["pacing"]["steps"] > 50
    assert m["pacing"]["distorted"], m["pacing"]
    assert m["total"]["pace_p50"] is not None and m["total"]["cpu_busy_mean"] > 0.9
    assert "compute pacing distorted" in (d / "summary.md").read_text()
    assert metrics.read_csv(d / "metrics.csv")["total"]["pace_p95"] == pytest.approx(m["total"]["pace_p95"])
