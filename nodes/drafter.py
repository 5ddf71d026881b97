"""Drafter node: a ZeroMQ DEALER per verifier around the drafter core (nodes/core/drafter.py).

    python -m nodes.drafter --config RUN/nodes/d1.json            # as the runner starts it
    python -m nodes.drafter --connect tcp://10.0.0.1:5555 --model smollm2-135m:int8 --prompt "The capital of" \
        --gamma 4 --sessions 2 --max-new 64 --out out.jsonl --log events.jsonl

The flags build the same DrafterConfig as a config file (nodes/config.py has every field and default). With
several verifiers (--connect A,B,...) each session is routed to one of them at START by the routing policy and
stays there (its KV cache lives there).
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time

import zmq

from nodes import protocol as P
from nodes import security
from nodes.config import DraftModel, DrafterConfig
from nodes.core.actions import ClientAddr
from nodes.core.drafter import DrafterCore, DrafterError
from nodes.events import EventLog
from nodes.events import Verdict as VerdictEvent
from nodes.shell import Shell, cost_model, exit_on_sigterm, crashed, log_error, node_config, wait_at_gate


def load_prompts(config: DrafterConfig, backend) -> list[tuple[str, list[int], int | None]]:
    """(text, ids, reference_tokens) per prompt: the reference answer's length in this drafter's tokens, only
    where workload.output_len is `dataset` (else None)."""
    from nodes.workloads.datasets import DatasetError, Prompt, has_references, load_prompt_set
    try:
        prompts = [Prompt(t) for t in config.prompt_texts] or load_prompt_set(config.workload.prompts)
    except DatasetError as e:
        raise DrafterError(str(e)) from None
    ol = config.workload.output_len
    by_ref = ol is not None and ol.dist == "dataset"
    if by_ref and not has_references(prompts):
        raise DrafterError(f"workload.output_len dataset: the prompts ({config.workload.prompts}) have no reference "
                           "answers (a 'reference' or 'output_tokens' field)")
    out = []
    for p in prompts * config.repeat:
        ref = None
        if by_ref:
            ref = p.output_tokens if p.output_tokens is not None else \
                None if p.reference is None else max(1, len(backend.encode(p.reference)))
        out.append((p.text, backend.encode(p.text), ref))
    return out


def read_prompt_file(path) -> list[str]:
    """The texts of a prompt set: builtin, a dataset name or a file (nodes/workloads/datasets.py)."""
    from nodes.workloads.datasets import DatasetError, load_prompt_set
    try:
        return [p.text for p in load_prompt_set(path)]
    except DatasetError as e:
        raise DrafterError(str(e)) from None


def load_trace(config: DrafterConfig):
    """This drafter's trace requests (workload.arrivals trace), else None; TraceError if the file is bad."""
    if config.workload.arrivals != "trace":
        return None
    from nodes.workloads.trace import read_trace
    return read_trace(config.workload.trace, allow_empty=True)


def make_backend(config: DrafterConfig, clock=time.monotonic):
    """The drafter's model; `clock` drives a synthetic alpha schedule (a simulator passes its own)."""
    return draft_backend(config.model, config.seed, clock)


def draft_backend(m: DraftModel, seed: int, clock=time.monotonic):
    """A draft model (a drafter's, or the one beside a fused verifier's target); `seed` keys a synthetic draft's
    draws."""
    if m.backend == "synthetic":
        from nodes.backends.synthetic import ComputeProfile, SyntheticDraft, parse_alpha
        return SyntheticDraft(m.vocab_size, parse_alpha(m.alpha), ComputeProfile(draft_token_s=m.draft_token_ms / 1e3),
                              seed=seed, cost=cost_model(m.profile), clock=clock)
    if m.backend == "ngram":
        from nodes.backends.ngram import NgramDraft
        return NgramDraft.for_model(m.model, m.ngram_n)
    from nodes.backends.hf import HfDraft
    return HfDraft(m.model, m.device, m.dtype, m.threads)


