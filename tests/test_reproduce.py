"""`testbed reproduce`: bad input, the iteration split read from a real simulated run, the GoodSpeed claims'
logic, the driver end to end on a tiny suite, and docs/reproduction.md generated from full runs only."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from testbed.run.experiment import check_file

from testbed.reproduce import driver, goodspeed, suite
from testbed.reproduce.docs import write_docs
from testbed.reproduce.rounds import iterations, settle_iteration, utility_curve
from testbed.reproduce.suite import Claim, Point, ReproduceError

REPO = Path(__file__).resolve().parent.parent
QWEN4 = REPO / "experiments" / "papers" / "goodspeed" / "qwen3-4.yaml"


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "testbed.cli", "reproduce", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_an_unknown_paper_lists_the_known_ones():
    r = _cli("nosuchpaper")
    assert r.returncode == 2
    assert "unknown paper 'nosuchpaper'" in r.stderr and "goodspeed" in r.stderr and "dsd" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_unknown_backend_is_refused_before_anything_runs(tmp_path):
    r = _cli("goodspeed", "--backend", "ns3", "--results", str(tmp_path))
    assert r.returncode == 2 and "unknown backend 'ns3'" in r.stderr
    assert not (tmp_path / "reproduce").exists()


def test_mininet_on_a_point_too_large_names_it_and_suggests_sim():
    big = Point("scale/80x20/jsq", QWEN4, (), suite.MININET_MAX_DRAFTERS + 1, "mininet")
    small = Point("small", QWEN4, (), 2, "mininet")
    with pytest.raises(ReproduceError, match=r"point scale/80x20/jsq .* 9 drafters.*--backend sim"):
        suite.check_backend([small, big], "mininet")
    suite.check_backend([big], "sim")              # the simulator takes any size


def _tiny_points(backend="sim"):
    """Two of the GoodSpeed suite's points, cut to 4 s of simulated time."""
    pts = [p for p in goodspeed.points(True) if p.key in ("qwen3-4/C24/goodspeed", "qwen3-4/C24/fixed")]
    return [Point(p.key, p.file, p.sets[:1] + ("workload.duration_s=4",), p.drafters, backend) for p in pts]


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("gs")
    done = suite.Runner(out, jobs=2, progress=lambda m: None).run(_tiny_points())
    assert all(r.status == "complete" for r in done.values()), [r.message for r in done.values()]
    return {k: r.run_dir for k, r in done.items()}


def test_the_iteration_split_adds_up_on_a_simulated_run(tiny_runs):
    run = tiny_runs["qwen3-4/C24/fixed"]
    its, drafters = iterations(run)
    assert drafters == ["d1", "d2", "d3", "d4"] and len(its) >= 5
    verifies = [json.loads(line) for line in (run / "events" / "verifier.jsonl").read_text().splitlines()]
    verifies = [e for e in verifies if e["event"] == "verify"]
    for prev, it in zip(its, its[1:]):
        # one clock: receiving + verification + sending of an iteration = time from the previous verdicts'
        # arrival to this one's (so consecutive iterations tile the run without gap or overlap)
        assert it.receiving_s >= 0 and it.sending_s > 0 and it.verify_s > 0
        assert it.t_end - it.verify_s >= prev.t_end + prev.sending_s - 1e-9
    # every committed token of the window is counted once, against the verifier's own log
    batch_ids = sorted({e["batch_id"] for e in verifies})[:len(its)]
    assert sum(sum(it.tokens.values()) for it in its) == sum(e["tokens"] for e in verifies
                                                              if e["batch_id"] in batch_ids)
    # Fixed-S: every server drafts C / N = 6 in every round but its sessions' prefills (window 0, one token)
    windows = [(w, it.tokens[d]) for it in its[1:] for d, w in it.window.items()]
    assert all(w == 6 or (w == 0 and t == 1) for w, t in windows)
    assert sum(w == 6 for w, _ in windows) > 0.8 * len(windows)


def test_utility_is_the_sum_of_log_mean_goodputs(tiny_runs):
    its, drafters = iterations(tiny_runs["qwen3-4/C24/goodspeed"])
    curve = utility_curve(its, drafters)
    t = len(its)
    want = sum(math.log(sum(it.tokens.get(d, 0) for it in its) / t) for d in drafters)
    assert curve[-1] == pytest.approx(want)
    assert settle_iteration([1.0, 5.0, 9.9, 10.0, 10.1, 10.0]) == 3
    assert settle_iteration([1.0, 2.0]) is None or settle_iteration([1.0, 2.0]) == 2


