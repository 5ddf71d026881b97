"""Verifier node: a ZeroMQ ROUTER around the verifier core (nodes/core/verifier.py).

    python -m nodes.verifier --config RUN/nodes/verifier.json      # as the runner starts it
    python -m nodes.verifier --bind tcp://*:5555 --model smollm2-135m [--batching fifo --max-batch 8]

The flags build the same VerifierConfig as a config file (nodes/config.py has every field and default). The
shell drains every frame that arrived, hands them to the core, then lets it decide; a batch's compute runs here
(paced to its profile for the synthetic backend), and the verdicts go out when it is done.
"""
from __future__ import annotations

import argparse
import json
import secrets
import sys
import time

import zmq

from nodes import protocol as P
from nodes.config import DraftModel, VerifierConfig
from nodes.core.verifier import VerifierCore
from nodes.events import Crash, EventLog
from nodes.security import ZapGuard
from nodes.shell import LinkView, Shell, cost_model, exit_on_sigterm, log_error, node_config


def make_backend(config: VerifierConfig, clock=time.monotonic):
    """The verifier's model, and beside it its co-located draft model (model.draft: fused rounds) when it has
    one; `clock` drives that draft's synthetic alpha schedule (a simulator passes its own)."""
    m = config.model
    if m.backend == "synthetic":
        from nodes.backends.synthetic import ComputeProfile, SyntheticTarget
        vocab = m.vocab_size or DraftModel().vocab_size     # null: the drafters' vocabulary
        target = SyntheticTarget(vocab, ComputeProfile(verify_base_s=m.verify_base_ms / 1e3,
                                                       verify_per_token_s=m.verify_per_token_ms / 1e3),
                                 cost=cost_model(m.profile))
    else:
        from nodes.backends.hf import HfTarget
        target = HfTarget(m.model, m.device, m.dtype, m.threads)
    if m.draft is None:
        return target
    from nodes.backends.fused import Colocated
    from nodes.drafter import draft_backend
    try:
        return Colocated(target, draft_backend(m.draft, config.seed, clock))
    except ValueError as e:
        print(f"{config.name}: model.draft: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class VerifierShell(Shell):
    """A ROUTER socket, the wall clock, the link-state file and the event log around one VerifierCore."""

    def __init__(self, config: VerifierConfig, backend, log: EventLog):
        # a new number per process: drafters that see it change know this verifier restarted (recovery.py)
        super().__init__(VerifierCore(config, backend, incarnation=secrets.randbits(62) + 1), backend, log)
        self.config = config
        self.links = LinkView(config.link_state)
        self.sock = None

    def serve(self) -> None:
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        # a drafter that reconnects under its identity (its name) takes it over from a connection not yet closed
        self.sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
        if self.config.curve is not None:    # CURVE server: only the listed drafters' keys get in (nodes/security.py)
            ZapGuard(self.config.curve, self.log, self.config.name).secure(self.sock)
        self.sock.bind(self.config.bind)
        endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)   # the real port when bound to tcp://host:*
        self.execute(self.core.on_ready(endpoint, time.time()))
        print(f"ready {endpoint}", flush=True)
        wake, again = None, False
        while True:
            # after a batch, look again at once: drafts may be waiting that the batch had no room for
            timeout = 0 if again else None if wake is None else max(0, int((wake - time.time()) * 1e3))
            self.sock.poll(timeout)
            while True:                    # every frame that arrived, before deciding on a batch
                try:
                    parts = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                if len(parts) == 2:
                    self.execute(self.core.on_frame(parts[0], parts[1], time.time()))
                else:   # a DEALER sends one frame per message; anything else is malformed
                    self.sock.send_multipart([parts[0], P.encode(P.Error("bad_frame", "expected one frame per message"))])
            view = self.links.poll()
            if view is not None:
                self.core.set_links(view)
            wake, again = self.execute(self.core.decide(time.time()))

    def send(self, to: bytes, frame: bytes) -> None:
        self.sock.send_multipart([to, frame])


