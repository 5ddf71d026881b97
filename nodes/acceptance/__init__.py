"""Acceptance with its real shape: recorded traces of real model pairs and published figures of the papers' pairs.

Two kinds of shipped data, both under nodes/acceptance/data/:

* **Traces** `<pair>__<dataset>.jsonl`: one {"gamma", "accepted"} line per verification round of a real
  verifier/draft pair (the synthetic backend's replay format, written by `python -m nodes.acceptance.record`),
  after a `# key: value` header (pair, dataset, gamma, prompts, date, command). Named `<pair>/<dataset>`, e.g.
  `smollm2-135m-int8/humaneval`; the alpha spec `{trace: NAME}` replays one.
* **Published** `published.yaml`: figures from papers, each entry with an id, target, draft, dataset, the figure
  as published (alpha, or tau = mean tokens per round at a stated gamma, or a per-position curve) and its source.
  The alpha spec `{published: ID}` uses one: its curve if it has one, else its alpha (stated, or implied by tau).

Implied alpha. A mean of tau tokens per round (accepted + 1 correction/bonus) at window gamma is turned into the
i.i.d. per-position alpha that gives the same mean, by inverting tau = (1 - alpha^(gamma+1)) / (1 - alpha)
(Leviathan et al.; testbed/policies/acceptance.py mu) by bisection: mu is increasing in alpha, from 1 at alpha 0
to gamma + 1 at alpha 1. Papers that report "mean accepted length" mostly count the bonus token (tau); where a
paper counts accepted drafts only, the entry says so and stores accepted + 1.

`python -m nodes.acceptance` lists both.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
PUBLISHED = DATA_DIR / "published.yaml"


def mean_tokens(alpha: float, gamma: int) -> float:
    from testbed.policies.acceptance import mu
    return mu(gamma, alpha)


def implied_alpha(tau: float, gamma: int) -> float:
    """The alpha with mu(gamma, alpha) = tau (tokens per round, bonus included), for 1 <= tau <= gamma + 1."""
    if gamma < 1 or not 1.0 <= tau <= gamma + 1:
        raise ValueError(f"need gamma >= 1 and 1 <= tau <= gamma + 1, got tau={tau!r} gamma={gamma!r}")
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if mean_tokens(mid, gamma) < tau:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# ---------------------------------------------------------------------------------------------- traces

@dataclass(frozen=True)
class Trace:
    name: str                       # <pair>/<dataset>
    path: Path
    header: dict = field(hash=False, compare=False)
    records: tuple[tuple[int, int], ...] = ()

    @property
    def replay(self):
        from nodes.backends.synthetic import Replay
        return Replay(self.records, str(self.path))

    def mean_accepted(self, gamma: int) -> float:
        """Accepted drafts per round when replayed at this window: each record's count capped at gamma."""
        return sum(min(a, gamma) for _, a in self.records) / len(self.records)

    def implied_alpha(self, gamma: int = 4) -> float:
        return implied_alpha(1.0 + self.mean_accepted(gamma), gamma)

    def curve(self) -> list[float]:
        """Per-position conditional acceptance measured in the trace: position i (1-based) was accepted in
        this share of the rounds that drafted it with all earlier positions accepted."""
        out = []
        for i in range(1, max(g for g, _ in self.records) + 1):
            reached = [a for g, a in self.records if g >= i and a >= i - 1]
            if not reached:
                break
            out.append(sum(a >= i for a in reached) / len(reached))
        return out

    def summary_line(self, gamma: int = 4) -> str:
        return (f"{len(self.records)} rounds, mean accepted {self.mean_accepted(gamma):.3f} at gamma={gamma} "
                f"(tau {1 + self.mean_accepted(gamma):.3f}), implied alpha {self.implied_alpha(gamma):.3f}")


def load_trace_file(path: str | Path) -> Trace:
    from nodes.backends.synthetic import load_replay
    path = Path(path)
    header = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            continue
        key, sep, value = line[1:].partition(":")
        if sep:
            header[key.strip()] = value.strip()
    pair, _, dataset = path.stem.partition("__")
    return Trace(f"{pair}/{dataset}", path, header, load_replay(path).records)


def trace_names() -> list[str]:
    return sorted(f"{p.stem.replace('__', '/', 1)}" for p in DATA_DIR.glob("*__*.jsonl"))


@lru_cache(maxsize=None)
def _trace_cached(name: str, mtime: float) -> Trace:
    return load_trace_file(DATA_DIR / f"{name.replace('/', '__', 1)}.jsonl")


def trace(name: str) -> Trace:
    """A shipped trace by name (`<pair>/<dataset>`); ValueError listing the known names."""
    known = trace_names()
    if not isinstance(name, str) or name not in known:
        raise ValueError(f"unknown acceptance trace {name!r}: known traces are {', '.join(known) or 'none'}")
    path = DATA_DIR / f"{name.replace('/', '__', 1)}.jsonl"
    return _trace_cached(name, path.stat().st_mtime)