def _nums(**over):
    base = {"iterations": 600, "tokens": 6000, "wall_s": 60.0, "s_per_token": 0.01, "receiving_s": 40.0,
            "verify_s": 19.0, "sending_s": 0.01, "utility_final": 6.0, "utility_at_600": 6.0,
            "settle_iteration": 350, "tracking_error": 0.05}
    return {**base, **over}


def _verdicts(claims):
    return {c.claim.split(" ")[0] + ":" + c.claim.split(" ")[-1]: c.holds for c in claims}


def test_goodspeed_claims_hold_or_not_on_the_numbers():
    nums = {"qwen3-8/C16/goodspeed": _nums(verify_s=18.0, receiving_s=41.0, utility_at_600=6.3),
            "qwen3-8/C16/fixed": _nums(utility_at_600=6.1),
            "qwen3-8/C16/random": _nums(s_per_token=0.0112, utility_at_600=5.7)}
    claims = goodspeed._claims(nums, quick=False)
    by = {c.claim: c for c in claims}
    assert by["Random-S is 5-25 % slower than Fixed-S"].holds is True
    assert by["GoodSpeed's verification time is about 5 % below Fixed-S"].holds is True
    assert by["U(x̄(T)) ends above both baselines"].holds is True
    assert by["GoodSpeed's utility stabilises by about 400 iterations"].holds is True
    assert by["sending takes under 0.1 % of the wall time"].holds is True
    nums["qwen3-8/C16/random"]["s_per_token"] = 0.02                 # 100 % slower: outside 5-25 %
    nums["qwen3-8/C16/goodspeed"]["settle_iteration"] = 580
    nums["qwen3-8/C16/goodspeed"]["utility_at_600"] = 6.0             # below Fixed-S
    by = {c.claim: c for c in goodspeed._claims(nums, quick=False)}
    assert by["Random-S is 5-25 % slower than Fixed-S"].holds is False
    assert by["Random-S is 5-25 % slower than Fixed-S"].why            # says why it may not hold
    assert by["U(x̄(T)) ends above both baselines"].holds is False
    assert by["GoodSpeed's utility stabilises by about 400 iterations"].holds is False
    # a quick run never judges settling
    by = {c.claim: c for c in goodspeed._claims(nums, quick=True)}
    assert by["GoodSpeed's utility stabilises by about 400 iterations"].holds is None


class _TinySuite:
    MODELLED = "everything (a test suite)"

    @staticmethod
    def points(quick, backend="sim"):
        return _tiny_points(backend)

    @staticmethod
    def analyse(runs, out, quick):
        claims, numbers = goodspeed.analyse(runs, out, quick)
        return claims, numbers


def test_the_driver_writes_claims_figures_and_docs(tmp_path, monkeypatch):
    monkeypatch.setattr(driver, "module", lambda paper: _TinySuite)
    monkeypatch.setattr(driver, "PAPERS", {"goodspeed": "GoodSpeed (tiny)"})
    docs = tmp_path / "docs" / "reproduction.md"
    assert driver.reproduce("goodspeed", quick=True, results=tmp_path, jobs=2, docs=docs) == 0
    assert not docs.exists()                                   # quick runs never touch the docs
    [out] = (tmp_path / "reproduce" / "goodspeed").iterdir()
    meta = json.loads((out / "reproduce.json").read_text())
    assert set(meta["points"]) == {"qwen3-4/C24/goodspeed", "qwen3-4/C24/fixed"}
    assert all(p["status"] == "complete" for p in meta["points"].values())
    text = (out / "claims.md").read_text()
    assert "| claim | where in the paper |" in text and "--quick" in text and "Modelled, not measured" in text
    for f in ("fig2_goodput.png", "fig3_walltime.png", "fig4_utility.png"):
        assert (out / f).stat().st_size > 5000
    # --resume keeps the points that completed (same command) and runs only the rest
    (out / "reproduce.json").unlink()                       # as if killed before it wrote one
    assert driver.reproduce("goodspeed", quick=True, results=tmp_path, jobs=2, docs=None, resume=out) == 0
    meta = json.loads((out / "reproduce.json").read_text())
    assert all(p["message"] == suite.KEPT and p["seconds"] > 0 for p in meta["points"].values())
    with pytest.raises(ReproduceError, match="resume it with the same paper and options"):
        driver.reproduce("goodspeed", quick=False, results=tmp_path, docs=None, resume=out)
    # --analyse redraws an earlier run from its points' runs without running anything
    (out / "claims.md").unlink()
    (out / "fig3_walltime.png").unlink()
    assert driver.reanalyse("goodspeed", out, tmp_path, docs=docs) == 0
    assert (out / "claims.md").read_text().count("| ") > 10 and (out / "fig3_walltime.png").exists()
    assert not docs.exists()
    with pytest.raises(ReproduceError, match="not a reproduce run"):
        driver.reanalyse("goodspeed", tmp_path, tmp_path, docs=None)
    # a full run (here: the same suite, not quick) regenerates the docs with its claims and figures
    assert driver.reproduce("goodspeed", quick=False, results=tmp_path, jobs=2, docs=docs) == 0
    page = docs.read_text()
    assert "<!-- paper:goodspeed -->" in page and "GoodSpeed's total wall time is comparable" in page
    assert (docs.parent / "reproduction" / "goodspeed" / "fig4_utility.png").exists()


