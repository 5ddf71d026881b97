"""When the verifier runs a batch, and which pending drafts go into it.

`select(pending, now, active)` gets the arrival times of the pending requests (oldest first), the current
time and how many sessions are active, and returns (how many of the oldest to verify now, when to ask again).
LengthAwareBatching also takes each request's draft window and returns which requests (IndexDecision).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    take: int                 # verify this many of the oldest pending requests now (0 = wait)
    wake_at: float | None     # ask again by then even if nothing arrives (None = on the next arrival)


@dataclass(frozen=True)
class FifoBatching:
    """Verify whatever is pending, oldest first, up to max_batch, as soon as the verifier is free."""
    max_batch: int = 8
    name = "fifo"

    def select(self, arrivals: list[float], now: float, active: int) -> Decision:
        return Decision(min(len(arrivals), self.max_batch), None)


@dataclass(frozen=True)
class WindowBatching:
    """Wait up to window_s after the oldest pending request for more to arrive (or until max_batch)."""
    max_batch: int = 8
    window_s: float = 0.005
    name = "window"

    def select(self, arrivals: list[float], now: float, active: int) -> Decision:
        if not arrivals:
            return Decision(0, None)
        if len(arrivals) >= self.max_batch or now >= arrivals[0] + self.window_s:
            return Decision(min(len(arrivals), self.max_batch), None)
        return Decision(0, arrivals[0] + self.window_s)


@dataclass(frozen=True)
class SyncBatching:
    """GoodSpeed's synchronous rounds: wait until every active session has a draft pending, then verify them
    together; a session that stays silent for timeout_s does not hold the others forever."""
    max_batch: int = 64
    timeout_s: float = 1.0
    name = "sync"

    def select(self, arrivals: list[float], now: float, active: int) -> Decision:
        if not arrivals:
            return Decision(0, None)
        if len(arrivals) >= min(active, self.max_batch) or now >= arrivals[0] + self.timeout_s:
            return Decision(min(len(arrivals), self.max_batch), None)
        return Decision(0, arrivals[0] + self.timeout_s)


@dataclass(frozen=True)
class IndexDecision:
    """Like Decision, but names the pending requests to verify (not necessarily the oldest ones)."""
    indices: tuple[int, ...]  # positions in the pending list (oldest first) to verify now, ascending; () = wait
    wake_at: float | None     # ask again by then even if nothing arrives (None = on the next arrival)


@dataclass(frozen=True)
class LengthAwareBatching:
    """Length-aware batching (DSD's "LAB", defined here since the paper does not: an assumption).

    The verifier pads a batch to its longest draft window, so a batch of b drafts costs b x max(window)
    padded tokens. As soon as the verifier is free (no waiting, like FifoBatching), it takes:
      1. the oldest pending draft, always, so nothing starves; if its window alone exceeds max_tokens it is
         verified alone;
      2. then the other pending drafts in order of |window - oldest's window| (ties: older first), adding
         each one whose addition keeps the batch at <= max_batch drafts and <= max_tokens padded tokens, and
         skipping (not stopping at) one that does not fit, since a later, shorter one may still fit.
    Similar windows waste less padding, and capping padded tokens bounds the verify pass's time.

    `lengths[i]` is the draft window of pending request i (same order as `arrivals`). Without lengths
    (a caller of the older interface) the token cap cannot be applied and it takes the oldest max_batch, as
    FifoBatching does. The result is an IndexDecision: the verifier must take exactly those indices (it is
    not a prefix of the pending list, so it has no `take`).
    """
    max_batch: int = 8
    max_tokens: int = 64
    name = "length"

    def select(self, arrivals: list[float], now: float, active: int,
               lengths: list[int] | None = None) -> IndexDecision:
        if lengths is not None and len(lengths) != len(arrivals):
            raise ValueError(f"need one length per pending request, got {len(lengths)} for {len(arrivals)}")
        n = len(arrivals)
        if n == 0:
            return IndexDecision((), None)
        if lengths is None:
            return IndexDecision(tuple(range(min(n, self.max_batch))), None)
        chosen = [0]
        longest = lengths[0]
        for i in sorted(range(1, n), key=lambda i: (abs(lengths[i] - lengths[0]), i)):
            if len(chosen) >= self.max_batch:
                break
            if (len(chosen) + 1) * max(longest, lengths[i]) <= self.max_tokens:
                chosen.append(i)
                longest = max(longest, lengths[i])
        return IndexDecision(tuple(sorted(chosen)), None)


def make_batching(rule: str, max_batch: int = 8, window_ms: float = 5.0, timeout_ms: float = 1000.0,
                  max_tokens: int = 64):
    if rule == "fifo":
        return FifoBatching(max_batch)
    if rule == "window":
        return WindowBatching(max_batch, window_ms / 1e3)
    if rule == "sync":
        return SyncBatching(max_batch, timeout_ms / 1e3)
    if rule == "length":    # returns IndexDecision: callers must pass lengths and take its indices
        return LengthAwareBatching(max_batch, max_tokens)
    raise ValueError(f"batching rule must be fifo, window, sync or length, got {rule!r}")
