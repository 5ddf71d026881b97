"""`make bench` (inference half): batched vs sequential verification, protocol overhead, payload sizes.

Not a test: numbers on a shared 2-core CPU are noisy, so read ratios measured within one run.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from nodes import protocol as P
from nodes.backends import DraftToken, Sampling, VerifyRequest
from nodes.events import Verdict, read_events

PROMPTS = ["The capital of France is", "def fibonacci(n):", "Once upon a time, in a small village,",
           "The three primary colors are", "Photosynthesis is the process by which", "In 1492, Columbus",
           "The derivative of x squared is", "import numpy as np\n"]


def bench_batching(model: str, gamma: int, rounds: int) -> None:
    import copy
    from nodes.backends.hf import HfTarget
    target = HfTarget(model)
    greedy = Sampling()
    print(f"verification throughput, {model}, gamma {gamma} (tokens judged per second; median of {rounds} rounds)")
    print(f"{'N':>3} {'batched tok/s':>14} {'sequential tok/s':>17} {'speed-up':>9}")
    rng = np.random.default_rng(0)
    for n in (1, 2, 4, 8):
        times = {}
        for mode in ("batched", "sequential"):
            t = copy.copy(target)
            t.sessions = {}
            for i in range(n):
                t.open(f"s{i}", t.tokenizer(PROMPTS[i])["input_ids"])
            t.verify([VerifyRequest(f"s{i}", [], greedy) for i in range(n)])    # prefill, not timed
            samples = []
            for _ in range(rounds):
                reqs = [VerifyRequest(f"s{i}", [DraftToken(int(x)) for x in rng.integers(0, t.vocab_size, gamma)],
                                      greedy) for i in range(n)]
                start = time.perf_counter()
                if mode == "batched":
                    t.verify(reqs)
                else:
                    for r in reqs:
                        t.verify([r])
                samples.append(time.perf_counter() - start)
            times[mode] = statistics.median(samples)
        judged = n * (gamma + 1)
        print(f"{n:>3} {judged / times['batched']:>14.1f} {judged / times['sequential']:>17.1f} "
              f"{times['sequential'] / times['batched']:>8.2f}x")


def bench_overhead(rounds: int) -> None:
    """Round time minus compute, over ZeroMQ on loopback, with a zero-compute synthetic model pair."""
    with tempfile.TemporaryDirectory() as d:
        vlog, dlog = Path(d) / "v.jsonl", Path(d) / "d.jsonl"
        v = subprocess.Popen([sys.executable, "-m", "nodes.verifier", "--bind", "tcp://127.0.0.1:*", "--backend",
                              "synthetic", "--log", str(vlog)], stdout=subprocess.PIPE, text=True)
        try:
            endpoint = v.stdout.readline().split()[1]
            subprocess.run([sys.executable, "-m", "nodes.drafter", "--connect", endpoint, "--backend", "synthetic",
                            "--prompt", "overhead", "--max-new", str(rounds * 5), "--gamma", "4", "--alpha", "1.0",
                            "--no-proactive", "--log", str(dlog), "--out", str(Path(d) / "out.jsonl")],
                           check=True, capture_output=True, timeout=300)
        finally:
            v.terminate()
            v.wait()
        events, _ = read_events(dlog)
    verdicts = [e for e in events if isinstance(e, Verdict)][1:]
    overhead = [1e3 * (e.rtt_s - e.verify_s) for e in verdicts]
    print(f"protocol overhead per round (loopback, synthetic zero compute, {len(overhead)} rounds): "
          f"median {statistics.median(overhead):.3f} ms, p95 {sorted(overhead)[int(0.95 * len(overhead))]:.3f} ms")


def random_draft(payload: str, gamma: int, vocab: int, rng) -> list[DraftToken]:
    """`gamma` drafted tokens carrying `payload` (ids | topk:K | full) with random distributions: frames of the
    real sizes for benchmarks (testbed/bench/curve.py too)."""
    toks = []
    for _ in range(gamma):
        if payload == "ids":
            toks.append(DraftToken(int(rng.integers(vocab))))
        elif payload == "full":
            q = rng.random(vocab).astype(np.float32)
            q /= q.sum()
            toks.append(DraftToken(int(q.argmax()), None, q))
        else:
            k = int(payload.split(":")[1])
            ids = rng.choice(vocab, k, replace=False).astype(np.int32)
            q = rng.random(k).astype(np.float32)
            q /= q.sum()
            toks.append(DraftToken(int(ids[0]), ids, q))
    return toks


def bench_payload(vocab: int, gamma: int, k: int) -> None:
    rng = np.random.default_rng(0)
    print(f"DRAFT frame bytes per drafted token (vocab {vocab}, gamma {gamma}):")
    for payload in ("ids", f"topk:{k}", "full"):
        toks = random_draft(payload, gamma, vocab, rng)
        frame = P.encode(P.Draft.from_tokens("s", 1, 10, toks, payload, vocab, time.time()))
        print(f"  {payload:>8}: {len(frame) / gamma:>10.1f} B/token  ({len(frame)} B per frame)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.bench.nodes", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--gamma", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args(argv)
    bench_payload(49152, args.gamma, 8)
    bench_overhead(200)
    bench_batching(args.model, args.gamma, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
