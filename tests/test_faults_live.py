"""Link faults on real Mininet (root): repeated outages of the verifier's link, applied by the channel driver as
drop-everything states through the delay daemon, are logged, and every session still completes with exactly the
tokens of the same run without them (TCP retransmits; nothing is lost above it)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nodes.events import Fault, Link, of_type, read_events
from testbed.channels.faults import DOWN_LOSS_PCT

REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
# The nodes start after the network (at_s counts from the network's start), and how long they take depends on
# the host's load, so outages repeat from early on: some of them hit the sessions wherever they begin.
OUTAGES = [{"kind": "outage", "link": "ap1-verifier", "at_s": 1.0, "duration_s": 0.5, "every_s": 1.5, "count": 12}]


def experiment(tmp_path, faults) -> Path:
    exp = {"name": "faults", "topology": str(REPO / "topologies/star-wifi-4.yaml"), "backend": "mininet",
           "links": {f"d{i}-ap1": {"delay_ms": 5, "jitter_ms": 0, "loss_pct": 0} for i in range(1, 5)},
           "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 20, "verify_per_token_ms": 1},
           "drafters": {"nodes": ["d1", "d2"], "backend": "synthetic", "vocab_size": 32000, "alpha": 0.8,
                        "draft_token_ms": 4},
           "workload": {"prompts": "builtin", "requests": 4, "max_new": 64, "temperature": 0.0},
           "speculation": {"gamma": 4, "payload": "ids"}, "seed": 0,
           "limits": {"ready_timeout_s": 60, "run_timeout_s": 120}, "faults": faults}
    path = tmp_path / ("faulted.yaml" if faults else "clean.yaml")
    path.write_text(yaml.safe_dump(exp))
    return path


def run(path: Path, results: Path) -> Path:
    r = subprocess.run(TESTBED + ["run", str(path), "--results", str(results)], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (d,) = sorted(p for p in (results / "faults").iterdir() if (p / "manifest.json").exists())
    return d


def tokens_of(d: Path) -> dict:
    return {f.name: [json.loads(l)["tokens"] for l in f.read_text().splitlines()]
            for f in sorted((d / "outputs").glob("*.jsonl"))}


@pytest.mark.root
def test_outages_on_mininet_keep_every_session_and_token(tmp_path):
    faulted = run(experiment(tmp_path, OUTAGES), tmp_path / "faulted")
    clean = run(experiment(tmp_path, []), tmp_path / "clean")
    assert tokens_of(faulted) == tokens_of(clean)
    assert all(len(v) == 4 for v in tokens_of(faulted).values()) and len(tokens_of(faulted)) == 2
    events = read_events(faulted / "events" / "links.jsonl")[0]
    marks = of_type(events, Fault)
    assert marks and marks[0].edge == "start" and marks[0].t_model_s == 1.0
    assert any(e.link == "ap1-verifier" and e.loss_pct == DOWN_LOSS_PCT for e in of_type(events, Link))
    man = json.loads((faulted / "manifest.json").read_text())
    assert "ap1-verifier" in man["channels"]["links"] and "ap1-verifier" in man["channels"]["live_delay_links"]
    m = json.loads((faulted / "metrics.json").read_text())
    assert m["complete"] and m["faults"]["applied"]
    hit = [o for o in m["faults"]["occurrences"] if o["sessions_affected"] and o["pre_goodput_tps"]]
    assert hit, m["faults"]
    assert max(o["dip"] for o in hit) > 0.5           # the verifier's link carried next to nothing
    print(json.dumps(hit, indent=1))
