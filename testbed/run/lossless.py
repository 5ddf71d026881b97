"""Check a finished run's text against the target model's own greedy output: `testbed lossless RUN_DIR...`.

Speculative decoding is lossless when the verifier's greedy verification leaves exactly the tokens the target
would have generated alone. For every session in RUN/outputs/*.jsonl this loads the run's verifier model (hf
backend, as the manifest records it), runs its `generate(do_sample=False)` from the same prompt tokens for as
many tokens, and compares token for token. Only greedy runs (workload.temperature 0) with real models can be
checked: a synthetic run has no model, a sampled one no single reference.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SessionCheck:
    run: str
    session: str
    tokens: int
    equal: bool
    first_difference: int | None = None


class NotCheckable(ValueError):
    pass


def _config(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["config"]
    except (OSError, ValueError, KeyError) as e:
        raise NotCheckable(f"{run_dir}: no readable manifest.json ({e})") from None


def outputs(run_dir: Path) -> list[dict]:
    out = []
    for f in sorted((run_dir / "outputs").glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def check_runs(run_dirs, threads: int | None = None, progress=None) -> list[SessionCheck]:
    """Every session of every run; the target model is loaded once per distinct model."""
    from nodes.backends.hf import HfTarget
    import torch
    targets: dict[str, HfTarget] = {}
    results = []
    for run_dir in map(Path, run_dirs):
        config = _config(run_dir)
        v = config["verifier"]
        if v["backend"] != "hf":
            raise NotCheckable(f"{run_dir}: verifier backend is {v['backend']!r}; only real (hf) models have a "
                               f"reference output")
        if config["workload"]["temperature"] != 0:
            raise NotCheckable(f"{run_dir}: temperature {config['workload']['temperature']:g}; only greedy runs have "
                               f"one reference output")
        if v["model"] not in targets:
            targets[v["model"]] = HfTarget(v["model"], "cpu", v.get("dtype", "float32"), threads)
        target = targets[v["model"]]
        for o in outputs(run_dir):
            got = list(o["tokens"])
            with torch.inference_mode():
                gen = target.model.generate(torch.tensor([o["prompt_tokens"]]), max_new_tokens=max(1, len(got)),
                                            do_sample=False)
            ref = gen[0, len(o["prompt_tokens"]):].tolist()
            diff = next((i for i, (a, b) in enumerate(zip(got, ref)) if a != b), None)
            if diff is None and len(ref) != len(got):
                diff = min(len(ref), len(got))
            results.append(SessionCheck(run_dir.name, o["session"], len(got), diff is None, diff))
            if progress:
                progress(results[-1])
    return results