def test_docs_keep_a_section_without_a_full_run_and_ignore_quick_ones(tmp_path):
    docs = tmp_path / "reproduction.md"
    docs.write_text("<!-- paper:zhu -->\n## kept from before\n<!-- /paper:zhu -->\n")
    quick = tmp_path / "results" / "reproduce" / "dsd" / "20260101T000000Z"
    quick.mkdir(parents=True)
    (quick / "reproduce.json").write_text(json.dumps({"quick": True, "points": {"a": {"status": "complete"}}}))
    page = write_docs(tmp_path / "results", docs).read_text()
    assert "## kept from before" in page
    assert "No full run yet: `testbed reproduce dsd`" in page and "No full run yet: `testbed reproduce goodspeed`" in page


def test_a_failing_point_is_reported_and_the_rest_still_run(tmp_path):
    good, = [p for p in _tiny_points() if p.key.endswith("fixed")]
    bad = Point("broken", good.file, ("workload.max_new=-3",), 4)
    done = suite.Runner(tmp_path, jobs=2, progress=lambda m: None).run([bad, good])
    assert done["broken"].status == "failed" and "max_new" in done["broken"].log.read_text()
    assert done[good.key].status == "complete"
    assert Claim("c", "w", "m", None, "cfg").row().count("|") == 7


# ------------------------------------------------------------------------------------------ DSD and Zhu suites

def test_effect_sizes_hold_within_half_to_double_with_the_papers_sign():
    assert suite.effect_holds(0.097, 0.097) and suite.effect_holds(0.05, 0.097) and suite.effect_holds(0.19, 0.097)
    assert not suite.effect_holds(0.04, 0.097) and not suite.effect_holds(-0.097, 0.097)
    assert suite.effect_holds(-0.11, -0.11) and not suite.effect_holds(0.11, -0.11)
    assert not suite.effect_holds(-0.30, -0.11)


def test_dsd_points_cover_the_stacks_rtts_and_seeds_and_mininet_refuses_them():
    from testbed.reproduce import dsd, dsd_fused
    quick, full = dsd.points(True), dsd.points(False)
    xq, xf = len(dsd_fused.QUICK_RTTS) * 2, len(dsd_fused.RTTS) * 2      # fused and distributed at each RTT
    assert len(quick) == len(dsd.STACKS) * 2 + xq and len({p.key for p in quick}) == len(quick)
    assert len(full) == len(dsd.STACKS) * 2 * 3 + xf + 2
    assert sum(p.drafters == 800 for p in full) == 2
    assert all(any(s.startswith("workload.duration_s=") for s in p.sets) for p in quick)
    sweep = json.loads(next(s for s in full[-1].sets if s.startswith("sweep=")).removeprefix("sweep="))
    assert sweep["routing.policy"] == ["jsq"] and sweep["speculation.policy"] == ["awc"]
    assert "topology=fleet-800x20.yaml" in full[-1].sets
    modes = {json.loads(next(s for s in p.sets if s.startswith("sweep=")).removeprefix("sweep=")).get(
        "speculation.mode", ["distributed"])[0] for p in full}
    assert modes == {"distributed", "fused", "hybrid"}
    xover = [p for p in full if p.key.startswith("xover/")]
    delays = sorted({json.loads(p.sets[0].removeprefix("sweep="))["links.wan.delay_ms"][0] for p in xover})
    assert delays == [r / 2 - 0.5 for r in dsd_fused.RTTS]          # RTT = 2 x (0.5 ms edge + WAN delay)
    with pytest.raises(ReproduceError, match=r"point 80x20/random\+fifo\+static/rtt10/seed0 .* 80 drafters"):
        suite.check_backend(dsd.points(True, "mininet"), "mininet")


