"""Synthetic backends: the real draft/verify protocol with no model and no torch, so many drafters fit on one
machine and acceptance is under experimental control.

Truth. Every session has a deterministic "true" continuation: the i-th generated token (i = 0 is the first
token after the prompt) is `true_token(key, i, V)`, a keyed blake2b hash of i modulo the vocabulary, where
`key = session_key(prompt, sampling.seed)`. Drafter and target derive it independently from the same inputs.

Target. `SyntheticTarget` is greedy over the truth: it accepts drafted tokens while they equal the true tokens
and returns the true token at the first mismatch (correction) or after the window (bonus). That is the real
greedy verification path, so the generated text must equal the true sequence: losslessness is checkable.
It ignores temperature and q (the truth plays the role of the target's distribution); with an
`eos_token_id` set, the truth contains it by chance (probability 1/V per position), like a model ending.

Drafter. `SyntheticDraft` knows the truth and at each drafted position emits the true token with probability
alpha, else a uniformly chosen wrong one, so the verifier measures Bernoulli(alpha) acceptance per position.
alpha is a constant, a piecewise-constant schedule over time since the backend was created, a replay, or a
per-position curve (the i-th draft of a round is true with probability a_i; {"trace": ...} and
{"published": ...} name shipped data, see nodes/acceptance).
For `topk:K` / `full` payloads it attaches a placeholder q of the real shape (K or V floats) so wire sizes
are realistic; the synthetic target never reads it.

Replay file (JSON lines, one object per verification round, `#` comments and blank lines allowed):
    {"gamma": 4, "accepted": 2}
    {"gamma": 4, "accepted": 4}
Each round (from the first draft after a commit) takes the next record, cycling through the file and shared
by all sessions of the backend: the first `accepted` drafts of the round are true, the next one is wrong (and
later ones true again; they are discarded anyway). A round with a different gamma therefore accepts the
recorded count capped at its own gamma. Drafts that survived a proactive hit keep the truth they were drafted
with, so replay is exact only without proactive drafting. `AcceptanceRecorder` writes this format.

Compute. A latency profile gives the time an operation takes: a nodes/compute cost model (`cost`: a roofline
of a model on a device, or a measured table) charges each verify batch one forward pass over (context, tokens
fed) per request, drafting k tokens k decode passes from the session's context, and a batch of sessions drafted
together (speculation.batch_drafting) one batched pass per token step; without one, the linear
`ComputeProfile`: drafting k tokens = k * draft_token_s, verifying a batch = base + per_token * tokens fed +
per_seq * batch size. A request feeds its prompt (first request: prefill) or the last committed token (later
ones) plus its drafts. The backends do their tiny real
work at once and say, through `cost_s(work)`, how long it takes by the profile: the ZeroMQ shells pace to that
(nodes/shell.py run_work), a simulator advances its clock by it. Nothing here sleeps or reads a clock, except
the alpha schedule, which follows the injected `clock`.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from nodes.backends import DraftToken, Sampling, VerifyRequest, VerifyResult, settle
from nodes.core.actions import DraftBatch
# the acceptance sources live in alpha.py; imported here too, where the synthetic draft's users look for them
from nodes.backends.alpha import (AcceptanceRecorder, AlphaSchedule, Curve, Replay, load_replay,  # noqa: F401
                                  parse_alpha)

FINGERPRINT = "synthetic-v1"


# ---------------------------------------------------------------------------------------------- truth

def session_key(prompt: list[int], seed: int) -> bytes:
    """16-byte key of a session's true continuation, from its prompt tokens and sampling seed."""
    h = hashlib.blake2b(digest_size=16, person=b"specnet-synth-v1")
    h.update(np.asarray(prompt, dtype="<i8").tobytes())
    h.update(int(seed).to_bytes(8, "little", signed=True))
    return h.digest()


def draw_key(seed: int, session: str) -> bytes:
    """Key of a drafter's own draws for one session: its seed and the session's name."""
    return hashlib.blake2b(f"{int(seed)}/{session}".encode(), digest_size=16, person=b"specnet-draw-v1").digest()


