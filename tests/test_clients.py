"""Users' clients (workload.arrivals clients, Zhu et al.'s users): each user host uploads its requests to the
drafter that serves it and gets every answer back, lossless; the upload rides the user's shaped wireless link and
its known size is the AP's demand; bad configs and hostile requests are refused with one line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from nodes import protocol as P
from nodes.backends.synthetic import ComputeProfile, SyntheticDraft
from nodes.config import ClientConfig, DrafterConfig
from nodes.core.actions import ClientAddr, Send
from nodes.core.client import ClientCore, ClientError, prompt_text
from nodes.core.drafter import DrafterCore

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]

EXP = {
    "name": "clients", "topology": str(REPO / "topologies/zhu-4.yaml"), "backend": "sim",
    "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 10, "verify_per_token_ms": 0.5},
    "drafters": {"backend": "synthetic", "vocab_size": 32000, "draft_token_ms": 2, "alpha": 0.7},
    "workload": {"arrivals": "clients", "max_new": 64},
    "clients": {"requests": 2, "prompt_len": {"dist": "uniform", "min": 64, "max": 512},
                "output_len": {"dist": "uniform", "min": 16, "max": 64}},
    "speculation": {"gamma": 4, "proactive": False},
    "batching": {"rule": "fifo", "max_batch": 16},
    "limits": {"ready_timeout_s": 60, "run_timeout_s": 300},
}


def run(exp: dict, tmp: Path, *sets: str, name: str = "exp.yaml") -> subprocess.CompletedProcess:
    path = tmp / name
    path.write_text(yaml.safe_dump(exp))
    return subprocess.run(TESTBED + ["run", str(path), "--results", str(tmp / "results"), *sum((["--set", s] for s in sets), [])],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


def run_dir(tmp: Path) -> Path:
    return sorted((tmp / "results").glob("*/*/"))[-1]


def answers(d: Path) -> dict[str, dict]:
    return {r["request"]: r for f in sorted((d / "outputs").glob("u*.jsonl")) for r in map(json.loads, f.read_text().splitlines())}


def events(d: Path, node: str, kind: str) -> list[dict]:
    return [e for e in map(json.loads, (d / "events" / f"{node}.jsonl").read_text().splitlines()) if e["event"] == kind]


def test_every_request_is_answered_with_exactly_the_autoregressive_output(tmp_path):
    sd, ad = tmp_path / "sd", tmp_path / "ad"
    sd.mkdir(), ad.mkdir()
    r = run(EXP, sd)
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(EXP, ad, "speculation.gamma=0")
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = answers(run_dir(sd)), answers(run_dir(ad))
    assert sorted(got) == [f"u{u}-r{i}" for u in range(4) for i in range(2)]
    assert {k: v["tokens"] for k, v in got.items()} == {k: v["tokens"] for k, v in want.items()}
    # the drafter's sessions are the requests, with the asked lengths
    asks = {e["request"]: e for u in range(4) for e in events(run_dir(sd), f"u{u}", "ask")}
    starts = {e["request"]: e for e in events(run_dir(sd), "sbs", "start")}
    assert set(starts) == set(asks)
    assert all(starts[k]["prompt_tokens"] == asks[k]["prompt_tokens"] for k in asks)
    assert all(len(got[k]["tokens"]) == asks[k]["max_new"] for k in asks)
    m = json.loads((run_dir(sd) / "metrics.json").read_text())["total"]
    assert m["client_requests"] == 8 and m["complete"]
    assert m["client_total_latency_s"] == pytest.approx(sum(v["latency_s"] for v in got.values()))
    # the upload rides the user's shaped link: its time grows with the prompt (1 MHz shared by 4 users)
    assert m["upload_mean_s"] > 0.002


def test_the_band_split_sees_each_users_known_upload(tmp_path):
    r = run(EXP, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    d = run_dir(tmp_path)
    sizes: dict[str, float] = {}
    for u in range(4):
        for e in events(d, f"u{u}", "ask"):
            sizes[f"u{u}"] = sizes.get(f"u{u}", 0) + e["prompt_tokens"] * 4 + 80
    ticks = [e for e in map(json.loads, (d / "events" / "links.jsonl").read_text().splitlines())
             if e.get("tick") == 0 and e.get("station", "").startswith("u")]
    assert {e["station"]: e["demand_up"] for e in ticks} == sizes
    # Zhu's closed form: share ∝ sqrt(D / s)
    w = {e["station"]: (e["demand_up"] / e["full_band_rate_up_mbps"]) ** 0.5 for e in ticks}
    for e in ticks:
        assert e["share_up"] == pytest.approx(w[e["station"]] / sum(w.values()), rel=1e-4)


@pytest.mark.root
def test_real_clients_on_mininet_user_hosts_get_the_simulators_answers(tmp_path):
    sim, emu = tmp_path / "sim", tmp_path / "emu"
    sim.mkdir(), emu.mkdir()
    exp = {**EXP, "clients": {**EXP["clients"], "requests": 1}}
    assert run(exp, sim).returncode == 0
    r = run(exp, emu, "backend=mininet")
    assert r.returncode == 0, r.stderr[-3000:]
    got, want = answers(run_dir(emu)), answers(run_dir(sim))
    assert {k: v["tokens"] for k, v in got.items()} == {k: v["tokens"] for k, v in want.items()}
    assert len(got) == 4
    m = json.loads((run_dir(emu) / "metrics.json").read_text())["total"]
    assert m["complete"] and m["upload_mean_s"] > 0


# -- config checks --------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    ({"clients": None}, "clients: workload.arrivals clients needs a clients section"),
    ({"workload": {"arrivals": "closed"}}, "workload.arrivals: a clients section needs workload.arrivals: clients"),
    ({"clients": {"users": ["sbs"]}}, "clients.users[0]: sbs is a drafter; expected a host with role user"),
    ({"clients": {"drafter": "u1"}}, "clients.drafter: u1 is not one of the drafters (sbs)"),
    ({"clients": {"requests": 0}}, "clients.requests"),
    ({"clients": {"prompt_len": {"dist": "uniform", "min": 5}}}, "clients.prompt_len"),
    ({"clients": {"arrivals": "poisson"}}, "clients.rate_per_s: arrivals poisson needs rate_per_s"),
    ({"workload": {"arrivals": "clients", "duration_s": 5, "requests": None}}, "workload.duration_s: not with arrivals clients"),
])
def test_bad_clients_settings_are_one_line_each(tmp_path, change, message):
    exp = dict(EXP)
    for k, v in change.items():
        exp[k] = v if v is None or k != "clients" else {**EXP["clients"], **v}
    exp = {k: v for k, v in exp.items() if v is not None}
    r = run(exp, tmp_path)
    assert r.returncode == 2
    assert message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# -- the cores ------------------------------------------------------------------------------------------

def drafter(requests: int = 2) -> DrafterCore:
    config = DrafterConfig(name="sbs", workload={"arrivals": "clients", "requests": requests, "max_new": 16},
                           clients_bind="tcp://127.0.0.1:5600", model={"backend": "synthetic", "vocab_size": 1000})
    core = DrafterCore(config, SyntheticDraft(1000, 0.7, ComputeProfile(0.002)), [("x", [1, 2])])
    core.on_welcome("tcp://v", P.encode(P.Welcome("verifier", "m", "synthetic", 1000)), 0.0)
    core.begin(0.0)
    return core


def test_hostile_client_frames_get_an_error_and_the_drafter_serves_the_rest():
    core = drafter()
    out = core.on_client_frames([("evil", b"\x00garbage"),
                                 ("evil", P.encode(P.Welcome("x", "m", "t", 5))),
                                 ("u1", P.encode(P.Ask("u1-r0", b"hello there", 20, 8, 0.0)))], 0.1)
    errors = [a for a in out if isinstance(a, Send) and a.to == ClientAddr("evil")]
    assert [P.decode(a.frame).code for a in errors] == ["bad_frame", "bad_type"]
    starts = [P.decode(a.frame) for a in out if isinstance(a, Send) and a.to == "verifier"]
    assert len(starts) == 1 and len(starts[0].prompt) == 20 and starts[0].max_new == 8


@pytest.mark.parametrize("fields, where", [
    (dict(prompt="text"), "ask.prompt: expected UTF-8 bytes"),
    (dict(prompt=b"\xff\xfe"), "ask.prompt: is not valid UTF-8"),
    (dict(prompt=b""), "ask.prompt: length 0"),
    (dict(prompt_tokens=0), "ask.prompt_tokens"),
    (dict(max_new=True), "ask.max_new: expected int, got bool"),
    (dict(request="a b"), "ask.request"),
])
def test_a_bad_ask_is_refused_by_field(fields, where):
    good = dict(request="u1-r0", prompt=b"hi", prompt_tokens=4, max_new=8, t_send=0.0)
    with pytest.raises(P.ProtocolError, match=where.replace("(", r"\(")):
        P.Ask(**{**good, **fields})


def test_a_client_sends_at_its_times_and_fails_on_a_foreign_answer():
    config = ClientConfig(name="u1", requests=[{"request": "u1-r0", "at_s": 0.0, "prompt_tokens": 8, "max_new": 4},
                                               {"request": "u1-r1", "at_s": 2.0, "prompt_tokens": 3, "max_new": 4}])
    core = ClientCore(config, ["The capital of France is"])
    out = core.begin(10.0)
    sent = [P.decode(a.frame) for a in out if isinstance(a, Send)]
    assert [a.request for a in sent] == ["u1-r0"] and len(sent[0].prompt) == 32       # 8 tokens x 4 characters
    assert out[-1].t == 12.0                                                          # woken for the next request
    sent = [P.decode(a.frame) for a in core.on_timer(12.0) if isinstance(a, Send)]
    assert [a.request for a in sent] == ["u1-r1"]
    with pytest.raises(ClientError, match="expected ANSWER"):
        core.on_frames([("drafter", P.encode(P.Answer("u9-r0", np.zeros(2, np.int32), b"", 0.0)))], 13.0)


def test_prompt_text_is_cut_or_repeated_to_length():
    assert len(prompt_text(["abc"], 0, 10)) >= 10
    assert prompt_text(["a long prompt"], 3, 4).startswith("a long")