def _dsd_run(root: Path, key: str, goodput: float, tpot: float, e2e: float, done: int) -> Path:
    d = root / key
    d.mkdir(parents=True)
    total = {"goodput_tps": goodput, "tpot_p50_s": tpot, "ttft_p50_s": 0.3, "e2e_mean_s": e2e,
             "slo_attainment": 0.5, "requests_completed": done, "window_s": 100.0, "verifier_busy_fraction": 0.5}
    (d / "metrics.json").write_text(json.dumps({"total": total}))
    return d


def test_dsd_claims_and_figures_from_run_metrics(tmp_path):
    from testbed.reproduce import dsd
    runs = {}
    for seed, jitter in ((0, 1.0), (1, 1.02)):
        for stack, gp, tpot, e2e, n in (("random+fifo+static", 1000, 0.050, 20.0, 100),
                                        ("round-robin+fifo+static", 1010, 0.050, 20.0, 100),
                                        ("jsq+fifo+static", 1050, 0.045, 19.0, 190),
                                        ("jsq+length+static", 1080, 0.045, 18.5, 200),
                                        ("jsq+length+awc", 1100, 0.040, 18.0, 200)):
            key = f"80x20/{stack}/rtt10/seed{seed}"
            runs[key] = _dsd_run(tmp_path / "runs", key, gp * jitter, tpot, e2e, n)
    runs["800x20/random+fifo+static/rtt10/seed0"] = _dsd_run(tmp_path / "runs", "big", 9000, 0.05, 20.0, 900)
    claims, numbers = dsd.analyse(runs, tmp_path, quick=False)
    by = {c.claim: c for c in claims}
    assert "mean of 2 seed(s)" in by["1.1x speed-up over SD baselines"].config   # the 1-seed large point aside
    assert by["+9.7 % throughput of the full DSD stack over the SD baseline"].holds is True      # +10 %
    assert by["1.1x speed-up over SD baselines"].holds is True                                    # 1.11x
    assert by["AWC lowers TPOT by 11 % (vs the same stack with a static window)"].holds is True   # -11 %
    jsq = [c for c in claims if c.claim.startswith("JSQ serves about 2x")]
    assert [c.holds for c in jsq] == [True, True]                                                 # 1.9x
    assert by[next(k for k in by if k.startswith("fused mode"))].holds is None      # no RTT sweep ran
    cell = numbers["cells"]["80x20/random+fifo+static/rtt10"]
    assert cell["seeds"] == 2 and cell["goodput_tps"]["min"] == 1000 and cell["goodput_tps"]["max"] == 1020
    assert (tmp_path / "fig_stacks.png").stat().st_size > 5000
    # no gain: the throughput claim does not hold
    runs2 = {k: v for k, v in runs.items() if "awc" not in k}
    runs2["80x20/jsq+length+awc/rtt10/seed0"] = _dsd_run(tmp_path / "r2", "x", 990, 0.05, 20.0, 100)
    by = {c.claim: c for c in dsd.analyse(runs2, tmp_path, quick=True)[0]}
    assert by["+9.7 % throughput of the full DSD stack over the SD baseline"].holds is False


