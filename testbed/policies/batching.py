"""When the verifier runs a batch, and which pending drafts go into it.

Whenever the verifier is free it calls `select(pending, now, active)` with its queue of pending drafts (oldest
first), the current time and how many sessions it has open, and verifies the drafts at the returned indices;
after each batch it calls `observe(rounds, tokens, verify_s)`, and `forget(key)` when a session ends. Rules:

- fifo    whatever is pending, oldest first, up to max_batch, at once.
- window  wait up to window_s after the oldest pending draft for more to arrive.
- sync    GoodSpeed's synchronous rounds: wait for a draft from every open session.
- length  similar windows together, under a cap on padded tokens (DSD's LAB, as we define it).
- zhu     Zhu et al.'s batching + speculation-length DP, re-planned online; it also picks the next windows.

`make_batching(rule, ...)` builds any of them.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, Sequence

from testbed.policies.speculation import EWMA
from testbed.policies.zhu_dp import CostModel, Task, plan_dp


@dataclass(frozen=True)
class Pending:
    """What a batching rule sees of one pending draft (the verifier's queue, oldest first)."""
    key: str              # session key, unique at the verifier
    arrived: float        # arrival time of the draft (s, the verifier's clock)
    window: int           # drafted tokens in it (0: the prefill or an autoregressive step)
    remaining: int        # tokens the session may still generate (max_new − generated so far), >= 1
    context: int          # tokens committed so far (prompt + generated), >= 1
    prefill: bool = False  # the session's first request (its prompt, `context` tokens), not a drafted window

    def __post_init__(self) -> None:       # a miscounted session would silently skew zhu's plan
        if self.window < 0 or self.remaining < 1 or self.context < 1:
            raise ValueError(f"pending draft {self.key!r}: need window >= 0, remaining >= 1 and context >= 1, "
                             f"got {self.window}, {self.remaining}, {self.context}")


@dataclass(frozen=True)
class Selection:
    """What to verify now. `windows`: the next window of the sessions of this batch, where the rule chooses it
    (zhu), else empty. `plan`: the decision and its inputs, which the verifier logs as a "plan" event (zhu),
    else None."""
    indices: tuple[int, ...] = ()      # positions in `pending` to verify now, ascending; () = wait
    wake_at: float | None = None       # ask again by then even if nothing arrives (None: on the next arrival)
    windows: Mapping[str, int] = field(default_factory=dict)
    plan: Mapping | None = None


@dataclass(frozen=True)
class VerifiedRound:
    """One drafted round of a verified batch (the prefill, round 0, is not reported)."""
    key: str
    window: int           # tokens drafted
    accepted: int
    draft_s: float        # the drafter's compute time for the window (0 = not measured)


class BatchingPolicy(Protocol):
    name: str

    def select(self, pending: Sequence[Pending], now: float, active: int) -> Selection: ...

    def observe(self, rounds: Sequence[VerifiedRound], tokens: int, verify_s: float, prefill_tokens: int = 0) -> None:
        """After each batch: its drafted rounds, tokens = Σ (window + 1) over them, its compute time, and the
        prompt tokens of the prefills verified in the same batch (0: none)."""

    def forget(self, key: str) -> None:
        """Session `key` ended."""


class _Memoryless:
    """For the rules that decide from the queue alone: nothing to learn from batches or sessions."""

    def observe(self, rounds: Sequence[VerifiedRound], tokens: int, verify_s: float, prefill_tokens: int = 0) -> None:
        pass

    def forget(self, key: str) -> None:
        pass


def _oldest(pending: Sequence[Pending], n: int) -> tuple[int, ...]:
    return tuple(range(min(len(pending), n)))


@dataclass(frozen=True)
class FifoBatching(_Memoryless):
    """Verify whatever is pending, oldest first, up to max_batch, as soon as the verifier is free."""
    max_batch: int = 8
    name = "fifo"

    def select(self, pending: Sequence[Pending], now: float, active: int) -> Selection:
        return Selection(_oldest(pending, self.max_batch))


@dataclass(frozen=True)
class WindowBatching(_Memoryless):
    """Wait up to window_s after the oldest pending draft for more to arrive (or until max_batch)."""
    max_batch: int = 8
    window_s: float = 0.005
    name = "window"

    def select(self, pending: Sequence[Pending], now: float, active: int) -> Selection:
        if not pending:
            return Selection()
        if len(pending) >= self.max_batch or now >= pending[0].arrived + self.window_s:
            return Selection(_oldest(pending, self.max_batch))
        return Selection(wake_at=pending[0].arrived + self.window_s)


@dataclass(frozen=True)
class SyncBatching(_Memoryless):
    """GoodSpeed's synchronous rounds: wait until every active session has a draft pending, then verify them
    together; a session that stays silent for timeout_s does not hold the others forever."""
    max_batch: int = 64
    timeout_s: float = 1.0
    name = "sync"

    def select(self, pending: Sequence[Pending], now: float, active: int) -> Selection:
        if not pending:
            return Selection()
        if len(pending) >= min(active, self.max_batch) or now >= pending[0].arrived + self.timeout_s:
            return Selection(_oldest(pending, self.max_batch))
        return Selection(wake_at=pending[0].arrived + self.timeout_s)


@dataclass(frozen=True)
class LengthAwareBatching(_Memoryless):
    """Length-aware batching (DSD's "LAB", defined here since the paper does not: an assumption).

    The verifier pads a batch to its longest draft window, so a batch of b drafts costs b x max(window)
    padded tokens. As soon as the verifier is free (no waiting, like FifoBatching), it takes:
      1. the oldest pending draft, always, so nothing starves; if its window alone exceeds max_tokens it is
         verified alone;
      2. then the other pending drafts in order of |window - oldest's window| (ties: older first), adding
         each one whose addition keeps the batch at <= max_batch drafts and <= max_tokens padded tokens, and
         skipping (not stopping at) one that does not fit, since a later, shorter one may still fit.
    Similar windows waste less padding, and capping padded tokens bounds the verify pass's time. The batch is
    not necessarily a prefix of the queue."""
    max_batch: int = 8
    max_tokens: int = 64
    name = "length"

    def select(self, pending: Sequence[Pending], now: float, active: int) -> Selection:
        if not pending:
            return Selection()
        lengths = [p.window for p in pending]
        chosen = [0]
        longest = lengths[0]
        for i in sorted(range(1, len(lengths)), key=lambda i: (abs(lengths[i] - lengths[0]), i)):
            if len(chosen) >= self.max_batch:
                break
            if (len(chosen) + 1) * max(longest, lengths[i]) <= self.max_tokens:
                chosen.append(i)
                longest = max(longest, lengths[i])
        return Selection(tuple(sorted(chosen)))


@dataclass(eq=False)
class ZhuBatching:
    """Batching rule `zhu`: Zhu et al.'s DP (testbed/policies/zhu_dp.py) used online, receding-horizon style.
    Whenever the verifier is free it plans all pending sessions (output still to generate, context length,
    acceptance so far) into contiguous batches with a speculation length each, verifies the plan's first batch
    now and gives its sessions the plan's length as their next window; the rest wait for the next plan, made
    with fresher estimates. Cost model mapping (the DP's is stated in zhu_dp.py): our drafters draft in
    parallel, one session each, so a draft step costs draft_a = the measured draft time per token whatever the
    batch (draft_b = 0); a verify pass costs verify_a + verify_b · tokens, fitted online to the measured
    batches by exponentially weighted least squares (weight `decay` per batch on the older ones). Acceptance
    per session: accepted / (accepted + rejections), from a uniform prior (α = 0.5 before any round), kept in
    [0.01, 0.99]. Objective: sum of completion times."""
    max_batch: int = 8
    decay: float = 0.95
    lengths: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    name = "zhu"
    _fit: list[float] = field(init=False, repr=False)       # weighted n, Σx, Σy, Σxx, Σxy (x tokens, y verify_s)
    _draft_per_token: EWMA = field(init=False, repr=False)
    _prefill_per_token: EWMA = field(init=False, repr=False)     # s per prompt token of a prefill
    _counts: dict[str, list[float]] = field(init=False, repr=False)   # key -> [accepted, rejections]

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ValueError(f"batching zhu: decay must be in (0, 1], got {self.decay!r}")
        self._fit = [0.0] * 5
        self._draft_per_token = EWMA(0.2)
        self._prefill_per_token = EWMA(0.2)
        self._counts = {}
        self.cost_model()               # checks max_batch and lengths

    def _verify_fit(self) -> tuple[float, float]:
        """(a, b) of verify_s = a + b · tokens over the batches without prefills (default 10 ms, 0)."""
        n, sx, sy, sxx, sxy = self._fit
        den = n * sxx - sx * sx
        b = max(0.0, (n * sxy - sx * sy) / den if n >= 2 and den > 1e-9 else 0.0)
        a = max(0.0, (sy - b * sx) / n) if n > 0 else 0.01
        return a, b

    def cost_model(self) -> CostModel:
        """The DP's cost model from what has been measured (defaults before that: 2 ms per draft token,
        10 ms per verify pass, no prefill cost). A batch holding prefills pays prefill_per_token for each of its
        padded prompt tokens (the DP's lead), which select() gives only the pending prefills."""
        a, b = self._verify_fit()
        return CostModel(draft_a=self._draft_per_token.value or 0.002, draft_b=0.0, verify_a=a, verify_b=b,
                         max_batch=self.max_batch, lengths=self.lengths,
                         prefill_per_token=self._prefill_per_token.value or 0.0)

    def alpha(self, key: str) -> float:
        accepted, rejections = self._counts.get(key, (1.0, 1.0))
        return accepted / (accepted + rejections)

    def select(self, pending: Sequence[Pending], now: float, active: int) -> Selection:
        if not pending:
            return Selection()
        # input_len: a pending prefill's prompt (the DP charges its batch prefill_per_token per padded prompt
        # token); a session already prefilled has nothing more to prefill
        tasks = [Task(p.key, p.context if p.prefill else 0, p.remaining,
                      alpha=min(0.99, max(0.01, self.alpha(p.key)))) for p in pending]
        cost = self.cost_model()
        plan = plan_dp(tasks, cost, objective="sum")
        head = plan.batches[0]
        if cost.split(len(head), plan.lengths[0]):
            # the model runs this batch as two halves that alternate (zhu_dp.py, "Two-stage pipeline"): verify
            # the first now; the second is verified while the first drafts (the next plan picks it up)
            head = head[:(len(head) + 1) // 2]
        first = set(head)
        return Selection(tuple(i for i, p in enumerate(pending) if p.key in first), None,
                         {key: plan.lengths[0] for key in head},
                         {"rule": self.name, "batches": [list(b) for b in plan.batches],
                          "lengths": list(plan.lengths), "total_latency": plan.total_latency,
                          "cost": dataclasses.asdict(cost)})

    def observe(self, rounds: Sequence[VerifiedRound], tokens: int, verify_s: float, prefill_tokens: int = 0) -> None:
        # A prefill costs per prompt token, far more than the one token a drafted round's correction costs:
        # batches without one fit a + b·tokens; a batch with prefills teaches only the prefill cost per prompt
        # token, from what the fitted rounds do not explain.
        if prefill_tokens > 0:
            a, b = self._verify_fit()
            self._prefill_per_token.update(max(0.0, verify_s - (a + b * tokens if rounds else 0.0)) / prefill_tokens)
        else:
            f = self._fit
            for i, v in enumerate((1.0, tokens, verify_s, tokens * tokens, tokens * verify_s)):
                f[i] = self.decay * f[i] + v
        for r in rounds:
            c = self._counts.setdefault(r.key, [1.0, 1.0])
            c[0] += r.accepted
            c[1] += r.accepted < r.window
            if r.window and r.draft_s > 0:
                self._draft_per_token.update(r.draft_s / r.window)

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)


def make_batching(rule: str, max_batch: int = 8, window_ms: float = 5.0, timeout_ms: float = 1000.0,
                  max_tokens: int = 64, lengths: Sequence[int] | None = None) -> BatchingPolicy:
    if rule == "fifo":
        return FifoBatching(max_batch)
    if rule == "window":
        return WindowBatching(max_batch, window_ms / 1e3)
    if rule == "sync":
        return SyncBatching(max_batch, timeout_ms / 1e3)
    if rule == "length":
        return LengthAwareBatching(max_batch, max_tokens)
    if rule == "zhu":
        return ZhuBatching(max_batch, lengths=tuple(sorted(lengths))) if lengths else ZhuBatching(max_batch)
    raise ValueError(f"batching rule must be fifo, window, sync, length or zhu, got {rule!r}")