def flags(argv=None) -> argparse.Namespace:
    d = VerifierConfig()
    ap = argparse.ArgumentParser(prog="python -m nodes.verifier", description=__doc__.splitlines()[0],
                                 argument_default=argparse.SUPPRESS)
    ap.add_argument("--config", default=None, metavar="FILE", help="a VerifierConfig as JSON (the runner writes "
                    "RUN/nodes/<name>.json); the flags below are ignored with it")
    ap.add_argument("--bind", help=f"[{d.bind}]")
    ap.add_argument("--name", help=f"[{d.name}]")
    ap.add_argument("--backend", choices=["hf", "synthetic"], help=f"[{d.model.backend}]")
    ap.add_argument("--model", help=f"[{d.model.model}]")
    ap.add_argument("--device", help=f"[{d.model.device}]")
    ap.add_argument("--dtype", help=f"[{d.model.dtype}]")
    ap.add_argument("--threads", type=int, help="[torch's default]")
    ap.add_argument("--vocab-size", type=int, help=f"synthetic backend only [{DraftModel().vocab_size}]")
    ap.add_argument("--verify-base-ms", type=float, help=f"synthetic compute profile [{d.model.verify_base_ms}]")
    ap.add_argument("--verify-per-token-ms", type=float, help=f"synthetic compute profile [{d.model.verify_per_token_ms}]")
    ap.add_argument("--batching", choices=["fifo", "window", "sync", "length", "zhu"], help=f"[{d.batching.rule}]")
    ap.add_argument("--max-batch", type=int, help=f"[{d.batching.max_batch}]")
    ap.add_argument("--window-ms", type=float, help=f"window only [{d.batching.window_ms}]")
    ap.add_argument("--max-tokens", type=int, help=f"length: padded tokens per batch at most [{d.batching.max_tokens}]")
    ap.add_argument("--gamma", type=int, help="force this window for every session (static policy)")
    ap.add_argument("--speculation", type=json.loads, metavar="JSON",
                    help='speculation policy, e.g. \'{"policy": "network", "gamma_max": 12}\' (testbed/policies/'
                         'speculation.py); default static: the window each session asks for')
    ap.add_argument("--scheduler", type=json.loads, metavar="JSON",
                    help='verification budget, e.g. \'{"scheduler": "goodspeed", "budget": 16}\' (fields of '
                         'experiment scheduling.*; testbed/policies/scheduling.py)')
    ap.add_argument("--seed", type=int, help=f"the random budget scheduler [{d.seed}]")
    ap.add_argument("--link-state", metavar="FILE", help="JSON the runner keeps current: per drafter uplink_mbps, "
                                                          "downlink_mbps, rtt_s (for network-aware policies)")
    ap.add_argument("--log", help="JSONL event log")
    return ap.parse_args(argv)


def config_from_flags(a: argparse.Namespace) -> dict:
    """The manual flags as a VerifierConfig mapping: only what was given; the model's defaults do the rest."""
    g = vars(a)
    pick = lambda pairs: {k: g[f] for k, f in pairs if f in g}   # noqa: E731
    out = pick((("bind", "bind"), ("name", "name"), ("seed", "seed"), ("link_state", "link_state"), ("log", "log")))
    out["model"] = pick((("backend", "backend"), ("model", "model"), ("device", "device"), ("dtype", "dtype"),
                         ("threads", "threads"), ("vocab_size", "vocab_size"), ("verify_base_ms", "verify_base_ms"),
                         ("verify_per_token_ms", "verify_per_token_ms")))
    out["batching"] = pick((("rule", "batching"), ("max_batch", "max_batch"), ("window_ms", "window_ms"),
                            ("max_tokens", "max_tokens")))
    if "speculation" in g:
        out["speculation"] = {"policy": g["speculation"]}
    elif "gamma" in g:
        out["speculation"] = {"policy": {"policy": "static", "gamma": g["gamma"]}}
    if "scheduler" in g:
        out["scheduling"] = g["scheduler"]
    return out


def main(argv=None) -> int:
    args = flags(argv)
    exit_on_sigterm(0)
    config = node_config(VerifierConfig, args, config_from_flags)
    log = EventLog(config.log, config.name)
    try:
        VerifierShell(config, make_backend(config), log).serve()
    except KeyboardInterrupt:
        return 0
    except Exception as e:
        log_error(config.name, f"{type(e).__name__}: {e}")
        log.write(Crash(t=time.time(), node=config.name, error=f"{type(e).__name__}: {e}"))
        raise
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
