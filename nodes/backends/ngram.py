"""Prompt-lookup drafting (`drafters.backend: ngram`): a drafter with no model.

The next draft token is the continuation of the most recent earlier occurrence of the sequence's last n tokens,
where the sequence is prompt + committed output + the unverified drafts of the chain (so a chain extends
itself), trying n = `n` (longest) down to 1. It drafts in the verifier's own tokenizer, whose fingerprint and
vocabulary it sends at HELLO like an hf drafter; the tokenizer comes from `model` without loading any weights.

No match (the last token never occurred before with a follower): the drafter core asks `extend(session, k)` for
exactly k tokens and, without a stop rule, asks again until the window is full (nodes/core/drafter.py
`_window_step`), so a backend that returned fewer would be asked forever. The proposal is therefore the last
token repeated, with confidence 0: verification rejects it at no cost in correctness (any proposal is lossless),
and with `speculation.policy: threshold` the drafter's stop rule ends the window right there. A matched token
has confidence n / `n` (the share of the longest suffix that matched).

Losslessness. Greedy: any proposal is verified against the target's argmax. Stochastic (temperature > 0): the
proposal is a deterministic function of the context, so its q is one-hot; the payload carries exactly that q
(`topk:K`: the token with probability 1 followed by K - 1 other distinct ids with probability 0; `full`: a
one-hot row), rejection sampling accepts with probability min(1, p(x)/1) = p(x) and on rejection draws from
norm(max(0, p - q)) = p without x, renormalised, so every token y comes out with probability p(y).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodes.backends import DraftToken, Sampling, settle

MAX_N = 16


@dataclass
class _Session:
    tokens: list[int]                  # prompt + committed generated tokens
    sampling: Sampling
    chain: list[DraftToken] = field(default_factory=list)   # drafted, not yet verified
    # n-gram (1 <= len <= n) of committed tokens -> position of the token that followed its latest occurrence
    index: dict[tuple[int, ...], int] = field(default_factory=dict)
    indexed: int = 1                   # follower positions below this are in the index


class NgramDraft:
    def __init__(self, n: int = 3, *, tokenizer=None, vocab_size: int, fingerprint: str = "ngram",
                 model_id: str = "ngram", eos_token_id: int | None = None):
        """Lookup of suffixes of length n..1. Without a tokenizer (unit tests) encode/decode are unavailable;
        `for_model` builds one in a real model's vocabulary."""
        if not 1 <= n <= MAX_N:
            raise ValueError(f"ngram n must be in [1, {MAX_N}], got {n}")
        if vocab_size < 2:
            raise ValueError("vocab_size must be >= 2")
        self.n = n
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.fingerprint = fingerprint
        self.model_id = model_id
        self.eos_token_id = eos_token_id
        self._sessions: dict[str, _Session] = {}

    @classmethod
    def for_model(cls, model: str, n: int = 3) -> "NgramDraft":
        """Drafting in the vocabulary of `model` (a model spec, nodes/models.py): its tokenizer only."""
        from nodes.models import load_tokenizer, tokenizer_fingerprint
        tok, vocab = load_tokenizer(model)
        return cls(n, tokenizer=tok, vocab_size=vocab, fingerprint=tokenizer_fingerprint(tok),
                   model_id=f"ngram{n}:{model}", eos_token_id=tok.eos_token_id)

    # -- sessions -------------------------------------------------------------------------------------
    def open(self, session: str, prompt: list[int], sampling: Sampling) -> None:
        if session in self._sessions:
            raise ValueError(f"session {session!r} is already open")
        s = _Session([int(t) for t in prompt], sampling)
        self._index(s)
        self._sessions[session] = s

    def close(self, session: str) -> None:
        self._sessions.pop(session, None)

    def _session(self, session: str) -> _Session:
        try:
            return self._sessions[session]
        except KeyError:
            raise KeyError(f"session {session!r} is not open") from None

    def _index(self, s: _Session) -> None:
        """Index every committed n-gram that has a committed follower (later positions overwrite: most recent)."""
        t = s.tokens
        for f in range(s.indexed, len(t)):
            for n in range(1, min(self.n, f) + 1):
                s.index[tuple(t[f - n:f])] = f
        s.indexed = max(s.indexed, len(t))

    # -- lookup ---------------------------------------------------------------------------------------
    def lookup(self, seq: list[int], committed: int, index: dict) -> tuple[int, int] | None:
        """(proposed token, n matched) for the sequence `seq` whose first `committed` tokens are indexed in
        `index`, or None when even its last token never occurred before with a follower."""
        size = len(seq)
        for n in range(min(self.n, size - 1), 0, -1):
            suffix = seq[size - n:]
            for f in range(size - 1, max(committed, n) - 1, -1):    # followers among the drafts: most recent
                if seq[f - n:f] == suffix:
                    return seq[f], n
            f = index.get(tuple(suffix))
            if f is not None:
                return seq[f], n
        return None

    def extend(self, session: str, k: int) -> list[DraftToken]:
        s = self._session(session)
        seq = s.tokens + [d.token for d in s.chain]
        new = []
        for _ in range(k):
            found = self.lookup(seq, len(s.tokens), s.index)
            if found is None:                      # no match: repeat the last token (see module docstring)
                token, confidence = (seq[-1] if seq else 0), 0.0
            else:
                token, confidence = found[0], found[1] / self.n
            d = self._payload(token, s.sampling)
            d.confidence = confidence
            new.append(d)
            seq.append(token)
        s.chain += new
        return new

    def _payload(self, token: int, sampling: Sampling) -> DraftToken:
        """The one-hot q the token was drawn from, in the session's payload's shape (none for greedy ids)."""
        if sampling.greedy or sampling.payload == "ids":
            return DraftToken(token)
        v = self.vocab_size
        k = sampling.top_k
        if k is not None:
            k = min(k, v)
            ids = ((token + np.arange(k)) % v).astype(np.int32)    # distinct; the token first
            probs = np.zeros(k, dtype=np.float32)
            probs[0] = 1.0
            return DraftToken(token, ids, probs)
        probs = np.zeros(v, dtype=np.float32)
        probs[token] = 1.0
        return DraftToken(token, None, probs)

    def commit(self, session: str, accepted: int, token: int, window: int) -> int:
        """See DraftBackend.commit: keep `accepted` of the oldest `window` drafts, then `token`; the drafts beyond
        the window survive only on a proactive hit (all accepted and `token` equals the next draft)."""
        s = self._session(session)
        committed, s.chain = settle(s.chain, accepted, token, window)
        s.tokens += committed
        self._index(s)
        return len(s.chain)

    def chain(self, session: str) -> list[DraftToken]:
        return list(self._session(session).chain)

    def tokens(self, session: str) -> list[int]:
        """Prompt + committed tokens of a session (for tests)."""
        return list(self._session(session).tokens)

    # -- text and compute -----------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise RuntimeError("this NgramDraft has no tokenizer (build it with NgramDraft.for_model)")
        return self.tokenizer(text)["input_ids"]

    def decode(self, tokens: list[int]) -> str:
        if self.tokenizer is None:
            raise RuntimeError("this NgramDraft has no tokenizer (build it with NgramDraft.for_model)")
        return self.tokenizer.decode(tokens)

    def cost_s(self, work) -> None:
        """Real compute (a dictionary lookup): it takes what it takes."""
        return None
