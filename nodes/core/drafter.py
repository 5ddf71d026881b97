"""The drafter's logic as a state machine: sessions, arrivals, routing, windows, proactive drafting, verdicts.

    core = DrafterCore(config, backend, prompts)
    name, actions = core.on_welcome(endpoint, frame, now)      # once per verifier (after core.hello_frame())
    actions = core.begin(now)
    ... core.on_frames([(verifier, frame), ...], now) | core.on_compute_done(result, duration_s, now)
        | core.on_timer(now)
    until core.done

Pipelining, both switchable and logged:
- proactive drafting: while a window is being verified, keep drafting as if all of it were accepted and the
  verifier's bonus token were our own next guess; if the verdict confirms both, the next window is ready at
  once, else those drafts are discarded (counted as wasted);
- several sessions interleaved: while one session waits for its verdict, the model drafts for another.

In DSD's fused mode (speculation.mode fused or hybrid) the verifier drafts some rounds itself, with a draft model
beside its target: their verdicts carry the window it drafted, which this drafter's model commits like its own so
that it can take the session back (hybrid) from exactly the committed tokens; while a verdict says `fused`, the
session is the verifier's and this drafter sends it no window and drafts nothing ahead for it.

The order of work is the old single-threaded loop's: start the sessions that may start; take the verdicts that
arrived; send a window for every session that has none in flight (drafting what it lacks); only when there was
nothing of that, draft one token ahead for the first session that can use it; else wait for a frame, the next
arrival or the timeout. Frames that arrive while a compute runs wait until it is done.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from nodes import events as E
from nodes import protocol as P
from nodes.backends import Sampling, catch_up
from nodes.config import DrafterConfig
from nodes.core.errorlimit import ErrorLimiter
from nodes.core.recovery import LOST_STATE_CODES, VerifierWatch
from nodes.core.actions import Action, ClientAddr, Compute, DraftWork, Output, Record, Send, WakeAt
from nodes.verification import cut_output
from nodes.workloads.lengths import OutputLengths
from nodes.workloads.trace import TraceRequest
from testbed.policies.routing import make_router
from testbed.policies.stopping import make_stop_rule


class DrafterError(RuntimeError):
    pass


@dataclass
class ClientSession:
    sid: str
    prompt: str
    prompt_ids: list[int]
    gamma: int
    round: int = 0
    in_flight: int | None = 0          # tokens in the window being verified (None: nothing in flight)
    generated: list[int] = field(default_factory=list)
    sent_at: float = 0.0
    draft_s: float = 0.0               # model time spent on this session since the last send
    last_rtt_s: float = 0.0            # send → verdict time of the last round (telemetry in the next DRAFT)
    via: str | None = None             # the verifier this session was routed to
    reported: bool = False             # a verdict has come back, so the verifier's load counts it
    proposed: int = 0
    accepted: int = 0
    hits: int = 0
    wasted: int = 0
    delivered: int = 0                 # output tokens counted so far (logged per verdict as `tokens`)
    pre_drafted: int | None = None     # tokens of the window being prepared that were drafted ahead
    max_new: int = 0                   # this session's output length (workload.output_len, or the trace's)
    request: str | None = None         # the trace's request_id (arrivals trace)
    fused: bool = False                # the verifier drafts this session's rounds now (DSD's fused mode)
    fused_rounds: int = 0
    client: str | None = None          # arrivals clients: the user's client that asked (its ANSWER goes there)


class DrafterCore:
    """prompts: (text, ids) or (text, ids, reference_tokens) — the reference answer's length, for
    workload.output_len dataset; trace: this drafter's requests (workload.arrivals trace), by arrival time."""

    def __init__(self, config: DrafterConfig, backend, prompts: list[tuple], trace: list[TraceRequest] | None = None,
                 incarnation: int = 0, finished: set[str] | None = None):
        """finished: a restarted drafter's sessions its crashed predecessor completed (nodes/drafter.py --resume):
        they take their place in the order of sessions (the same prompts and draws follow) but are not run."""
        if not prompts:
            raise DrafterError("no prompts: give --prompt TEXT or --prompts FILE")
        self.config, self.backend, self.prompts = config, backend, prompts
        self.trace = list(trace or [])
        self.lengths = OutputLengths(config.workload.output_len, config.workload.max_new, config.seed)
        self.free_at: list[float] = []   # closed loop: when each free slot may start its next session (think time)
        self.name = config.name
        w = config.workload
        self.sampling = Sampling(w.temperature, config.speculation.payload, config.seed)
        self.stop = make_stop_rule(config.stop_rule_spec())
        r = config.routing
        # JSQ here is each drafter's own, on loads reported in verdicts: with ties by name every drafter that
        # sees no load (all of them at the start) would pick the same first verifier (80 drafters all on t1 of
        # DSD's 20 targets); ties broken at random (seeded per drafter) spread them as a central router would.
        # Round-robin starts each drafter's counter at its own (seeded) offset for the same reason.
        self.router = None if r.policy is None else \
            make_router(r.policy, **({"d": r.d} if r.policy == "jsq-d" else {}),
                        **({"ties": "random"} if r.policy == "jsq" else {}),
                        **({"start": random.Random(f"rr/{config.seed}").randrange(1 << 16)}
                           if r.policy == "round-robin" else {}),
                        **({"seed": config.seed} if r.policy in ("random", "jsq-d", "jsq") else {}))
        self.sessions: dict[str, ClientSession] = {}
        self.verifiers: list[str] = []
        self.load: dict[str, int] = {}
        self.arrivals = random.Random(config.seed)
        self.t0 = self.next_at = self.last_activity = 0.0
        self.started = 0
        self.done = False
        self.busy: DraftWork | None = None
        self.busy_for: tuple[ClientSession, str] | None = None   # (session, "window" | "ahead")
        self.inbox: list[tuple[str, bytes]] = []
        self.asks: list[tuple[str, P.Ask]] = []      # arrivals clients: (client, request) not started yet
        self.errors = ErrorLimiter()                 # clients' bad frames: a bounded log
        self.ready: list[ClientSession] | None = None   # sessions still to be sent a window this pass
        self.sent_this_pass = False
        self.idle_since: float | None = None
        self.idle_s = 0.0
        self.results = 0
        self.incarnation = incarnation             # drawn at process start (nodes/drafter.py); see recovery.py
        self.finished = set(finished or ())
        self.restarted = finished is not None      # after a crash: the verifier may still answer the old sessions
        self.watch = VerifierWatch(config.probe_s)
        self.lost_state: str | None = None         # the last not_registered / bad_session ERROR, for the give-up

    # -- handshake -----------------------------------------------------------------------------------
    def hello_frame(self) -> bytes:
        b = self.backend
        return P.encode(P.Hello(self.name, b.model_id, b.fingerprint, b.vocab_size, [self.config.speculation.payload],
                                self.config.speculation.proactive, self.incarnation))

    def before_welcome(self, frame: bytes) -> bool:
        """Whether a frame that came before WELCOME is to be skipped: a restarted drafter's verifier may still
        answer the crashed predecessor's sessions until it has read this process's HELLO."""
        try:
            msg = P.decode(frame)
        except P.ProtocolError:
            return False
        if isinstance(msg, P.Error):      # a refusal of this process stands; "who are you?" was for the other
            return self.restarted and msg.code in LOST_STATE_CODES
        return self.restarted and not isinstance(msg, P.Welcome)

    def on_welcome(self, endpoint: str, frame: bytes, now: float) -> tuple[str, list[Action]]:
        """The verifier at `endpoint` answered HELLO; returns its name (frames from it are `via` that name)."""
        msg = P.decode(frame)
        if isinstance(msg, P.Error):
            raise DrafterError(f"verifier at {endpoint} refused: {msg.code}: {msg.message}")
        if not isinstance(msg, P.Welcome):
            raise DrafterError(f"expected WELCOME, got {type(msg).__name__}")
        if msg.verifier in self.load:
            raise DrafterError(f"two verifiers are named {msg.verifier!r}; verifier names must differ")
        self.verifiers.append(msg.verifier)
        self.load[msg.verifier] = 0
        self.watch.welcomed(msg.verifier, msg.incarnation, now)
        return msg.verifier, [self._rec(E.Welcome, now, verifier=msg.verifier, model=msg.model, endpoint=endpoint)]

    def begin(self, now: float) -> list[Action]:
        if not self.verifiers:
            raise DrafterError("no verifier welcomed this drafter")
        if self.router is None and len(self.verifiers) > 1:
            raise DrafterError("several verifiers need a routing policy")
        self.t0 = self.next_at = self.last_activity = now
        self.free_at = [now] * self.config.workload.sessions
        return self._run(now)

    # -- inputs --------------------------------------------------------------------------------------
    def on_frames(self, frames: list[tuple[str, bytes]], now: float) -> list[Action]:
        """Frames that arrived (from verifiers by name), all of them: they are taken together, as one drain."""
        self.inbox += frames
        if self.busy is not None or self.done:
            return []
        self._account_idle(now)
        return self._run(now)

    def on_client_frames(self, frames: list[tuple[str, bytes]], now: float) -> list[Action]:
        """Requests from the users' clients (arrivals clients), by client name: each becomes a session as soon as
        the drafter is free. A bad frame is answered with ERROR and logged; the drafter carries on."""
        out: list[Action] = []
        for client, frame in frames:
            try:
                msg = P.decode(frame)
                if not isinstance(msg, P.Ask):
                    raise P.ProtocolError("bad_type", f"expected ASK, got {msg.TYPE}")
            except P.ProtocolError as e:
                out.append(Send(ClientAddr(client), P.make_error_frame(e)))
                repeated = self.errors.admit((client, e.code), now)     # bounded, as the verifier's
                if repeated is not None:
                    out.append(self._rec(E.Error, now, drafter=client[:64], code=e.code, message=e.message[:200],
                                         repeated=repeated))
                continue
            self.asks.append((client, msg))
            out.append(self._rec(E.Ask, now, request=msg.request, prompt_tokens=msg.prompt_tokens,
                                 max_new=msg.max_new, bytes=len(frame)))
        if self.busy is not None or self.done:
            return out
        self._account_idle(now)
        return out + self._run(now)

    def on_compute_done(self, result, duration_s: float, now: float) -> list[Action]:
        if self.busy is None:
            raise DrafterError("a compute finished but none was running")
        s, purpose = self.busy_for
        work, self.busy, self.busy_for = self.busy, None, None
        if purpose == "batch":                # each session of a batched draft waited for all of it
            for item in work.items:
                if item.session in self.sessions:
                    self.sessions[item.session].draft_s += duration_s
            return self._run(now)             # the ready sessions' chains are full now: their windows go out
        s.draft_s += duration_s
        out: list[Action] = []
        if purpose == "window":               # go on with this window: send it, or draft its next token
            step = self._window_step(s, now)
            if isinstance(step, Compute):
                return [step]
            out += step
            self.ready.pop(0)
            self.sent_this_pass = True
        return out + self._run(now)

    def on_timer(self, now: float) -> list[Action]:
        if self.busy is not None or self.done:
            return []
        self._account_idle(now)
        if self.sessions and not self.inbox and now - self.last_activity >= self.config.timeout_s:
            raise DrafterError(f"no verdict for {self.config.timeout_s:g} s from {', '.join(self.verifiers)}"
                               + (f" (last: {self.lost_state})" if self.lost_state else ""))
        return self._probes(now) + self._run(now)

    # -- the loop ------------------------------------------------------------------------------------
    def _more(self, now: float) -> bool:
        w = self.config.workload
        if w.arrivals == "clients":
            return self.started < w.requests
        if w.arrivals == "trace":
            return self.started < len(self.trace) and (w.requests is None or self.started < w.requests) and \
                (w.duration_s is None or now < self.t0 + w.duration_s)
        if w.duration_s is not None:
            # the very sum the end's wake-up is set to (below): `now - t0 < duration` can stay true at
            # now == t0 + duration in floating point (0.7 + 0.1 - 0.7 < 0.1), which woke the drafter at the same
            # instant forever on a simulated clock
            return now < self.t0 + w.duration_s
        return self.started < w.requests

    def _due(self, now: float) -> float:
        """When the next session may start (may be <= now)."""
        w = self.config.workload
        if w.arrivals == "poisson":
            return self.next_at
        if w.arrivals == "trace":
            return self.t0 + self.trace[self.started].arrival_s
        if w.arrivals == "clients":
            return now if self.asks else float("inf")
        return min(self.free_at) if len(self.sessions) < w.sessions and self.free_at else float("inf")

    def _run(self, now: float) -> list[Action]:
        """Do everything that needs no compute, up to the next compute or the next wait."""
        out: list[Action] = []
        w = self.config.workload
        while True:
            if self.ready is None:
                while self._more(now) and now >= self._due(now):
                    if w.arrivals == "closed":
                        self.free_at.remove(min(self.free_at))
                    out += self._start(f"{self.name}-s{self.started}", now)
                    self.started += 1
                    if w.arrivals == "poisson":
                        self.next_at += self.arrivals.expovariate(w.rate_per_s)
                # verdicts first: a session that can send again is worth more than drafting ahead
                got = self._take_inbox(now, out)
                self.ready = [s for s in self.sessions.values() if s.in_flight is None]
                self.sent_this_pass = bool(got)
            while self.ready:
                s = self.ready[0]
                if s.sid not in self.sessions:
                    self.ready.pop(0)
                    continue
                if self.config.speculation.batch_drafting and self.stop is None and \
                        len(self.backend.chain(s.sid)) < s.gamma:
                    return out + [self._draft_batch()]
                step = self._window_step(s, now)
                if isinstance(step, Compute):
                    return out + [step]
                out += step
                self.ready.pop(0)
                self.sent_this_pass = True
            self.ready = None
            if self.sent_this_pass:
                self.last_activity = now
                continue
            if self.config.speculation.proactive:
                for s in self.sessions.values():
                    if s.in_flight is not None and not s.fused and \
                            len(self.backend.chain(s.sid)) < s.in_flight + 1 + s.gamma:
                        return out + [self._compute(s, "ahead", 1)]
            if not self._more(now) and not self.sessions:
                self.done = True
                return out + [self._rec(E.Done, now, sessions=self.results, idle_s=self.idle_s)]
            self.idle_since = now
            wake = min(self.last_activity + self.config.timeout_s, self.watch.due(self._busy_verifiers()))
            if self._more(now):
                wake = min(wake, self._due(now))
            if w.duration_s is not None and self._more(now):    # notice the end even with nothing in flight
                wake = min(wake, self.t0 + w.duration_s)
            return out + [WakeAt(wake)]

    def _account_idle(self, now: float) -> None:
        if self.idle_since is not None:
            self.idle_s += max(0.0, now - self.idle_since)
            self.idle_since = None

    def _take_inbox(self, now: float, out: list[Action]) -> int:
        n = 0
        while self.inbox:
            via, frame = self.inbox.pop(0)
            msg = P.decode(frame)
            self.watch.heard_from(via, now)
            if isinstance(msg, P.Error) and msg.code in LOST_STATE_CODES and self.config.speculation.mode == "distributed":
                # a restarted verifier answering what was sent to its predecessor: ask who it is (recovery.py)
                self.lost_state = f"{msg.code}: {msg.message}"
                out += self._probes(now, force=via)
                continue
            if isinstance(msg, P.Error):
                raise DrafterError(f"verifier {via} refused: {msg.code}: {msg.message}")
            if isinstance(msg, P.Welcome):
                if msg.verifier != via:
                    raise DrafterError(f"verifier {via} now calls itself {msg.verifier!r}")
                if self.watch.welcomed(via, msg.incarnation, now):
                    out += self._resume_all(via, now)
                    n += 1
                continue
            if not isinstance(msg, P.Verdict):
                raise DrafterError(f"expected VERDICT, got {type(msg).__name__}")
            out += self._on_verdict(msg, len(frame), via, now)
            n += 1
        if n:
            self.last_activity = now
        return n

    # -- recovery (nodes/core/recovery.py) -----------------------------------------------------------------
    def _busy_verifiers(self) -> set[str]:
        return {s.via for s in self.sessions.values() if s.in_flight is not None and s.via is not None}

    def _probes(self, now: float, force: str | None = None) -> list[Action]:
        out: list[Action] = []
        for v in self.watch.to_probe(self._busy_verifiers(), now, force):
            frame = self.hello_frame()
            out += [Send(v, frame), self._rec(E.Recovery, now, what="probe", peer=v, bytes_out=len(frame),
                                              silent_s=now - self.watch.heard.get(v, now))]
        return out

    def _resume_all(self, via: str, now: float) -> list[Action]:
        """The verifier `via` restarted: every session there starts again from its committed tokens."""
        mine = [s for s in self.sessions.values() if s.via == via]
        if self.config.speculation.mode != "distributed" or any(s.fused for s in mine):
            raise DrafterError(f"verifier {via} restarted and sessions drafted at the verifier (speculation.mode "
                               f"{self.config.speculation.mode}) cannot resume")
        c = self.config
        out: list[Action] = [self._rec(E.Recovery, now, what="verifier_restarted", peer=via, sessions=len(mine))]
        for s in mine:
            s.round += 1                   # a round of its own: whatever was in flight went with the old process
            s.in_flight = 0                # the re-prefill's verdict commits one token, as a session's first does
            s.sent_at = now
            s.pre_drafted = None
            frame = self._start_frame(s, now)
            out += [Send(via, frame), self._rec(E.Recovery, now, what="resumed", peer=via, session=s.sid,
                                                round=s.round, committed=len(s.generated), bytes_out=len(frame))]
        self.lost_state = None
        self.last_activity = now
        return out

    def _compute(self, s: ClientSession, purpose: str, k: int) -> Compute:
        self.busy, self.busy_for = DraftWork(s.sid, k), (s, purpose)
        return Compute(self.busy)

    def _draft_batch(self) -> Compute:
        """speculation.batch_drafting: one compute drafting what every ready session lacks of its window (the
        first ready session lacks some), in one batched pass per token step, instead of one session at a time."""
        from nodes.core.actions import DraftBatch
        items = []
        for s in self.ready:
            if s.sid not in self.sessions or s.fused:
                continue
            chain = len(self.backend.chain(s.sid))
            if s.pre_drafted is None:          # as _window_step: what was drafted ahead, before this batch adds
                s.pre_drafted = min(chain, s.gamma)
            if chain < s.gamma:
                items.append(DraftWork(s.sid, s.gamma - chain))
        self.busy, self.busy_for = DraftBatch(tuple(items)), (None, "batch")
        return Compute(self.busy)

    # -- sessions ------------------------------------------------------------------------------------
    def _route(self, sid: str, now: float) -> tuple[str, list[Action]]:
        """The verifier for a new session: the policy sees each verifier's last reported load plus the
        sessions this drafter has placed there since."""
        if self.router is None:
            return self.verifiers[0], []
        queues = {v: self.load[v] + sum(1 for s in self.sessions.values() if s.via == v and not s.reported)
                  for v in self.verifiers}
        via = self.router.route(sid, queues, now)
        return via, [self._rec(E.Route, now, session=sid, verifier=via, queues=queues, policy=self.router.name)]

    def _asked(self) -> tuple[str, list[int], int, str, str]:
        """The next client request's prompt (its ids cut or repeated to exactly prompt_tokens), output length
        (at most workload.max_new), request id and client."""
        client, ask = self.asks.pop(0)
        text = ask.prompt.decode("utf-8")
        ids = list(self.backend.encode(text)) or [0]
        ids = (ids * (ask.prompt_tokens // len(ids) + 1))[:ask.prompt_tokens]
        return text, ids, min(ask.max_new, self.config.workload.max_new), ask.request, client

    def _pick(self) -> tuple[str, list[int], int, str | None]:
        """The next session's prompt, ids, output length and trace request id. A trace request's prompt_tokens
        picks the prompt nearest in length (ties: the next in turn), cut or repeated to exactly that many ids;
        its target_tokens is the output length (at most max_new)."""
        n, first = len(self.prompts), self.config.prompt_offset + self.started
        req = self.trace[self.started] if self.config.workload.arrivals == "trace" else None
        i = first % n
        if req is not None and req.prompt_tokens is not None:
            i = min(((first + k) % n for k in range(n)),
                    key=lambda j: (abs(len(self.prompts[j][1]) - req.prompt_tokens), (j - first) % n))
        text, ids, *rest = self.prompts[i]
        ref = rest[0] if rest else None
        if req is not None and req.prompt_tokens is not None and len(ids) != req.prompt_tokens and ids:
            ids = (list(ids) * (req.prompt_tokens // len(ids) + 1))[:req.prompt_tokens]
            text = self.backend.decode(ids)
        max_new = self.lengths.draw(ref)
        if req is not None and req.target_tokens is not None:
            max_new = min(req.target_tokens, self.config.workload.max_new)
        return text, list(ids), max_new, None if req is None else req.request_id

    def _start(self, sid: str, now: float) -> list[Action]:
        c = self.config
        if sid in self.finished:      # done before a crash: its draws are taken so the next sessions match
            if c.workload.arrivals != "clients":
                self._pick()
            self.results += 1
            if c.workload.arrivals == "closed":
                self.free_at.append(now)
            return [self._rec(E.Recovery, now, what="already_done", session=sid)]
        client = None
        if c.workload.arrivals == "clients":
            prompt, prompt_ids, max_new, request, client = self._asked()
        else:
            prompt, prompt_ids, max_new, request = self._pick()
        s = ClientSession(sid, prompt, prompt_ids, c.speculation.gamma, max_new=max_new, request=request,
                          client=client)
        s.via, out = self._route(sid, now)
        self.sessions[sid] = s
        self.backend.open(sid, prompt_ids, self.sampling)
        s.sent_at = now
        frame = self._start_frame(s, now)
        return out + [Send(s.via, frame),
                      self._rec(E.Start, now, session=sid, prompt_tokens=len(prompt_ids), bytes_out=len(frame),
                                verifier=s.via, max_new=s.max_new, request=s.request)]

    def _start_frame(self, s: ClientSession, now: float) -> bytes:
        """START for a new session (nothing committed, round 0) or one resumed on a restarted verifier (its
        committed tokens, re-prefilled there, and its round)."""
        c = self.config
        return P.encode(P.Start(s.sid, np.asarray(s.prompt_ids, dtype=np.int32), s.max_new, c.workload.temperature,
                                c.speculation.payload, c.seed, s.gamma, now, np.asarray(s.generated, dtype=np.int32),
                                s.round))

    def _window_step(self, s: ClientSession, now: float) -> Compute | list[Action]:
        """The next step of sending s a window: a compute for the tokens it still lacks, or the sends."""
        chain = self.backend.chain(s.sid)
        if s.pre_drafted is None:              # drafted ahead while the last window was in flight
            s.pre_drafted = min(len(chain), s.gamma)
        if self.stop is None:
            if len(chain) < s.gamma:
                return self._compute(s, "window", s.gamma - len(chain))
            return self._send_window(s, s.gamma, now)
        # a stop rule ends the window at the first drafted token where it says stop (the verdict's window caps it)
        size = 0
        while size < s.gamma:
            if len(chain) <= size:
                return self._compute(s, "window", 1)
            size += 1
            if self.stop.should_stop([1.0 if d.confidence is None else d.confidence for d in chain[:size]]):
                break
        return self._send_window(s, size, now)

    def _send_window(self, s: ClientSession, size: int, now: float) -> list[Action]:
        c = self.config
        window = self.backend.chain(s.sid)[:size]
        s.round += 1
        s.in_flight = len(window)
        s.sent_at = now
        base = len(s.prompt_ids) + len(s.generated)
        frame = P.encode(P.Draft.from_tokens(s.sid, s.round, base, window, c.speculation.payload,
                                             self.backend.vocab_size, now, s.draft_s, s.last_rtt_s))
        s.proposed += len(window)
        out = [Send(s.via, frame), self._rec(E.Draft, now, session=s.sid, round=s.round, gamma=len(window),
                                             pre_drafted=s.pre_drafted, draft_s=s.draft_s,
                                             bytes_out=len(frame))]
        s.draft_s, s.pre_drafted = 0.0, None
        return out

    def _on_verdict(self, v: P.Verdict, nbytes: int, via: str, now: float) -> list[Action]:
        s = self.sessions.get(v.session)
        if s is None and self.restarted:       # a verdict for the crashed predecessor's session, sent before the
            return []                          # verifier saw this process's HELLO and dropped it
        if s is None or v.round != s.round + s.fused or via != s.via or (v.drafted is not None) != s.fused:
            raise DrafterError(f"verdict for unknown session/round {v.session}/{v.round} (from {via})")
        self.load[via] = v.load
        s.reported = True
        if v.drafted is not None:
            return self._on_fused_verdict(s, v, nbytes, via, now)
        window = s.in_flight or 0
        chain = self.backend.chain(s.sid)
        hit = int(v.accepted == window and len(chain) > window and chain[window].token == v.token)
        new = [d.token for d in chain[:v.accepted]] + [v.token]
        kept = self.backend.commit(s.sid, v.accepted, v.token, window)
        wasted = len(chain) - v.accepted - hit - kept
        s.accepted += v.accepted
        s.hits += hit
        s.wasted += wasted
        fresh = len(cut_output(new, s.max_new - s.delivered, self.backend.eos_token_id)[0])
        s.delivered += fresh
        s.generated += new
        s.in_flight = 0 if v.fused else None
        s.fused = v.fused
        s.gamma = v.next_gamma
        s.last_rtt_s = max(0.0, now - s.sent_at)
        out: list[Action] = [self._rec(E.Verdict, now, session=s.sid, round=v.round, gamma=window,
                                       accepted=v.accepted, token=v.token, rtt_s=now - s.sent_at, queue_s=v.queue_s,
                                       verify_s=v.verify_s, batch=v.batch, one_way_s=now - v.t_send, hit=hit,
                                       kept=kept, wasted=wasted, bytes_in=nbytes, done=v.done, tokens=fresh)]
        s.sent_at = now if v.fused else s.sent_at    # a fused session's next verdict is timed from this one
        if v.done:
            out += self._finish(s, now)
        return out

    def _on_fused_verdict(self, s: ClientSession, v: P.Verdict, nbytes: int, via: str, now: float) -> list[Action]:
        """A round the verifier drafted: its accepted window and token are committed here too (one token at a time,
        which keeps any draft of ours that guessed them), so the session can come back to this drafter."""
        new = [int(t) for t in v.drafted[:v.accepted]] + [v.token]
        catch_up(self.backend, s.sid, new)
        s.proposed += len(v.drafted)          # drafted by the verifier's model: counted with its acceptance
        s.accepted += v.accepted
        s.fused_rounds += 1
        fresh = len(cut_output(new, s.max_new - s.delivered, self.backend.eos_token_id)[0])
        s.delivered += fresh
        s.generated += new
        s.round = v.round
        s.in_flight = 0 if v.fused else None
        s.fused = v.fused
        s.gamma = v.next_gamma
        out: list[Action] = [self._rec(E.Verdict, now, session=s.sid, round=v.round, gamma=len(v.drafted),
                                       accepted=v.accepted, token=v.token, rtt_s=now - s.sent_at, queue_s=v.queue_s,
                                       verify_s=v.verify_s, batch=v.batch, one_way_s=now - v.t_send,
                                       bytes_in=nbytes, done=v.done, tokens=fresh, fused=True)]
        s.sent_at = now
        if v.done:
            out += self._finish(s, now)
        return out

    def _finish(self, s: ClientSession, now: float) -> list[Action]:
        """Record the session's output, cut as the verifier cut it."""
        tokens = cut_output(s.generated, s.max_new, self.backend.eos_token_id)[0]
        self.backend.close(s.sid)
        del self.sessions[s.sid]
        w = self.config.workload
        if w.arrivals == "closed":            # the slot's next session, after the user's think time
            think = self.arrivals.expovariate(1 / w.think_s) if w.think == "exp" and w.think_s > 0 else w.think_s
            self.free_at.append(now + think)
        if self.router is not None:
            self.router.release(s.sid)
        self.results += 1
        result = {"drafter": self.name, "session": s.sid, "prompt": s.prompt, "prompt_tokens": s.prompt_ids,
                  "tokens": tokens, "text": self.backend.decode(tokens), "rounds": s.round, "proposed": s.proposed,
                  "accepted": s.accepted, "proactive_hits": s.hits, "wasted": s.wasted, "max_new": s.max_new,
                  **({"request": s.request} if s.request is not None else {}),
                  **({"fused_rounds": s.fused_rounds} if s.fused_rounds else {})}   # rounds the verifier drafted
        out: list[Action] = [Output(result)]
        if s.client is not None:
            answer = P.Answer(s.request, np.asarray(tokens, dtype=np.int32),
                              result["text"].encode("utf-8", "replace")[:P.MAX_TEXT], now)
            out.append(Send(ClientAddr(s.client), P.encode(answer)))
        return out + [self._rec(E.Finish, now, session=s.sid, tokens=len(tokens), rounds=s.round,
                                proposed=s.proposed, accepted=s.accepted, hits=s.hits, wasted=s.wasted)]

    def _rec(self, kind: type[E.Event], now: float, **fields) -> Record:
        return Record(kind(t=now, node=self.name, **fields))