class DrafterShell(Shell):
    """A DEALER per verifier, the wall clock and files around one DrafterCore."""

    def __init__(self, config: DrafterConfig, backend, log: EventLog, prompts, trace=None,
                 finished: set[str] | None = None):
        # a new number per process: a verifier that sees it change knows this drafter restarted (recovery.py)
        super().__init__(DrafterCore(config, backend, prompts, trace, incarnation=secrets.randbits(62) + 1,
                                     finished=finished), backend, log)
        self.config = config
        self.results: list[dict] = []
        self.recorder = None
        if config.record_acceptance:    # replayable by the synthetic backend: {"replay": FILE}
            from nodes.backends.synthetic import AcceptanceRecorder
            self.recorder = AcceptanceRecorder(config.record_acceptance)
        self.socks: dict[str, zmq.Socket] = {}
        self.poller = zmq.Poller()
        self.clients: zmq.Socket | None = None       # arrivals clients: a ROUTER the users' clients send to

    def bind_clients(self) -> None:
        """Listen for the users' requests (before connecting to the verifiers, so no client finds it closed)."""
        if self.config.clients_bind:
            # plain TCP even with CURVE to the verifiers: the users' clients are emulated hosts on this network
            self.clients = zmq.Context.instance().socket(zmq.ROUTER)
            self.clients.setsockopt(zmq.LINGER, 2000)      # the last ANSWERs go out before the process ends
            self.clients.setsockopt(zmq.MAXMSGSIZE, P.MAX_FRAME)
            self.clients.bind(self.config.clients_bind)
            self.poller.register(self.clients, zmq.POLLIN)

    def connect(self) -> None:
        timeout_ms = int(self.config.timeout_s * 1e3)
        for i, endpoint in enumerate(self.config.connect):
            sock = zmq.Context.instance().socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            # the verifier knows this drafter by the connection's identity: the name keeps it across a reconnect
            # (a link that broke, a verifier that restarted) and across a restart of this drafter
            sock.setsockopt(zmq.IDENTITY, self.config.name.encode())
            security.secure_client(sock, self.config.curve, i)     # CURVE when configured (nodes/security.py)
            handshakes = security.Handshakes(sock, endpoint)       # a refused handshake ends the wait at once
            sock.connect(endpoint)
            sock.send(self.core.hello_frame())
            try:
                while True:
                    if not handshakes.wait(timeout_ms):
                        raise DrafterError(f"no answer from the verifier at {endpoint} within {self.config.timeout_s} s")
                    frame = sock.recv()
                    if not self.core.before_welcome(frame):
                        break
            except security.Refused as e:
                raise DrafterError(str(e)) from None
            finally:
                handshakes.close()
            name, actions = self.core.on_welcome(endpoint, frame, time.time())
            self.socks[name] = sock
            self.poller.register(sock, zmq.POLLIN)
            self.execute(actions)

    def run(self) -> list[dict]:
        core = self.core
        wake, _ = self.execute(core.begin(time.time()))
        while not core.done:
            timeout = None if wake is None else max(0.0, wake - time.time())
            self.poller.poll(None if timeout is None else int(timeout * 1e3))
            frames = [(name, frame) for name, sock in self.socks.items() for frame in _drain(sock)]
            asks = _drain_router(self.clients) if self.clients is not None else []
            actions = core.on_client_frames(asks, time.time()) if asks else []
            if frames or not asks:
                actions += core.on_frames(frames, time.time()) if frames else core.on_timer(time.time())
            wake, _ = self.execute(actions)      # an idle core always asks for a wake-up (its timeout)
        return self.results

    def send(self, to, frame: bytes) -> None:
        if isinstance(to, ClientAddr):
            self.clients.send_multipart([to.name.encode("latin-1"), frame])
        else:
            self.socks[to].send(frame)

    def record(self, event) -> None:
        self.log.write(event)
        if self.recorder and isinstance(event, VerdictEvent) and event.gamma:
            self.recorder.record(event.gamma, event.accepted)

    def output(self, result: dict) -> None:
        """Each session's output is written as it finishes: a drafter killed later keeps what it finished."""
        self.results.append(result)
        if self.config.out:
            # the first output replaces an old file (a rerun), unless this process resumes its predecessor's
            mode = "a" if self.results[1:] or self.core.restarted else "w"
            with open(self.config.out, mode) as f:
                f.write(json.dumps(result) + "\n")


def _drain(sock: zmq.Socket) -> list[bytes]:
    """Every frame waiting on the socket (the core takes them all before it decides anything)."""
    out = []
    while True:
        try:
            out.append(sock.recv(zmq.NOBLOCK))
        except zmq.Again:
            return out


