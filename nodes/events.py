"""The events of `RUN/events/*.jsonl`, typed: every writer builds these, every reader decodes into them.

One JSON object per line: `event` (the type tag), `t` (seconds since the epoch on the machine's one clock, or
simulated seconds under a simulator), `node` (who wrote it), then the fields of that type below. Drafters,
verifiers, the runner and the channel driver write them (EventLog); metrics, plots, the runner's progress and
the channel driver's demand read them (`read_events`, `load_run` for a whole run, `EventTail` while logs
grow). A line that is not one of these (a
truncated last line, a crash's garbage, an event type from a newer version) is skipped and reported, never
fatal. Adding a field: give it a default, so older logs still decode.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TypeVar, Union

import msgspec


class Event(msgspec.Struct, tag_field="event"):
    t: float
    node: str


# ---------------------------------------------------------------------------------------------- drafter

class Welcome(Event, tag="welcome"):
    """A verifier accepted this drafter's HELLO."""
    verifier: str
    model: str = ""
    endpoint: str = ""


class Route(Event, tag="route"):
    """A new session was placed on a verifier by the routing policy (queues: the loads it saw)."""
    session: str
    verifier: str
    queues: dict[str, int] = {}
    policy: str = ""


class Start(Event, tag="start"):
    """A session started: its START frame (the prompt) went out."""
    session: str
    prompt_tokens: int = 0
    bytes_out: int = 0
    verifier: str | None = None
    max_new: int | None = None           # the session's output length (workload.output_len or the trace's)
    request: str | None = None           # the trace's request_id (workload.arrivals trace)


class Draft(Event, tag="draft"):
    """A window went out (round >= 1); pre_drafted of its tokens were drafted ahead while the last flew."""
    session: str
    round: int
    gamma: int
    pre_drafted: int = 0
    draft_s: float = 0.0
    bytes_out: int = 0


class Verdict(Event, tag="verdict"):
    """A verdict came back. Round 0 answers the prefill (its token is the first output token); `tokens` is the
    output newly committed (cut at max_new / EOS as the verifier cut it)."""
    session: str
    round: int
    gamma: int = 0
    accepted: int = 0
    token: int = 0
    rtt_s: float = 0.0
    queue_s: float = 0.0
    verify_s: float = 0.0
    batch: int = 1
    one_way_s: float = 0.0
    hit: int = 0
    kept: int = 0
    wasted: int = 0
    bytes_in: int = 0
    done: bool = False
    tokens: int = 0
    fused: bool = False           # the verifier drafted this round (DSD's fused mode); gamma: its window


class Finish(Event, tag="finish"):
    """A session ended (the verifier said done)."""
    session: str
    tokens: int = 0
    rounds: int = 0
    proposed: int = 0
    accepted: int = 0
    hits: int = 0
    wasted: int = 0


class Done(Event, tag="done"):
    """The drafter finished its workload; idle_s: time it waited with nothing to draft."""
    sessions: int = 0
    idle_s: float = 0.0


class Crash(Event, tag="crash"):
    """A node stopped on an error."""
    error: str = ""


# ---------------------------------------------------------------------------------------------- client (user)

class Connect(Event, tag="connect"):
    """A user's client is connected to the drafter that serves it and waits for the start."""
    endpoint: str = ""
    requests: int = 0


class Ask(Event, tag="ask"):
    """A request went out (client), or came in (drafter: t = its arrival; its session's START names the request)."""
    request: str
    prompt_tokens: int = 0
    max_new: int = 0
    bytes: int = 0


class Answer(Event, tag="answer"):
    """A request's answer came back: latency_s from its ASK's sending."""
    request: str
    tokens: int = 0
    latency_s: float = 0.0
    bytes_in: int = 0


# ---------------------------------------------------------------------------------------------- verifier

class Ready(Event, tag="ready"):
    """The verifier is bound and serving."""
    endpoint: str = ""
    model: str = ""
    batching: str = ""


class Hello(Event, tag="hello"):
    """A drafter registered."""
    drafter: str
    model: str = ""
    payloads: list[str] = []
    proactive: bool = False


class Refused(Event, tag="refused"):
    """A drafter was refused (its tokenizer or vocabulary differs from the target's)."""
    drafter: str
    tokenizer: str = ""
    vocab: int = 0


