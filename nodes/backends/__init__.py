"""Model backends: what a drafter drafts with and what a verifier verifies with.

Both sides keep per-session state (token history and, for real models, a KV cache) and speak in token ids.
    drafter side:  DraftBackend.open / extend / commit / close
    verifier side: TargetBackend.open / verify (batched) / close
    both:          cost_s(work): how long a compute takes by the backend's profile, or None for real compute
    drafter side, several sessions at once: draft_batch(backend, DraftBatch) (speculation.batch_drafting)
`hf` runs real transformers models; `synthetic` draws acceptance from Bernoulli(alpha) or a replay file and
says its compute takes what a latency profile gives, with no torch, so many drafters fit on one machine. No
backend sleeps: the node cores describe the compute (nodes/core/actions.py) and their driver runs it.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


def lacks_q(temperature: float, payload: str) -> bool:
    """The one rule tying sampling to the payload: a sampled draft (temperature > 0) is verified against the q it
    was drawn from (rejection sampling), so its payload must carry q; `ids` carries none. Checked where configs
    are validated, where START frames are validated, and nowhere else."""
    return temperature > 0 and payload == "ids"


@dataclass(frozen=True)
class Sampling:
    """How tokens are chosen. temperature 0 = greedy. For temperature > 0 the drafter samples from a
    truncated, renormalised q (`topk:K`) or the full q (`full`), and sends exactly that q, so the verifier's
    rejection sampling stays lossless with respect to the target's own distribution at this temperature."""
    temperature: float = 0.0
    payload: str = "ids"          # "ids" (greedy only) | "topk:K" | "full"
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def top_k(self) -> int | None:
        return int(self.payload.split(":", 1)[1]) if self.payload.startswith("topk:") else None


@dataclass
class DraftToken:
    token: int
    q_ids: np.ndarray | None = None    # int32 [K] token ids of the truncated q (topk), or None
    q_probs: np.ndarray | None = None  # float32 [K] (topk) or [V] (full) probabilities; None for greedy ids
    confidence: float | None = None    # the draft's own probability of this token (for SpecDec++-style stops)


@dataclass
class VerifyRequest:
    session: str
    draft: list[DraftToken]            # may be empty: prefill / autoregressive step
    sampling: Sampling
    rng: np.random.Generator | None = None   # verifier-side randomness for this session (stochastic only)


@dataclass
class VerifyResult:
    accepted: int                      # number of draft tokens accepted (0..len(draft))
    token: int                         # correction (on rejection) or bonus (all accepted) token
    compute_s: float = 0.0             # this request's share of the batch's compute time
    extra: dict = field(default_factory=dict)
    # min(1, p/q) at every drafted position, after the first rejection too (greedy: 1 where the draft equals
    # the target's argmax): GoodSpeed's acceptance estimate (eq. 3) averages all of them
    accept_probs: list[float] | None = None


def settle(chain: list[DraftToken], accepted: int, token: int, window: int) -> tuple[list[int], list[DraftToken]]:
    """A verdict on the oldest `window` drafts of a session's chain (DraftBackend.commit): the tokens it commits
    (the accepted drafts, then `token`) and the drafts that survive beyond the window: all of them but the first
    on a proactive hit (every draft accepted and `token` equal to the next draft, which it commits), else none."""
    if not 0 <= accepted <= window <= len(chain):
        raise ValueError(f"need 0 <= accepted ({accepted}) <= window ({window}) <= drafted ({len(chain)})")
    beyond = chain[window:]
    hit = accepted == window and bool(beyond) and int(beyond[0].token) == int(token)
    return [d.token for d in chain[:accepted]] + [int(token)], (beyond[1:] if hit else [])


def catch_up(backend, session: str, tokens) -> None:
    """Commit tokens some other model drafted (and the verifier settled) into this draft model's copy of a session,
    one at a time: a draft of ours that guessed one survives as a proactive hit (DSD's fused mode: whichever side
    drafts next starts from exactly the committed tokens)."""
    for t in tokens:
        backend.commit(session, 0, int(t), 0)


def draft_batch(backend, work) -> list[list[DraftToken]]:
    """Run a DraftBatch (nodes/core/actions.py): each item's `extend`, in item order; the new tokens per item.

    The drafts are those each session would get on its own (a session's tokens depend on its own chain only), so
    batching changes when they are ready, never what they are. How long it takes is the backend's `cost_s(work)`:
    a profiled backend charges one batched pass per token step (SyntheticDraft.cost_s). A real model (hf, ngram:
    `cost_s` None) runs the extends here one after another and takes what that takes: the CPU models of this
    testbed do not batch them, so with them batch_drafting only changes the order of the work."""
    return [backend.extend(item.session, item.tokens) for item in work.items]


def position_rng(seed: int, session: str, position: int) -> np.random.Generator:
    """Randomness for drafting the token at `position` of a session, independent of how many drafts came before.

    Proactive drafting drafts a timing-dependent number of tokens that may be discarded; drawing from one
    stream would let that timing shift every later sample, so a rerun with the same seed would differ. A position
    is only drafted again when its earlier draw was never tested by the verifier, so reusing the draw keeps
    verification lossless."""
    digest = hashlib.blake2b(session.encode(), digest_size=8).digest()
    return np.random.default_rng([seed, int.from_bytes(digest, "little"), position])


class DraftBackend(Protocol):
    model_id: str
    eos_token_id: int | None
    fingerprint: str                   # tokenizer fingerprint, checked by the verifier at HELLO
    vocab_size: int

    def open(self, session: str, prompt: list[int], sampling: Sampling) -> None: ...
    def extend(self, session: str, k: int) -> list[DraftToken]:
        """Draft k more tokens after the session's current speculative chain (committed tokens + drafts
        not yet verified), growing that chain. Returns the new tokens."""
    def commit(self, session: str, accepted: int, token: int, window: int) -> int:
        """Apply a verdict on the oldest unverified `window` tokens of the chain: keep `accepted` of them, then
        `token`. Drafts beyond the window survive only if all were accepted and `token` equals the next
        drafted token (proactive drafting hit); returns how many drafted tokens survive beyond the window."""
    def chain(self, session: str) -> list[DraftToken]:
        """The session's unverified drafts, oldest first."""
    def encode(self, text: str) -> list[int]: ...
    def decode(self, tokens: list[int]) -> str: ...
    def close(self, session: str) -> None: ...
    def cost_s(self, work) -> float | None: ...


class TargetBackend(Protocol):
    model_id: str
    fingerprint: str
    vocab_size: int
    eos_token_id: int | None

    def open(self, session: str, prompt: list[int], committed: list[int] = ()) -> None:
        """committed: tokens a resumed session already had after the prompt (its first pass feeds both)."""
    def verify(self, requests: list[VerifyRequest]) -> list[VerifyResult]:
        """Verify the drafts of several sessions in one batched pass. A session's first request (empty draft)
        prefills its prompt and yields the first token; an empty draft later is an autoregressive step."""
    def close(self, session: str) -> None: ...
    def cost_s(self, work) -> float | None: ...
