"""What a drafter and a verifier are told to do: typed, validated configuration.

The experiment schema (testbed/run/schema.py) is built from the sub-models here (Workload, Speculation,
Batching, Scheduling, Routing, DraftModel, VerifierModel), so a field has one definition and one default
wherever it is set. The runner writes each node's config as JSON (RUN/nodes/<name>.json) and starts
`python -m nodes.drafter --config FILE` (or nodes.verifier); the manual flags of those commands build the
same models (`config_from_flags` in nodes/drafter.py and nodes/verifier.py). A bad file is reported
one problem a line, `FILE: field.path: message`, and the node exits with status 2.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from testbed.common.errors import UnreadableInput, one_line, read_text
from testbed.common.strict import StrictModel

from nodes.backends import lacks_q
from nodes.models import ModelError, ModelSpec
from nodes.protocol import MAX_GAMMA, MAX_TOPK, valid_payload
from nodes.security import DrafterCurve, VerifierCurve
from nodes.workloads.lengths import OutputLen
from testbed.common.yamlconf import _describe, format_loc
from testbed.policies.speculation import make_speculation
from testbed.policies.stopping import split_speculation

BUILTIN_PROMPTS = Path(__file__).resolve().parent / "prompts.jsonl"   # workload.prompts: builtin
DEFAULT_REQUESTS = 4                   # workload.requests when neither requests nor duration_s is given


class _Strict(StrictModel):            # unknown fields and booleans for numbers refused (testbed/common/strict.py)
    model_config = ConfigDict(extra="forbid", frozen=True)


# ------------------------------------------------------------------------------------------ field types

def _model_name(v: str) -> str:
    try:
        return str(ModelSpec.parse(v))
    except ModelError as e:
        raise ValueError(str(e)) from None


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _alpha(v: Any) -> Any:
    """Synthetic acceptance rate: a number in [0, 1], [[t_seconds, alpha], ...] (t >= 0, increasing),
    {replay: file} (a file written by `nodes.drafter --record-acceptance`), {curve: [a1, a2, ...]} (per-position
    acceptance, the last value past the end), {trace: pair/dataset} or {published: id} (shipped data:
    `python -m nodes.acceptance` lists the names)."""
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
        kind = next(iter(v)) if len(v) == 1 else None
        if kind == "curve":
            c = v["curve"]
            if not (isinstance(c, list) and c and all(_number(a) and 0 <= a <= 1 for a in c)):
                raise ValueError(f"expected {{curve: [a1, a2, ...]}}, numbers in [0, 1], got {v!r}")
            return {"curve": [float(a) for a in c]}
        if kind in ("trace", "published"):
            from nodes.acceptance import resolve_alpha
            resolve_alpha(kind, v[kind])        # an unknown name lists the known ones
            return {kind: v[kind]}
        if kind != "replay" or not isinstance(v["replay"], str) or not v["replay"]:
            raise ValueError(f"expected {{replay: file}}, {{curve: [...]}}, {{trace: name}} or {{published: id}}, "
                             f"got {v!r}")
        return {"replay": v["replay"]}
    raise ValueError(f"expected a number in [0, 1], a list of [t_seconds, alpha] pairs, {{replay: file}}, "
                     f"{{curve: [...]}}, {{trace: name}} or {{published: id}}, got {v!r}")


def _profile(v: Any) -> Any:
    """Synthetic compute latency profile: {device: NAME, model: NAME, dtype: NAME} (a roofline of a model on a
    device, nodes/compute: `python -m nodes.compute` lists the names) or {table: FILE} (measured by `testbed
    profile`; the experiment's checks read it). None: the linear *_ms fields."""
    if not isinstance(v, dict):
        raise ValueError(f"expected {{device: NAME, model: NAME}} or {{table: FILE}}, got {v!r}")
    if "table" in v:
        if set(v) != {"table"} or not isinstance(v["table"], str) or not v["table"]:
            raise ValueError(f"expected {{table: FILE}} alone, got {v!r}")
        return {"table": v["table"]}
    from nodes.compute import ProfileError, cost_model_from_spec
    try:
        cost_model_from_spec(v, Path("."))
    except ProfileError as e:
        raise ValueError("; ".join(f"{p.path}: {p.message}" if p.path else p.message for p in e.problems)) from None
    return dict(v)


def _payload(v: str) -> str:
    if not valid_payload(v):
        raise ValueError(f"expected 'ids', 'full' or 'topk:K' with 1 <= K <= {MAX_TOPK}, got {v!r}")
    return v


def _speculation_policy(v: Any) -> Any:
    """`static` | `heuristic` | `backoff` | `threshold` | `network` | `channel` | `awc`, or a mapping
    {policy: name, field: value, ...} of that policy's parameters (testbed/policies/speculation.py, awc.py,
    stopping.py); checked by building one."""
    if not isinstance(v, (str, dict)):
        raise ValueError(f"expected a policy name or a mapping {{policy: name, ...}}, got {v!r}")
    try:
        make_speculation(v)            # every policy, the threshold rule's both shares included
    except (ValueError, TypeError) as e:
        raise ValueError(str(e)) from None
    return v


def pattern(regex: str, expected: str):
    def check(v: str) -> str:
        if not re.fullmatch(regex, v):
            raise ValueError(f"expected {expected}, got {v!r}")
        return v
    return AfterValidator(check)


ModelName = Annotated[str, AfterValidator(_model_name)]
Alpha = Annotated[Any, AfterValidator(_alpha)]
Device = Annotated[str, pattern(r"auto|cpu|mps|cuda(:[0-9]{1,2})?", "auto, cpu, mps, cuda or cuda:N")]
Dtype = Literal["float32", "bfloat16", "float16"]
Backend = Literal["hf", "synthetic"]
DrafterBackend = Literal["hf", "synthetic", "ngram"]   # ngram: prompt lookup, no model (drafters only)
NgramN = Annotated[int, Field(ge=1, le=16)]
Threads = Annotated[int, Field(ge=1, le=1024)]
VocabSize = Annotated[int, Field(ge=2, le=10_000_000)]
Ms = Annotated[float, Field(ge=0, le=60_000)]
Payload = Annotated[str, AfterValidator(_payload)]
Profile = Annotated[Any, AfterValidator(_profile)]
NodeName = Annotated[str, pattern(r"[A-Za-z0-9_.:-]{1,64}", "1 to 64 letters, digits, '_', '.', ':' or '-'")]


# ------------------------------------------------------------------------------------------ sub-models

class DraftModel(_Strict):
    """What a drafter drafts with."""
    backend: DrafterBackend = "hf"   # must match the verifier's backend; ngram needs an hf verifier
    model: ModelName = "smollm2-135m:int8"       # hf, ngram (tokenizer only); same tokenizer family as the verifier's
    device: Device = "cpu"           # hf only (int8 models run on the CPU only)
    dtype: Dtype = "float32"         # hf only
    threads: Threads | None = 1      # torch CPU threads per drafter (edge devices are small); null: all cores
    alpha: Alpha = 0.8               # synthetic only: 0.8 | [[t_s, alpha], ...] | {replay|curve|trace|published: ...}
    vocab_size: VocabSize = 32000    # synthetic only; must equal the verifier's
    draft_token_ms: Ms = 0.0         # synthetic only: compute time per drafted token
    profile: Profile | None = None   # synthetic only: {device, model, dtype} roofline or {table: FILE}; replaces draft_token_ms
    ngram_n: NgramN = 3              # ngram only: longest suffix looked up (n = ngram_n .. 1; nodes/backends/ngram.py)


class VerifierModel(_Strict):
    """What the verifier verifies with."""
    backend: Backend = "hf"          # hf: a real model; synthetic: Bernoulli(alpha) acceptance, no model
    model: ModelName = "smollm2-135m"            # hf only: see nodes/models.py for the accepted specs
    device: Device = "auto"          # hf only: auto (cuda if available) | cpu | cuda | cuda:N | mps
    dtype: Dtype = "float32"         # hf only
    threads: Threads | None = None   # torch CPU threads; null: torch's default (all cores)
    vocab_size: VocabSize | None = None          # synthetic only; null: the drafters' (32000 on its own)
    verify_base_ms: Ms = 0.0         # synthetic only: compute time of one verify batch ...
    verify_per_token_ms: Ms = 0.0    # ... plus this per verified token
    profile: Profile | None = None   # synthetic only: {device, model, dtype} roofline or {table: FILE}; replaces *_ms
    # the draft model co-located with the target (DSD's fused mode: speculation.mode fused or hybrid): rounds the
    # verifier drafts itself, on its own device, between its verify passes; same backend as this model
    draft: DraftModel | None = None


DRAFTER_SETTINGS = tuple(DraftModel.model_fields)


class Workload(_Strict):
    prompts: str = "builtin"         # "builtin", a dataset (nodes/workloads/datasets.py) or a JSONL file (relative to the experiment file)
    # closed: `sessions` back to back; poisson, trace: open loop; clients: a session per request of the users' clients
    # (the experiment's `clients:` section; `requests` is then the number this drafter serves)
    arrivals: Literal["closed", "poisson", "trace", "clients"] = "closed"
    rate_per_s: float | None = Field(None, gt=0, le=10_000)   # poisson only: session arrivals/s per drafter
    trace: str | None = None         # trace only: DSD-Sim JSONL (nodes/workloads/trace.py), relative to the experiment file
    requests: int | None = Field(None, ge=1, le=1_000_000)    # sessions per drafter; or duration_s (one of two)
    duration_s: float | None = Field(None, gt=0, le=86_400)   # start sessions for this long, per drafter
    sessions: int = Field(1, ge=1, le=1024)                   # closed only: concurrent sessions per drafter
    think_s: float = Field(0.0, ge=0, le=3600)                # closed only: pause between a session's end and the next
    think: Literal["fixed", "exp"] = "fixed"                  # think_s exactly, or exponential with that mean
    max_new: int = Field(32, ge=1, le=8192)                   # tokens generated per session (at most, with output_len)
    output_len: OutputLen | None = None                       # per-session length (nodes/workloads/lengths.py); null: max_new
    temperature: float = Field(0.0, ge=0, le=100)             # 0: greedy; > 0 needs payload topk:K or full

    @model_validator(mode="before")
    @classmethod
    def _default_requests(cls, data: Any) -> Any:
        # a trace gives its own number of sessions; requests or duration_s may still cut it short
        if isinstance(data, dict) and data.get("requests") is None and data.get("duration_s") is None \
                and data.get("arrivals") != "trace":
            data = {**data, "requests": DEFAULT_REQUESTS}
        return data


class Speculation(_Strict):
    gamma: int = Field(4, ge=0, le=MAX_GAMMA)   # initial draft window; 0: autoregressive baseline
    payload: Payload = "ids"                    # what a draft carries: ids | topk:K | full
    proactive: bool = True                      # draft the next window while the verdict is in flight
    policy: Annotated[Any, AfterValidator(_speculation_policy)] = "static"   # next window per session (verifier)
    # who drafts (DSD): distributed: the drafter, over the network; fused: the verifier's co-located draft model
    # (verifier.draft) for every round after the prefill; hybrid: fused while the policy's window is 1 (DSD's AWC:
    # gamma = 1 means fused), back to the drafter after `fused_dwell` more rounds with a window above 1
    mode: Literal["distributed", "fused", "hybrid"] = "distributed"
    fused_dwell: int = Field(1, ge=0, le=1000)
    # a drafter serving several sessions drafts every ready session's missing window tokens in one compute, one
    # batched forward pass per token step (an edge draft server batching its users), not one session after another
    batch_drafting: bool = False

    @model_validator(mode="after")
    def _batch_without_stop_rule(self) -> "Speculation":
        if self.batch_drafting and split_speculation(self.policy)[1] is not None:
            raise ValueError("batch_drafting: not with a stop rule (speculation.policy threshold ends each "
                             "session's window token by token while it drafts; a batch drafts whole windows): "
                             "turn one of them off")
        return self


class Scheduling(_Strict):
    """A verification budget across sessions (GoodSpeed): after each batch, `budget` draft tokens are split among
    the open sessions and override the speculation policy. None: each session's policy alone decides."""
    scheduler: Literal["goodspeed", "fixed", "random"] | None = None
    budget: int = Field(16, ge=1, le=4096)      # C: draft tokens per round across all sessions
    # per session and round; 1: eq. 3 presumes S_i >= 1, and at 0 a drafter's alpha-hat freezes and it can starve
    # (testbed/policies/scheduling.py, GoodSpeedScheduler); 0 lets a session get an AR step
    min_s: int = Field(1, ge=0, le=MAX_GAMMA)
    max_s: int | None = Field(None, ge=1, le=MAX_GAMMA)
    utility: Literal["log", "linear", "alpha-fair"] = "log"   # goodspeed: log = proportional fairness
    eta: float = Field(0.1, gt=0, lt=1)         # EWMA weight of acceptance (eq. 3)
    beta: float = Field(0.5, gt=0, lt=1)        # EWMA weight of goodput (eq. 4)


class Batching(_Strict):
    rule: Literal["fifo", "window", "sync", "length", "zhu"] = "fifo"   # when the verifier runs a batch (testbed/policies/batching.py)
    max_batch: int = Field(8, ge=1, le=1024)            # drafts verified together at most
    window_ms: float = Field(5.0, ge=0, le=10_000)      # window only: wait this long for more drafts
    max_tokens: int = Field(64, ge=1, le=1_000_000)     # length only: batch size x longest window at most
    # zhu only: the speculation lengths its DP chooses from (default 1-8); [4]: Zhu et al.'s fixed-length baseline,
    # [0]: their AD baseline (the DP batches autoregressive steps)
    lengths: list[Annotated[int, Field(ge=0, le=MAX_GAMMA)]] | None = Field(None, min_length=1, max_length=MAX_GAMMA + 1)

    @model_validator(mode="after")
    def _lengths(self) -> "Batching":
        if self.lengths is not None and self.rule != "zhu":
            raise ValueError(f"lengths: only with rule zhu (its DP's choices), not {self.rule}")
        if self.lengths is not None and len(set(self.lengths)) != len(self.lengths):
            raise ValueError(f"lengths: expected distinct values, got {self.lengths}")
        return self


class Routing(_Strict):
    """Several verifiers: each drafter routes every new session to one of them, where it stays (its KV cache is
    there). Off (policy null): one verifier."""
    policy: Literal["random", "round-robin", "jsq", "jsq-d"] | None = None   # testbed/policies/routing.py
    d: int = Field(2, ge=1, le=64)               # jsq-d: verifiers sampled per decision


def temperature_problem(temperature: float, payload: str) -> str | None:
    """workload.temperature against speculation.payload (nodes.backends.lacks_q), worded for configs."""
    if lacks_q(temperature, payload):
        return (f"temperature {temperature:g} needs speculation.payload 'topk:K' or 'full' (sampling is verified "
                f"against the draft's probabilities); payload is {payload!r}")
    return None


# ------------------------------------------------------------------------------------------ node configs

class DrafterConfig(_Strict):
    name: NodeName = "drafter"
    connect: list[str] = Field(["tcp://127.0.0.1:5555"], min_length=1)   # verifier endpoints (several: routing)
    model: DraftModel = DraftModel()
    workload: Workload = Workload()
    prompt_texts: list[str] = []                 # given inline (manual runs); else workload.prompts is read
    prompt_offset: int = Field(0, ge=0)          # start at this prompt (drafters of one run differ)
    repeat: int = Field(1, ge=1, le=1_000_000)   # the prompt list this many times
    speculation: Speculation = Speculation()
    routing: Routing = Routing()
    seed: int = Field(0, ge=0, le=2**63 - 1)     # sampling, arrivals, the synthetic draft, routing
    timeout_s: float = Field(120.0, gt=0, le=86_400)   # no verdict for this long: give up
    # work in flight and nothing from its verifier for this long: ask it (HELLO) whether it restarted
    probe_s: float = Field(3.0, gt=0, le=86_400)
    log: str | None = None                       # JSONL event log
    out: str | None = None                       # each session's output as a JSON line (else stdout)
    record_acceptance: str | None = None         # append each round's (gamma, accepted) as a replay file
    start_gate: str | None = None                # a FIFO: once connected, wait for the runner to close it, then start
    clients_bind: str | None = None              # arrivals clients: where the users' clients send their requests
    curve: DrafterCurve | None = None            # CURVE to the verifiers (nodes/security.py); null: plain TCP

    @model_validator(mode="after")
    def _cross(self) -> "DrafterConfig":
        if (self.workload.arrivals == "clients") != (self.clients_bind is not None):
            raise ValueError("clients_bind: needed with workload.arrivals clients, and only then")
        problem = temperature_problem(self.workload.temperature, self.speculation.payload)
        if problem:
            raise ValueError(f"workload.temperature: {problem}")
        if len(self.connect) > 1 and self.routing.policy is None:
            raise ValueError("several verifiers (connect) need a routing policy (routing.policy)")
        if self.curve is not None and len(self.curve.server_keys) != len(self.connect):
            raise ValueError(f"curve.server_keys: expected one verifier key per connect endpoint ({len(self.connect)}), "
                             f"got {len(self.curve.server_keys)}")
        if self.workload.arrivals == "trace" and not self.workload.trace:
            raise ValueError("workload.trace: arrivals trace needs a trace file (workload.trace)")
        return self

    def stop_rule_spec(self):
        """The drafter's share of the speculation policy: a stop rule run while drafting, or None."""
        return split_speculation(self.speculation.policy)[1]


class VerifierConfig(_Strict):
    name: NodeName = "verifier"
    bind: str = "tcp://*:5555"
    model: VerifierModel = VerifierModel()
    batching: Batching = Batching()
    speculation: Speculation = Speculation()     # its policy: each session's next window
    scheduling: Scheduling = Scheduling()
    seed: int = Field(0, ge=0, le=2**63 - 1)     # the random budget scheduler
    link_state: str | None = None                # JSON the runner keeps current (network-aware policies)
    log: str | None = None
    curve: VerifierCurve | None = None           # CURVE server, drafters' keys it accepts (nodes/security.py)

    def window_policy_spec(self):
        """The verifier's share of the speculation policy (a threshold rule's cap, for instance)."""
        return split_speculation(self.speculation.policy)[0]


class ClientRequest(_Strict):
    """One request of a user's client: sent at `at_s` after the start, its prompt `prompt_tokens` long."""
    request: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]
    at_s: float = Field(0.0, ge=0, le=86_400)
    prompt_tokens: int = Field(..., ge=1, le=32768)
    max_new: int = Field(..., ge=1, le=8192)


