"""The verifier's logic as a state machine: drafters, sessions, pending drafts, batches, verdicts.

    core = VerifierCore(config, backend)
    actions = core.on_ready(endpoint, now)
    ... core.on_frame(peer, frame, now) | core.decide(now) | core.on_compute_done(results, duration_s, now)

Per session it keeps the committed tokens (the backend keeps the KV cache). Every frame is validated; a bad one
gets an ERROR reply and the verifier carries on serving everyone else. After its driver has handed it every frame
that arrived, `decide` asks the batching policy what to verify now (a Compute) or when to ask again (WakeAt).
Frames that arrive while a batch is being verified wait until it is done. Peers are opaque (ZeroMQ identities
in the shell, names in a simulator); a session belongs to the peer that opened it.

DSD's fused mode (speculation.mode fused or hybrid, with a co-located draft model: nodes/backends/fused.py): the
verifier drafts a fused session's windows itself, one DraftWork at a time on its own device between its batches,
and streams each round's verdict with the window it drafted (`drafted`) to the drafter, which sends no DRAFT while
`fused` says the verifier drafts the next round too. Hybrid switches a session to fused when its policy's window is
1 (DSD's AWC: gamma = 1 means fused) and back after `fused_dwell` more rounds above 1; each switch brings the
draft model's copy of the session up to its committed tokens, so no token is lost or repeated either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable

import numpy as np

from nodes import events as E
from nodes import protocol as P
from nodes.backends import DraftToken, Sampling, VerifyRequest, catch_up
from nodes.config import VerifierConfig
from nodes.core.actions import Action, Compute, DraftWork, Record, Send, VerifyWork, WakeAt
from nodes.core.control import WindowControl
from nodes.core.errorlimit import ErrorLimiter
from nodes.verification import cut_output
from testbed.policies.batching import Pending as PendingView
from testbed.policies.batching import VerifiedRound, make_batching


@dataclass
class Session:
    key: str                      # "<drafter>/<session>": session ids are only unique per drafter
    peer: Hashable
    drafter: str
    session: str
    max_new: int
    sampling: Sampling
    rng: np.random.Generator
    committed: int                # prompt + generated tokens, as the drafter must also count them
    generated: list[int] = field(default_factory=list)
    round: int = 0
    prompt: list[int] = field(default_factory=list)   # kept only where a co-located draft model may draft for it
    fused: bool = False           # the verifier drafts this session's next round (fused mode)
    gamma: int = 1                # the window of that round
    synced: int | None = None     # generated tokens the co-located draft model has committed (None: not open)
    dwell: int = 0                # hybrid: fused rounds left after the policy's window left 1


@dataclass
class Pending:
    session: Session
    draft: list[DraftToken]
    arrived: float
    sent: float
    round: int
    bytes_in: int
    draft_s: float = 0.0          # telemetry from the DRAFT frame
    rtt_s: float = 0.0
    here_s: float | None = None   # drafted here (fused): the draft's compute time; None: the drafter's window
    prefill: bool = False         # a START's first pass (new or resumed session): nothing drafted to learn from
    view: PendingView | None = None   # what batching sees; fixed while pending (the session changes only on
                                      # its verdict), so built once, not at every decision over all pending

    def __post_init__(self):
        s = self.session
        self.view = PendingView(s.key, self.arrived, len(self.draft), max(1, s.max_new - len(s.generated)),
                                max(1, s.committed), self.prefill)


class VerifierCore:
    def __init__(self, config: VerifierConfig, backend, incarnation: int = 0):
        """incarnation: drawn when the process started (nodes/verifier.py), sent in every WELCOME: a drafter that
        sees another one than before knows this verifier restarted and resumes its sessions (recovery.py)."""
        self.config, self.backend, self.name = config, backend, config.name
        self.incarnation = incarnation
        self.drafter_incarnations: dict[str, int] = {}   # drafter name -> the incarnation its last HELLO gave
        b = config.batching
        self.batching = make_batching(b.rule, b.max_batch, b.window_ms, max_tokens=b.max_tokens, lengths=b.lengths)
        self.control = WindowControl(config.window_policy_spec(), config.scheduling, config.seed, node=self.name)
        self.drafters: dict[Hashable, str] = {}
        self.sessions: dict[str, Session] = {}
        self.pending: list[Pending] = []
        self.queued: set[str] = set()      # keys of the sessions in pending: a draft check in O(1), not O(pending)
        self.inbox: list[tuple[Hashable, bytes]] = []
        self.errors = ErrorLimiter()                 # protocol errors: the first 10 per peer and code per 10 s logged
        self.batch: tuple[list[Pending], float] | None = None    # being verified, and when it started
        self.planned: dict[str, int] = {}     # next windows the batching rule chose for the batch's sessions
        self.batches = 0
        sp = config.speculation
        self.mode, self.fused_dwell = sp.mode, sp.fused_dwell
        self.drafts = getattr(backend, "draft", None)      # the co-located draft model (Colocated), if any
        if self.mode != "distributed" and self.drafts is None:
            raise ValueError(f"speculation.mode {self.mode} drafts at the verifier: give it a co-located draft model "
                             "(model.draft)")
        self.to_draft: list[Session] = []  # fused sessions waiting for their window to be drafted here
        self.drafting: Session | None = None

    def on_ready(self, endpoint: str, now: float) -> list[Action]:
        return [self._rec(E.Ready, now, endpoint=endpoint, model=self.backend.model_id, batching=self.batching.name)]

    def set_links(self, drafters: dict[str, dict]) -> None:
        self.control.set_links(drafters)

    # -- frames --------------------------------------------------------------------------------------
    def on_frame(self, peer: Hashable, frame: bytes, now: float) -> list[Action]:
        if self.batch is not None or self.drafting is not None:
            self.inbox.append((peer, frame))
            return []
        return self._handle(peer, frame, now)

    def _handle(self, peer: Hashable, frame: bytes, now: float) -> list[Action]:
        try:
            msg = P.decode(frame)
            return self._dispatch(peer, msg, len(frame), now)
        except P.ProtocolError as e:
            reply = Send(peer, P.make_error_frame(e, e.session))
            repeated = self.errors.admit((peer, e.code), now)      # a flood of bad frames: a bounded log
            if repeated is None:
                return [reply]
            return [self._rec(E.Error, now, drafter=self.drafters.get(peer), code=e.code, message=str(e)[:300],
                              repeated=repeated), reply]

    def _dispatch(self, peer: Hashable, msg, nbytes: int, now: float) -> list[Action]:
        if isinstance(msg, P.Hello):
            return self._on_hello(peer, msg, now)
        if peer not in self.drafters:
            raise P.ProtocolError("not_registered", "send HELLO first")
        if isinstance(msg, P.Start):
            return self._on_start(peer, msg, now)
        if isinstance(msg, P.Draft):
            return self._on_draft(peer, msg, nbytes, now)
        if isinstance(msg, P.End):
            s = self.sessions.get(f"{self.drafters[peer]}/{msg.session}")
            if s is not None and s.peer == peer:   # only the peer that opened it may end it
                self._close(s)
            return []
        raise P.ProtocolError("bad_type", f"a verifier does not accept {type(msg).__name__}")

    def _on_hello(self, peer: Hashable, msg: P.Hello, now: float) -> list[Action]:
        b = self.backend
        if msg.tokenizer != b.fingerprint or msg.vocab_size != b.vocab_size:
            err = P.Error("tokenizer_mismatch",
                          f"drafter {msg.drafter} uses tokenizer {msg.tokenizer} (vocab {msg.vocab_size}) but this "
                          f"verifier's {b.model_id} uses {b.fingerprint} (vocab {b.vocab_size}); a draft is only "
                          "meaningful in the target's vocabulary")
            return [self._rec(E.Refused, now, drafter=msg.drafter, tokenizer=msg.tokenizer, vocab=msg.vocab_size),
                    Send(peer, P.encode(err))]
        out: list[Action] = []
        before = self.drafter_incarnations.get(msg.drafter)
        if before is not None and before != msg.incarnation:
            # the drafter restarted: its predecessor's sessions will never send again (it resumes or fails them)
            dropped = [s for s in self.sessions.values() if s.drafter == msg.drafter]
            for s in dropped:
                self._close(s)
            out.append(self._rec(E.Recovery, now, what="drafter_restarted", peer=msg.drafter,
                                 sessions=len(dropped)))
        self.drafter_incarnations[msg.drafter] = msg.incarnation
        self.drafters[peer] = msg.drafter
        return out + [self._rec(E.Hello, now, drafter=msg.drafter, model=msg.model, payloads=list(msg.payloads),
                                proactive=msg.proactive),
                      Send(peer, P.encode(P.Welcome(self.name, b.model_id, b.fingerprint, b.vocab_size,
                                                    self.incarnation)))]

    def _on_start(self, peer: Hashable, msg: P.Start, now: float) -> list[Action]:
        drafter = self.drafters[peer]
        key = f"{drafter}/{msg.session}"
        if key in self.sessions:
            raise P.ProtocolError("bad_session", f"session {msg.session} is already open", msg.session)
        if int(msg.prompt.max()) >= self.backend.vocab_size or int(msg.prompt.min()) < 0:
            raise P.ProtocolError("bad_field", f"prompt token ids must be in [0, {self.backend.vocab_size})", msg.session)
        committed = msg.committed.tolist()
        if committed and self.drafts is not None:
            raise P.ProtocolError("bad_session", "a verifier with a co-located draft model (fused modes) cannot "
                                                 "resume a session", msg.session)
        if len(committed) and (max(committed) >= self.backend.vocab_size):
            raise P.ProtocolError("bad_field", f"committed token ids must be in [0, {self.backend.vocab_size})",
                                  msg.session)
        # sampled verification draws from this rng round by round; a resumed session's starts afresh, so a resumed
        # sampled session is still exact in distribution but not bit-identical to its unfaulted run (greedy is)
        rng = np.random.default_rng(np.random.SeedSequence([msg.seed, *key.encode()]))
        s = Session(key, peer, drafter, msg.session, msg.max_new, Sampling(msg.temperature, msg.payload, msg.seed),
                    rng, len(msg.prompt) + len(committed), generated=committed, round=msg.round,
                    prompt=msg.prompt.tolist() if self.drafts is not None else [])
        self.sessions[key] = s
        if committed:          # re-prefilled: the prompt and every token committed before the verifier restarted
            self.backend.open(key, msg.prompt.tolist(), committed)
        else:
            self.backend.open(key, msg.prompt.tolist())
        self.control.open(key, drafter, msg.payload, self.backend.vocab_size, msg.gamma)
        self.pending.append(Pending(s, [], now, msg.t_send, msg.round, 0, prefill=True))
        self.queued.add(key)
        return []

    def _on_draft(self, peer: Hashable, msg: P.Draft, nbytes: int, now: float) -> list[Action]:
        key = f"{self.drafters[peer]}/{msg.session}"
        s = self.sessions.get(key)
        if s is None or s.peer != peer:   # drafter names are self-declared; peers are not
            raise P.ProtocolError("bad_session", f"no open session {msg.session}", msg.session)
        if s.fused:
            raise P.ProtocolError("bad_round", f"session {msg.session} is fused: the verifier drafts its rounds",
                                  msg.session)
        if key in self.queued:
            raise P.ProtocolError("bad_round", f"session {msg.session} already has a draft being verified", msg.session)
        if msg.round != s.round + 1 or msg.base != s.committed:
            raise P.ProtocolError("bad_round", f"session {msg.session}: expected round {s.round + 1} from base "
                                               f"{s.committed}, got round {msg.round} from base {msg.base}", msg.session)
        tokens = msg.tokens
        if len(tokens) and (int(tokens.max()) >= self.backend.vocab_size or int(tokens.min()) < 0):
            raise P.ProtocolError("bad_field", f"draft token ids must be in [0, {self.backend.vocab_size})", msg.session)
        draft = msg.draft_tokens()
        if not s.sampling.greedy:
            expected = "full" if s.sampling.payload == "full" else "topk"
            for d in draft:
                if d.q_probs is None or (expected == "full") != (d.q_ids is None) or \
                        (expected == "full" and len(d.q_probs) != self.backend.vocab_size):
                    raise P.ProtocolError("bad_field", f"session {msg.session} samples with payload "
                                                       f"{s.sampling.payload}: every draft token needs that q", msg.session)
                if d.q_ids is not None and int(d.q_ids.max()) >= self.backend.vocab_size:
                    raise P.ProtocolError("bad_field", "q ids must be token ids of the target's vocabulary", msg.session)
        self.pending.append(Pending(s, draft, now, msg.t_send, msg.round, nbytes, msg.draft_s, msg.rtt_s))
        self.queued.add(key)
        return []

    def _close(self, s: Session) -> None:
        """Forget a session everywhere (it ended, or its drafter said END); a queued draft of it never reaches
        the backend after close()."""
        self.sessions.pop(s.key, None)
        self.pending = [p for p in self.pending if p.session is not s]
        self.to_draft = [f for f in self.to_draft if f is not s]
        self.queued.discard(s.key)
        self.backend.close(s.key)
        self.control.close(s.key)
        self.batching.forget(s.key)

    # -- batches -------------------------------------------------------------------------------------
    def decide(self, now: float) -> list[Action]:
        """The verifier is free and has seen every frame that arrived: draft a fused session's window (before any
        batch, so it can join it), verify a batch now, or wait."""
        if self.batch is not None or self.drafting is not None:
            return []
        if self.to_draft:
            s = self.drafting = self.to_draft.pop(0)
            return [Compute(DraftWork(s.key, s.gamma))]
        if not self.pending:
            return []
        views = [p.view for p in self.pending]
        sel = self.batching.select(views, now, len(self.sessions))
        out: list[Action] = []
        if sel.plan is not None:
            out.append(self._rec(E.Plan, now, **sel.plan))
        if not sel.indices:
            return out + ([WakeAt(sel.wake_at)] if sel.wake_at is not None else [])
        chosen = set(sel.indices)
        batch = [p for i, p in enumerate(self.pending) if i in chosen]
        self.pending = [p for i, p in enumerate(self.pending) if i not in chosen]
        self.queued.difference_update(p.session.key for p in batch)
        self.batch = (batch, now)
        self.planned = dict(sel.windows)
        self.batches += 1
        reqs = tuple(VerifyRequest(p.session.key, p.draft, p.session.sampling, p.session.rng) for p in batch)
        return out + [Compute(VerifyWork(reqs))]

    def on_compute_done(self, results, verify_s: float, now: float) -> list[Action]:
        if self.drafting is not None:
            return self._drafted(verify_s, now)
        if self.batch is None:
            raise RuntimeError("a compute finished but no batch was being verified")
        (batch, started), self.batch = self.batch, None
        outcomes = []
        for p, r in zip(batch, results):
            s = p.session
            new = [d.token for d in p.draft[:r.accepted]] + [r.token]
            new, done = cut_output(new, s.max_new - len(s.generated), self.backend.eos_token_id)
            s.generated += new
            s.committed += len(new)
            s.round = p.round
            if p.here_s is not None:      # the co-located draft model learns the verdict on its own window
                self.drafts.commit(s.key, r.accepted, r.token, len(p.draft))
                s.synced += r.accepted + 1
            if not p.prefill:             # the prefill: nothing drafted, nothing to learn
                self.control.observe(s.key, len(p.draft), r.accepted, now, rtt_s=p.rtt_s, draft_s=p.draft_s,
                                     queue_s=started - p.arrived, verify_s=verify_s, bytes_in=p.bytes_in,
                                     accept_probs=r.accept_probs)
            outcomes.append((new, done))
        self.batching.observe([VerifiedRound(p.session.key, len(p.draft), r.accepted, p.draft_s)
                               for p, r in zip(batch, results) if not p.prefill],
                              sum(len(p.draft) + 1 for p in batch if not p.prefill), verify_s,
                              prefill_tokens=sum(p.session.committed for p in batch if p.prefill))
        windows, decisions = self.control.next_windows([p.session.key for p in batch], now)
        windows.update({k: g for k, g in self.planned.items() if k in windows})
        out: list[Action] = [Record(e) for e in decisions]
        for p, r, (new, done) in zip(batch, results, outcomes):
            s = p.session
            gamma = windows[s.key]
            fused = not done and self._fused_next(s, gamma)
            drafted = None if p.here_s is None else np.array([d.token for d in p.draft], dtype=np.int32)
            frame = P.encode(P.Verdict(s.session, p.round, r.accepted, r.token, gamma, done, now,
                                       started - p.arrived, verify_s, len(batch), len(self.sessions) - done,
                                       drafted, fused))
            out += [Send(s.peer, frame),
                    self._rec(E.Verify, now, drafter=s.drafter, session=s.session, round=p.round, gamma=len(p.draft),
                              accepted=r.accepted, tokens=len(new), done=done, t_draft_sent=p.sent,
                              t_arrived=p.arrived, queue_s=started - p.arrived, verify_s=verify_s, batch=len(batch),
                              batch_id=self.batches, bytes_in=p.bytes_in, bytes_out=len(frame), next_gamma=gamma,
                              fused=p.here_s is not None, fused_next=fused,
                              draft_s=p.draft_s if p.here_s is None else p.here_s)]
            if done:
                self._close(s)
        return out + self._take_inbox(now)

    def _take_inbox(self, now: float) -> list[Action]:
        out: list[Action] = []
        while self.inbox:                 # what arrived during the compute, in order
            peer, frame = self.inbox.pop(0)
            out += self._handle(peer, frame, now)
        return out

    # -- fused mode ----------------------------------------------------------------------------------
    def _fused_next(self, s: Session, gamma: int) -> bool:
        """Whether the verifier drafts session s's next round (its window `gamma` as the policy chose it); if so,
        the session is queued for its draft, its draft model's copy brought up to the committed tokens first."""
        if self.mode == "fused":
            fused, s.gamma = True, max(1, gamma)
        elif self.mode == "hybrid":
            if gamma <= 1:
                s.dwell = self.fused_dwell
                fused = True
            elif s.fused and s.dwell > 0:      # DSD's dwell: stay fused a while after the window left 1
                s.dwell -= 1
                fused = True
            else:
                fused = False
            s.gamma = 1                        # hybrid drafts one token when fused, as DSD's gamma = 1 means
        else:
            fused = False
        s.fused = fused
        if fused:
            if s.synced is None:
                self.drafts.open(s.key, s.prompt, s.sampling)
                s.synced = 0
            catch_up(self.drafts, s.key, s.generated[s.synced:])   # committed while the drafter drafted
            s.synced = len(s.generated)
            self.to_draft.append(s)
        return fused

    def _drafted(self, draft_s: float, now: float) -> list[Action]:
        """A fused session's window is drafted: it waits for a batch like a DRAFT that just arrived."""
        s, self.drafting = self.drafting, None
        if s.key in self.sessions:
            window = self.drafts.chain(s.key)[:s.gamma]
            self.pending.append(Pending(s, window, now, now, s.round + 1, 0, here_s=draft_s))
            self.queued.add(s.key)
        return self._take_inbox(now)

    def _rec(self, kind: type[E.Event], now: float, **fields) -> Record:
        return Record(kind(t=now, node=self.name, **fields))