def test_dsd_fused_crossover_is_interpolated_and_its_direction_judged(tmp_path):
    from testbed.reproduce import dsd
    runs = {}
    # distributed TPOT grows with RTT, fused stays flat: they cross half way between 10 and 30 ms (at 20)
    for mode, tpots in (("distributed", {2: 0.040, 10: 0.045, 30: 0.055, 60: 0.070}),
                        ("fused", {2: 0.050, 10: 0.050, 30: 0.050, 60: 0.050})):
        for rtt, tpot in tpots.items():
            key = f"xover/{mode}/rtt{rtt}/seed0"
            runs[key] = _dsd_run(tmp_path / "runs", key, 1000, tpot, 20.0, 100)
    claims, numbers = dsd.analyse(runs, tmp_path, quick=False)
    (c,) = [c for c in claims if c.claim.startswith("fused mode")]
    assert "crosses at RTT ≈ 20 ms" in c.measured and "faster above it" in c.measured
    assert c.holds is False and "long RTTs" in c.why            # the paper says below; measured: above
    assert (tmp_path / "fig_fused.png").stat().st_size > 5000
    # fused better at short RTTs: the paper's direction holds
    flip = {k.replace("distributed", "tmp").replace("fused", "distributed").replace("tmp", "fused"): v
            for k, v in runs.items()}
    (c,) = [c for c in dsd.analyse(flip, tmp_path, quick=False)[0] if c.claim.startswith("fused mode")]
    assert c.holds is True and "faster below it" in c.measured
    # never crossing: no crossover in the swept range
    flat = {k: v for k, v in runs.items() if "rtt60" not in k and "rtt30" not in k}
    (c,) = [c for c in dsd.analyse(flat, tmp_path, quick=False)[0] if c.claim.startswith("fused mode")]
    assert c.holds is False and "no crossover between RTT 2 and 10 ms" in c.measured


def test_zhu_analytic_suite_orders_the_schemes_and_writes_its_figures(tmp_path):
    from testbed.reproduce import zhu
    claims, numbers = zhu.analyse({}, tmp_path, quick=True)
    for rows in numbers["latency"].values():
        for axis in ("users", "band"):
            for lat in rows[axis].values():
                # the proposed scheme optimises over a superset of every baseline's choices
                assert lat["proposed"] <= min(lat.values()) * (1 + 1e-9), lat
                assert lat["ad"] > lat["proposed"]
    by = {c.claim: c for c in claims}
    assert by["SD has lower total latency than AD (analytic)"].holds is True
    assert (tmp_path / "fig_users.png").stat().st_size > 5000 and (tmp_path / "fig_band.png").exists()
    # more band never slows the proposed scheme down
    for rows in numbers["latency"].values():
        band = [rows["band"][b]["proposed"] for b in sorted(rows["band"])]
        assert band == sorted(band, reverse=True)


def test_zhu_emulated_points_sweep_users_band_and_schemes_and_mininet_refuses_the_large_ones():
    from testbed.reproduce import zhu, zhu_system
    quick, full = zhu.points(True), zhu.points(False)
    assert len({p.key for p in full}) == len(full) == 2 * 5 * (6 + 5)     # the band sweep's 1 MHz is users100
    assert len(quick) == 5 * 4
    p = next(p for p in full if p.key == "1.1b-13b/band0.2/ad")
    assert "topology.nodes.ap1.radio.band_mhz=0.2" in p.sets and "topology.nodes.u.count=100" in p.sets
    assert "topology.links.0.rate_up_mbps={uniform: [0.2, 2]}" in p.sets and "speculation.gamma=0" in p.sets
    assert "verifier.profile={device: rtx-4500-ada, model: llama-13b, dtype: int8}" in p.sets and p.drafters == 101
    for pair in zhu_system.PAIRS:         # every pair's point is a valid experiment (a --set typo fails here)
        key = next(q for q in full if q.key.startswith(pair + "/"))
        assert check_file(key.file, list(key.sets)) == []
    with pytest.raises(ReproduceError, match=r"point 68m-7b/users10/proposed .* 11 drafters"):
        suite.check_backend(zhu.points(True, "mininet"), "mininet")
    assert all(p.drafters <= suite.MININET_MAX_DRAFTERS for p in zhu.crosscheck_points(True))
    assert zhu_system.FILE.exists()


def _zhu_run(root: Path, key: str, total: float, upload: float = 0.003) -> Path:
    d = root / key
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"total": {
        "client_total_latency_s": total, "upload_mean_s": upload, "client_requests": 10, "mean_gamma": 4.0,
        "verifier_mean_batch": 8.0}}))
    return d


