"""What a core asks its driver to do (the outputs of the state machines), and the compute it describes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Union

from nodes.backends import VerifyRequest
from nodes.events import Event


@dataclass(frozen=True)
class DraftWork:
    """Draft `tokens` more tokens of a session's chain (the backend's `extend`)."""
    session: str
    tokens: int


@dataclass(frozen=True)
class VerifyWork:
    """Verify a batch in one pass (the backend's `verify`)."""
    requests: tuple[VerifyRequest, ...]


@dataclass(frozen=True)
class DraftBatch:
    """Draft several sessions together (speculation.batch_drafting): one DraftWork per session, each with its own
    token count, drafted in one batched forward pass per token step (step j feeds every session that still lacks
    a j-th token). Run with nodes.backends.draft_batch; the results come back in item order."""
    items: tuple[DraftWork, ...]


Work = Union[DraftWork, DraftBatch, VerifyWork]


@dataclass(frozen=True)
class ClientAddr:
    """A user's client (by name), as a drafter's Send target: its clients socket, not a verifier's."""
    name: str


@dataclass(frozen=True)
class Send:
    """Send an encoded frame: to a verifier by name (drafter), or to a peer identity (verifier)."""
    to: Hashable
    frame: bytes


@dataclass(frozen=True)
class Compute:
    """Run this work; report back with `on_compute_done(result, duration_s, now)`. One at a time: a core issues
    no other Compute until then."""
    work: Work


@dataclass(frozen=True)
class WakeAt:
    """Call `on_timer(now)` at time t unless an input comes first (the latest WakeAt replaces earlier ones)."""
    t: float


@dataclass(frozen=True)
class Record:
    """Append this event to the node's event log."""
    event: Event


@dataclass(frozen=True)
class Output:
    """A finished session's output (the drafter's result line)."""
    result: dict


Action = Union[Send, Compute, WakeAt, Record, Output]