class AuthRefused(Event, tag="auth_refused", omit_defaults=True):
    """A security handshake was refused (CURVE, nodes/security.py): `peer` its address ("" when libzmq failed it
    before authentication and gives none), `key` the public key it offered (Z85; "" if none), `reason` why.
    Logged for the first of a peer's refusals and then at most once per window: `repeated` counts those refused
    since the last one logged."""
    peer: str = ""
    key: str = ""
    reason: str = ""
    repeated: int = 0


class Error(Event, tag="error"):
    """A frame broke the protocol; it was answered with ERROR and the node carried on. `repeated`: errors of the
    same peer and code that were counted, not logged, before this one (nodes/core/errorlimit.py)."""
    drafter: str | None = None
    code: str = ""
    message: str = ""
    repeated: int = 0


class Verify(Event, tag="verify"):
    """One request of a verified batch (batch_id numbers the batches of this verifier)."""
    drafter: str | None
    session: str
    round: int
    gamma: int = 0
    accepted: int = 0
    tokens: int = 0
    done: bool = False
    t_draft_sent: float = 0.0
    t_arrived: float = 0.0
    queue_s: float = 0.0
    verify_s: float = 0.0
    batch: int = 1
    batch_id: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    next_gamma: int = 0
    fused: bool = False           # this round's window was drafted here, by the co-located draft model
    fused_next: bool = False      # ... and so is the next one (the drafter was told not to draft)
    draft_s: float = 0.0          # the window's drafting time (the drafter's telemetry, or here when fused)


class Plan(Event, tag="plan"):
    """A batching rule's decision with its inputs (zhu: the DP's batches and lengths, its cost model)."""
    rule: str = ""
    batches: list[list[str]] = []
    lengths: list[int] = []
    total_latency: float | None = None
    cost: dict[str, object] = {}


class Policy(Event, tag="policy"):
    """A speculation policy chose a session's next window, from these inputs."""
    session: str
    policy: str = ""
    gamma: int = 0
    alpha: float | None = None
    rtt_s: float | None = None
    uplink_mbps: float | None = None
    downlink_mbps: float | None = None
    bytes_per_token: float | None = None
    draft_s_per_token: float | None = None


class Schedule(Event, tag="schedule"):
    """A budget scheduler split C draft tokens across sessions (estimates: session -> [alpha, goodput])."""
    scheduler: str = ""
    budget: int = 0
    estimates: dict[str, list[float]] = {}
    allocation: dict[str, int] = {}


# ---------------------------------------------------------------------------------------------- links

class Link(Event, tag="link", omit_defaults=True):
    """A link's state as applied (node "runner": at set-up; node "channel": the channel driver's tick), with
    what produced it when a channel model did (SNR, distance, fading, band share, demand). The fields a writer
    leaves None are left out of its line (omit_defaults), so each line has the keys its writer knew: the state
    always, the channel model's figures only when a model produced them."""
    link: str
    rate_up_mbps: float
    rate_down_mbps: float
    delay_ms: float                      # no default: the state is on every line, whatever omit_defaults does
    jitter_ms: float
    loss_pct: float
    loss_down_pct: float | None = None   # None: loss_pct both ways (logs written before it existed)
    tick: int | None = None
    t_model_s: float | None = None
    a: str | None = None
    b: str | None = None
    station: str | None = None
    distance_m: float | None = None
    path_loss_db: float | None = None
    shadowing_db: float | None = None
    fading_db: float | None = None
    snr_up_db: float | None = None
    snr_down_db: float | None = None
    efficiency_up: float | None = None
    efficiency_down: float | None = None
    full_band_rate_up_mbps: float | None = None
    full_band_rate_down_mbps: float | None = None
    share_up: float | None = None
    share_down: float | None = None
    demand_up: float | None = None
    demand_down: float | None = None
    gamma_joint: int | None = None
    ge_loss_pct: float | None = None

    def rate_mbps(self, direction: str) -> float:
        """The rate "up" (from the link's end a to b) or "down"."""
        return self.rate_up_mbps if direction == "up" else self.rate_down_mbps


class Pace(Event, tag="pace"):
    """One compute step of a profiled (synthetic) backend: the time its profile gave and the time it took on
    the wall clock (the shell sleeps to the profile; an overloaded machine overshoots). Real backends log none."""
    work: str                            # "draft" | "verify"
    profile_s: float
    realised_s: float
    tokens: int = 0                      # drafted tokens, or tokens fed to the verifier
    batch: int = 0                       # verify only: sequences in the batch


