"""Drafter node: a ZeroMQ DEALER that drafts windows of tokens for one or more sessions and sends them to the
verifier.

    python -m nodes.drafter --connect tcp://10.0.0.1:5555 --model smollm2-135m:int8 --prompt "The capital of" \
        --gamma 4 --sessions 2 --max-new 64 --out out.jsonl --log events.jsonl

Pipelining, both switchable and logged:
- proactive drafting: while a window is being verified, keep drafting as if all of it were accepted and the
  verifier's bonus token were our own next guess; if the verdict confirms both, the next window is ready at
  once, else those drafts are discarded (counted as wasted);
- several sessions interleaved: while one session waits for its verdict, the model drafts for another.
"""
from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import zmq

from nodes import protocol as P
from nodes.backends import Sampling
from nodes.eventlog import EventLog, log_error
from nodes.verification import cut_output


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
    done: bool = False


class Drafter:
    def __init__(self, backend, args, log: EventLog):
        self.backend, self.args, self.log = backend, args, log
        self.sampling = Sampling(args.temperature, args.payload, args.seed)
        self.sessions: dict[str, ClientSession] = {}
        self.results: list[dict] = []
        self.idle_s = 0.0
        self.recorder = None
        self.router = None
        self.stop = None
        if getattr(args, "stop_threshold", None) is not None:
            from testbed.policies.speculation import GAMMA_LIMIT, ThresholdStop
            self.stop = ThresholdStop(bound=args.stop_threshold, gamma_min=1, gamma_max=GAMMA_LIMIT)
        if getattr(args, "routing", None):
            from testbed.policies.routing import make_router
            spec = dict(args.routing)
            self.router = make_router(spec.pop("policy"), **spec)
        if args.record_acceptance:    # replayable by the synthetic backend: {"replay": FILE}
            from nodes.backends.synthetic import AcceptanceRecorder
            self.recorder = AcceptanceRecorder(args.record_acceptance)

    # -- wire ----------------------------------------------------------------------------------------
    # One DEALER per verifier. With several (--connect A,B,...) each session is routed to one of them at START
    # by the routing policy and stays there (its KV cache lives there); with one, everything goes to it.
    def send(self, msg, via: str | None = None) -> int:
        frame = P.encode(msg)
        self.socks[via or self.default].send(frame)
        return len(frame)

    def recv(self, timeout_s: float):
        """(message, bytes, verifier) of the next frame from any verifier, or (None, 0, None) on timeout."""
        ready = dict(self.poller.poll(int(timeout_s * 1e3)))
        for name, sock in self.socks.items():
            if sock in ready:
                frame = sock.recv()
                msg = P.decode(frame)
                if isinstance(msg, P.Error):
                    raise DrafterError(f"verifier {name} refused: {msg.code}: {msg.message}")
                return msg, len(frame), name
        return None, 0, None

    def connect(self) -> None:
        self.socks, self.poller, self.load = {}, zmq.Poller(), {}
        b = self.backend
        for endpoint in self.args.connect.split(","):
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
            sock.send(P.encode(P.Hello(self.args.name, b.model_id, b.fingerprint, b.vocab_size,
                                       [self.args.payload], self.args.proactive)))
            if not sock.poll(int(self.args.timeout * 1e3)):
                raise DrafterError(f"no answer from the verifier at {endpoint} within {self.args.timeout} s")
            msg = P.decode(sock.recv())
            if isinstance(msg, P.Error):
                raise DrafterError(f"verifier at {endpoint} refused: {msg.code}: {msg.message}")
            if not isinstance(msg, P.Welcome):
                raise DrafterError(f"expected WELCOME, got {type(msg).__name__}")
            if msg.verifier in self.socks:
                raise DrafterError(f"two verifiers are named {msg.verifier!r}; verifier names must differ")
            self.socks[msg.verifier] = sock
            self.poller.register(sock, zmq.POLLIN)
            self.load[msg.verifier] = 0
            self.log.write("welcome", verifier=msg.verifier, model=msg.model, endpoint=endpoint)
        self.default = next(iter(self.socks))
        if self.router is None and len(self.socks) > 1:
            raise DrafterError("several verifiers need a routing policy: give --routing")

    def route(self, sid: str) -> str:
        """The verifier for a new session: the policy sees each verifier's last reported load plus the
        sessions this drafter has placed there since."""
        if self.router is None:
            return self.default
        queues = {v: self.load[v] + sum(1 for s in self.sessions.values() if s.via == v and not s.reported)
                  for v in self.socks}
        via = self.router.route(sid, queues, time.time())
        self.log.write("route", session=sid, verifier=via, queues=queues, policy=self.router.name)
        return via

    # -- sessions ------------------------------------------------------------------------------------
    def start(self, sid: str, prompt: str, prompt_ids: list[int]) -> None:
        s = ClientSession(sid, prompt, prompt_ids, self.args.gamma)
        s.via = self.route(sid)
        self.sessions[sid] = s
        self.backend.open(sid, prompt_ids, self.sampling)
        s.sent_at = time.time()
        n = self.send(P.Start(sid, np.asarray(prompt_ids, dtype=np.int32), self.args.max_new, self.args.temperature,
                              self.args.payload, self.args.seed, self.args.gamma, s.sent_at), s.via)
        self.log.write("start", session=sid, prompt_tokens=len(prompt_ids), bytes_out=n, verifier=s.via)

    def send_window(self, s: ClientSession) -> None:
        """Draft what the next window still lacks (proactive drafts may already cover it) and send it. With a
        stop rule (--stop-threshold) the window ends early, at the first token where the rule says stop."""
        chain = self.backend.chain(s.sid)
        ready = min(len(chain), s.gamma)
        size = s.gamma
        if self.stop is not None:
            size = 0
            while size < s.gamma:
                if len(chain) <= size:
                    t = time.perf_counter()
                    self.backend.extend(s.sid, 1)
                    s.draft_s += time.perf_counter() - t
                    chain = self.backend.chain(s.sid)
                size += 1
                if self.stop.should_stop([1.0 if d.confidence is None else d.confidence for d in chain[:size]]):
                    break
        elif len(chain) < s.gamma:
            t = time.perf_counter()
            self.backend.extend(s.sid, s.gamma - len(chain))
            s.draft_s += time.perf_counter() - t
            chain = self.backend.chain(s.sid)
        window = chain[:size]
        s.round += 1
        s.in_flight = len(window)
        s.sent_at = time.time()
        base = len(s.prompt_ids) + len(s.generated)
        n = self.send(P.Draft.from_tokens(s.sid, s.round, base, window, self.args.payload,
                                          self.backend.vocab_size, s.sent_at, s.draft_s, s.last_rtt_s), s.via)
        s.proposed += len(window)
        self.log.write("draft", session=s.sid, round=s.round, gamma=len(window), pre_drafted=ready,
                       draft_s=s.draft_s, bytes_out=n)
        s.draft_s = 0.0

    def draft_ahead(self, s: ClientSession) -> bool:
        """Proactive drafting: one more token beyond the window in flight, up to the bonus guess plus a
        whole next window. Returns whether there was anything to do."""
        if s.in_flight is None or len(self.backend.chain(s.sid)) >= s.in_flight + 1 + s.gamma:
            return False
        t = time.perf_counter()
        self.backend.extend(s.sid, 1)
        s.draft_s += time.perf_counter() - t
        return True

    def on_verdict(self, v: "P.Verdict", nbytes: int, via: str | None = None) -> None:
        s = self.sessions.get(v.session)
        if s is None or v.round != s.round or (via is not None and via != s.via):
            raise DrafterError(f"verdict for unknown session/round {v.session}/{v.round} (from {via})")
        if via is not None:
            self.load[via] = v.load
            s.reported = True
        window = s.in_flight or 0
        chain = self.backend.chain(s.sid)
        hit = int(v.accepted == window and len(chain) > window and chain[window].token == v.token)
        new = [d.token for d in chain[:v.accepted]] + [v.token]
        kept = self.backend.commit(s.sid, v.accepted, v.token, window)
        wasted = len(chain) - v.accepted - hit - kept
        if self.recorder and window:
            self.recorder.record(window, v.accepted)
        s.accepted += v.accepted
        s.hits += hit
        s.wasted += wasted
        fresh = len(cut_output(new, self.args.max_new - s.delivered, self.backend.eos_token_id)[0])
        s.delivered += fresh
        s.generated += new
        s.in_flight = None
        s.gamma = v.next_gamma
        now = time.time()
        s.last_rtt_s = max(0.0, now - s.sent_at)
        self.log.write("verdict", session=s.sid, round=v.round, gamma=window, accepted=v.accepted, token=v.token,
                       rtt_s=now - s.sent_at, queue_s=v.queue_s, verify_s=v.verify_s, batch=v.batch,
                       one_way_s=now - v.t_send, hit=hit, kept=kept, wasted=wasted, bytes_in=nbytes, done=v.done,
                       tokens=fresh)
        if v.done:
            self.finish(s)

    def finish(self, s: ClientSession) -> None:
        """Record the session's output, cut as the verifier cut it."""
        tokens = cut_output(s.generated, self.args.max_new, self.backend.eos_token_id)[0]
        self.backend.close(s.sid)
        self.results.append({"drafter": self.args.name, "session": s.sid, "prompt": s.prompt,
                             "prompt_tokens": s.prompt_ids, "tokens": tokens, "text": self.backend.decode(tokens),
                             "rounds": s.round, "proposed": s.proposed, "accepted": s.accepted,
                             "proactive_hits": s.hits, "wasted": s.wasted})
        self.log.write("finish", session=s.sid, tokens=len(tokens), rounds=s.round, proposed=s.proposed,
                       accepted=s.accepted, hits=s.hits, wasted=s.wasted)
        del self.sessions[s.sid]
        if self.router is not None:
            self.router.release(s.sid)

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, prompts: list[tuple[str, list[int]]]) -> list[dict]:
        """Closed loop (keep `--sessions` sessions open) or Poisson arrivals (`--arrival-rate` per second),
        for `--requests` sessions or for `--duration` seconds, cycling through the prompts."""
        args = self.args
        arrivals = random.Random(args.seed)
        t0 = time.monotonic()
        next_at, started, last_activity = t0, 0, t0

        def more() -> bool:
            if args.duration is not None:
                return time.monotonic() - t0 < args.duration
            return started < (args.requests if args.requests is not None else len(prompts))

        while more() or self.sessions:
            now = time.monotonic()
            while more() and (now >= next_at if args.arrival_rate else len(self.sessions) < args.sessions):
                text, ids = prompts[(args.prompt_offset + started) % len(prompts)]
                self.start(f"{args.name}-s{started}", text, ids)
                started += 1
                if args.arrival_rate:
                    next_at += arrivals.expovariate(args.arrival_rate)
            # Verdicts first: a session that can send again is worth more than drafting ahead.
            got = self.drain(0.0)
            ready = [s for s in self.sessions.values() if s.in_flight is None]
            for s in ready:
                self.send_window(s)
            if got or ready:
                last_activity = time.monotonic()
                continue
            if args.proactive and any(self.draft_ahead(s) for s in self.sessions.values()):
                continue
            wait = args.timeout
            if args.arrival_rate and more():
                wait = min(wait, max(0.0, next_at - time.monotonic()))
            t = time.perf_counter()
            got = self.drain(wait)
            self.idle_s += time.perf_counter() - t
            if got:
                last_activity = time.monotonic()
            elif self.sessions and time.monotonic() - last_activity >= args.timeout:
                raise DrafterError(f"no verdict for {args.timeout} s from {args.connect}")
        self.log.write("done", sessions=len(self.results), idle_s=self.idle_s)
        return self.results

    def drain(self, timeout_s: float) -> int:
        n = 0
        while True:
            msg, nbytes, via = self.recv(timeout_s if n == 0 else 0.0)
            if msg is None:
                return n
            if not isinstance(msg, P.Verdict):
                raise DrafterError(f"expected VERDICT, got {type(msg).__name__}")
            self.on_verdict(msg, nbytes, via)
            n += 1


