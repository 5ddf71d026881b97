"""Experiment YAML schema (`experiments/*.yaml`): what to run on which topology, and the sweep over it.

Every YAML field of an experiment is declared here, with its meaning in a comment; `load_experiment` is the
one entry point. Errors are `Problem`s (file:line: field.path: message), all reported together. Fields map
onto the node flags: `verifier.*` onto `python -m nodes.verifier`, `drafters.*`, `workload.*` and
`speculation.*` onto `python -m nodes.drafter`, `batching.*` onto the verifier's --batching/--max-batch/
--window-ms. Fields that do not apply (e.g. `alpha` with backend hf, `rate_per_s` with closed arrivals) are
accepted and ignored, so one file can be switched between backends with `--set` or a sweep.
"""
from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Iterable, Literal, get_args, get_origin

import pydantic
import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from testbed.common.errors import ConfigError, Problem
from testbed.net.topology import (LinkSpec, Topology, check_topology, check_trace_files, load_topology,
                       resolve_channel_paths, resolve_trace_paths)
from testbed.common.yamlconf import Loc, _describe, format_loc, load_document

BUILTIN_PROMPTS = Path(__file__).resolve().parent.parent.parent / "nodes" / "prompts.jsonl"
MAX_POINTS = 1000                      # a sweep expanding to more points than this is surely a mistake
DEFAULT_REQUESTS = 4                   # workload.requests when neither requests nor duration_s is given
NOT_SWEEPABLE = ("sweep", "label", "name")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------ field types

def _model_name(v: str) -> str:
    from nodes.models import ModelError, ModelSpec   # light: the heavy imports happen only when loading
    try:
        return str(ModelSpec.parse(v))
    except ModelError as e:
        raise ValueError(str(e)) from None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _alpha(v: Any) -> Any:
    """Synthetic acceptance rate: a number in [0, 1], [[t_seconds, alpha], ...] (t >= 0, increasing), or
    {replay: file} (a file written by `nodes.drafter --record-acceptance`, relative to the experiment file)."""
    if _number(v):
        if not 0 <= v <= 1:
            raise ValueError(f"expected alpha in [0, 1], got {v!r}")
        return float(v)
    if isinstance(v, list):
        if not v:
            raise ValueError("expected at least one [t_seconds, alpha] pair, got []")
        out: list[list[float]] = []
        for item in v:
            if not (isinstance(item, list) and len(item) == 2 and all(_number(x) for x in item)):
                raise ValueError(f"expected [t_seconds, alpha] pairs of numbers, got {item!r}")
            t, a = item
            if t < 0 or not 0 <= a <= 1:
                raise ValueError(f"expected t_seconds >= 0 and alpha in [0, 1], got {item!r}")
            if out and t <= out[-1][0]:
                raise ValueError(f"expected strictly increasing times, got {t:g} after {out[-1][0]:g}")
            out.append([float(t), float(a)])
        return out
    if isinstance(v, dict):
        if set(v) != {"replay"} or not isinstance(v["replay"], str) or not v["replay"]:
            raise ValueError(f"expected {{replay: file}}, got {v!r}")
        return {"replay": v["replay"]}
    raise ValueError(f"expected a number in [0, 1], a list of [t_seconds, alpha] pairs or {{replay: file}}, "
                     f"got {v!r}")


def _topology_ref(v: Any) -> Any:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, dict):
        return v
    raise ValueError(f"expected a path to a topology file (relative to this file) or an inline topology "
                     f"mapping, got {v!r}")


def _payload(v: str) -> str:
    from nodes.protocol import MAX_TOPK, valid_payload
    if not valid_payload(v):
        raise ValueError(f"expected 'ids', 'full' or 'topk:K' with 1 <= K <= {MAX_TOPK}, got {v!r}")
    return v


def _pattern(regex: str, expected: str):
    def check(v: str) -> str:
        if not re.fullmatch(regex, v):
            raise ValueError(f"expected {expected}, got {v!r}")
        return v
    return AfterValidator(check)


ModelName = Annotated[str, AfterValidator(_model_name)]
Alpha = Annotated[Any, AfterValidator(_alpha)]
Device = Annotated[str, _pattern(r"auto|cpu|mps|cuda(:[0-9]{1,2})?", "auto, cpu, mps, cuda or cuda:N")]
Dtype = Literal["float32", "bfloat16", "float16"]
Backend = Literal["hf", "synthetic"]
Threads = Annotated[int, Field(ge=1, le=1024)]
VocabSize = Annotated[int, Field(ge=2, le=10_000_000)]
Ms = Annotated[float, Field(ge=0, le=60_000)]


# ------------------------------------------------------------------------------------------ the schema

class LinkOverride(_Strict):
    """Fields replacing those of a topology link (any LinkSpec field except a, b, name). Values are checked
    by re-validating the resulting LinkSpec and the whole topology, so LinkSpec's limits apply unchanged."""
    a: Any = None                    # not allowed: a link's ends and name come from the topology
    b: Any = None
    name: Any = None
    kind: Any = None                 # wired | wireless
    rate_up_mbps: Any = None         # Mbit/s, a → b
    rate_down_mbps: Any = None       # Mbit/s, b → a
    delay_ms: Any = None             # one-way, each direction
    jitter_ms: Any = None            # uniform ±, at most delay_ms
    loss_pct: Any = None             # Bernoulli, each direction, [0, 100)
    queue_pkts: Any = None           # shaper leaf queue
    channel: Any = None              # time-varying channel (testbed/channels/spec.py); trace files relative to this file