class Load(Event, tag="load"):
    """The host's CPU load over the last sampling interval (the runner samples /proc/stat while a run goes)."""
    cpu_busy: float                      # fraction of all CPUs' time not idle, in [0, 1]
    loadavg_1m: float = 0.0
    cpus: int = 0


class ChannelLate(Event, tag="channel_late"):
    """The channel driver fell behind and skipped ticks (states follow time, not the driver's pace)."""
    skipped: int = 0
    tick: int = 0


class Fault(Event, tag="fault", omit_defaults=True):
    """A link fault of the experiment's `faults:` starting or ending (testbed/channels/faults.py), written with the
    link states (events/links.jsonl) by the channel driver or the simulator at the tick it takes effect."""
    fault: int                           # its position in `faults:`
    repeat: int                          # which occurrence (every_s/count repeats), 0 for the first
    kind: str                            # outage | flap | rate_collapse | loss_burst | a node fault's kind
    link: str                            # "" for a node fault
    edge: str                            # start | end
    tick: int = 0
    t_model_s: float = 0.0               # the channel clock's time of the edge (tick x interval)
    duration_s: float = 0.0              # as applied: rounded to whole channel intervals
    down_s: float | None = None
    up_s: float | None = None
    rate_mbps: float | None = None
    loss_pct: float | None = None
    direction: str | None = None
    target: str = ""                     # a node fault's node (written by the runner to events/faults.jsonl)


class Recovery(Event, tag="recovery", omit_defaults=True):
    """A node noticed a peer's failure or recovered from it (nodes/core/recovery.py). what:
    probe (a drafter asked a silent verifier whether it still knows it), verifier_restarted (its WELCOME came
    from another incarnation), resumed (a session re-started on it from its committed tokens), drafter_restarted
    (a verifier dropped a restarted drafter's old sessions), already_done (a restarted drafter skips a session its
    predecessor finished)."""
    what: str
    peer: str = ""                       # the verifier (at a drafter) or the drafter (at a verifier)
    session: str = ""
    round: int = 0
    committed: int = 0                   # resumed: tokens re-prefilled after the prompt
    sessions: int = 0                    # verifier_restarted / drafter_restarted: sessions affected
    silent_s: float = 0.0                # probe: since the verifier was last heard from
    bytes_out: int = 0


AnyEvent = Union[Welcome, Route, Start, Draft, Verdict, Finish, Done, Crash, Ready, Hello, Refused, AuthRefused,
                 Error, Verify, Plan, Policy, Schedule, Link, ChannelLate, Pace, Load, Connect, Ask, Answer, Fault, Recovery]
EVENT_TYPES: dict[str, type[Event]] = {c.__struct_config__.tag: c for c in AnyEvent.__args__}

EventT = TypeVar("EventT", bound=Event)


def _numpy_scalar(obj):
    """numpy's scalars (a float64 from a channel model, an int64 from an argmax) as the Python number they hold;
    msgspec encodes only Python's own types."""
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise NotImplementedError(f"cannot log a {type(obj).__name__}")


_encoder = msgspec.json.Encoder(enc_hook=_numpy_scalar)
_decoder = msgspec.json.Decoder(AnyEvent)


def encode(event: Event) -> bytes:
    """One log line (with its newline)."""
    return _encoder.encode(event) + b"\n"


def decode(line: bytes | str) -> Event:
    """One log line back as its typed event; raises ValueError for anything else."""
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as e:
        raise ValueError(str(e)) from None


def of_type(events: Iterable[Event], kind: type[EventT]) -> list[EventT]:
    """The events of one type, in their order: `of_type(events, Verdict)`."""
    return [e for e in events if isinstance(e, kind)]


# ---------------------------------------------------------------------------------------------- files

