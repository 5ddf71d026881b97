"""Verifier node: a ZeroMQ ROUTER that verifies drafts from many drafters in batches.

    python -m nodes.verifier --bind tcp://*:5555 --model smollm2-135m [--batching fifo --max-batch 8]

Per session it keeps the committed tokens (and, in the backend, the KV cache). Every frame is validated; a bad
one gets an ERROR reply and the verifier carries on serving everyone else. Each verified round is logged.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from testbed.policies.batching import make_batching

from nodes import protocol as P
from nodes.backends import DraftToken, Sampling, VerifyRequest
from nodes.control import WindowControl, ZhuPlanner
from nodes.eventlog import EventLog, log_error
from nodes.verification import cut_output


@dataclass
class Session:
    key: str                      # "<drafter>/<session>": session ids are only unique per drafter
    identity: bytes
    session: str
    max_new: int
    sampling: Sampling
    gamma: int
    rng: np.random.Generator
    committed: int                # prompt + generated tokens, as the drafter must also count them
    generated: list[int] = field(default_factory=list)
    round: int = 0
    history: list[int] = field(default_factory=list)


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


class Verifier:
    def __init__(self, backend, batching, control: WindowControl, log: EventLog, name: str = "verifier"):
        self.backend, self.batching, self.control, self.log, self.name = backend, batching, control, log, name
        self.drafters: dict[bytes, str] = {}
        self.sessions: dict[str, Session] = {}
        self.pending: list[Pending] = []
        self.sock = None
        self.batches = 0
        self.zhu = None                 # batching rule zhu: a ZhuPlanner (set by main)
        self.planned: dict[str, int] = {}

    def zhu_select(self) -> set[int]:
        """Plan the pending sessions with Zhu's DP; verify its first batch now, with the plan's length next."""
        sessions = [(p.session.key, p.session.max_new - len(p.session.generated), p.session.committed)
                    for p in self.pending]
        keys, length, plan = self.zhu.plan(sessions)
        for key in keys:
            self.planned[key] = length
        self.log.write("plan", rule="zhu", batches=[list(b) for b in plan.batches], lengths=list(plan.lengths),
                       total_latency=plan.total_latency, cost=self.zhu.cost_model().__dict__)
        return {i for i, p in enumerate(self.pending) if p.session.key in keys}

    # -- messages ------------------------------------------------------------------------------------
    def handle(self, identity: bytes, frame: bytes) -> None:
        try:
            msg = P.decode(frame)
            reply = self.dispatch(identity, msg, len(frame))
            if reply is not None:
                self.sock.send_multipart([identity, P.encode(reply)])
        except P.ProtocolError as e:
            self.log.write("error", drafter=self.drafters.get(identity), code=e.code, message=str(e))
            self.sock.send_multipart([identity, P.make_error_frame(e, e.session)])

    def dispatch(self, identity: bytes, msg, nbytes: int):
        if isinstance(msg, P.Hello):
            return self.on_hello(identity, msg)
        if identity not in self.drafters:
            raise P.ProtocolError("not_registered", "send HELLO first")
        if isinstance(msg, P.Start):
            return self.on_start(identity, msg)
        if isinstance(msg, P.Draft):
            return self.on_draft(identity, msg, nbytes)
        if isinstance(msg, P.End):
            s = self.sessions.get(f"{self.drafters[identity]}/{msg.session}")
            if s is not None and s.identity == identity:   # only the socket that opened it may end it
                del self.sessions[s.key]
                # a queued prefill/draft of this session must not reach the backend after close()
                self.pending = [p for p in self.pending if p.session is not s]
                self.backend.close(s.key)
                self.control.close(s.key)
                if self.zhu is not None:
                    self.zhu.forget(s.key)
            return None
        raise P.ProtocolError("bad_type", f"a verifier does not accept {type(msg).__name__}")

    def on_hello(self, identity: bytes, msg: "P.Hello"):
        if msg.tokenizer != self.backend.fingerprint or msg.vocab_size != self.backend.vocab_size:
            self.log.write("refused", drafter=msg.drafter, tokenizer=msg.tokenizer, vocab=msg.vocab_size)
            return P.Error("tokenizer_mismatch",
                           f"drafter {msg.drafter} uses tokenizer {msg.tokenizer} (vocab {msg.vocab_size}) but this "
                           f"verifier's {self.backend.model_id} uses {self.backend.fingerprint} (vocab "
                           f"{self.backend.vocab_size}); a draft is only meaningful in the target's vocabulary")
        self.drafters[identity] = msg.drafter
        self.log.write("hello", drafter=msg.drafter, model=msg.model, payloads=msg.payloads, proactive=msg.proactive)
        return P.Welcome(self.name, self.backend.model_id, self.backend.fingerprint, self.backend.vocab_size)

    def on_start(self, identity: bytes, msg: "P.Start"):
        key = f"{self.drafters[identity]}/{msg.session}"
        if key in self.sessions:
            raise P.ProtocolError("bad_session", f"session {msg.session} is already open", msg.session)
        if int(msg.prompt.max()) >= self.backend.vocab_size or int(msg.prompt.min()) < 0:
            raise P.ProtocolError("bad_field", f"prompt token ids must be in [0, {self.backend.vocab_size})", msg.session)
        if msg.temperature > 0 and msg.payload == "ids":
            raise P.ProtocolError("bad_field", "sampling (temperature > 0) needs q: payload topk:K or full, not ids", msg.session)
        sampling = Sampling(msg.temperature, msg.payload, msg.seed)
        rng = np.random.default_rng(np.random.SeedSequence([msg.seed, *key.encode()]))
        s = Session(key, identity, msg.session, msg.max_new, sampling, msg.gamma, rng, len(msg.prompt))
        self.sessions[key] = s
        self.backend.open(key, msg.prompt.tolist())
        self.control.open(key, self.drafters[identity], msg.payload, self.backend.vocab_size, msg.gamma)
        self.pending.append(Pending(s, [], time.time(), msg.t_send, 0, 0))
        return None

    def on_draft(self, identity: bytes, msg: "P.Draft", nbytes: int):
        key = f"{self.drafters[identity]}/{msg.session}"
        s = self.sessions.get(key)
        if s is None or s.identity != identity:   # drafter names are self-declared; sockets are not
            raise P.ProtocolError("bad_session", f"no open session {msg.session}", msg.session)
        if any(p.session is s for p in self.pending):
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
        self.pending.append(Pending(s, draft, time.time(), msg.t_send, msg.round, nbytes, msg.draft_s, msg.rtt_s))
        return None

    # -- batches -------------------------------------------------------------------------------------
    def run_batch(self, batch: list[Pending]) -> None:
        self.batches += 1
        started = time.time()
        reqs = [VerifyRequest(p.session.key, p.draft, p.session.sampling, p.session.rng) for p in batch]
        results = self.backend.verify(reqs)
        verify_s = time.time() - started
        outcomes = []
        for p, r in zip(batch, results):
            s = p.session
            new = [d.token for d in p.draft[:r.accepted]] + [r.token]
            new, done = cut_output(new, s.max_new - len(s.generated), self.backend.eos_token_id)
            s.generated += new
            s.committed += len(new)
            s.round = p.round
            s.history.append(r.accepted)
            if p.round:                   # round 0 is the prefill: nothing drafted, nothing to learn
                self.control.observe(s.key, len(p.draft), r.accepted, rtt_s=p.rtt_s, draft_s=p.draft_s,
                                     queue_s=started - p.arrived, verify_s=verify_s, bytes_in=p.bytes_in,
                                     accept_probs=r.accept_probs)
            outcomes.append((new, done))
        windows = self.control.next_windows([p.session.key for p in batch])
        if self.zhu is not None:
            self.zhu.observe_batch(sum(len(p.draft) + 1 for p in batch), verify_s)
            for p, r in zip(batch, results):
                if p.round:
                    self.zhu.observe_round(p.session.key, len(p.draft), r.accepted, p.draft_s)
                windows[p.session.key] = self.planned.pop(p.session.key, windows[p.session.key])
        for p, r, (new, done) in zip(batch, results, outcomes):
            s = p.session
            gamma = windows[s.key]
            verdict = P.Verdict(s.session, p.round, r.accepted, r.token, gamma, done, time.time(),
                                started - p.arrived, verify_s, len(batch), len(self.sessions) - done)
            frame = P.encode(verdict)
            self.sock.send_multipart([s.identity, frame])
            self.log.write("verify", drafter=self.drafters.get(s.identity), session=s.session, round=p.round,
                           gamma=len(p.draft), accepted=r.accepted, tokens=len(new), done=done,
                           t_draft_sent=p.sent, t_arrived=p.arrived, queue_s=started - p.arrived,
                           verify_s=verify_s, batch=len(batch), batch_id=self.batches, bytes_in=p.bytes_in,
                           bytes_out=len(frame),
                           next_gamma=gamma)
            if done:
                self.sessions.pop(s.key, None)
                self.backend.close(s.key)
                self.control.close(s.key)
                if self.zhu is not None:
                    self.zhu.forget(s.key)

    def serve(self, endpoint: str, stop_after: float | None = None) -> None:
        ctx = zmq.Context.instance()
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(endpoint)
        endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)   # the real port when bound to tcp://host:*
        self.log.write("ready", endpoint=endpoint, model=self.backend.model_id, batching=self.batching.name)
        print(f"ready {endpoint}", flush=True)
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        wake_at = None
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - time.time()) * 1e3
            if self.pending and wake_at is None:
                timeout = 0
            events = dict(poller.poll(timeout if timeout is None else int(timeout)))
            while self.sock in events:          # drain everything that arrived before deciding on a batch
                parts = self.sock.recv_multipart()
                if len(parts) == 2:
                    self.handle(parts[0], parts[1])
                else:   # a DEALER sends one frame per message; anything else is malformed
                    self.sock.send_multipart([parts[0], P.encode(P.Error("bad_frame", "expected one frame per message"))])
                events = dict(poller.poll(0))
            arrivals = [p.arrived for p in self.pending]
            if self.zhu is not None:
                chosen = self.zhu_select() if self.pending else set()
                decision = None
            elif self.batching.name == "length":    # it picks drafts by window length, not just the oldest
                decision = self.batching.select(arrivals, time.time(), len(self.sessions),
                                                lengths=[len(p.draft) for p in self.pending])
                chosen = set(decision.indices)
            else:
                decision = self.batching.select(arrivals, time.time(), len(self.sessions))
                chosen = set(range(decision.take))
            wake_at = decision.wake_at if decision is not None else None
            if chosen:
                batch = [p for i, p in enumerate(self.pending) if i in chosen]
                self.pending = [p for i, p in enumerate(self.pending) if i not in chosen]
                self.run_batch(batch)
                wake_at = None


def make_backend(args):
    if args.backend == "synthetic":
        from nodes.backends.synthetic import ComputeProfile, SyntheticTarget
        return SyntheticTarget(args.vocab_size, ComputeProfile(verify_base_s=args.verify_base_ms / 1e3,
                                                               verify_per_token_s=args.verify_per_token_ms / 1e3))
    from nodes.backends.hf import HfTarget
    return HfTarget(args.model, args.device, args.dtype, args.threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.verifier", description=__doc__.splitlines()[0])
    ap.add_argument("--bind", default="tcp://*:5555")
    ap.add_argument("--name", default="verifier")
    ap.add_argument("--backend", choices=["hf", "synthetic"], default="hf")
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--vocab-size", type=int, default=32000, help="synthetic backend only")
    ap.add_argument("--verify-base-ms", type=float, default=0.0, help="synthetic compute profile")
    ap.add_argument("--verify-per-token-ms", type=float, default=0.0, help="synthetic compute profile")
    ap.add_argument("--batching", choices=["fifo", "window", "sync", "length", "zhu"], default="fifo")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--max-tokens", type=int, default=64, help="length: padded tokens per batch at most")
    ap.add_argument("--gamma", type=int, default=None, help="force this window for every session (static policy)")
    ap.add_argument("--speculation", type=json.loads, default=None, metavar="JSON",
                    help='speculation policy, e.g. \'{"policy": "network", "gamma_max": 12}\' (testbed/policies/'
                         'speculation.py); default static: the window each session asks for')
    ap.add_argument("--scheduler", type=json.loads, default=None, metavar="JSON",
                    help='verification budget, e.g. \'{"scheduler": "goodspeed", "budget": 16}\' '
                         '(testbed/policies/scheduling.py)')
    ap.add_argument("--link-state", metavar="FILE", help="JSON the runner keeps current: per drafter uplink_mbps, "
                                                          "downlink_mbps, rtt_s (for network-aware policies)")
    ap.add_argument("--log", help="JSONL event log")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log = EventLog(args.log, args.name)
    try:
        backend = make_backend(args)
        spec = args.speculation or ({"policy": "static", "gamma": args.gamma} if args.gamma is not None else "static")
        control = WindowControl(spec, args.scheduler, args.link_state, log)
        rule = "fifo" if args.batching == "zhu" else args.batching     # zhu plans its own batches
        v = Verifier(backend, make_batching(rule, args.max_batch, args.window_ms, max_tokens=args.max_tokens),
                     control, log, args.name)
        if args.batching == "zhu":
            v.zhu = ZhuPlanner(args.max_batch)
        v.serve(args.bind)
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        log_error(args.name, f"{type(e).__name__}: {e}")
        log.write("crash", error=f"{type(e).__name__}: {e}")
        raise
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
