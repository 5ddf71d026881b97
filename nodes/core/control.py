"""The verifier's window control: what speculation length each session gets in its next VERDICT.

Two layers, both pure policies from testbed/policies (this module only feeds them and reports them):
- a speculation policy per session (`speculation.policy`: static, heuristic, backoff, network, channel, awc;
  a threshold rule's verifier share is a static window at its cap) that learns from each verified round and,
  for `network`, from a view of the drafter's link;
- optionally a verification budget across sessions (`scheduling.scheduler`: GoodSpeed, Fixed-S, Random-S):
  after each batch it splits C draft tokens among all open sessions, and its split overrides the per-session
  policy. GoodSpeed's rounds are synchronous; run it with `batching.rule: sync` to match the paper.
Every decision is returned as an event with its inputs ("policy", and "schedule" for the budget split), so runs
can be explained and AWC retrained from them. The drafters' link state comes in with `set_links` (the shell
reads RUN/linkstate.json, which the runner keeps current; a simulator gives its own).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from nodes import events as E
from nodes.config import Scheduling
from testbed.policies.scheduling import GoodSpeedEstimator, make_scheduler
from testbed.policies.spec_checks import GAMMA_LIMIT
from testbed.policies.speculation import EWMA, SPECULATION_POLICIES, NetworkView, RoundResult, make_speculation

ID_BYTES = 4                  # a token id on the wire (int32)


def payload_bytes_per_token(payload: str, vocab_size: int) -> float:
    """Bytes a drafted token adds to a DRAFT frame: its id, plus K (id, prob) pairs or a full q row."""
    if payload.startswith("topk:"):
        return ID_BYTES + 8 * int(payload[5:])
    if payload == "full":
        return ID_BYTES + 4 * vocab_size
    return ID_BYTES


@dataclass
class _SessionControl:
    drafter: str
    policy: object
    per_token: float              # payload bytes per drafted token
    fixed_bytes: EWMA = field(default_factory=lambda: EWMA(0.2))    # DRAFT frame bytes beyond the tokens
    draft_per_token: EWMA = field(default_factory=lambda: EWMA(0.2))


class WindowControl:
    def __init__(self, speculation: dict | str = "static", scheduling: Scheduling | None = None, seed: int = 0,
                 node: str = "verifier"):
        self.spec = {"policy": speculation} if isinstance(speculation, str) else dict(speculation)
        self.spec.setdefault("policy", "static")
        self.policy_name = self.spec["policy"]
        self.node = node
        self.policy_for(4)                       # a bad policy spec fails now, not at the first session
        sch = scheduling or Scheduling()
        self.budget = sch.budget
        self.scheduler = self.estimator = None
        if sch.scheduler:
            params = {"min_s": sch.min_s, **({"max_s": sch.max_s} if sch.max_s is not None else {}),
                      **({"utility": sch.utility} if sch.scheduler == "goodspeed" else {}),
                      **({"seed": seed} if sch.scheduler == "random" else {})}
            self.scheduler = make_scheduler(sch.scheduler, **params)
            self.estimator = GoodSpeedEstimator(eta=sch.eta, beta=sch.beta)
        self.links: dict[str, dict] = {}
        self.sessions: dict[str, _SessionControl] = {}
        self.assigned: dict[str, int] = {}

    def policy_for(self, requested: int):
        """A policy for a session that asked for window `requested` at START: the policy's starting window
        (its `start_field`: gamma for static, gamma0 for adaptive ones) defaults to it."""
        spec = dict(self.spec)
        ctor = SPECULATION_POLICIES.get(spec["policy"])
        start = getattr(ctor, "start_field", None)
        if start is not None and start not in spec:
            spec[start] = requested
            if "gamma_max" not in spec and requested > 16:   # the policies' default cap is 16
                spec["gamma_max"] = min(GAMMA_LIMIT, requested)
        return make_speculation(spec)()

    def set_links(self, drafters: dict[str, dict]) -> None:
        """Per drafter: uplink_mbps, downlink_mbps, rtt_s and optionally gamma (an AP's joint choice)."""
        self.links = drafters

    def open(self, key: str, drafter: str, payload: str, vocab_size: int, requested: int) -> None:
        self.sessions[key] = _SessionControl(drafter, self.policy_for(requested),
                                             payload_bytes_per_token(payload, vocab_size))
        if self.estimator:
            # GoodSpeed's estimates belong to the draft server: a new prompt on it starts from what its earlier
            # ones taught (its model pair's acceptance), not from alpha-hat 0.5, X = 1 again
            self.estimator.add(drafter)

    def close(self, key: str) -> None:
        self.sessions.pop(key, None)
        self.assigned.pop(key, None)

    def view(self, key: str) -> NetworkView:
        c = self.sessions[key]
        link = self.links.get(c.drafter, {})
        return NetworkView(rtt_s=link.get("rtt_s"), uplink_mbps=link.get("uplink_mbps"),
                           downlink_mbps=link.get("downlink_mbps"), gamma_hint=link.get("gamma"),
                           bytes_per_token_up=c.per_token,
                           bytes_fixed_up=c.fixed_bytes.value if c.fixed_bytes.value is not None else 120.0,
                           draft_s_per_token=c.draft_per_token.value)

    def observe(self, key: str, gamma: int, accepted: int, now: float, *, rtt_s: float, draft_s: float,
                queue_s: float, verify_s: float, bytes_in: int, accept_probs: list[float] | None = None) -> None:
        """One verified round of session `key` (telemetry from its DRAFT frame and the batch)."""
        c = self.sessions[key]
        c.fixed_bytes.update(max(0.0, bytes_in - gamma * c.per_token))
        if gamma and draft_s > 0:
            c.draft_per_token.update(draft_s / gamma)
        probs = tuple(accept_probs) if accept_probs is not None and len(accept_probs) == gamma else None
        c.policy.observe(RoundResult(gamma, accepted, now, rtt_s or None, verify_s, queue_s, draft_s or None, probs))
        if self.estimator:
            # eq. 3 over every drafted position (the backends report min(1, p/q), or 1/0 for greedy);
            # accepted/drafted, biased low, only where a backend does not
            self.estimator.observe(c.drafter, probs, accepted, gamma)

    def next_windows(self, keys: list[str], now: float) -> tuple[dict[str, int], list[E.Event]]:
        """The windows to send to the sessions of this batch (after observe() for each), and the decisions."""
        out, events = {}, []
        for key in keys:
            c = self.sessions[key]
            net = self.view(key)
            gamma = c.policy.next_window(now, net)
            out[key] = gamma
            events.append(E.Policy(t=now, node=self.node, session=key, policy=self.policy_name, gamma=gamma,
                                   alpha=getattr(c.policy, "alpha", None), rtt_s=net.rtt_s,
                                   uplink_mbps=net.uplink_mbps, downlink_mbps=net.downlink_mbps,
                                   bytes_per_token=net.bytes_per_token_up, draft_s_per_token=net.draft_s_per_token))
        if self.scheduler:
            # the budget is split among the open sessions, each with its draft server's estimates
            estimates = [self.estimator.estimate(c.drafter, key) for key, c in sorted(self.sessions.items())]
            alloc = self.scheduler.allocate(estimates, self.budget) if self._fits(len(estimates)) else \
                self._degraded(estimates)
            self.assigned.update(alloc)
            out = {key: alloc.get(key, out[key]) for key in keys}
            events.append(E.Schedule(t=now, node=self.node, scheduler=self.scheduler.name, budget=self.budget,
                                     estimates={e.name: [round(e.alpha, 6), round(e.goodput, 6)] for e in estimates},
                                     allocation=alloc))
        return out, events

    def _fits(self, n: int) -> bool:
        return n * self.scheduler.min_s <= self.budget

    def _degraded(self, estimates) -> dict[str, int]:
        """More sessions open than the budget can give min_s each (open-loop arrivals; a closed loop is checked
        before the run): the scheduler with the largest min_s that fits, never an error mid-run."""
        from dataclasses import replace
        floor = self.budget // len(estimates)
        lower = replace(self.scheduler, min_s=floor,
                        max_s=None if self.scheduler.max_s is None else max(floor, self.scheduler.max_s))
        if hasattr(self.scheduler, "_rng"):          # Random-S: the same draw stream, not a fresh one each round
            object.__setattr__(lower, "_rng", self.scheduler._rng)
        return lower.allocate(estimates, self.budget)
