"""A target with its draft model beside it on the same device: DSD's fused mode.

The verifier drafts a fused session's windows itself (nodes/core/verifier.py). Both models share one device, so
a draft is a compute like a verify pass: the verifier core issues them one at a time, and a draft delays the next
batch exactly as long as it takes (GPU sharing as time-sharing; no overlap of the two models is modelled).

    backend = Colocated(target, draft)
    backend.verify(requests) / backend.extend(session, k) / backend.cost_s(work)    # as either model
    backend.draft                                                                  # open / commit / chain / close
"""
from __future__ import annotations

from nodes.core.actions import DraftBatch, DraftWork


class Colocated:
    """The target's backend (model_id, tokenizer, open/verify/close as the target's) that also drafts: `extend`
    and a DraftWork's (or DraftBatch's) cost go to `draft`, so the shells that run a core's computes need no
    change."""

    def __init__(self, target, draft):
        if draft.vocab_size != target.vocab_size or draft.fingerprint != target.fingerprint:
            raise ValueError(f"the co-located draft model {draft.model_id} (tokenizer {draft.fingerprint}, vocab "
                             f"{draft.vocab_size}) does not share the target's {target.model_id} "
                             f"({target.fingerprint}, vocab {target.vocab_size})")
        self.target, self.draft = target, draft

    def __getattr__(self, name):          # model_id, fingerprint, vocab_size, eos_token_id, encode, decode, ...
        return getattr(self.target, name)

    def open(self, session: str, prompt: list[int]) -> None:
        self.target.open(session, prompt)

    def verify(self, requests):
        return self.target.verify(requests)

    def close(self, session: str) -> None:
        self.target.close(session)
        self.draft.close(session)

    def extend(self, session: str, k: int):
        return self.draft.extend(session, k)

    def cost_s(self, work) -> float | None:
        return (self.draft if isinstance(work, (DraftWork, DraftBatch)) else self.target).cost_s(work)
