"""When the verifier runs a batch, and which pending drafts go into it.

`select(pending, now, active)` gets the arrival times of the pending requests (oldest first), the current
time and how many sessions are active, and returns (how many of the oldest to verify now, when to ask again).
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


def make_batching(rule: str, max_batch: int = 8, window_ms: float = 5.0, timeout_ms: float = 1000.0):
    if rule == "fifo":
        return FifoBatching(max_batch)
    if rule == "window":
        return WindowBatching(max_batch, window_ms / 1e3)
    if rule == "sync":
        return SyncBatching(max_batch, timeout_ms / 1e3)
    raise ValueError(f"batching rule must be fifo, window or sync, got {rule!r}")