def position_draws(key: bytes, position: int) -> tuple[float, int, float]:
    """The drafter's three draws at a position of a session: a uniform for accept-or-not, a 64-bit integer for
    the wrong token, a uniform for the confidence. A function of the position alone, like position_rng, so
    proactive drafting's timing-dependent extra drafts shift nothing; one keyed hash instead of a numpy
    generator per token (10x cheaper, which is what lets the simulator drive thousands of drafters)."""
    d = hashlib.blake2b(int(position).to_bytes(8, "little"), digest_size=24, key=key).digest()
    return ((int.from_bytes(d[0:8], "little") >> 11) * 2.0 ** -53, int.from_bytes(d[8:16], "little"),
            (int.from_bytes(d[16:24], "little") >> 11) * 2.0 ** -53)


def true_token(key: bytes, i: int, vocab_size: int) -> int:
    """The i-th generated token of the session with this key (64-bit hash; modulo bias is negligible)."""
    digest = hashlib.blake2b(int(i).to_bytes(8, "little"), digest_size=8, key=key).digest()
    return int.from_bytes(digest, "little") % vocab_size


# ---------------------------------------------------------------------------------------------- compute

@dataclass(frozen=True)
class ComputeProfile:
    draft_token_s: float = 0.0
    verify_base_s: float = 0.0
    verify_per_token_s: float = 0.0
    verify_per_seq_s: float = 0.0

    def __post_init__(self):
        for name, value in vars(self).items():
            if value < 0:
                raise ValueError(f"ComputeProfile.{name} must be >= 0, got {value}")

    def draft_s(self, k: int) -> float:
        return k * self.draft_token_s

    def verify_s(self, tokens_fed: int, batch_size: int) -> float:
        return self.verify_base_s + self.verify_per_token_s * tokens_fed + self.verify_per_seq_s * batch_size


# ---------------------------------------------------------------------------------------------- drafter

@dataclass
class _DraftSession:
    key: bytes
    sampling: Sampling
    committed: list[int] = field(default_factory=list)   # generated tokens the verifier has settled
    chain: list[DraftToken] = field(default_factory=list)  # drafted, not yet verified
    plan: int | None = None                              # replay: accepted count of the current round
    prompt_len: int = 0                                  # the context a latency profile charges for
    draw_key: bytes = b""                                # the drafter's randomness for this session (draw_key)