def load_prompts(args, backend) -> list[tuple[str, list[int]]]:
    texts = list(args.prompt or [])
    if args.prompts:
        with open(args.prompts) as f:
            for n, line in enumerate(f, 1):
                line = line.strip()
                if not line:
                    continue
                try:
                    texts.append(json.loads(line)["prompt"] if line.startswith("{") else line)
                except (ValueError, KeyError) as e:
                    raise DrafterError(f"{args.prompts}:{n}: expected a JSON object with a 'prompt' string "
                                       f"or a plain line of text ({e})") from None
    if not texts:
        raise DrafterError("no prompts: give --prompt TEXT or --prompts FILE")
    texts = texts * args.repeat
    return [(t, backend.encode(t)) for t in texts]


def make_backend(args):
    if args.backend == "synthetic":
        from nodes.backends.synthetic import ComputeProfile, SyntheticDraft, parse_alpha
        return SyntheticDraft(args.vocab_size, parse_alpha(json.loads(args.alpha)),
                              ComputeProfile(draft_token_s=args.draft_token_ms / 1e3), seed=args.seed)
    from nodes.backends.hf import HfDraft
    return HfDraft(args.model, args.device, args.dtype, args.threads)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.drafter", description=__doc__.splitlines()[0])
    ap.add_argument("--connect", default="tcp://127.0.0.1:5555",
                    help="verifier endpoint, or several separated by commas (then --routing is needed)")
    ap.add_argument("--stop-threshold", type=float, default=None, metavar="BOUND",
                    help="SpecDec++-style: end a window once P(some drafted token is rejected), estimated from "
                         "the draft's own token probabilities, exceeds BOUND (the verdict's window is the cap)")
    ap.add_argument("--routing", type=json.loads, default=None, metavar="JSON",
                    help='session routing across verifiers, e.g. \'{"policy": "jsq-d", "d": 2, "seed": 1}\' '
                         '(testbed/policies/routing.py)')
    ap.add_argument("--name", default="drafter")
    ap.add_argument("--backend", choices=["hf", "synthetic"], default="hf")
    ap.add_argument("--model", default="smollm2-135m:int8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--vocab-size", type=int, default=32000, help="synthetic backend only")
    ap.add_argument("--alpha", default="0.8", help="synthetic: 0.8, [[0,0.9],[10,0.5]] or {\"replay\": \"f.jsonl\"}")
    ap.add_argument("--draft-token-ms", type=float, default=0.0, help="synthetic compute profile")
    ap.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    ap.add_argument("--prompts", help="file: JSON lines with a 'prompt' field, or one prompt per line")
    ap.add_argument("--repeat", type=int, default=1, help="run the prompt list this many times")
    ap.add_argument("--requests", type=int, default=None, help="run this many sessions, cycling through prompts")
    ap.add_argument("--prompt-offset", type=int, default=0, help="start at this prompt (drafters differ)")
    ap.add_argument("--duration", type=float, default=None, help="start sessions for this many seconds")
    ap.add_argument("--arrival-rate", type=float, default=None,
                    help="Poisson session arrivals per second (open loop); default: closed loop")
    ap.add_argument("--sessions", type=int, default=1, help="closed loop: sessions drafted concurrently")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--payload", default="ids", help="ids | topk:K | full")
    ap.add_argument("--gamma", type=int, default=4, help="initial window; 0 = autoregressive baseline")
    ap.add_argument("--proactive", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds without any verdict before giving up")
    ap.add_argument("--log", help="JSONL event log")
    ap.add_argument("--out", help="write each session's output as a JSON line here")
    ap.add_argument("--record-acceptance", metavar="FILE",
                    help="append each round's (gamma, accepted) in the synthetic backend's replay format")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    log = EventLog(args.log, args.name)
    try:
        backend = make_backend(args)
        drafter = Drafter(backend, args, log)
        prompts = load_prompts(args, backend)
        drafter.connect()
        results = drafter.run(prompts)
    except (DrafterError, P.ProtocolError) as e:
        log_error(args.name, str(e))
        log.write("crash", error=str(e))
        return 1
    finally:
        log.close()
    if args.out:
        with open(args.out, "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
    else:
        for r in results:
            print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