class EventLog:
    """A node's log: one line per event, flushed per line, so a crash loses at most the line being written."""

    def __init__(self, path: str | Path | None, node: str, buffered: bool = False):
        """buffered: 8 KB buffers instead of a write per line, for the simulator (one process that closes its
        logs in `finally`, where a node process may die any moment)."""
        self.node = node
        self.f = None
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.f = open(path, "ab", buffering=8192 if buffered else 0)

    def write(self, event: Event) -> None:
        if self.f is not None:
            self.f.write(encode(event))

    def close(self) -> None:
        if self.f is not None:
            self.f.close()
            self.f = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_events(path: str | Path) -> tuple[list[Event], list[str]]:
    """The events of one log, and the problems met: lines that are not events are skipped and named
    (a truncated last line is the usual case, after a crash)."""
    events, issues = [], []
    path = Path(path)
    lines = path.read_bytes().splitlines()
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            events.append(decode(line))
        except ValueError as e:
            where = "truncated last line" if i == last else f"unparsable line {i + 1}"
            issues.append(f"{path.name}: {where} skipped ({e})")
    return events, issues


LINKS_FILE = "links.jsonl"          # the runner's and the channel driver's Link events
LOAD_FILE = "load.jsonl"            # the runner's Load samples
FAULTS_FILE = "faults.jsonl"        # the runner's node faults (testbed/run/nodefaults.py)
VERIFIER_EVENTS = (Ready, Hello, Refused, AuthRefused, Error, Verify, Plan, Policy, Schedule)   # written by verifiers only


@dataclass
class RunLogs:
    """A run's event logs (RUN/events/*.jsonl), grouped and each in time order: every drafter's events under
    its node name, every verifier's events pooled, the link states applied (links.jsonl), the host's CPU load
    (load.jsonl); and the problems met
    reading them."""
    drafters: dict[str, list[Event]] = field(default_factory=dict)
    verifiers: list[Event] = field(default_factory=list)
    clients: dict[str, list[Event]] = field(default_factory=dict)     # users' clients (workload.arrivals clients)
    links: list[Link] = field(default_factory=list)
    load: list[Load] = field(default_factory=list)
    issues: list[str] = field(default_factory=list)


def fault_marks(run_dir: str | Path) -> list[Fault]:
    """Every fault start and end of a run: link faults (links.jsonl) and node faults (faults.jsonl), by time."""
    marks: list[Fault] = []
    for name in (LINKS_FILE, FAULTS_FILE):
        path = Path(run_dir) / "events" / name
        if path.exists():
            marks += of_type(read_events(path)[0], Fault)
    return sorted(marks, key=lambda e: e.t)


def load_run(run_dir: str | Path) -> RunLogs:
    """Read every log of a run. A log is a verifier's when it is verifier.jsonl or has an event only verifiers
    write (with routing, verifiers are named after their hosts); a log with a `connect` is a user's client; any
    other log but links.jsonl is a drafter's."""
    ev_dir = Path(run_dir) / "events"
    run = RunLogs()
    if not ev_dir.is_dir():
        run.issues.append(f"{ev_dir}: no event logs")
        return run
    for path in sorted(ev_dir.glob("*.jsonl")):
        events, issues = read_events(path)
        run.issues += issues
        if path.name == LINKS_FILE:
            run.links += of_type(events, Link)
        elif path.name == LOAD_FILE:
            run.load += of_type(events, Load)
        elif path.name == FAULTS_FILE:
            pass                            # node faults: read by metrics and plots (fault_marks)
        elif path.stem == "verifier" or any(isinstance(e, VERIFIER_EVENTS) for e in events):
            run.verifiers += events
        elif any(isinstance(e, Connect) for e in events):
            run.clients.setdefault(next((e.node for e in events if e.node), path.stem), []).extend(events)
        else:
            name = next((e.node for e in events if e.node), path.stem)
            run.drafters.setdefault(name, []).extend(events)
    for events in [*run.drafters.values(), *run.clients.values(), run.verifiers, run.links, run.load]:
        events.sort(key=lambda e: e.t)
    return run


class EventTail:
    """New complete events of each named log since the last call; a half-written last line waits for the next
    call, and a line that is not an event is skipped (a crash can leave garbage; followers must not die of it)."""

    def __init__(self, files: dict[str, Path]):
        self.files = {name: Path(f) for name, f in files.items()}
        self.offsets = {name: 0 for name in files}

    def new_events(self) -> Iterator[tuple[str, Event]]:
        for name, f in self.files.items():
            try:
                with open(f, "rb") as fh:
                    fh.seek(self.offsets[name])
                    chunk = fh.read()
            except OSError:            # not created yet
                continue
            complete = chunk[:chunk.rfind(b"\n") + 1]
            self.offsets[name] += len(complete)
            for line in complete.splitlines():
                try:
                    yield name, decode(line)
                except ValueError:
                    continue