class SyntheticDraft:
    model_id = "synthetic"

    def __init__(self, vocab_size: int = 32000, alpha=None, profile: ComputeProfile = ComputeProfile(),
                 seed: int = 0, *, replay: str | Path | None = None, eos_token_id: int | None = None,
                 clock: Callable[[], float] = time.monotonic, cost=None):
        """alpha: number, [[t, alpha], ...], {"replay": path}, {"curve": [...]}, {"trace": name} or
        {"published": id} (see parse_alpha), default 0.8; or replay=path.
        clock drives the alpha schedule only (the wall clock in the shells; a simulator's or a test's clock)."""
        if vocab_size < 2:
            raise ValueError("vocab_size must be >= 2 (a wrong token must exist)")
        if alpha is not None and replay is not None:
            raise ValueError("give alpha or replay, not both")
        self.vocab_size = vocab_size
        self.fingerprint = f"{FINGERPRINT}:{vocab_size}"
        self.source = parse_alpha({"replay": str(replay)} if replay is not None else
                                  (0.8 if alpha is None else alpha))
        self.profile = profile
        self.cost = cost          # a nodes.compute CostModel; None: the linear `profile`
        self.seed = seed
        self.eos_token_id = eos_token_id   # the drafter node cuts its output at EOS like the verifier does
        self._clock = clock
        self._t0 = clock()        # schedule times count from backend creation
        self._cursor = 0          # next replay record, shared by all sessions (a recording is one stream)
        self._sessions: dict[str, _DraftSession] = {}

    def alpha_now(self) -> float | None:
        """Current alpha of a schedule; None when replaying or following a per-position curve."""
        if isinstance(self.source, (Replay, Curve)):
            return None
        return self.source.at(self._clock() - self._t0)

    def open(self, session: str, prompt: list[int], sampling: Sampling) -> None:
        if session in self._sessions:
            raise ValueError(f"session {session!r} is already open")
        key = session_key(prompt, sampling.seed)
        self._sessions[session] = _DraftSession(key, sampling, prompt_len=len(prompt),
                                                draw_key=draw_key(self.seed, session))

    def _session(self, session: str) -> _DraftSession:
        try:
            return self._sessions[session]
        except KeyError:
            raise KeyError(f"session {session!r} is not open") from None

    def _emit_true(self, s: _DraftSession, offset: int, u: float) -> bool:
        """Whether the draft at this offset past the committed tokens is the true token."""
        if isinstance(self.source, Replay):
            if s.plan is None:
                s.plan = self.source.records[self._cursor % len(self.source.records)][1]
                self._cursor += 1
            return offset != s.plan
        if isinstance(self.source, Curve):    # the same single draw per position as a schedule: reproducible
            return u < self.source.at_position(offset)
        return u < self.source.at(self._clock() - self._t0)

    def _payload(self, token: int, sampling: Sampling) -> DraftToken:
        """Placeholder q of the real payload's shape: the token gets 0.6, the rest share 0.4."""
        if sampling.greedy or sampling.payload == "ids":
            return DraftToken(token)
        v = self.vocab_size
        k = sampling.top_k
        if k is not None:
            k = max(1, min(k, v))
            ids = ((token + np.arange(k)) % v).astype(np.int32)
            probs = np.full(k, 0.4 / (k - 1) if k > 1 else 1.0, dtype=np.float32)
            probs[0] = 0.6 if k > 1 else 1.0
            return DraftToken(token, ids, probs)
        probs = np.full(v, 0.4 / (v - 1), dtype=np.float32)
        probs[token] = 0.6
        return DraftToken(token, None, probs)

    def _context(self, session: str) -> int:
        s = self._sessions.get(session)
        return 0 if s is None else s.prompt_len + len(s.committed) + len(s.chain)

    def cost_s(self, work) -> float:
        """Seconds drafting `work.tokens` tokens takes by the profile: a cost model (nodes/compute) charges k
        decode passes from the session's current context (prompt + committed + drafted); the linear profile
        k x draft_token_s. A DraftBatch (ask before running it: drafting grows the contexts): token step j is one
        batched pass over the sessions that still draft a j-th token, each at its own context + j."""
        if isinstance(work, DraftBatch):
            shapes = [(self._context(item.session), item.tokens) for item in work.items]
            steps = max((k for _, k in shapes), default=0)
            if self.cost is None:
                # the linear profile has no batch term: a small draft model's decode pass is memory-bound (its
                # weights are read once per pass whatever the batch), so a step costs what one session's does
                return self.profile.draft_s(steps)
            return sum(self.cost.pass_s([(c + j, 1) for c, k in shapes if k > j]) for j in range(steps))
        if self.cost is None:
            return self.profile.draft_s(work.tokens)
        return self.cost.draft_s(self._context(work.session), work.tokens)

    def extend(self, session: str, k: int) -> list[DraftToken]:
        s = self._session(session)
        out = []
        for _ in range(k):
            position = len(s.committed) + len(s.chain)
            u_emit, wrong, u = position_draws(s.draw_key, position)   # reproducible whatever was drafted ahead
            truth = true_token(s.key, position, self.vocab_size)
            token = truth if self._emit_true(s, len(s.chain), u_emit) else \
                (truth + 1 + wrong % (self.vocab_size - 1)) % self.vocab_size
            d = self._payload(token, s.sampling)
            # A draft model's own confidence is informative but imperfect: high for tokens that will be
            # accepted, low for the others, with overlap (its own draw, so it changes no token)
            d.confidence = 1 - 0.5 * u * u if token == truth else 0.7 * u
            out.append(d)
            s.chain.append(out[-1])
        return out

    def commit(self, session: str, accepted: int, token: int, window: int) -> int:
        """See DraftBackend.commit. On a proactive hit the first draft beyond the window equals `token` and
        becomes committed; the return value counts the drafts still unverified after that (the chain's
        length), i.e. the drafts beyond the window minus that one, and 0 on a miss."""
        s = self._session(session)
        committed, s.chain = settle(s.chain, accepted, token, window)
        s.committed += committed
        s.plan = None             # replay: the next draft starts a new round
        return len(s.chain)

    def tokens(self, session: str) -> list[int]:
        """Committed generated tokens of a session (for tests and logs)."""
        return list(self._session(session).committed)

    def chain(self, session: str) -> list[DraftToken]:
        """The unverified drafts, oldest first (the drafter node sends windows from it)."""
        return list(self._session(session).chain)

    def encode(self, text: str) -> list[int]:
        """No tokenizer: UTF-8 bytes modulo the vocabulary, so text prompts give stable token ids."""
        return [b % self.vocab_size for b in text.encode("utf-8")]

    def decode(self, tokens: list[int]) -> str:
        """Synthetic tokens mean nothing: render the ids."""
        return " ".join(str(int(t)) for t in tokens)

    def close(self, session: str) -> None:
        self._sessions.pop(session, None)


