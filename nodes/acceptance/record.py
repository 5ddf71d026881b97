"""Record a shipped acceptance trace: a real verifier and drafter on this machine, greedy, no proactive drafting.

    python -m nodes.acceptance.record --pair smollm2-135m-int8 --dataset builtin --prompts builtin \
        --limit 24 --max-new 64 --gamma 8

Starts `python -m nodes.verifier` and `python -m nodes.drafter --record-acceptance` on a free local port and
writes nodes/acceptance/data/<pair>__<dataset>.jsonl: a `#` header (pair, dataset, gamma, prompts, date,
command) and one {"gamma", "accepted"} line per verification round, the synthetic backend's replay format.
Proactive drafting is off because a replay is exact only without it (nodes/backends/synthetic.py).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from nodes.acceptance import DATA_DIR

PAIRS = {   # pair name -> (verifier model, draft model)
    "smollm2-135m-int8": ("smollm2-135m", "smollm2-135m:int8"),
    "gemma3-270m-int8-cut": ("gemma3-270m", "gemma3-270m:int8-cut"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prompt_texts(spec: str, limit: int | None) -> list[str]:
    """builtin, a dataset name of nodes/workloads (humaneval, mtbench, ...) or a prompt file."""
    try:
        from nodes.workloads.datasets import load_prompt_set
        texts = [p.text for p in load_prompt_set(spec)]
    except ImportError:
        from nodes.drafter import read_prompt_file
        texts = read_prompt_file(spec)
    return texts[:limit] if limit else texts


def record(pair: str, dataset: str, prompts: str, limit: int | None, max_new: int, gamma: int,
           out: Path, threads: int = 1) -> dict:
    target, draft = PAIRS[pair]
    texts = _prompt_texts(prompts, limit)
    port = _free_port()
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="specnet-rec-") as tmp:
        pfile = Path(tmp) / "prompts.jsonl"
        pfile.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
        raw = Path(tmp) / "rounds.jsonl"
        ver = [py, "-m", "nodes.verifier", "--bind", f"tcp://127.0.0.1:{port}", "--model", target,
               "--device", "cpu", "--threads", str(threads), "--gamma", str(gamma), "--max-batch", "1"]
        dra = [py, "-m", "nodes.drafter", "--connect", f"tcp://127.0.0.1:{port}", "--model", draft,
               "--threads", str(threads), "--prompts", str(pfile), "--max-new", str(max_new), "--gamma", str(gamma),
               "--no-proactive", "--temperature", "0", "--timeout", "600", "--out", str(Path(tmp) / "out.jsonl"),
               "--record-acceptance", str(raw)]
        t0 = time.time()
        vp = subprocess.Popen(ver, stdout=subprocess.DEVNULL, stderr=open(Path(tmp) / "verifier.err", "w"))
        try:
            rc = subprocess.run(dra, stdout=subprocess.DEVNULL).returncode
        finally:
            vp.terminate()
            try:
                vp.wait(10)
            except subprocess.TimeoutExpired:
                vp.kill()
        if rc != 0:
            raise SystemExit(f"drafter exited with {rc}; verifier stderr:\n{(Path(tmp) / 'verifier.err').read_text()[-2000:]}")
        rounds = raw.read_text()
    command = "python -m nodes.acceptance.record " + " ".join(
        shlex.quote(a) for a in ["--pair", pair, "--dataset", dataset, "--prompts", prompts,
                                 *(["--limit", str(limit)] if limit else []), "--max-new", str(max_new),
                                 "--gamma", str(gamma)])
    header = {"pair": pair, "target": target, "draft": draft, "dataset": dataset, "gamma": gamma,
              "prompts": len(texts), "prompt_source": prompts, "max_new": max_new, "temperature": 0,
              "proactive": False, "date": datetime.date.today().isoformat(), "wall_s": round(time.time() - t0, 1),
              "command": command}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"# {k}: {v}\n" for k, v in header.items()) + rounds)
    return header


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nodes.acceptance.record", description=__doc__.splitlines()[0])
    ap.add_argument("--pair", choices=sorted(PAIRS), default="smollm2-135m-int8")
    ap.add_argument("--dataset", required=True, help="name in the file name (builtin, humaneval, ...)")
    ap.add_argument("--prompts", default="builtin", help="builtin, a dataset name (nodes/workloads) or a prompt file")
    ap.add_argument("--limit", type=int, help="the first N prompts only")
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--gamma", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="default nodes/acceptance/data/<pair>__<dataset>.jsonl")
    a = ap.parse_args(argv)
    out = a.out or DATA_DIR / f"{a.pair}__{a.dataset}.jsonl"
    header = record(a.pair, a.dataset, a.prompts, a.limit, a.max_new, a.gamma, out, a.threads)
    from nodes.acceptance import load_trace_file
    t = load_trace_file(out)
    print(f"{out}: {len(t.replay.records)} rounds, {header['wall_s']} s; {t.summary_line()}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