class VerifierSpec(_Strict):
    node: str | None = None          # topology host running the verifier (role verifier); default: its only one
    backend: Backend = "hf"          # hf: a real model; synthetic: Bernoulli(alpha) acceptance, no model
    model: ModelName = "smollm2-135m"            # hf only: see nodes/models.py for the accepted specs
    device: Device = "auto"          # hf only: auto (cuda if available) | cpu | cuda | cuda:N | mps
    dtype: Dtype = "float32"         # hf only
    threads: Threads | None = None   # torch CPU threads; null: torch's default (all cores)
    port: int = Field(5555, ge=1024, le=65535)   # TCP port the verifier binds on its host
    vocab_size: VocabSize | None = None          # synthetic only; default drafters.vocab_size
    verify_base_ms: Ms = 0.0         # synthetic only: compute time of one verify batch ...
    verify_per_token_ms: Ms = 0.0    # ... plus this per verified token


class DrafterOverride(_Strict):
    """Per-drafter replacements of the drafters' defaults (null or absent: keep the default)."""
    backend: Backend | None = None
    model: ModelName | None = None
    device: Device | None = None
    dtype: Dtype | None = None
    threads: Threads | None = None   # an explicit null here means torch's default for this drafter
    alpha: Alpha = None
    vocab_size: VocabSize | None = None
    draft_token_ms: Ms | None = None


DRAFTER_SETTINGS = ("backend", "model", "device", "dtype", "threads", "alpha", "vocab_size", "draft_token_ms")


class DrafterDefaults(_Strict):
    nodes: list[str] | None = Field(None, min_length=1)   # drafter hosts to run; default: every role-drafter host
    backend: Backend = "hf"          # must match verifier.backend
    model: ModelName = "smollm2-135m:int8"       # hf only; same tokenizer family as verifier.model
    device: Device = "cpu"           # hf only (int8 models run on the CPU only)
    dtype: Dtype = "float32"         # hf only
    threads: Threads | None = 1      # torch CPU threads per drafter (edge devices are small); null: all cores
    alpha: Alpha = 0.8               # synthetic only: 0.8 | [[t_s, alpha], ...] | {replay: file}
    vocab_size: VocabSize = 32000    # synthetic only; must equal the verifier's
    draft_token_ms: Ms = 0.0         # synthetic only: compute time per drafted token
    overrides: dict[str, DrafterOverride] = {}    # node -> fields above (not nodes) for that drafter only