def traces() -> list[Trace]:
    return [trace(n) for n in trace_names()]


# ---------------------------------------------------------------------------------------------- published

_FIGURES = ("alpha", "tau", "curve")


@dataclass(frozen=True)
class Published:
    id: str
    target: str
    draft: str
    dataset: str
    source: str
    url: str
    alpha: float | None = None            # per-token acceptance as published
    tau: float | None = None              # mean tokens per round (accepted + 1) at `gamma`
    gamma: int | None = None
    curve: tuple[float, ...] | None = None  # per-position conditional acceptance
    note: str = ""
    secondary: bool = False               # the figure was read in a secondary source only

    def effective_alpha(self) -> float:
        """alpha as published, else implied by tau at gamma, else the curve's implied alpha at its length."""
        if self.alpha is not None:
            return self.alpha
        if self.tau is not None:
            if self.gamma is None:
                raise ValueError(f"published entry {self.id!r} gives tau {self.tau:g} without a fixed gamma "
                                 f"(tree or dynamic drafting): no per-position alpha can be implied")
            return implied_alpha(self.tau, self.gamma)
        g = len(self.curve)
        tau, p = 1.0, 1.0
        for a in self.curve:
            p *= a
            tau += p
        return implied_alpha(tau, g)

    def figure(self) -> str:
        if self.curve is not None:
            return "curve " + ", ".join(f"{a:g}" for a in self.curve)
        if self.tau is not None:
            return f"tau {self.tau:g} at gamma {self.gamma if self.gamma is not None else '(not fixed)'}"
        return f"alpha {self.alpha:g}"


def _entry(raw, where: str) -> Published:
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping, got {raw!r}")
    required = ("id", "target", "draft", "dataset", "source", "url")
    missing = [k for k in required if not isinstance(raw.get(k), str) or not raw[k]]
    if missing:
        raise ValueError(f"{where}: missing or empty {', '.join(missing)}")
    allowed = set(required) | set(_FIGURES) | {"gamma", "note", "secondary"}
    extra = sorted(set(raw) - allowed)
    if extra:
        raise ValueError(f"{where}: unknown fields {extra}")
    given = [k for k in _FIGURES if raw.get(k) is not None]
    if not given:
        raise ValueError(f"{where}: needs one of alpha, tau (with gamma) or curve")
    e = Published(**{**raw, "curve": tuple(raw["curve"]) if raw.get("curve") is not None else None})
    if e.alpha is not None and not 0 <= e.alpha <= 1:
        raise ValueError(f"{where}: alpha must be in [0, 1], got {e.alpha}")
    if e.tau is not None and not (1 <= e.tau and (e.gamma is None or isinstance(e.gamma, int) and e.tau <= e.gamma + 1)):
        raise ValueError(f"{where}: tau must be >= 1 and, with an integer gamma, <= gamma + 1")
    if e.curve is not None and (not e.curve or not all(0 <= a <= 1 for a in e.curve)):
        raise ValueError(f"{where}: curve must be a non-empty list of numbers in [0, 1]")
    return e


@lru_cache(maxsize=None)
def _published_cached(path: str, mtime: float) -> dict[str, Published]:
    import yaml
    data = yaml.safe_load(Path(path).read_text()) or {}
    entries = data.get("entries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f"{path}: expected a mapping with an 'entries' list")
    out: dict[str, Published] = {}
    for i, raw in enumerate(entries):
        e = _entry(raw, f"{path}: entries[{i}]")
        if e.id in out:
            raise ValueError(f"{path}: entries[{i}]: duplicate id {e.id!r}")
        out[e.id] = e
    return out


def published_entries(path: str | Path = PUBLISHED) -> dict[str, Published]:
    path = Path(path)
    return _published_cached(str(path), path.stat().st_mtime)


def published(name: str) -> Published:
    """A published entry by id; ValueError listing the known ids."""
    entries = published_entries()
    if not isinstance(name, str) or name not in entries:
        raise ValueError(f"unknown published acceptance {name!r}: known ids are {', '.join(sorted(entries))}")
    return entries[name]


# ---------------------------------------------------------------------------------------------- alpha specs

def resolve_alpha(kind: str, name: str):
    """{trace: NAME} or {published: ID} -> what nodes.backends.synthetic.parse_alpha takes: the trace's Replay,
    or the entry's {"curve": [...]} if it has a curve, else its alpha (stated or implied by tau)."""
    if kind == "trace":
        return trace(name).replay
    if kind == "published":
        entry = published(name)
        return {"curve": list(entry.curve)} if entry.curve is not None else entry.effective_alpha()
    raise ValueError(f"unknown alpha source {kind!r}: expected trace or published")
