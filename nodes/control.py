"""The verifier's window control: what speculation length each session gets in its next VERDICT.

Two layers, both pure policies from testbed/policies (this module only feeds them and logs them):
- a speculation policy per session (`speculation.policy`: static, heuristic, backoff, threshold, network, awc)
  that learns from each verified round and, for `network`, from a view of the drafter's link;
- optionally a verification budget across sessions (`scheduling.scheduler`: GoodSpeed, Fixed-S, Random-S):
  after each batch it splits C draft tokens among all open sessions, and its split overrides the per-session
  policy. GoodSpeed's rounds are synchronous; run it with `batching.rule: sync` to match the paper.
Every decision is logged with its inputs (event "policy", and "schedule" for the budget split), so runs can be
explained and AWC retrained from them.

`LinkView` reads the link state the runner publishes (RUN/linkstate.json: per drafter, its path's uplink and
downlink rate and base RTT, rewritten by the channel driver every tick).
"""
from __future__ import annotations

import inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from testbed.policies.scheduling import GoodSpeedEstimator, make_scheduler
from testbed.policies.speculation import (EWMA, GAMMA_LIMIT, SPECULATION_POLICIES, NetworkView, RoundResult,
                                          make_speculation)

ID_BYTES = 4                  # a token id on the wire (int32)


def payload_bytes_per_token(payload: str, vocab_size: int) -> float:
    """Bytes a drafted token adds to a DRAFT frame: its id, plus K (id, prob) pairs or a full q row."""
    if payload.startswith("topk:"):
        return ID_BYTES + 8 * int(payload[5:])
    if payload == "full":
        return ID_BYTES + 4 * vocab_size
    return ID_BYTES