# ---------------------------------------------------------------------------------------------- target

@dataclass
class _TargetSession:
    prompt: list[int]
    key: bytes | None = None      # known at the first request, which carries the sampling seed
    pos: int = 0                  # generated tokens produced so far


class SyntheticTarget:
    model_id = "synthetic"

    def __init__(self, vocab_size: int = 32000, profile: ComputeProfile = ComputeProfile(),
                 eos_token_id: int | None = None, cost=None):
        self.vocab_size = vocab_size
        self.fingerprint = f"{FINGERPRINT}:{vocab_size}"
        self.profile = profile
        self.cost = cost          # a nodes.compute CostModel; None: the linear `profile`
        self.eos_token_id = eos_token_id
        self._sessions: dict[str, _TargetSession] = {}

    def open(self, session: str, prompt: list[int], committed: list[int] = ()) -> None:
        """committed: a session resumed after a verifier restart, the tokens it had committed; the truth stays
        the prompt's, from position len(committed) on (the tokens are the truth's: that is what committed means)."""
        if session in self._sessions:
            raise ValueError(f"session {session!r} is already open")
        self._sessions[session] = _TargetSession(list(prompt), pos=len(committed))

    def _fed(self, req: VerifyRequest) -> int:
        """Tokens a request feeds: its prompt (and any resumed tokens) the first time (prefill), else the last
        committed token, plus drafts."""
        s = self._sessions[req.session]
        return (len(s.prompt) + s.pos if s.key is None else 1) + len(req.draft)

    def _shape(self, req: VerifyRequest) -> tuple[int, int]:
        """(context already in the KV cache, tokens fed) of a request: the first feeds its prompt on an empty
        cache; a later one feeds the last committed token and its drafts after prompt + the tokens before it."""
        s = self._sessions[req.session]
        if s.key is None:
            return 0, len(s.prompt) + s.pos + len(req.draft)
        return len(s.prompt) + s.pos - 1, 1 + len(req.draft)

    def _batch_s(self, shapes: list[tuple[int, int]], batch: int) -> float:
        if self.cost is not None:
            return self.cost.pass_s(shapes)
        return self.profile.verify_s(sum(t for _, t in shapes), batch)

    def cost_s(self, work) -> float:
        """Seconds verifying this batch takes by the profile (ask before verify(): it advances the sessions)."""
        requests = [r for r in work.requests if r.session in self._sessions]
        return self._batch_s([self._shape(r) for r in requests], len(work.requests))

    def _verify_one(self, req: VerifyRequest) -> tuple[int, int, int, list[float]]:
        """Greedy verification against the truth; returns (accepted, token, tokens fed)."""
        s = self._sessions[req.session]
        first = s.key is None
        fed = (len(s.prompt) + s.pos if first else 1) + len(req.draft)
        if first:
            s.key = session_key(s.prompt, req.sampling.seed)
        n = 0
        while n < len(req.draft) and int(req.draft[n].token) == true_token(s.key, s.pos + n, self.vocab_size):
            n += 1
        token = true_token(s.key, s.pos + n, self.vocab_size)
        # every drafted position is an independent Bernoulli(alpha) trial here, after a rejection too
        probs = [float(int(d.token) == true_token(s.key, s.pos + j, self.vocab_size)) for j, d in enumerate(req.draft)]
        s.pos += n + 1
        return n, token, fed, probs

    def verify(self, requests: list[VerifyRequest]) -> list[VerifyResult]:
        if not requests:
            return []
        names = [r.session for r in requests]
        if len(set(names)) != len(names):
            raise ValueError(f"a batch holds each session at most once, got {names}")
        unknown = [n for n in names if n not in self._sessions]
        if unknown:  # checked before any session advances, so a bad batch changes nothing
            raise KeyError(f"sessions not open: {unknown}")
        shapes = [self._shape(r) for r in requests]
        verdicts = [self._verify_one(r) for r in requests]
        share = self._batch_s(shapes, len(requests)) / len(requests)
        return [VerifyResult(n, tok, share, {"fed": f, "batch": len(requests)}, probs) for n, tok, f, probs in verdicts]

    def close(self, session: str) -> None:
        self._sessions.pop(session, None)