class ClientConfig(_Strict):
    """A user's client (nodes/client.py): sends its requests to the drafter that serves it, waits for the answers."""
    name: NodeName = "user"
    connect: str = "tcp://127.0.0.1:5600"        # the drafter's clients_bind
    prompts: str = "builtin"                     # where the prompt texts come from (cut or repeated to length)
    prompt_offset: int = Field(0, ge=0)
    chars_per_token: int = Field(4, ge=1, le=64)  # the text uploaded per prompt token
    requests: list[ClientRequest] = Field(..., min_length=1, max_length=100_000)
    timeout_s: float = Field(120.0, gt=0, le=86_400)   # no answer for this long: give up
    log: str | None = None
    out: str | None = None
    start_gate: str | None = None

    @model_validator(mode="after")
    def _unique(self) -> "ClientConfig":
        ids = [r.request for r in self.requests]
        if len(set(ids)) != len(ids):
            raise ValueError("requests: request ids must be unique")
        return self


# ------------------------------------------------------------------------------------------ files

class NodeConfigError(ValueError):
    """A node config that does not validate; str() is one line per problem."""


MAX_CONFIG_BYTES = 64 << 20    # 100,000 client requests are ~15 MB; a bigger "config" is not one


def load_config(model: type[BaseModel], path: str | Path):
    """A node config from its JSON file; NodeConfigError with one `FILE: field.path: message` line per problem.
    The read is bounded (size, then UTF-8); pydantic's JSON parser bounds nesting depth and number size."""
    try:
        text = read_text(path, MAX_CONFIG_BYTES, "a JSON node config")
    except UnreadableInput as e:
        why = str(e).replace("cannot read file", "cannot read the config")
        raise NodeConfigError(f"{one_line(str(path))}: {why}") from None
    try:
        return model.model_validate_json(text)
    except pydantic.ValidationError as e:
        raise NodeConfigError("\n".join(problem_lines(e, str(path)))) from None


def build_config(model: type[BaseModel], data: dict, where: str):
    """A node config from a mapping (manual flags); NodeConfigError as load_config."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as e:
        raise NodeConfigError("\n".join(problem_lines(e, where))) from None


def problem_lines(e: pydantic.ValidationError, where: str) -> list[str]:
    out = []
    for err in e.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        if err["type"] == "json_invalid":
            out.append(one_line(f"{where}: not valid JSON ({err.get('ctx', {}).get('error', err['msg'])})"))
            continue
        field = format_loc(loc)
        out.append(one_line(f"{where}: {field + ': ' if field else ''}{_describe(err)}"))
    return out


def write_config(config: BaseModel, path: str | Path) -> Path:
    """A config holding a secret key (a `curve` block) is readable by its owner only (0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = config.model_dump_json(indent=2) + "\n"
    if getattr(config, "curve", None) is not None:
        write_private(path, text)
    else:
        path.write_text(text)
    return path


def write_private(path: str | Path, text: str) -> None:
    """Write a file only its owner may read (0600), whatever the umask, also over an existing file."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)
        f.write(text)