class LinkView:
    """The drafters' link state as the runner publishes it; re-read when the file changes (at most every 50 ms)."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.mtime = None
        self.checked = 0.0
        self.drafters: dict[str, dict] = {}

    def get(self, drafter: str) -> dict:
        now = time.monotonic()
        if self.path and now - self.checked > 0.05:
            self.checked = now
            try:
                mtime = os.stat(self.path).st_mtime_ns
                if mtime != self.mtime:
                    self.drafters = json.loads(self.path.read_text()).get("drafters", {})
                    self.mtime = mtime
            except (OSError, ValueError):   # not written yet, or mid-replace: keep the last view
                pass
        return self.drafters.get(drafter, {})


@dataclass
class _SessionControl:
    drafter: str
    policy: object
    per_token: float              # payload bytes per drafted token
    fixed_bytes: EWMA = field(default_factory=lambda: EWMA(0.2))    # DRAFT frame bytes beyond the tokens
    draft_per_token: EWMA = field(default_factory=lambda: EWMA(0.2))


class WindowControl:
    def __init__(self, speculation: dict | str = "static", scheduler: dict | None = None,
                 link_state: str | None = None, log=None):
        self.spec = {"policy": speculation} if isinstance(speculation, str) else dict(speculation)
        self.spec.setdefault("policy", "static")
        self.policy_name = self.spec["policy"]
        self.policy_for(4)                       # a bad policy spec fails now, not at the first session
        scheduler = dict(scheduler or {})
        self.budget = int(scheduler.pop("budget", 0))
        est = {k: scheduler.pop(k) for k in ("eta", "beta") if k in scheduler}
        name = scheduler.pop("scheduler", None)
        self.scheduler = make_scheduler(name, **scheduler) if name else None
        self.estimator = GoodSpeedEstimator(**est) if self.scheduler else None
        self.links = LinkView(link_state)
        self.log = log
        self.sessions: dict[str, _SessionControl] = {}
        self.assigned: dict[str, int] = {}

    def policy_for(self, requested: int):
        """A policy for a session that asked for window `requested` at START: the spec's own starting window
        (gamma for static, gamma0 for adaptive ones) defaults to it."""
        spec = dict(self.spec)
        start = "gamma" if spec["policy"] == "static" else "gamma0"
        ctor = SPECULATION_POLICIES.get(spec["policy"])
        if ctor is not None and start in inspect.signature(ctor).parameters and start not in spec:
            spec[start] = requested
            if "gamma_max" not in spec and requested > 16:   # the policies' default cap is 16
                spec["gamma_max"] = min(GAMMA_LIMIT, requested)
        return make_speculation(spec)()

    def open(self, key: str, drafter: str, payload: str, vocab_size: int, requested: int) -> None:
        self.sessions[key] = _SessionControl(drafter, self.policy_for(requested),
                                             payload_bytes_per_token(payload, vocab_size))
        if self.estimator:
            self.estimator.add(key)

    def close(self, key: str) -> None:
        self.sessions.pop(key, None)
        self.assigned.pop(key, None)
        if self.estimator:
            self.estimator.remove(key)

    def view(self, key: str) -> NetworkView:
        c = self.sessions[key]
        link = self.links.get(c.drafter)
        return NetworkView(rtt_s=link.get("rtt_s"), uplink_mbps=link.get("uplink_mbps"),
                           downlink_mbps=link.get("downlink_mbps"), gamma_hint=link.get("gamma"),
                           bytes_per_token_up=c.per_token,
                           bytes_fixed_up=c.fixed_bytes.value if c.fixed_bytes.value is not None else 120.0,
                           draft_s_per_token=c.draft_per_token.value)

    def observe(self, key: str, gamma: int, accepted: int, *, rtt_s: float, draft_s: float, queue_s: float,
                verify_s: float, bytes_in: int, accept_probs: list[float] | None = None) -> None:
        """One verified round of session `key` (telemetry from its DRAFT frame and the batch)."""
        c = self.sessions[key]
        c.fixed_bytes.update(max(0.0, bytes_in - gamma * c.per_token))
        if gamma and draft_s > 0:
            c.draft_per_token.update(draft_s / gamma)
        probs = tuple(accept_probs) if accept_probs is not None and len(accept_probs) == gamma else None
        c.policy.observe(RoundResult(gamma, accepted, time.time(), rtt_s or None, verify_s, queue_s,
                                     draft_s or None, probs))
        if self.estimator:
            # eq. 3 over every drafted position (the backends report min(1, p/q), or 1/0 for greedy);
            # accepted/drafted, biased low, only where a backend does not
            self.estimator.observe(key, probs, accepted, gamma)

    def next_windows(self, keys: list[str]) -> dict[str, int]:
        """The windows to send to the sessions of this batch (after observe() for each)."""
        now = time.time()
        out = {}
        for key in keys:
            c = self.sessions[key]
            net = self.view(key)
            gamma = c.policy.next_window(now, net)
            out[key] = gamma
            if self.log:
                self.log.write("policy", session=key, policy=self.policy_name, gamma=gamma,
                               alpha=getattr(c.policy, "alpha", None), rtt_s=net.rtt_s, uplink_mbps=net.uplink_mbps,
                               downlink_mbps=net.downlink_mbps, bytes_per_token=net.bytes_per_token_up,
                               draft_s_per_token=net.draft_s_per_token)
        if self.scheduler:
            estimates = self.estimator.estimates()
            alloc = self.scheduler.allocate(estimates, self.budget)
            self.assigned.update(alloc)
            out = {key: alloc.get(key, out[key]) for key in keys}
            if self.log:
                self.log.write("schedule", scheduler=self.scheduler.name, budget=self.budget,
                               estimates={e.name: [round(e.alpha, 6), round(e.goodput, 6)] for e in estimates},
                               allocation=alloc)
        return out


class ZhuPlanner:
    """Batching rule `zhu`: Zhu et al.'s DP (testbed/policies/zhu_dp.py) used online, receding-horizon style.
    Whenever the verifier is free it plans all pending sessions (output still to generate, acceptance so far)
    into contiguous batches with a speculation length each, verifies the plan's first batch now and gives its
    sessions the plan's length as their next window; the rest wait for the next plan, made with fresher
    estimates. Cost model mapping (the DP's is stated in zhu_dp.py): our drafters draft in parallel, one
    session each, so a draft step costs draft_a = the measured draft time per token whatever the batch
    (draft_b = 0); a verify pass costs verify_a + verify_b · tokens, fitted online to the measured batches by
    exponentially weighted least squares. Objective: sum of completion times."""

    LENGTHS = (1, 2, 3, 4, 5, 6, 7, 8)

    def __init__(self, max_batch: int, decay: float = 0.95):
        self.max_batch, self.decay = max_batch, decay
        self.fit = [0.0, 0.0, 0.0, 0.0, 0.0]        # weighted n, Σx, Σy, Σxx, Σxy (x tokens, y verify_s)
        self.draft_per_token = EWMA(0.2)
        self.counts: dict[str, list[float]] = {}    # session -> [accepted, rejections] (α = a / (a + r))

    def observe_batch(self, tokens: int, verify_s: float) -> None:
        f = self.fit
        for i, v in enumerate((1.0, tokens, verify_s, tokens * tokens, tokens * verify_s)):
            f[i] = self.decay * f[i] + v

    def observe_round(self, key: str, gamma: int, accepted: int, draft_s: float) -> None:
        c = self.counts.setdefault(key, [1.0, 1.0])   # a uniform prior: α = 0.5 before any round
        c[0] += accepted
        c[1] += accepted < gamma
        if gamma and draft_s > 0:
            self.draft_per_token.update(draft_s / gamma)

    def cost_model(self):
        from testbed.policies.zhu_dp import CostModel
        n, sx, sy, sxx, sxy = self.fit
        den = n * sxx - sx * sx
        b = (n * sxy - sx * sy) / den if n >= 2 and den > 1e-9 else 0.0
        b = max(0.0, b)
        a = max(0.0, (sy - b * sx) / n) if n > 0 else 0.01
        return CostModel(draft_a=self.draft_per_token.value or 0.002, draft_b=0.0, verify_a=a, verify_b=b,
                         max_batch=self.max_batch, lengths=self.LENGTHS)

    def plan(self, sessions: list[tuple[str, int, int]]):
        """sessions: (key, tokens still to generate, prompt+generated length) of the pending drafts, oldest
        first. Returns (keys of the first batch, its length, the plan)."""
        from testbed.policies.zhu_dp import Task, plan_dp
        tasks = [Task(key, max(1, committed), max(1, remaining),
                      alpha=min(0.99, max(0.01, self._alpha(key))))
                 for key, remaining, committed in sessions]
        plan = plan_dp(tasks, self.cost_model(), objective="sum")
        return set(plan.batches[0]), plan.lengths[0], plan

    def _alpha(self, key: str) -> float:
        a, r = self.counts.get(key, (1.0, 1.0))
        return a / (a + r)

    def forget(self, key: str) -> None:
        self.counts.pop(key, None)
