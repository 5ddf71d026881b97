"""The experiment schema (`experiments/*.yaml`): every YAML field of an experiment, with its meaning in a comment.

The groups a node is told are nodes/config.py's models, used as they are, so each field has one definition and
one default wherever it is set: `workload` (Workload), `speculation` (Speculation), `batching` (Batching),
`scheduling` (Scheduling); `verifier` is VerifierModel plus where it runs (node, port), `drafters` is DraftModel
plus which hosts and per-host overrides, `routing` is the nodes' Routing plus which verifiers. The rest of an
experiment (topology, link overrides, seed, limits, sweep, label) is declared here.

Loading is in experiment.py (`load_experiment`, `experiment_from_dict`, `check_file`), field paths and sweeps in
sweep.py, the checks across fields and against the topology in checks.py. Fields that do not apply (e.g. `alpha`
with backend hf, `rate_per_s` with closed arrivals) are accepted and ignored, so one file can be switched between
backends with `--set` or a sweep.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PrivateAttr

from testbed.common.strict import StrictModel

from nodes.config import (BUILTIN_PROMPTS, DRAFTER_SETTINGS, Alpha, Batching, Device, DrafterBackend, DraftModel,
                          Dtype, ModelName, Ms, NgramN, Profile, Scheduling, Speculation, Threads, VerifierModel, VocabSize,
                          Workload, pattern)
from nodes.config import Routing as NodeRouting
from nodes.workloads.datasets import digest
from testbed.common.distributions import parse, stream
from testbed.net.topology import Topology
from testbed.run.clients import ClientsSpec
from testbed.channels.faults import FaultSpec
from testbed.run.workload_files import prompt_sets

__all__ = ["Experiment", "LinkOverride", "VerifierSpec", "DrafterOverride", "DrafterDefaults", "Routing", "Limits",
           "SimOptions", "Security", "Workload", "Speculation", "Batching", "Scheduling"]


class _Strict(StrictModel):            # unknown fields and booleans for numbers refused (testbed/common/strict.py)
    model_config = ConfigDict(extra="forbid", frozen=True)


def _topology_ref(v: Any) -> Any:
    if isinstance(v, str) and v:
        return v
    if isinstance(v, dict):
        return v
    raise ValueError(f"expected a path to a topology file (relative to this file) or an inline topology "
                     f"mapping, got {v!r}")


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


class VerifierOverride(_Strict):
    """`verifier.overrides.<host>`: one verifier's compute when several run (routing), for heterogeneous fleets
    (DSD-Sim's targets: different models on different GPUs). Synthetic backend only; null: keep the default."""
    profile: Profile | None = None   # {device, model, dtype} roofline or {table: FILE} (relative to this file)
    verify_base_ms: Ms | None = None
    verify_per_token_ms: Ms | None = None
    draft: DraftModel | None = None  # its co-located draft model (fused rounds); replaces verifier.draft whole


class VerifierSpec(VerifierModel):
    """`verifier.*`: the verifier's model (backend, model, device, dtype, threads, vocab_size, verify_base_ms,
    verify_per_token_ms: nodes/config.py VerifierModel; vocab_size null: drafters.vocab_size) and where it runs."""
    node: str | None = None          # topology host running the verifier (role verifier); default: its only one
    port: int = Field(5555, ge=1024, le=65535)   # TCP port the verifier binds on its host
    overrides: dict[str, VerifierOverride] = {}  # verifier host -> its own compute (checks.py check_nodes)

    def model_for(self, host: str | None) -> VerifierModel:
        """The verifier model of host `host`: these defaults with its override applied."""
        base = VerifierModel.model_validate(self.model_dump(include=set(VerifierModel.model_fields)))
        o = self.overrides.get(host) if host else None
        if o is None:
            return base
        return base.model_copy(update={k: getattr(o, k) for k in type(o).model_fields if getattr(o, k) is not None})


class DrafterOverride(_Strict):
    """Per-drafter replacements of the drafters' defaults (null or absent: keep the default); exactly
    DraftModel's fields (a test holds them equal), and this drafter's own prompt set."""
    prompts: str | None = None       # replaces workload.prompts for this drafter: builtin, a dataset or a file
    backend: DrafterBackend | None = None
    model: ModelName | None = None
    device: Device | None = None
    dtype: Dtype | None = None
    threads: Threads | None = None   # an explicit null here means torch's default for this drafter
    alpha: Alpha = None              # {replay: file}: relative to this file
    vocab_size: VocabSize | None = None
    draft_token_ms: Ms | None = None
    profile: Profile | None = None   # {table: FILE}: relative to this file
    ngram_n: NgramN | None = None


class DrafterDefaults(DraftModel):
    """`drafters.*`: every drafter's model (backend, model, device, dtype, threads, alpha, vocab_size,
    draft_token_ms, ngram_n: nodes/config.py DraftModel; an alpha replay file is relative to this file), which
    hosts run one, and per-host overrides."""
    nodes: list[str] | None = Field(None, min_length=1)   # drafter hosts to run; default: every role-drafter host
    overrides: dict[str, DrafterOverride] = {}    # node -> fields above (not nodes) for that drafter only
    # field above -> a distribution ({uniform: [lo, hi]}, {normal: {...}}, {lognormal: {...}}, {choice: [...]};
    # testbed/common/distributions.py): each drafter draws its own value from the experiment's seed and its
    # name, between the defaults and its override (an override wins). Checked in checks.py, drawn in
    # drafter_draws below; a plain mapping so a whole distribution can be set with --set or swept.
    distributions: dict[str, Any] = {}


class Routing(NodeRouting):
    """`routing.*`: policy and d (nodes/config.py Routing; off: one verifier, `verifier.node`), and which
    verifiers."""
    verifiers: list[str] | None = Field(None, min_length=1)   # default: every host with role verifier


class SLO(_Strict):
    """Service-level objectives a request is held to (metrics slo_*; DSD-Sim's thresholds are the defaults)."""
    ttft_ms: float = Field(300.0, gt=0, le=3_600_000)   # time to first token
    tpot_ms: float = Field(35.0, gt=0, le=3_600_000)    # time per output token after the first


class SimOptions(_Strict):
    """`sim.*`: what the simulator (backend sim) models beyond the network; ignored by the other backends."""
    # frame_costs: emulator (default): each frame also costs what this 2-core host's emulator measurably adds
    # (ZeroMQ, the veth stack, the delay element, the nodes' packing and checks: testbed/sim/frames.py), so the
    # simulator matches `testbed validate` here; none: the network model alone (testbed/sim/network.py), for
    # paper-scale runs whose hosts (GPU servers on a real LAN) would not pay this host's costs. Recorded in the
    # run's manifest (sim.frame_costs) and summary.
    frame_costs: Literal["emulator", "none"] = "emulator"


class Limits(_Strict):
    ready_timeout_s: float = Field(120, gt=0, le=3600)          # nodes must be up (models loaded) by then
    run_timeout_s: float = Field(900, gt=0, le=7 * 86_400)      # the whole run is stopped after this
    # a drafter with work in flight that hears nothing from its verifier for this long asks it (HELLO) whether it
    # restarted, and if so resumes its sessions there (nodes/core/recovery.py)
    probe_s: float = Field(3.0, gt=0, le=3600)


class Security(_Strict):
    """Transport security between drafters and verifiers (nodes/security.py, testbed/run/curve.py)."""
    # ZeroMQ CURVE (authentication and encryption), keys drawn per run or given by the inventory; null: off inside
    # the emulated network (nothing crosses a real wire), on when the run has real hosts (an inventory)
    curve: bool | None = None


class Experiment(_Strict):
    name: Annotated[str, pattern(r"[A-Za-z0-9_.-]{1,64}", "1 to 64 letters, digits, '_', '.' or '-'")]  # results dir
    description: str = ""
    topology: Annotated[Any, AfterValidator(_topology_ref)]  # file (relative to this file) or inline mapping
    links: dict[str, LinkOverride] = {}          # link name or "*" (all links) -> fields replaced before the run
    backend: Literal["mininet", "local", "sim"] = "mininet"   # local: loopback, no shaping; sim: simulated (testbed/run/simrun.py)
    verifier: VerifierSpec = VerifierSpec()
    drafters: DrafterDefaults = DrafterDefaults()
    workload: Workload = Workload()              # nodes/config.py; prompts: a file relative to this file
    speculation: Speculation = Speculation()     # nodes/config.py; policy: testbed/policies/speculation.py
    batching: Batching = Batching()              # nodes/config.py
    scheduling: Scheduling = Scheduling()        # nodes/config.py
    routing: Routing = Routing()
    seed: int = Field(0, ge=0, le=2**31 - 1)     # drafter i gets seed * 1000 + i; channels and delays too
    channel_interval_ms: float = Field(100.0, ge=10, le=60_000)   # channel models step this often (testbed/channels/plan.py)
    limits: Limits = Limits()
    sim: SimOptions = SimOptions()               # backend sim only: frame_costs emulator | none (SimOptions above)
    slo: SLO = SLO()                             # thresholds for the slo_* metrics (testbed/run/metrics.py)
    clients: ClientsSpec | None = None           # users' clients on role: user hosts (testbed/run/clients.py)
    security: Security = Security()              # curve: true | false | null (Security above)
    # link faults (outage, flap, rate_collapse, loss_burst) at times or on a schedule: testbed/channels/faults.py
    faults: list[FaultSpec] = Field([], max_length=1000)
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
        """The drafters' defaults merged with `drafters.overrides[node]` (DraftModel's fields: backend, model,
        device, dtype, threads, alpha, vocab_size, draft_token_ms); file paths are absolute."""
        if node not in self.drafter_nodes():
            raise KeyError(f"{node!r} is not a drafter of experiment {self.name!r}; "
                           f"drafters: {', '.join(self.drafter_nodes())}")
        return merge_drafter(self.drafters, node, self.seed)

    def prompts_path(self) -> Path:
        return BUILTIN_PROMPTS if self.workload.prompts == "builtin" else Path(self.workload.prompts)

    def drafter_prompts(self, node: str) -> str:
        """The prompt set drafter `node` uses: drafters.overrides[node].prompts, else workload.prompts."""
        o = self.drafters.overrides.get(node)
        return o.prompts if o is not None and o.prompts is not None else self.workload.prompts

    # -- sweep -----------------------------------------------------------------------------------------
    def points(self) -> list[Experiment]:
        """The sweep expanded (grid: keys in YAML order, the last varying fastest; a zip group is one axis),
        each point without `sweep` and with `label` filled."""
        from testbed.run.experiment import expand_points    # validating a point builds on this module
        return expand_points(self)

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
            "workload": {**self.workload.model_dump(mode="json"), "prompts_sha256": digest(self.workload.prompts),
                         **({"trace_sha256": _sha256(Path(self.workload.trace))} if self.workload.trace else {})},
            "prompt_sets": prompt_sets(self),     # each drafter's prompt set and its digest
            "speculation": self.speculation.model_dump(mode="json"),
            "batching": self.batching.model_dump(mode="json"),
            "scheduling": self.scheduling.model_dump(mode="json"),
            "routing": self.routing.model_dump(mode="json"),
            "seed": self.seed,
            "channel_interval_ms": self.channel_interval_ms,
            "limits": self.limits.model_dump(mode="json"),
            "sim": self.sim.model_dump(mode="json"),
            "label": self.label,
        }
        if self.faults:                           # only when set: older experiments keep their hashes
            out["faults"] = [f.model_dump(mode="json", exclude_none=True) for f in self.faults]
        if self.clients is not None:              # only when set: older experiments keep their hashes
            out["clients"] = self.clients.model_dump(mode="json")
        if self.security.curve is not None:       # only when set: older experiments keep their hashes
            out["security"] = self.security.model_dump(mode="json")
        if self.sweep:
            out["sweep"] = self.sweep
        return json.loads(json.dumps(out))          # plain JSON types only (tuples → lists)

    def config_hash(self) -> str:
        canonical = json.dumps(self.resolved(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]


def merge_drafter(defaults: DrafterDefaults, node: str, seed: int = 0) -> dict:
    """DraftModel's fields for one drafter: the defaults, then its draws from `distributions` (experiment
    `seed`), then what its override sets (an explicit null only for threads: torch's default)."""
    out = {k: getattr(defaults, k) for k in DRAFTER_SETTINGS}
    if defaults.distributions:
        out.update(drafter_draws(defaults.distributions, node, seed))
    o = defaults.overrides.get(node)
    if o is not None:
        out.update({k: getattr(o, k) for k in o.model_fields_set if k in DRAFTER_SETTINGS
                    and (getattr(o, k) is not None or k == "threads")})
    return copy.deepcopy(out)


# DraftModel's fields that are numbers (uniform, normal and lognormal apply; ints are rounded); the others
# (backend, model, device, dtype, profile) take {choice: [...]} only. alpha takes other forms too, so its
# choices may be any alpha (a curve, a trace, ...).
DRAWN_NUMBERS = {"alpha": False, "draft_token_ms": False, "threads": True, "vocab_size": True, "ngram_n": True}


def parse_drafter_distribution(field: str, spec: Any):
    """The distribution of one drafter setting, or None and its problems (paths relative to the spec)."""
    return parse(spec, numeric=field in DRAWN_NUMBERS, integer=DRAWN_NUMBERS.get(field, False),
                 numbers_only=field in DRAWN_NUMBERS and field != "alpha")


def draw_setting(field: str, spec: Any, node: str, seed: int) -> Any:
    """Drafter `node`'s raw draw of `field` (not yet validated): its own stream per (seed, node, field)."""
    dist, found = parse_drafter_distribution(field, spec)
    if dist is None:
        raise ValueError(f"drafters.distributions.{field}: {found[0][1]}")   # checks.py reported it already
    return dist.draw(stream("drafters", seed, node, field))


def drafter_draws(distributions: dict, node: str, seed: int) -> dict:
    """Drafter `node`'s drawn settings, each validated (normalised) by its DraftModel field."""
    raw = {f: draw_setting(f, spec, node, seed) for f, spec in distributions.items()}
    model = DraftModel.model_validate(raw)     # only the drawn fields are set: defaults are not re-validated
    return {f: getattr(model, f) for f in raw}


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None
