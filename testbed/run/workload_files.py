"""The workload's files on the runner's side: prompt sets (workload.prompts, drafters.overrides.<node>.prompts) and
the arrivals trace (workload.trace), checked when an experiment is loaded and written into each run.

A run holds what its drafters read: RUN/prompts.jsonl (workload.prompts), RUN/prompts-<node>.jsonl for a drafter
with its own prompt set, and RUN/traces/<node>.jsonl, each drafter's share of the trace
(nodes/workloads/trace.py `split`). Datasets are written as JSONL with their reference answers
(nodes/workloads/datasets.py `to_jsonl`); files are copied as they are.
"""
from __future__ import annotations

from pathlib import Path

from nodes.workloads import datasets as D
from nodes.workloads.trace import TraceError, read_trace, split
from nodes.workloads.trace import to_jsonl as trace_jsonl
from testbed.common.errors import Problem


def _resolve(base_dir: Path, p: str) -> Path:
    path = Path(p).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def resolve_prompts(spec: str, base_dir: Path) -> tuple[str | None, str]:
    """A prompt set's problem (None if fine) and the spec to keep: a name as it is, a file made absolute."""
    if D.is_named(spec):
        try:
            D.load_prompt_set(spec)
        except D.DatasetError as e:
            return str(e), spec
        return None, spec
    path = _resolve(base_dir, spec)
    if not path.is_file():
        if D.looks_like_name(spec):
            return D.unknown_message(spec), spec
        return f"prompts file {spec!r} not found (looked for {path}); or use one of {D.known()}", spec
    try:
        D.read_prompt_file(path)
    except D.DatasetError as e:
        return f"bad prompts file: {e}", str(path.resolve())
    return None, str(path.resolve())


def check_sources(exp, base_dir: Path) -> tuple[list, list[Problem], dict, dict[str, str]]:
    """Per-drafter prompt sets, output_len against them, and the trace. Returns the problems in the experiment
    file as (field path, message), those in a trace file as Problems, the workload's update (the trace made
    absolute) and each overriding drafter's prompt set (files made absolute)."""
    found: list = []
    foreign: list[Problem] = []
    w = exp.workload
    overrides: dict[str, str] = {}
    for node, o in exp.drafters.overrides.items():
        if o.prompts is not None:
            problem, overrides[node] = resolve_prompts(o.prompts, base_dir)
            if problem:
                found.append((("drafters", "overrides", node, "prompts"), problem))
    if w.output_len is not None and w.output_len.dist == "dataset" and not found:
        specs = {("workload", "prompts"): w.prompts}
        specs.update({("drafters", "overrides", n, "prompts"): s for n, s in overrides.items()})
        for loc, spec in specs.items():
            path = spec if D.is_named(spec) else _resolve(base_dir, spec)
            try:
                ok = D.has_references(D.load_prompt_set(path))
            except D.DatasetError:
                continue                     # reported where the prompt set is checked
            if not ok:
                found.append((("workload", "output_len"), f"dist dataset needs reference answers; the prompt set "
                                                          f"{spec!r} ({format_loc(loc)}) has none"))
    update: dict = {}
    if w.arrivals == "trace":
        if not w.trace:
            found.append((("workload", "trace"), "arrivals trace needs a trace file (DSD-Sim JSONL: request_id, "
                                                 "arrival_ms, prompt_tokens, target_tokens, device_tier, client_id)"))
        else:
            path = _resolve(base_dir, w.trace)
            if not path.is_file():
                found.append((("workload", "trace"), f"trace file {w.trace!r} not found (looked for {path})"))
            else:
                try:
                    read_trace(path)
                except TraceError as e:
                    foreign.append(Problem(e.file, e.field, e.message, e.line))
                update["trace"] = str(path.resolve())
    return found, foreign, update, overrides


def format_loc(loc: tuple) -> str:
    return ".".join(str(p) for p in loc)


def apply_override_prompts(drafters, prompts: dict[str, str]):
    """`drafters` with each overriding drafter's prompt set replaced by its resolved spec."""
    if not prompts:
        return drafters
    o = dict(drafters.overrides)
    for node, spec in prompts.items():
        o[node] = o[node].model_copy(update={"prompts": spec})
    return drafters.model_copy(update={"overrides": o})


# ------------------------------------------------------------------------------------------ a run's files

def prompts_file(run_dir: Path, exp, node: str) -> Path:
    """The prompt file drafter `node` reads in a run."""
    own = exp.drafters.overrides.get(node)
    return Path(run_dir) / (f"prompts-{node}.jsonl" if own is not None and own.prompts is not None else "prompts.jsonl")


def trace_file(run_dir: Path, node: str) -> Path:
    return Path(run_dir) / "traces" / f"{node}.jsonl"


def _write_set(spec: str, path: Path) -> int:
    if spec in D.DATASETS:
        prompts = D.load_prompt_set(spec)
        path.write_text(D.to_jsonl(prompts), encoding="utf-8")
        return len(prompts)
    src = D.BUILTIN if spec == "builtin" else Path(spec)
    lines = [line for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return len(lines)


def write_run_files(exp, run_dir: Path) -> dict[str, int]:
    """Write the prompt sets and the trace shares into the run; the number of sessions each drafter will start
    under a trace (else {})."""
    run_dir = Path(run_dir)
    _write_set(exp.workload.prompts, run_dir / "prompts.jsonl")
    for node in exp.drafter_nodes():
        o = exp.drafters.overrides.get(node)
        if o is not None and o.prompts is not None:
            _write_set(o.prompts, prompts_file(run_dir, exp, node))
    if exp.workload.arrivals != "trace":
        return {}
    shares = split(read_trace(exp.workload.trace), exp.drafter_nodes())
    (run_dir / "traces").mkdir(exist_ok=True)
    counts = {}
    for node, reqs in shares.items():
        trace_file(run_dir, node).write_text(trace_jsonl(reqs), encoding="utf-8")
        counts[node] = len(reqs) if exp.workload.requests is None else min(len(reqs), exp.workload.requests)
    return counts


def prompt_sets(exp) -> dict[str, dict]:
    """The manifest's record of each drafter's prompt set: its spec and the SHA-256 of its content."""
    out = {}
    for node in exp.drafter_nodes():
        spec = exp.drafter_prompts(node)
        out[node] = {"prompts": spec, "sha256": D.digest(spec)}
    return out
