"""Nothing outlives a run: `testbed run` killed with SIGKILL at 20 moments spread over set-up, the run and teardown.

After each kill, within 5 s no node, delay daemon or Mininet shell of the run is alive (the kernel's death signal
and the run's watchdog); the watchdog then removes its bridges and links and its registry entry, and marks its
manifest killed with partial metrics; `testbed clean` finds nothing left. The moments are stratified over the
duration of one unkilled run measured first (seeded: the seed is in the test's output, so a failure reruns).
"""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from testbed.net.runs import BRIDGE_RE, ENV_VAR, link_names, links_of, registry_dir

pytestmark = pytest.mark.root
REPO = Path(__file__).resolve().parent.parent
TESTBED = [sys.executable, "-m", "testbed.cli"]
TRIALS = 20
STATION = {"rate_up_mbps": 10, "rate_down_mbps": 10, "delay_ms": 15, "jitter_ms": 0, "loss_pct": 0}


def experiment(tmp_path: Path) -> Path:
    exp = {"name": "sigkill", "topology": str(REPO / "topologies/star-wifi-4.yaml"), "backend": "mininet",
           "links": {f"d{i}-ap1": STATION for i in range(1, 5)},
           "workload": {"prompts": "builtin", "requests": 1, "max_new": 32},
           "speculation": {"gamma": 4, "payload": "ids"}, "seed": 0,
           "verifier": {"backend": "synthetic", "vocab_size": 32000, "verify_base_ms": 20, "verify_per_token_ms": 1},
           "drafters": {"backend": "synthetic", "vocab_size": 32000, "alpha": 0.8, "draft_token_ms": 4}}
    path = tmp_path / "sigkill.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def run_tags() -> dict[int, str]:
    """Every process carrying a run's tag, and the tag."""
    tags = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                env = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            for var in env:
                if var.startswith(f"{ENV_VAR}=".encode()):
                    tags[int(entry.name)] = var.split(b"=", 1)[1].decode()
    return tags


def mentions(text: str) -> list[int]:
    """Processes whose command line names `text` (a trial's results directory: every node's config is in it)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def survivors(results: Path, before: set[str]) -> dict[int, str]:
    """The trial's processes still alive (not zombies), with their command lines."""
    new = new_run_ids(before)
    pids = set(mentions(str(results))) | {pid for pid, tag in run_tags().items() if tag in new}
    out = {}
    for pid in pids:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                out[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
        except OSError:
            continue
    return out


def new_run_ids(before: set[str]) -> set[str]:
    ids = set(run_tags().values()) | {p.stem for p in registry_dir().glob("*.json")} | \
        {m.group(1) for m in map(BRIDGE_RE.match, link_names()) if m}
    return ids - before


def wait_until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def start(exp: Path, results: Path) -> subprocess.Popen:
    return subprocess.Popen(TESTBED + ["run", str(exp), "--results", str(results)], cwd=REPO,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_sigkill_at_20_moments_leaves_no_process_and_nothing_after_clean(tmp_path):
    exp = experiment(tmp_path)
    before = set(run_tags().values()) | {p.stem for p in registry_dir().glob("*.json")}
    t0 = time.monotonic()
    full = start(exp, tmp_path / "full")
    assert full.wait(300) == 0
    duration = time.monotonic() - t0
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    moments = [(i + rng.random()) / TRIALS * duration for i in range(TRIALS)]
    print(f"seed {seed}; unkilled run {duration:.1f} s; kill moments {', '.join(f'{m:.2f}' for m in moments)}")
    statuses = []
    for i, moment in enumerate(moments):
        results = tmp_path / f"trial{i}"
        p = start(exp, results)
        time.sleep(moment)          # the moment of the kill is what the test varies, not a stand-in for a measurement
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        where = f"trial {i} (killed at {moment:.2f} s of {duration:.1f} s; seed {seed})"
        assert wait_until(lambda: not survivors(results, before), 5.0), \
            f"{where}: still alive 5 s later: {survivors(results, before)}"
        # the watchdog removes the links, the registry entry, and marks the manifest
        assert wait_until(lambda: not new_run_ids(before), 30.0), f"{where}: left {new_run_ids(before)}"
        assert "nothing to clean" in subprocess.run(TESTBED + ["clean"], capture_output=True, text=True,
                                                    timeout=60).stdout, where
        for man in results.glob("*/*/manifest.json"):
            log = man.parent / "logs" / "watchdog.log"
            # a killed run's watchdog finishes with a line, after the manifest and the metrics
            assert wait_until(lambda: json.loads(man.read_text())["status"] == "complete" or
                              log.exists() and "watchdog of run" in log.read_text(), 30), f"{where}: not finalised"
            status = json.loads(man.read_text())["status"]
            assert status in ("killed", "complete"), f"{where}: manifest says {status}"
            statuses.append(status)
            if status == "killed":
                assert (man.parent / "metrics.json").exists(), f"{where}: no partial metrics"
    assert "killed" in statuses, "no kill landed while a run was going"
    assert not any(links_of(r) for r in new_run_ids(before))