def _drain_router(sock: zmq.Socket) -> list[tuple[str, bytes]]:
    """Every (client, frame) waiting on a ROUTER; a message that is not [identity, frame] is dropped."""
    out = []
    while True:
        try:
            parts = sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return out
        if len(parts) == 2:
            out.append((parts[0].decode("latin-1"), parts[1]))   # any identity, and back unchanged


def flags(argv=None) -> argparse.Namespace:
    d = DrafterConfig()
    ap = argparse.ArgumentParser(prog="python -m nodes.drafter", description=__doc__.splitlines()[0],
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, metavar="FILE", help="a DrafterConfig as JSON (the runner writes "
                    "RUN/nodes/<name>.json); the flags below are ignored with it")
    ap.add_argument("--resume", action="store_true", default=False,
                    help="a restart after a crash: keep the sessions already in the --out file and run the rest "
                         "(the runner's drafter_crash fault, testbed/run/nodefaults.py)")
    ap.add_argument("--connect", help=f"verifier endpoint, or several separated by commas (then --routing is "
                                      f"needed) [{','.join(d.connect)}]")
    ap.add_argument("--stop-threshold", type=float, metavar="BOUND",
                    help="SpecDec++-style: end a window once P(some drafted token is rejected), estimated from "
                         "the draft's own token probabilities, exceeds BOUND (the verdict's window is the cap)")
    ap.add_argument("--routing", type=json.loads, metavar="JSON",
                    help='session routing across verifiers, e.g. \'{"policy": "jsq-d", "d": 2}\' '
                         '(testbed/policies/routing.py)')
    ap.add_argument("--name", help=f"[{d.name}]")
    ap.add_argument("--backend", choices=["hf", "synthetic", "ngram"], help=f"ngram: prompt lookup, no model (the "
                    f"--model names its tokenizer) [{d.model.backend}]")
    ap.add_argument("--model", help=f"[{d.model.model}]")
    ap.add_argument("--device", help=f"[{d.model.device}]")
    ap.add_argument("--dtype", help=f"[{d.model.dtype}]")
    ap.add_argument("--threads", type=int, help=f"[{d.model.threads}]")
    ap.add_argument("--vocab-size", type=int, help=f"synthetic backend only [{d.model.vocab_size}]")
    ap.add_argument("--alpha", type=json.loads, help="synthetic: 0.8, [[0,0.9],[10,0.5]] or {\"replay\": \"f.jsonl\"} "
                                                     f"[{d.model.alpha}]")
    ap.add_argument("--draft-token-ms", type=float, help=f"synthetic compute profile [{d.model.draft_token_ms}]")
    ap.add_argument("--ngram-n", type=int, help=f"ngram: longest suffix looked up [{d.model.ngram_n}]")
    ap.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    ap.add_argument("--prompts", help="builtin, a dataset (humaneval, mtbench, sharegpt) or a file: JSON lines with a "
                                      "'prompt' field, or one prompt per line [builtin]")
    ap.add_argument("--trace", help="open-loop arrivals at the times of a DSD-Sim JSONL trace (all its requests)")
    ap.add_argument("--think", type=float, metavar="S", help="closed loop: seconds between a session's end and the next [0]")
    ap.add_argument("--output-len", type=json.loads, metavar="JSON",
                    help='per-session output length, e.g. \'{"dist": "uniform", "min": 8, "max": 64}\' or \'"dataset"\' '
                         '(nodes/workloads/lengths.py) [max_new]')
    ap.add_argument("--repeat", type=int, help="run the prompt list this many times [1]")
    ap.add_argument("--requests", type=int, help="run this many sessions, cycling through prompts [with --prompt or "
                                                 "--prompts: each prompt once (x --repeat); else 4]")
    ap.add_argument("--prompt-offset", type=int, help="start at this prompt (drafters differ) [0]")
    ap.add_argument("--duration", type=float, help="start sessions for this many seconds")
    ap.add_argument("--arrival-rate", type=float, help="Poisson session arrivals per second (open loop); "
                                                       "default: closed loop")
    ap.add_argument("--sessions", type=int, help=f"closed loop: sessions drafted concurrently [{d.workload.sessions}]")
    ap.add_argument("--max-new", type=int, help=f"[{d.workload.max_new}]")
    ap.add_argument("--temperature", type=float, help=f"[{d.workload.temperature}]")
    ap.add_argument("--payload", help=f"ids | topk:K | full [{d.speculation.payload}]")
    ap.add_argument("--gamma", type=int, help=f"initial window; 0 = autoregressive baseline [{d.speculation.gamma}]")
    ap.add_argument("--proactive", action=argparse.BooleanOptionalAction, help=f"[{d.speculation.proactive}]")
    ap.add_argument("--seed", type=int, help=f"[{d.seed}]")
    ap.add_argument("--timeout", type=float, help=f"seconds without any verdict before giving up [{d.timeout_s:g}]")
    ap.add_argument("--log", help="JSONL event log")
    ap.add_argument("--out", help="write each session's output as a JSON line here (else stdout)")
    ap.add_argument("--record-acceptance", metavar="FILE",
                    help="append each round's (gamma, accepted) in the synthetic backend's replay format")
    return ap.parse_args(argv)