def test_zhu_emulated_claims_and_figures_from_run_metrics(tmp_path):
    from testbed.reproduce import zhu_system
    totals = {"proposed": 60.0, "uniform": 100.0, "max-batch": 80.0, "fixed-length": 70.0, "ad": 150.0}
    runs = {f"68m-7b/{w}/{s}": _zhu_run(tmp_path / "runs", f"68m-7b/{w}/{s}", t * (2 if w == "users40" else 1))
            for w in ("users10", "users40", "band0.2") for s, t in totals.items()}
    data = zhu_system.latencies(runs, quick=True)
    assert data["68m-7b"]["band"][1.0]["ad"]["total"] == 300.0          # users40 is the quick band sweep's 1 MHz
    by = {c.claim.split(" (")[0]: c for c in zhu_system.claims(data)}
    assert by["SD has lower total latency than AD"].holds is True
    assert by["up to 44.9 % lower total latency than uniform band allocation"].holds is True      # 40 % here
    assert "40.0% below uniform" in by["up to 44.9 % lower total latency than uniform band allocation"].measured
    assert by["the DP up to 21.4 % below max batching"].holds is True                              # 25 %
    assert by["joint length control beats a fixed length"].holds is True
    worse = {k: _zhu_run(tmp_path / "worse", k, 200.0 if k.endswith("proposed") else 100.0) for k in runs}
    by = {c.claim.split(" (")[0]: c for c in zhu_system.claims(zhu_system.latencies(worse, quick=True))}
    assert by["SD has lower total latency than AD"].holds is False
    assert by["joint length control beats a fixed length"].holds is False
    path = zhu_system.figure(data, "users", "users", "1 MHz", tmp_path / "fig.png")
    assert path.stat().st_size > 5000


# ------------------------------------------------------------------------------------------ sim vs emulator

def test_crosscheck_subsets_are_small_enough_to_emulate():
    from testbed.reproduce import dsd
    from testbed.reproduce import zhu
    for m in (goodspeed, dsd, zhu):
        for quick in (True, False):
            pts = m.crosscheck_points(quick)
            assert pts and all(p.drafters <= suite.MININET_MAX_DRAFTERS for p in pts)


@pytest.mark.root
def test_crosscheck_runs_a_point_on_both_backends_and_compares(tmp_path, monkeypatch):
    """One GoodSpeed point for 3 s on mininet and on sim: crosscheck.md has its row, the docs its table."""
    [p] = [x for x in goodspeed.crosscheck_points(True) if x.key.endswith("fixed")]
    tiny = Point(p.key, p.file, p.sets[:1] + ("workload.duration_s=3",), p.drafters)
    monkeypatch.setattr(goodspeed, "crosscheck_points", lambda quick: [tiny])
    assert driver.reproduce("goodspeed", quick=True, results=tmp_path, jobs=1, docs=None, crosscheck=True) == 0
    [out] = (tmp_path / "reproduce" / "goodspeed").iterdir()
    meta = json.loads((out / "reproduce.json").read_text())
    assert meta["crosscheck"] and set(meta["points"]) == {f"mininet/{p.key}", f"sim/{p.key}"}
    row = meta["rows"][p.key]
    assert row["goodput"] is not None and abs(row["goodput"]) < 1.0      # same order: a wrong point would not be
    man = {b: json.loads((Path(meta["points"][f"{b}/{p.key}"]["run_dir"]) / "manifest.json").read_text())
           for b in ("mininet", "sim")}
    assert man["mininet"]["backend"] == "mininet" and man["sim"]["backend"] == "sim"
    assert f"| {p.key} |" in (out / "crosscheck.md").read_text()


def test_a_suite_started_with_sigint_ignored_still_stops_on_it_with_its_points(tmp_path):
    """Started from a script's `cmd &` a suite and its children have SIGINT ignored; kill -INT must still stop the
    suite and it every running point promptly (children get SIGTERM), leaving reproduce.json saying so."""
    import os
    import signal
    import time
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "reproduce", "goodspeed", "--quick", "--jobs", "1",
                             "--results", str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.monotonic() + 60
    while not list(tmp_path.glob("reproduce/goodspeed/*/runs/**/events")) and time.monotonic() < deadline:
        time.sleep(0.2)                                # a point's run has started
    assert time.monotonic() < deadline, "no point's run started within 60 s"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=25)              # children stopped by SIGTERM, not left for the 30 s kill
    assert proc.returncode == 130, out
    mine = [p for p in os.listdir("/proc") if p.isdigit()]
    left = []
    for pid in mine:
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().decode(errors="replace")
        except OSError:
            continue
        if str(tmp_path) in cmd:
            left.append(cmd)
    assert not left, left
    [meta] = [json.loads(p.read_text()) for p in tmp_path.glob("reproduce/goodspeed/*/reproduce.json")]
    assert meta["interrupted"] is True
