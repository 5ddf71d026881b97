"""`testbed run` end to end on real Mininet: files, metric consistency, sweeps, SIGINT, reproducibility; and,
without root, the runner's progress line, link log and readiness wait."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from nodes.config import DrafterConfig, VerifierConfig, load_config
from nodes.events import Finish, Link, Ready, Verdict, Welcome, encode, read_events
from testbed.net.linkstate import LinkState
from testbed.net.runs import links_of, processes_of
from testbed.run import runner

root = pytest.mark.root
REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
STATION = {"rate_up_mbps": 10, "rate_down_mbps": 10, "delay_ms": 15, "jitter_ms": 0, "loss_pct": 0}
# Synthetic models paced like a GPU verifier and a fast edge draft: the network, not this CPU, sets the pace.
SYNTHETIC = {
    "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 20, "verify_per_token_ms": 1},
    "drafters": {"backend": "synthetic", "vocab_size": 32000, "alpha": 0.8, "draft_token_ms": 4},
}


def experiment(tmp_path, name, **fields) -> Path:
    exp = {"name": name, "topology": str(REPO / "topologies/star-wifi-4.yaml"),
           "links": {f"d{i}-ap1": STATION for i in range(1, 5)}, "backend": "mininet",
           "workload": {"prompts": "builtin", "requests": 2, "max_new": 48},
           "speculation": {"gamma": 4, "payload": "ids", "proactive": True}, "seed": 0}
    for key, value in fields.items():
        exp[key] = {**exp.get(key, {}), **value} if isinstance(value, dict) and key in exp else value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def run(path, results, *extra, timeout=600):
    return subprocess.run(TESTBED + ["run", str(path), "--results", str(results), *extra], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO)


def run_dirs(results, name):
    return sorted(p for p in (results / name).iterdir() if (p / "manifest.json").exists())


def events(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


@root
def test_short_real_model_run_writes_every_file_and_consistent_metrics(tmp_path):
    exp = experiment(tmp_path, "short", drafters={"nodes": ["d1", "d2"], "backend": "hf", "model": "smollm2-135m:int8"},
                     verifier={"backend": "hf", "model": "smollm2-135m", "threads": 1},
                     workload={"requests": 1, "max_new": 8}, speculation={"gamma": 2})
    r = run(exp, tmp_path / "results")
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = run_dirs(tmp_path / "results", "short")
    for f in ["manifest.json", "prompts.jsonl", "events/verifier.jsonl", "events/d1.jsonl", "events/d2.jsonl",
              "events/links.jsonl", "outputs/d1.jsonl", "outputs/d2.jsonl", "metrics.json", "metrics.csv",
              "nodes/verifier.json", "nodes/d1.json", "nodes/d2.json",
              "summary.md", "plots/goodput.png", "plots/acceptance.png", "plots/latency_cdf.png", "plots/links.png"]:
        assert (d / f).is_file() and (d / f).stat().st_size > 0, f
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "complete" and man["config_hash"] in d.name
    d2 = load_config(DrafterConfig, d / "nodes" / "d2.json")      # what the node was told, typed
    assert (d2.name, d2.prompt_offset, d2.speculation.gamma, d2.model.model) == ("d2", 1, 2, "smollm2-135m:int8")
    assert load_config(VerifierConfig, d / "nodes" / "verifier.json").model.threads == 1
    assert man["git"]["commit"] and man["versions"]["torch"] and man["kernel"]
    assert man["emulation"]["delay_backend"] in ("netem", "nfqueue")
    m = json.loads((d / "metrics.json").read_text())
    assert sum(m["drafters"][n]["tokens"] for n in ("d1", "d2")) == m["total"]["tokens"]
    assert 0 < m["total"]["tokens"] <= 16       # 2 requests of at most 8 tokens (EOS may end one sooner)
    for name in ("d1", "d2"):
        ev = events(d / "events" / f"{name}.jsonl")
        first = min(e["t"] for e in ev if e["event"] == "start")
        last = max(e["t"] for e in ev if e["event"] == "verdict")
        tokens = sum(e.get("tokens", 0) for e in ev if e["event"] == "verdict")
        assert m["drafters"][name]["goodput_tps"] == pytest.approx(tokens / (last - first), rel=0.01)
        out = events(d / "outputs" / f"{name}.jsonl")
        assert sum(len(o["tokens"]) for o in out) == tokens


@root
def test_sweep_speculative_beats_autoregressive_at_40ms_rtt(tmp_path):
    exp = experiment(tmp_path, "sdvsad", sweep={"speculation.gamma": [0, 4]}, **SYNTHETIC)
    r = run(exp, tmp_path / "results")
    assert r.returncode == 0, r.stdout + r.stderr
    dirs = run_dirs(tmp_path / "results", "sdvsad")
    assert len(dirs) == 2
    labels = [json.loads((p / "manifest.json").read_text())["label"] for p in dirs]
    assert sorted(labels) == ["gamma=0", "gamma=4"]
    assert "gamma=0" in r.stdout and "gamma=4" in r.stdout and "total goodput" in r.stdout   # the report
    goodput = {lab: json.loads((p / "metrics.json").read_text())["total"]["goodput_tps"] for lab, p in zip(labels, dirs)}
    rtt = [e["rtt_s"] for e in events(dirs[0] / "events" / "d1.jsonl") if e["event"] == "verdict"]
    assert min(rtt) >= 0.040                         # the network really imposes 40 ms
    assert goodput["gamma=4"] > 1.5 * goodput["gamma=0"], goodput
    for d in dirs:    # the start gate: no drafter began a session before every drafter had connected
        logs = [events(f) for f in sorted((d / "events").glob("d*.jsonl"))]
        welcomed = max(e["t"] for log in logs for e in log if e["event"] == "welcome")
        first = min(e["t"] for log in logs for e in log if e["event"] == "start")
        assert len(logs) == 4 and first >= welcomed, (first, welcomed)
        assert not list((d / "nodes").glob("*.go"))  # the gates are gone: a rerun from nodes/*.json starts at once
    rep = subprocess.run(TESTBED + ["report", *map(str, dirs), "--out", str(tmp_path / "cmp")], capture_output=True,
                         text=True, timeout=60, cwd=REPO)
    assert rep.returncode == 0 and "gamma=4" in rep.stdout
    assert (tmp_path / "cmp" / "goodput_overlay.png").is_file()


@root
def test_sigint_mid_run_leaves_manifest_partial_metrics_and_no_leftovers(tmp_path):
    exp = experiment(tmp_path, "interrupted", workload={"requests": 50, "max_new": 400}, **SYNTHETIC)
    p = subprocess.Popen(TESTBED + ["run", str(exp), "--results", str(tmp_path / "results")], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    d1 = None
    while time.monotonic() < deadline:
        dirs = run_dirs(tmp_path / "results", "interrupted") if (tmp_path / "results" / "interrupted").exists() else []
        if dirs and (dirs[0] / "events" / "d1.jsonl").exists() and \
                sum(e["event"] == "verdict" for e in events(dirs[0] / "events" / "d1.jsonl")) > 20:
            d1 = dirs[0]
            break
        time.sleep(0.2)
    assert d1, "the run never got going"
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    man = json.loads((d1 / "manifest.json").read_text())
    assert man["status"] == "interrupted"
    m = json.loads((d1 / "metrics.json").read_text())
    assert m["complete"] is False and m["total"]["tokens"] > 0
    rid = man["emulation"]["run"]
    time.sleep(0.5)
    assert links_of(rid) == [] and processes_of(rid) == []


@root
def test_same_config_and_seed_give_identical_tokens(tmp_path):
    """Sampling at temperature 1 with real models, twice: every generated token must repeat."""
    exp = experiment(tmp_path, "repeat", backend="local",
                     drafters={"nodes": ["d1", "d2"], "backend": "hf", "model": "smollm2-135m:int8"},
                     verifier={"backend": "hf", "model": "smollm2-135m", "threads": 1},
                     workload={"requests": 1, "max_new": 12, "temperature": 1.0},
                     speculation={"gamma": 3, "payload": "topk:8"})
    outs = []
    for i in range(2):
        r = run(exp, tmp_path / f"results{i}")
        assert r.returncode == 0, r.stdout + r.stderr
        (d,) = run_dirs(tmp_path / f"results{i}", "repeat")
        outs.append({n: [o["tokens"] for o in events(d / "outputs" / f"{n}.jsonl")] for n in ("d1", "d2")})
    assert outs[0] == outs[1]
    assert outs[0]["d1"] != outs[0]["d2"]      # different prompts and seeds per drafter, not one fixed output


@root
def test_a_dead_drafter_fails_the_run_with_its_log(tmp_path):
    exp = experiment(tmp_path, "dies", workload={"requests": 50, "max_new": 400}, **SYNTHETIC)
    p = subprocess.Popen(TESTBED + ["run", str(exp), "--results", str(tmp_path / "results")], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    victim = None
    deadline = time.monotonic() + 120
    while victim is None and time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            config = str(tmp_path.resolve()).encode()        # the runner starts it with RUN/nodes/d2.json
            if b"nodes.drafter" in argv and any(a.startswith(config) and a.endswith(b"/nodes/d2.json") for a in argv):
                victim = int(proc.name)
        time.sleep(0.3)
    assert victim, "drafter d2 never started"
    # killed once its sessions run (a kill before the start gate opens is "exited before it started")
    log = next(tmp_path.glob("results/dies/*/events/d2.jsonl"), None)
    while time.monotonic() < deadline and not (log and '"verdict"' in log.read_text()):
        time.sleep(0.2)
        log = log or next(tmp_path.glob("results/dies/*/events/d2.jsonl"), None)
    import os
    os.kill(victim, signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1
    assert "drafter d2 died" in out
    (d,) = run_dirs(tmp_path / "results", "dies")
    man = json.loads((d / "manifest.json").read_text())
    assert man["status"] == "failed" and "d2" in man["message"]
    assert (d / "metrics.json").exists()
    assert links_of(man["emulation"]["run"]) == []


@root
def test_fading_example_applies_its_channels_and_plots_rate_with_goodput(tmp_path):
    """experiments/fading.yaml, shortened: every channel interval is applied and logged with what produced it,
    the channel part of each state replays exactly from the seed, and channels.png is drawn per drafter."""
    from testbed.channels.plan import ChannelPlan
    from testbed.run.experiment import load_experiment
    r = run(REPO / "experiments/fading.yaml", tmp_path / "results", "--set", "workload.duration_s=6",
            "--set", "workload.sessions=1")
    assert r.returncode == 0, r.stdout + r.stderr
    (d,) = run_dirs(tmp_path / "results", "fading")
    man = json.loads((d / "manifest.json").read_text())
    assert man["channels"]["applied"] and man["channels"]["allocation"] == {"ap1": {"up": "zhu", "down": "equal"}}
    assert man["channels"]["driver"]["late_ticks"] <= 5
    assert (d / "plots" / "channels.png").stat().st_size > 10_000
    logged = [e for e in events(d / "events" / "links.jsonl") if e.get("node") == "channel" and e["event"] == "link"]
    by_link = {}
    for e in logged:
        by_link.setdefault(e["link"], []).append(e)
    assert sorted(by_link) == ["d1-ap1", "d2-ap1", "d3-ap1", "d4-ap1"]
    ticks = man["channels"]["driver"]["ticks"]
    assert all(len(v) == ticks for v in by_link.values()) and ticks >= 60
    # Uplink shares follow live demand (telemetry); everything else is the seeded model: replay it.
    plan = ChannelPlan(load_experiment(REPO / "experiments/fading.yaml").topology_obj(), 0.1, 0)
    d1 = by_link["d1-ap1"]
    # the same tick sequence (a late driver skips ticks, and the models step over the gap) gives the same states
    for e in d1:
        want = next(a for a in plan.step(e["tick"]) if a.link == "d1-ap1")
        assert e["snr_up_db"] == want.info["snr_up_db"] and e["rate_down_mbps"] == want.state.rate_down_mbps
    assert any(e["demand_up"] > 1000 for e in logged)           # topk:256 drafts: kilobytes per round
    shares = {}
    for e in logged:
        shares.setdefault(e["tick"], 0.0)
        shares[e["tick"]] += e["share_up"]
    assert all(abs(s - 1) < 1e-5 for s in shares.values())


# ---------------------------------------------------------------------------------------------- without root

def _drafter_log(run_dir: Path, name: str, finished: int, tokens: int) -> None:
    (run_dir / "events").mkdir(parents=True, exist_ok=True)
    events = [Welcome(t=1.0, node=name, verifier="verifier"),
              *(Verdict(t=2.0, node=name, session=f"{name}-s{i}", round=0, tokens=tokens) for i in range(finished)),
              *(Finish(t=3.0, node=name, session=f"{name}-s{i}") for i in range(finished))]
    (run_dir / "events" / f"{name}.jsonl").write_bytes(b"".join(map(encode, events)))


def test_progress_in_a_log_prints_plain_lines_and_a_last_one(tmp_path, capsys):
    _drafter_log(tmp_path, "d1", finished=1, tokens=5)
    p = runner._Progress(tmp_path, ["d1", "d2"], total_requests=4, duration=None)
    p.poll()
    p.show()                                     # within 10 s of the first line: nothing new in a log
    _drafter_log(tmp_path, "d2", finished=2, tokens=3)
    p.poll()
    p.show(final=True)
    err = capsys.readouterr().err
    assert "\r" not in err and err.endswith("\n")
    lines = err.splitlines()
    assert len(lines) == 2 and "0/4 requests" in lines[0]
    assert "3/4 requests, 11 tokens" in lines[-1] and "75%" in lines[-1]
    assert p.welcomed == {"d1", "d2"}


def test_progress_of_a_timed_workload_counts_seconds(tmp_path, capsys):
    _drafter_log(tmp_path, "d1", finished=2, tokens=4)
    p = runner._Progress(tmp_path, ["d1"], total_requests=None, duration=30)
    p.poll()
    p.show(final=True)
    last = capsys.readouterr().err.splitlines()[-1]
    assert "/30 s, 2 requests, 8 tokens" in last


def test_link_log_has_the_applied_states(tmp_path):
    class Emu:
        class shaping:
            states = {"d1-ap1": LinkState(10, 20, delay_ms=5, loss_pct=1, loss_down_pct=0.5),
                      "ap1-verifier": LinkState(1000, 1000)}
    runner._log_links(Emu, tmp_path / "links.jsonl")
    lines = [json.loads(l) for l in (tmp_path / "links.jsonl").read_text().splitlines()]
    assert [set(l) for l in lines] == [{"t", "node", "event", "link", "rate_up_mbps", "rate_down_mbps", "delay_ms",
                                        "jitter_ms", "loss_pct", "loss_down_pct"}] * 2
    events, issues = read_events(tmp_path / "links.jsonl")
    assert issues == [] and all(isinstance(e, Link) and e.node == "runner" for e in events)
    assert [(e.link, e.rate_up_mbps, e.delay_ms, e.loss_pct, e.loss_down_pct) for e in events] == [
        ("d1-ap1", 10, 5, 1, 0.5), ("ap1-verifier", 1000, 0, 0, 0)]


def test_wait_ready_reads_the_verifiers_log(tmp_path):
    class Proc:
        returncode = None

        def poll(self):
            return self.returncode

    class Nodes:
        def tail(self, name):
            return "    (its log)"

    log = tmp_path / "v1.jsonl"
    log.write_text('{"t": 1.0, "node": "v1", "eve')                     # half a line: not ready yet
    with pytest.raises(runner.RunFailed, match="verifier v1 was not ready within 0.3 s"):
        runner._wait_ready(Nodes(), Proc(), log, 0.3, "v1")
    log.write_bytes(encode(Ready(t=1.0, node="v1", endpoint="tcp://10.0.0.1:5555")))
    assert runner._wait_ready(Nodes(), Proc(), log, 5, "v1") == "tcp://10.0.0.1:5555"   # where drafters connect
    dead = Proc()
    dead.returncode = 3
    with pytest.raises(runner.RunFailed, match=r"the verifier exited \(3\) before it was ready"):
        runner._wait_ready(Nodes(), dead, tmp_path / "none.jsonl", 5)


def test_several_verifiers_on_the_local_backend_each_take_a_port(tmp_path):
    """Without Mininet every verifier is on this machine's loopback: two of them on the configured port collided
    (the second failed to bind and the run completed nothing); each now binds a free port of its own."""
    r = subprocess.run(TESTBED + ["run", "experiments/routing.yaml", "--set", "backend=local", "--set", "sweep=null",
                                  "--set", "workload.requests=1", "--results", str(tmp_path)],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (d,) = run_dirs(tmp_path, "routing")
    ready = [e for f in sorted((d / "events").glob("v*.jsonl")) for e in events(f) if e["event"] == "ready"]
    assert len(ready) == 2 and ready[0]["endpoint"] != ready[1]["endpoint"]
    assert json.loads((d / "metrics.json").read_text())["complete"]


@pytest.mark.parametrize("backend", ["local", pytest.param("mininet", marks=root)])
def test_drafters_start_only_after_every_verifier_is_ready(tmp_path, monkeypatch, backend):
    """The runner starts the drafters once each verifier has said Ready (its model loaded): a drafter started
    earlier loaded its model beside the verifier's, and on a fresh clone all three converted the same packaged
    model at once (the demo's real-model part failed so)."""
    from testbed.run.experiment import load_experiment
    order = []
    real_wait, real_start = runner._wait_ready, runner.Nodes.start

    def wait(nodes, proc, log, timeout, name="verifier"):
        bound = real_wait(nodes, proc, log, timeout, name)
        order.append(("ready", name))
        return bound

    def start(self, name, host, argv):
        order.append(("start", name))
        return real_start(self, name, host, argv)

    monkeypatch.setattr(runner, "_wait_ready", wait)
    monkeypatch.setattr(runner.Nodes, "start", start)
    exp = load_experiment(REPO / "experiments/routing.yaml",
                          [f"backend={backend}", "sweep=null", "workload.requests=1"]).points()[0]
    result = runner.run_point(exp, tmp_path)
    assert result.status == "complete", result.message
    verifiers = [n for kind, n in order if kind == "ready"]
    first_drafter = next(i for i, (kind, n) in enumerate(order) if kind == "start" and n not in verifiers)
    assert len(verifiers) == 2 and all(order.index(("ready", v)) < first_drafter for v in verifiers), order