def config_from_flags(a: argparse.Namespace) -> dict:
    """The manual flags as a DrafterConfig mapping: only what was given; the model's defaults do the rest."""
    g = vars(a)
    model = {k: g[f] for k, f in (("backend", "backend"), ("model", "model"), ("device", "device"),
                                  ("dtype", "dtype"), ("threads", "threads"), ("vocab_size", "vocab_size"),
                                  ("alpha", "alpha"), ("draft_token_ms", "draft_token_ms"),
                                  ("ngram_n", "ngram_n")) if f in g}
    workload = {k: g[f] for k, f in (("prompts", "prompts"), ("requests", "requests"), ("duration_s", "duration"),
                                     ("sessions", "sessions"), ("max_new", "max_new"),
                                     ("temperature", "temperature"), ("think_s", "think"),
                                     ("output_len", "output_len"), ("trace", "trace")) if f in g}
    if "arrival_rate" in g:
        workload.update(arrivals="poisson", rate_per_s=g["arrival_rate"])
    if "trace" in g:
        workload["arrivals"] = "trace"
    elif "requests" not in g and "duration" not in g and ("prompt" in g or "prompts" in g):
        texts = g.get("prompt") or read_prompt_file(g["prompts"])
        workload["requests"] = len(texts) * g.get("repeat", 1)
    spec = {k: g[f] for k, f in (("gamma", "gamma"), ("payload", "payload"), ("proactive", "proactive")) if f in g}
    if "stop_threshold" in g:
        spec["policy"] = {"policy": "threshold", "bound": g["stop_threshold"]}
    out = {k: g[f] for k, f in (("name", "name"), ("prompt_texts", "prompt"), ("prompt_offset", "prompt_offset"),
                                ("repeat", "repeat"), ("seed", "seed"), ("timeout_s", "timeout"), ("log", "log"),
                                ("out", "out"), ("record_acceptance", "record_acceptance")) if f in g}
    if "connect" in g:
        out["connect"] = g["connect"].split(",")
    if "routing" in g:
        out["routing"] = g["routing"]
    return {**out, "model": model, "workload": workload, "speculation": spec}


def main(argv=None) -> int:
    args = flags(argv)
    exit_on_sigterm(143)
    try:
        config = node_config(DrafterConfig, args, config_from_flags)
    except DrafterError as e:             # a prompt file named by a flag could not be read
        log_error("drafter", str(e))
        return 2
    from nodes.workloads.trace import TraceError
    try:
        trace = load_trace(config)
    except TraceError as e:               # bad input: one line, FILE:LINE: field: expected ..., got ...
        print(str(e), file=sys.stderr, flush=True)
        return 2
    log = EventLog(config.log, config.name)
    try:
        backend = make_backend(config)
        finished = finished_sessions(config.out) if args.resume else None
        shell = DrafterShell(config, backend, log, load_prompts(config, backend), trace, finished)
        shell.bind_clients()
        shell.connect()
        wait_at_gate(config.start_gate)
        results = shell.run()
    except (DrafterError, P.ProtocolError) as e:
        return crashed(log, config.name, str(e))
    finally:
        log.close()
    if not config.out:
        for r in results:
            print(json.dumps(r))
    return 0


def finished_sessions(path: str | None) -> set[str]:
    """The sessions a crashed predecessor finished: the ids in its outputs file (a line cut by the crash is not
    one of them)."""
    done = set()
    try:
        lines = open(path, encoding="utf-8", errors="replace").read().splitlines() if path else []
    except OSError:
        return done
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("session"), str):
            done.add(row["session"])
    return done


if __name__ == "__main__":
    sys.exit(main())