class Workload(_Strict):
    prompts: str = "builtin"         # "builtin" (nodes/prompts.jsonl) or a JSONL file relative to this file
    arrivals: Literal["closed", "poisson"] = "closed"   # closed: `sessions` back to back; poisson: open loop
    rate_per_s: float | None = Field(None, gt=0, le=10_000)   # poisson only: session arrivals/s per drafter
    requests: int | None = Field(None, ge=1, le=1_000_000)    # sessions per drafter; or duration_s (one of two)
    duration_s: float | None = Field(None, gt=0, le=86_400)   # start sessions for this long, per drafter
    sessions: int = Field(1, ge=1, le=1024)                   # closed only: concurrent sessions per drafter
    max_new: int = Field(32, ge=1, le=8192)                   # tokens generated per session
    temperature: float = Field(0.0, ge=0, le=100)             # 0: greedy; > 0 needs payload topk:K or full

    @model_validator(mode="before")
    @classmethod
    def _default_requests(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("requests") is None and data.get("duration_s") is None:
            data = {**data, "requests": DEFAULT_REQUESTS}
        return data


def _speculation_policy(v: Any) -> Any:
    """`static` | `heuristic` | `backoff` | `threshold` | `network` | `awc`, or a mapping {policy: name, field:
    value, ...} of that policy's parameters (testbed/policies/speculation.py); checked by building one."""
    from testbed.policies.speculation import make_speculation
    spec = v if isinstance(v, (str, dict)) else None
    if spec is None:
        raise ValueError(f"expected a policy name or a mapping {{policy: name, ...}}, got {v!r}")
    try:
        make_speculation(spec)
    except (ValueError, TypeError) as e:
        raise ValueError(str(e)) from None
    return v


class Speculation(_Strict):
    gamma: int = Field(4, ge=0, le=64)          # initial draft window; 0: autoregressive baseline
    payload: Annotated[str, AfterValidator(_payload)] = "ids"   # what a draft carries: ids | topk:K | full
    proactive: bool = True                      # draft the next window while the verdict is in flight
    policy: Annotated[Any, AfterValidator(_speculation_policy)] = "static"   # next window per session, at the verifier


class Scheduling(_Strict):
    """A verification budget across sessions (GoodSpeed): after each batch, `budget` draft tokens are split among
    the open sessions and override the speculation policy. None: each session's policy alone decides."""
    scheduler: Literal["goodspeed", "fixed", "random"] | None = None
    budget: int = Field(16, ge=1, le=4096)      # C: draft tokens per round across all sessions
    min_s: int = Field(0, ge=0, le=64)          # per session and round (0: a session may get an AR step)
    max_s: int | None = Field(None, ge=1, le=64)
    utility: Literal["log", "linear", "alpha-fair"] = "log"   # goodspeed: log = proportional fairness
    eta: float = Field(0.1, gt=0, lt=1)         # EWMA weight of acceptance (eq. 3)
    beta: float = Field(0.5, gt=0, lt=1)        # EWMA weight of goodput (eq. 4)


class Batching(_Strict):
    rule: Literal["fifo", "window", "sync", "length", "zhu"] = "fifo"   # when the verifier runs a batch (testbed/policies)
    max_batch: int = Field(8, ge=1, le=1024)            # drafts verified together at most
    window_ms: float = Field(5.0, ge=0, le=10_000)      # window only: wait this long for more drafts
    max_tokens: int = Field(64, ge=1, le=1_000_000)     # length only: batch size x longest window at most


class Routing(_Strict):
    """Several verifiers: each drafter routes every new session to one of them, where it stays (its KV cache is
    there). Off (policy null): one verifier, `verifier.node`."""
    policy: Literal["random", "round-robin", "jsq", "jsq-d"] | None = None   # testbed/policies/routing.py
    d: int = Field(2, ge=1, le=64)               # jsq-d: verifiers sampled per decision
    verifiers: list[str] | None = Field(None, min_length=1)   # default: every host with role verifier


class Limits(_Strict):
    ready_timeout_s: float = Field(120, gt=0, le=3600)          # nodes must be up (models loaded) by then
    run_timeout_s: float = Field(900, gt=0, le=7 * 86_400)      # the whole run is stopped after this


class Experiment(_Strict):
    name: Annotated[str, _pattern(r"[A-Za-z0-9_.-]{1,64}", "1 to 64 letters, digits, '_', '.' or '-'")]  # results dir
    description: str = ""
    topology: Annotated[Any, AfterValidator(_topology_ref)]  # file (relative to this file) or inline mapping
    links: dict[str, LinkOverride] = {}          # link name or "*" (all links) -> fields replaced before the run
    backend: Literal["mininet", "local"] = "mininet"   # local: every node on loopback, no shaping
    verifier: VerifierSpec = VerifierSpec()
    drafters: DrafterDefaults = DrafterDefaults()
    workload: Workload = Workload()
    speculation: Speculation = Speculation()
    batching: Batching = Batching()
    scheduling: Scheduling = Scheduling()
    routing: Routing = Routing()
    seed: int = Field(0, ge=0, le=2**31 - 1)     # drafter i gets seed * 1000 + i; channels and delays too
    channel_interval_ms: float = Field(100.0, ge=10, le=60_000)   # channel models step this often (testbed/channels/plan.py)
    limits: Limits = Limits()
    sweep: dict[str, Any] | None = None          # {field.path: [values]} grid, and/or zip: {path: [...], ...}
    label: str | None = Field(None, max_length=200)   # run label; "{field.path}" is replaced by its value

    _file: str = PrivateAttr("")                 # the experiment file ("" when built from a dict)
    _base_dir: Path = PrivateAttr(Path("."))     # relative paths in the file are relative to this
    _data: dict = PrivateAttr(default_factory=dict)   # the raw mapping (after --set), to expand the sweep
    _topology: Topology | None = PrivateAttr(None)    # with link overrides applied

    # -- accessors -------------------------------------------------------------------------------------
    @property
    def source(self) -> str:
        return self._file

    def topology_obj(self) -> Topology:
        """The topology with the link overrides applied."""
        assert self._topology is not None, "build experiments with load_experiment or experiment_from_dict"
        return self._topology

    def drafter_nodes(self) -> list[str]:
        return list(self.drafters.nodes or [])

    def verifier_nodes(self) -> list[str]:
        """The hosts running a verifier: routing.verifiers (default every verifier host) when routing, else
        verifier.node alone."""
        if not self.routing.policy:
            return [self.verifier.node]
        topo = self.topology_obj()
        return list(self.routing.verifiers or [n for n in topo.hosts() if topo.nodes[n].role == "verifier"])

    def drafter_settings(self, node: str) -> dict:
        """The drafters' defaults merged with `drafters.overrides[node]` (backend, model, device, dtype,
        threads, alpha, vocab_size, draft_token_ms); file paths are absolute."""
        if node not in self.drafter_nodes():
            raise KeyError(f"{node!r} is not a drafter of experiment {self.name!r}; "
                           f"drafters: {', '.join(self.drafter_nodes())}")
        return _merge(self.drafters, node)

    def prompts_path(self) -> Path:
        return BUILTIN_PROMPTS if self.workload.prompts == "builtin" else Path(self.workload.prompts)

    # -- sweep -----------------------------------------------------------------------------------------
    def points(self) -> list[Experiment]:
        """The sweep expanded (grid: keys in YAML order, the last varying fastest; a zip group is one axis),
        each point without `sweep` and with `label` filled."""
        if not self.sweep:
            return [self.model_copy(update={"sweep": None, "label": _fill_label(self, self.label, [])})]
        axes, found = _parse_sweep(self.sweep)
        if found:
            raise ConfigError([Problem(self._file, format_loc(loc), msg) for loc, msg in found])
        out, cache = [], {}
        for combo in itertools.product(*(range(ax.n) for ax in axes)):
            data = _point_data(self._data, axes, combo)
            exp, found, foreign = _build(data, self._base_dir, self._file, cache)
            if exp is None:
                raise ConfigError(foreign + [Problem(self._file, format_loc(loc), msg) for loc, msg in found])
            swept = [(key, path) for ax in axes for key, path in zip(ax.keys, ax.paths)]
            out.append(exp.model_copy(update={"label": _fill_label(exp, self.label, swept)}))
        return out

    # -- manifest --------------------------------------------------------------------------------------
    def resolved(self) -> dict:
        """Everything a run depends on, JSON-ready: the topology inlined (link overrides applied, addresses
        and link names filled in), per-drafter settings merged, defaults filled, the prompts' digest."""
        topo = self.topology_obj()
        addresses = topo.addresses()
        tdict = topo.model_dump(mode="json")
        for name, spec in tdict["nodes"].items():
            if name in addresses:
                spec["ip"] = str(addresses[name])
        for link, spec in zip(topo.links, tdict["links"]):
            spec["name"] = link.link_name
            for key in ("up", "down"):     # a trace counts by its content, wherever the file lies
                if spec.get("channel") and spec["channel"].get(key):
                    path = Path(spec["channel"][key])
                    spec["channel"][key] = f"{path.name} sha256:{_sha256(path)}"
        out = {
            "name": self.name, "description": self.description, "backend": self.backend,
            "topology_file": self.topology if isinstance(self.topology, str) else None,
            "topology": tdict,
            "verifier": self.verifier.model_dump(mode="json"),
            "drafters": {n: self.drafter_settings(n) for n in self.drafter_nodes()},
            "workload": {**self.workload.model_dump(mode="json"), "prompts_sha256": _sha256(self.prompts_path())},
            "speculation": self.speculation.model_dump(mode="json"),
            "batching": self.batching.model_dump(mode="json"),
            "scheduling": self.scheduling.model_dump(mode="json"),
            "routing": self.routing.model_dump(mode="json"),
            "seed": self.seed,
            "channel_interval_ms": self.channel_interval_ms,
            "limits": self.limits.model_dump(mode="json"),
            "label": self.label,
        }
        if self.sweep:
            out["sweep"] = self.sweep
        return json.loads(json.dumps(out))          # plain JSON types only (tuples → lists)

    def config_hash(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def _merge(defaults: DrafterDefaults, node: str) -> dict:
    out = {k: getattr(defaults, k) for k in DRAFTER_SETTINGS}
    o = defaults.overrides.get(node)
    if o is not None:
        out.update({k: getattr(o, k) for k in o.model_fields_set if k in DRAFTER_SETTINGS
                    and (getattr(o, k) is not None or k == "threads")})
    return copy.deepcopy(out)


def _copy(data: Any) -> Any:
    """Deep copy of raw YAML data that does not keep sharing: a YAML alias (`*station`) becomes an independent
    copy, so overriding one aliased mapping does not change the others."""
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# ------------------------------------------------------------------------------------------ field paths

def _submodel(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    return None


def _keyed_model(ann: Any) -> type[BaseModel] | None:
    """The value model of a `dict[str, Model]` field (links, drafters.overrides)."""
    if get_origin(ann) is dict:
        return _submodel(get_args(ann)[1])
    return None


def parse_path(path: str) -> Loc:
    """`speculation.gamma` → ("speculation", "gamma"); keys of links/overrides may contain dots
    (`links.d1-ap1.delay_ms`). Raises ValueError naming the first unknown part."""
    segs = path.split(".")
    if not path or any(not s for s in segs):
        raise ValueError(f"expected a dotted field path like speculation.gamma, got {path!r}")
    model: type[BaseModel] | None = Experiment
    out: list[Any] = []
    i = 0
    while i < len(segs):
        where = ".".join(out)
        if model is None:
            raise ValueError(f"{where} is a value, not a group of fields")
        seg = segs[i]
        if seg not in model.model_fields or seg.startswith("_"):
            fields = ", ".join(model.model_fields)
            raise ValueError(f"unknown field {seg!r}" + (f" in {where}" if where else "") + f" (fields: {fields})")
        out.append(seg)
        i += 1
        ann = model.model_fields[seg].annotation
        value_model = _keyed_model(ann)
        if value_model is not None:
            rest = segs[i:]
            if rest:
                if len(rest) >= 2 and rest[-1] in value_model.model_fields:
                    out += [".".join(rest[:-1]), rest[-1]]
                elif rest[-1] in value_model.model_fields or len(rest) == 1:
                    out.append(".".join(rest))
                else:
                    raise ValueError(f"unknown field {rest[-1]!r} in {'.'.join(out)}.<name> "
                                     f"(fields: {', '.join(value_model.model_fields)})")
            return tuple(out)
        model = _submodel(ann)
    return tuple(out)


def _get(data: Any, loc: Loc) -> Any:
    for key in loc:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def _set(data: dict, loc: Loc, value: Any) -> None:
    """Set a field in the raw mapping, creating groups on the way. Setting one of requests / duration_s
    clears the other (they are alternatives), so `--set workload.duration_s=60` just works."""
    for key in loc[:-1]:
        if data.get(key) is None:
            data[key] = {}
        if not isinstance(data[key], dict):
            raise ValueError(f"{key} is not a mapping of fields")
        data = data[key]
    data[loc[-1]] = value
    other = {("workload", "requests"): "duration_s", ("workload", "duration_s"): "requests"}.get(tuple(loc))
    if other and value is not None:
        data.pop(other, None)


# ------------------------------------------------------------------------------------------ sweep

@dataclass
class _Axis:
    keys: list[str]          # the sweep keys as written (one, or several for a zip group)
    paths: list[Loc]         # the field each key names
    where: list[Loc]         # where each key is: ("sweep", key) or ("sweep", "zip", key)
    values: list[list[Any]]  # values[k][i]: the i-th value of key k
    n: int


def _parse_sweep(sweep: dict) -> tuple[list[_Axis], list[tuple[Loc, str]]]:
    axes: list[_Axis] = []
    found: list[tuple[Loc, str]] = []
    seen: dict[Loc, str] = {}

    def entry(key: Any, values: Any, where: Loc) -> tuple[Loc, list] | None:
        if not isinstance(key, str):
            found.append((where, f"expected a field path like speculation.gamma, got {key!r}"))
            return None
        try:
            path = parse_path(key)
        except ValueError as e:
            found.append((where, str(e)))
            return None
        if path[0] in NOT_SWEEPABLE:
            found.append((where, f"{path[0]} cannot be swept"))
            return None
        for other, other_key in seen.items():
            if other[:len(path)] == path or path[:len(other)] == other:
                found.append((where, f"overlaps sweep key {other_key}"))
                return None
        seen[path] = key
        if not isinstance(values, list) or not values:
            found.append((where, f"expected a non-empty list of values, got {values!r}"))
            return None
        return path, values

    if not sweep:
        found.append((("sweep",), "expected at least one field to sweep (or leave sweep out)"))
    for key, values in sweep.items():
        if key == "zip":
            if not isinstance(values, dict) or not values:
                found.append((("sweep", "zip"), f"expected a mapping of field paths to equally long lists, "
                                                f"got {values!r}"))
                continue
            ax = _Axis([], [], [], [], 0)
            for zkey, zvalues in values.items():
                got = entry(zkey, zvalues, ("sweep", "zip", zkey))
                if got is None:
                    continue
                if ax.keys and len(got[1]) != ax.n:
                    found.append((("sweep", "zip", zkey), f"expected {ax.n} values like {ax.keys[0]} "
                                                          f"(zip pairs the i-th values), got {len(got[1])}"))
                    continue
                ax.keys.append(zkey)
                ax.paths.append(got[0])
                ax.where.append(("sweep", "zip", zkey))
                ax.values.append(got[1])
                ax.n = len(got[1])
            if ax.keys:
                axes.append(ax)
        else:
            got = entry(key, values, ("sweep", key))
            if got is not None:
                axes.append(_Axis([key], [got[0]], [("sweep", key)], [got[1]], len(got[1])))
    total = 1
    for ax in axes:
        total *= ax.n
    if total > MAX_POINTS:
        found.append((("sweep",), f"the sweep expands to {total} runs; at most {MAX_POINTS}"))
    return axes, found


def _point_data(data: dict, axes: list[_Axis], combo: tuple[int, ...]) -> dict:
    point = _copy(data)
    point.pop("sweep", None)
    for ax, i in zip(axes, combo):
        for path, values in zip(ax.paths, ax.values):
            _set(point, path, _copy(values[i]))
    return point


def _value(exp: Experiment, path: Loc) -> Any:
    obj: Any = exp
    for key in path:
        if isinstance(obj, BaseModel):
            obj = getattr(obj, key)
        elif isinstance(obj, dict):
            obj = obj.get(key)
        else:
            return None
    return obj


def _fmt(path: Loc, v: Any) -> str:
    if path == ("topology",) and isinstance(v, str):
        return Path(v).stem
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "null"
    if isinstance(v, BaseModel):
        v = v.model_dump(exclude_unset=True)
    if isinstance(v, (dict, list)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def _fill_label(exp: Experiment, template: str | None, swept: list[tuple[str, Loc]]) -> str:
    if template is not None:
        return _PLACEHOLDER.sub(lambda m: _fmt(parse_path(m.group(1)), _value(exp, parse_path(m.group(1)))),
                                template)
    if not swept:
        return "base"
    shorts = [str(path[-1]) for _, path in swept]
    names = [s if shorts.count(s) == 1 else key for s, (key, _) in zip(shorts, swept)]
    return ", ".join(f"{n}={_fmt(path, _value(exp, path))}" for n, (_, path) in zip(names, swept))


# ------------------------------------------------------------------------------------------ checks

Found = list[tuple[Loc, str]]


def _pydantic_found(e: pydantic.ValidationError, prefix: Loc = ()) -> Found:
    out = []
    for err in e.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append((prefix + loc, _describe(err)))
    return out


def _resolve(base_dir: Path, p: str) -> Path:
    return Path(os.path.normpath(base_dir / p))


def _load_topology(exp: Experiment, base_dir: Path, file: str, cache: dict) -> tuple[Topology | None, Found, list[Problem]]:
    ref = exp.topology
    if isinstance(ref, str):
        path = _resolve(base_dir, ref)
        if str(path) not in cache:
            if not path.is_file():
                cache[str(path)] = (None, [(("topology",), f"topology file {ref!r} not found (looked for {path})")], [])
            else:
                try:
                    cache[str(path)] = (load_topology(path), [], [])
                except ConfigError as e:
                    cache[str(path)] = (None, [], e.problems)
        return cache[str(path)]
    ref = copy.deepcopy(ref)
    resolve_trace_paths(ref, base_dir)
    try:
        topo = Topology.model_validate(ref)
    except pydantic.ValidationError as e:
        return None, _pydantic_found(e, ("topology",)), []
    found = [(("topology",) + loc, msg) for loc, msg in check_topology(topo)]
    if found:
        return None, found, []
    topo._source = file
    return topo, [], []


def _apply_links(exp: Experiment, topo: Topology, base_dir: Path) -> tuple[Topology | None, Found]:
    found: Found = []
    names = [l.link_name for l in topo.links]
    for key, o in exp.links.items():
        if key != "*" and key not in names:
            found.append((("links", key), f"unknown link {key!r}; links: {', '.join(names)} (or '*' for all)"))
        for f in ("a", "b", "name"):
            if f in o.model_fields_set:
                found.append((("links", key, f), "a link's ends (a, b) and name come from the topology and "
                                                 "cannot be overridden"))
    if found or not exp.links:
        return (None if found else topo), found
    star = exp.links.get("*")

    def setters(name: str) -> list[tuple[str, LinkOverride]]:   # later ones win
        return [(k, o) for k, o in (("*", star), (name, exp.links.get(name))) if o is not None]

    new_links = []
    for link in topo.links:
        merged = link.model_dump()
        for _, o in setters(link.link_name):
            merged.update({f: copy.deepcopy(getattr(o, f)) for f in o.model_fields_set})
            if "channel" in o.model_fields_set and isinstance(merged["channel"], dict):
                resolve_channel_paths(merged["channel"], base_dir)
        try:
            new_links.append(LinkSpec.model_validate(merged))
        except pydantic.ValidationError as e:
            for loc, msg in _pydantic_found(e):
                found.append((_blame(setters(link.link_name), loc), msg))
    if found:
        return None, found
    new = topo.model_copy(update={"links": new_links})
    new._source = topo.source
    for loc, msg in check_topology(new):
        if loc[:1] == ("links",) and len(loc) >= 2 and isinstance(loc[1], int):
            name = new.links[loc[1]].link_name
            blamed = _blame(setters(name), loc[2:])
            found.append((blamed, msg + (f" (link {name})" if blamed[1] != name else "")))
        else:
            found.append((("links",), f"with the link overrides, topology {format_loc(loc)}: {msg}"))
    return (None if found else new), found


def _blame(setters: list[tuple[str, LinkOverride]], field: Loc) -> Loc:
    """The override entry (and field) that caused a problem of a link's `field`: the entry that set that
    field, else the most specific entry for the link."""
    for key, o in reversed(setters):
        if field and field[0] in o.model_fields_set:
            return ("links", key) + field[:1]
    return ("links", setters[-1][0]) if setters else ("links",)


def _check_nodes(exp: Experiment, topo: Topology) -> tuple[Found, str | None, list[str]]:
    found: Found = []
    roles = {n: s.role for n, s in topo.nodes.items()}
    verifiers = [n for n in topo.hosts() if roles[n] == "verifier"]
    drafters = [n for n in topo.hosts() if roles[n] == "drafter"]
    vnode = exp.verifier.node
    if exp.routing.policy:
        for i, n in enumerate(exp.routing.verifiers or []):
            if roles.get(n) != "verifier":
                found.append((("routing", "verifiers", i), f"{n!r} is not a verifier host; verifier hosts: "
                                                           f"{', '.join(verifiers) or 'none'}"))
        vnode = vnode or (exp.routing.verifiers or verifiers or [None])[0]
    if vnode is None:
        if len(verifiers) == 1:
            vnode = verifiers[0]
        elif not verifiers:
            found.append((("verifier", "node"), f"topology {topo.name} has no host with role verifier"))
        else:
            found.append((("verifier", "node"), f"topology {topo.name} has {len(verifiers)} verifier hosts "
                                                f"({', '.join(verifiers)}): name one"))
    elif vnode not in roles:
        found.append((("verifier", "node"), f"unknown node {vnode!r}; verifier hosts: {', '.join(verifiers) or 'none'}"))
    elif roles[vnode] != "verifier":
        found.append((("verifier", "node"), f"{vnode} is a {roles[vnode]}; expected a host with role verifier "
                                            f"({', '.join(verifiers) or 'none in this topology'})"))
    dnodes = exp.drafters.nodes
    if dnodes is None:
        dnodes = drafters
        if not drafters:
            found.append((("drafters", "nodes"), f"topology {topo.name} has no host with role drafter"))
    else:
        seen: set[str] = set()
        for i, n in enumerate(dnodes):
            if n not in roles:
                found.append((("drafters", "nodes", i), f"unknown node {n!r}; drafter hosts: {', '.join(drafters) or 'none'}"))
            elif roles[n] != "drafter":
                found.append((("drafters", "nodes", i), f"{n} is a {roles[n]}; expected a host with role drafter "
                                                        f"({', '.join(drafters) or 'none in this topology'})"))
            elif n in seen:
                found.append((("drafters", "nodes", i), f"{n} is listed twice"))
            seen.add(n)
    for n in exp.drafters.overrides:
        if n not in dnodes:
            found.append((("drafters", "overrides", n), f"{n!r} is not one of the drafters "
                                                        f"({', '.join(dnodes) or 'none'})"))
    return found, vnode, list(dnodes)


def _model_family(spec: str) -> str | None:
    return None if spec.startswith("dir:") else spec.split(":")[0]


def _check_drafters(exp: Experiment, dnodes: list[str], base_dir: Path) -> tuple[Found, dict]:
    """Backend pairing and synthetic settings of every drafter, blamed on the entry that set the field.
    Returns the problems and the fields to update (replay paths made absolute)."""
    found: Found = []
    v = exp.verifier
    v_vocab = v.vocab_size if v.vocab_size is not None else exp.drafters.vocab_size

    def where(node: str, field: str) -> Loc:
        o = exp.drafters.overrides.get(node)
        if o is not None and field in o.model_fields_set and getattr(o, field) is not None:
            return ("drafters", "overrides", node, field)
        return ("drafters", field)

    for node in dnodes:
        d = _merge(exp.drafters, node)
        if d["backend"] != v.backend:
            found.append((where(node, "backend"), f"{d['backend']} drafters need a verifier with backend "
                                                  f"{d['backend']}; verifier.backend is {v.backend!r}"))
        elif d["backend"] == "synthetic":
            if d["vocab_size"] != v_vocab:
                found.append((where(node, "vocab_size"), f"expected the verifier's vocab_size ({v_vocab}), "
                                                         f"got {d['vocab_size']}"))
            if isinstance(d["alpha"], dict):
                path = _resolve(base_dir, d["alpha"]["replay"])
                if not path.is_file():
                    found.append((where(node, "alpha"), f"replay file {d['alpha']['replay']!r} not found "
                                                        f"(looked for {path})"))
                else:
                    from nodes.backends.synthetic import load_replay
                    try:
                        load_replay(path)
                    except ValueError as e:
                        found.append((where(node, "alpha"), f"bad replay file: {e}"))
        else:
            fam, vfam = _model_family(d["model"]), _model_family(v.model)
            if fam and vfam and fam != vfam:
                found.append((where(node, "model"), f"draft model {d['model']!r} and verifier.model {v.model!r} "
                                                    "have different tokenizers; pair models of one family"))
    # replay paths → absolute, so the nodes can open them from any directory
    update: dict = {}
    if isinstance(exp.drafters.alpha, dict):
        update["alpha"] = {"replay": str(_resolve(base_dir, exp.drafters.alpha["replay"]).resolve())}
    overrides = {}
    for n, o in exp.drafters.overrides.items():
        if isinstance(o.alpha, dict):
            o = o.model_copy(update={"alpha": {"replay": str(_resolve(base_dir, o.alpha["replay"]).resolve())}})
        overrides[n] = o
    update["overrides"] = overrides
    return found, update


def _check_workload(exp: Experiment, base_dir: Path) -> tuple[Found, str]:
    found: Found = []
    w = exp.workload
    if w.requests is not None and w.duration_s is not None:
        found.append((("workload", "duration_s"), "give either requests or duration_s, not both"))
    if w.arrivals == "poisson" and w.rate_per_s is None:
        found.append((("workload", "rate_per_s"), "arrivals poisson needs rate_per_s (sessions started per "
                                                  "second per drafter, > 0)"))
    if w.duration_s is not None and w.duration_s >= exp.limits.run_timeout_s:
        found.append((("workload", "duration_s"), f"expected less than limits.run_timeout_s "
                                                  f"({exp.limits.run_timeout_s:g}), got {w.duration_s:g}"))
    if w.temperature > 0 and exp.speculation.payload == "ids":
        found.append((("workload", "temperature"), f"temperature {w.temperature:g} needs speculation.payload "
                                                   "'topk:K' or 'full' (sampling is verified against the draft's "
                                                   "probabilities); payload is 'ids'"))
    prompts = w.prompts
    if prompts != "builtin":
        path = _resolve(base_dir, prompts)
        if not path.is_file():
            found.append((("workload", "prompts"), f"prompts file {prompts!r} not found (looked for {path}); "
                                                   "or use 'builtin'"))
        else:
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as e:
                found.append((("workload", "prompts"), f"cannot read prompts file {prompts!r}: {e}"))
            else:
                if not text.strip():
                    found.append((("workload", "prompts"), f"prompts file {prompts!r} is empty"))
            prompts = str(path.resolve())
    return found, prompts


def _check_control(exp: Experiment) -> Found:
    """Speculation policy and budget scheduler against the rest of the experiment."""
    found: Found = []
    policy = exp.speculation.policy
    name = policy if isinstance(policy, str) else policy.get("policy", "static")
    if exp.speculation.gamma == 0 and name != "static":
        found.append((("speculation", "policy"), f"gamma 0 is the autoregressive baseline; policy {name!r} would "
                                                 "start speculating: use policy static with gamma 0"))
    sch = exp.scheduling
    if sch.scheduler and sch.max_s is not None and sch.max_s < sch.min_s:
        found.append((("scheduling", "max_s"), f"expected max_s >= min_s ({sch.min_s}), got {sch.max_s}"))
    if sch.scheduler and exp.speculation.gamma == 0:
        found.append((("scheduling", "scheduler"), "a budget scheduler hands out draft windows; gamma 0 (the "
                                                   "autoregressive baseline) drafts nothing"))
    return found


def _check_label(exp: Experiment) -> Found:
    if exp.label is None:
        return []
    for m in _PLACEHOLDER.finditer(exp.label):
        try:
            parse_path(m.group(1))
        except ValueError as e:
            return [(("label",), f"placeholder {{{m.group(1)}}}: {e}")]
    return []


def _build(data: Any, base_dir: Path, file: str, cache: dict) -> tuple[Experiment | None, Found, list[Problem]]:
    """Validate one experiment mapping (no sweep expansion). Returns the experiment, or None with the
    problems as (field path, message) in this file plus `Problem`s in other files (a bad topology file)."""
    try:
        exp = Experiment.model_validate(data)
    except pydantic.ValidationError as e:
        return None, _pydantic_found(e), []
    topo, found, foreign = _load_topology(exp, base_dir, file, cache)
    found = list(found)
    found += _check_label(exp)
    found += _check_control(exp)
    wfound, prompts = _check_workload(exp, base_dir)
    found += wfound
    if topo is not None:
        topo, lfound = _apply_links(exp, topo, base_dir)
        found += lfound
    if topo is not None and not found:
        foreign = list(foreign) + check_trace_files(topo, lambda loc, msg: Problem(
            topo.source or file, format_loc(loc), msg))
    if topo is not None:
        nfound, vnode, dnodes = _check_nodes(exp, topo)
        found += nfound
        if not nfound:
            dfound, dupdate = _check_drafters(exp, dnodes, base_dir)
            found += dfound
    if found or foreign or topo is None:
        return None, found, foreign
    v = exp.verifier
    exp = exp.model_copy(update={
        "verifier": v.model_copy(update={"node": vnode, "vocab_size": v.vocab_size or exp.drafters.vocab_size}),
        "drafters": exp.drafters.model_copy(update={"nodes": dnodes, **dupdate}),
        "workload": exp.workload.model_copy(update={"prompts": prompts}),
    })
    exp._file, exp._base_dir, exp._data, exp._topology = file, base_dir, _copy(data), topo
    return exp, [], []


def _check_points(exp: Experiment, cache: dict) -> tuple[Found, list[Problem]]:
    """Expand the sweep and validate every point; a problem in a point is blamed on the swept value that
    caused it: `sweep.<path>[i]` (with the point named when several fields are swept)."""
    axes, found = _parse_sweep(exp.sweep or {})
    if found:
        return found, []
    foreign: list[Problem] = []
    seen: set = set()
    for combo in itertools.product(*(range(ax.n) for ax in axes)):
        data = _point_data(exp._data, axes, combo)
        point, pfound, pforeign = _build(data, exp._base_dir, exp._file, cache)
        foreign += [p for p in pforeign if p not in foreign]
        if point is not None:
            continue
        swept = [(ax.where[k], path, i, ax.values[k][i]) for ax, i in zip(axes, combo) for k, path in enumerate(ax.paths)]
        point_name = ", ".join(f"{format_loc(path)}={_fmt(path, v)}" for _, path, _, v in swept)
        for loc, msg in pfound:
            blamed = [(where, path, i) for where, path, i, _ in swept if loc[:len(path)] == path]
            if blamed:
                where, path, i = blamed[0]
                rest = loc[len(path):]
                text = (f"{format_loc(rest)}: " if rest else "") + msg
                out_loc = where + (i,)
            elif len(swept) == 1:
                where, path, i, _ = swept[0]
                out_loc, text = where + (i,), f"{format_loc(loc)}: {msg}"
            else:
                out_loc, text = ("sweep",), f"{format_loc(loc)}: {msg}"
            if len(axes) > 1:
                text += f" (in the run {point_name})"
            key = (out_loc, msg, format_loc(loc))
            if key not in seen:
                seen.add(key)
                found.append((out_loc, text))
    return found, foreign


# ------------------------------------------------------------------------------------------ entry points

def _parse_sets(overrides: Iterable[str]) -> tuple[list[tuple[Loc, Any, str]], list[Problem]]:
    sets, problems = [], []
    for item in overrides:
        where = f"--set {item}"
        path, eq, text = item.partition("=")
        path = path.strip()
        if not eq or not path:
            problems.append(Problem(where, "", "expected PATH=VALUE, e.g. speculation.gamma=8"))
            continue
        try:
            loc = parse_path(path)
        except ValueError as e:
            problems.append(Problem(where, "", str(e)))
            continue
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            problems.append(Problem(where, "", f"invalid YAML value: {getattr(e, 'problem', None) or e}"))
            continue
        sets.append((loc, value, item))
    return sets, problems


def _apply_sets(data: dict, sets: list[tuple[Loc, Any, str]]) -> list[Problem]:
    """Apply --set overrides; one naming a swept field replaces that sweep axis."""
    problems = []
    for loc, value, item in sets:
        try:
            _set(data, loc, value)
        except ValueError as e:
            problems.append(Problem(f"--set {item}", "", str(e)))
            continue
        sweep = data.get("sweep")
        if isinstance(sweep, dict) and loc[0] != "sweep":
            groups = [sweep] + ([sweep["zip"]] if isinstance(sweep.get("zip"), dict) else [])
            for group in groups:
                for key in list(group):
                    if key != "zip" and isinstance(key, str) and _safe_parse(key) == loc:
                        del group[key]
            if isinstance(sweep.get("zip"), dict) and not sweep["zip"]:
                del sweep["zip"]
            if not sweep:
                data["sweep"] = None
    return problems


def _safe_parse(key: str) -> Loc | None:
    try:
        return parse_path(key)
    except ValueError:
        return None


def experiment_from_dict(data: dict, base_dir: str | Path = ".", file: str = "<experiment>") -> Experiment:
    """Validate an experiment given as a mapping (paths in it relative to base_dir)."""
    exp, found, foreign = _build(data, Path(base_dir), file, {})
    if exp is not None and exp.sweep:
        found, foreign = _check_points(exp, {})
    if found or foreign:
        raise ConfigError(foreign + [Problem(file, format_loc(loc), msg) for loc, msg in found])
    assert exp is not None
    return exp


def load_experiment(path: str | Path, overrides: Iterable[str] = ()) -> Experiment:
    """Read and validate an experiment file, with `--set PATH=VALUE` overrides (values parsed as YAML).
    Raises ConfigError listing every problem: `file:line: field.path: message`, or `--set PATH=VALUE: message`
    for a problem in an overridden value."""
    doc = load_document(path)
    sets, problems = _parse_sets(overrides)
    if problems:
        raise ConfigError(problems)
    data = _copy(doc.data)
    problems = _apply_sets(data, sets)
    if problems:
        raise ConfigError(problems)
    base_dir = Path(path).parent
    set_locs = {loc: item for loc, _, item in sets}

    def problem(loc: Loc, msg: str) -> Problem:
        for sloc, item in set_locs.items():
            if loc[:len(sloc)] == sloc:
                rest = loc[len(sloc):]
                return Problem(f"--set {item}", "", (f"{format_loc(rest)}: " if rest else "") + msg)
        return doc.problem(loc, msg)

    cache: dict = {}
    exp, found, foreign = _build(data, base_dir, doc.file, cache)
    if exp is not None and exp.sweep:
        found, foreign = _check_points(exp, cache)
    if found or foreign:
        out: list[Problem] = []
        mine = sorted((problem(loc, msg) for loc, msg in found), key=lambda p: (p.line is None, p.line or 0))
        for p in foreign + mine:
            if p not in out:
                out.append(p)
        raise ConfigError(out)
    assert exp is not None
    return exp


def check_file(path: str | Path, overrides: Iterable[str] = ()) -> list[str]:
    """The problems of an experiment file as the lines `testbed` prints (empty: the file is valid)."""
    try:
        load_experiment(path, overrides)
    except ConfigError as e:
        return [str(p) for p in e.problems]
    return []
