"""`clients:` — users on `role: user` hosts whose clients upload requests to a drafter (workload.arrivals clients).

    workload: {arrivals: clients, max_new: 256}
    clients:
      drafter: sbs                # the drafter host serving every user (default: the experiment's one drafter)
      users: [u1, u2]             # default: every host with role user
      requests: 1                 # per user
      arrivals: start             # start: all at t = 0 (Zhu et al.'s batch of tasks); poisson: rate_per_s per user
      prompt_len: {dist: uniform, min: 64, max: 512}     # tokens (nodes/workloads/lengths.py's forms)
      output_len: {dist: uniform, min: 64, max: 256}     # tokens, at most workload.max_new; null: max_new
      chars_per_token: 4          # the prompt is uploaded as text, this many characters per token
      port: 5600                  # where the drafter listens for them

This is Zhu et al.'s system (papers.md §2): users upload their prompts over a shared wireless uplink (their links to
an AP whose radio splits the band: `allocation_up`), the small cell drafts for all of them (`drafters`, with
`speculation.batch_drafting`), a fronthaul carries the drafts to the macro cell that verifies. Each user host runs
nodes/client.py; its requests are drawn here from the experiment's seed, so both backends and every rerun send the
same ones. Their upload sizes are known before the run, and they are the AP's demand for the band split
(`demands`), as Zhu's allocation assumes.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from testbed.common.strict import StrictModel

from nodes.config import ClientConfig, ClientRequest
from nodes.workloads.lengths import OutputLen, OutputLengths

ASK_OVERHEAD_BYTES = 80          # an ASK frame besides its prompt text (msgpack keys, ids, times)


class ClientsSpec(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    drafter: str | None = None
    users: list[str] | None = Field(None, min_length=1)
    requests: int = Field(1, ge=1, le=10_000)
    arrivals: Literal["start", "poisson"] = "start"
    rate_per_s: float | None = Field(None, gt=0, le=10_000)
    prompt_len: OutputLen = OutputLen(dist="fixed", tokens=128)
    output_len: OutputLen | None = None
    chars_per_token: int = Field(4, ge=1, le=64)
    port: int = Field(5600, ge=1024, le=65535)


def check_clients(exp, topo) -> list[tuple[tuple, str]]:
    """`clients` against the workload and the topology: one line per problem."""
    c, w = exp.clients, exp.workload
    if (c is None) != (w.arrivals != "clients"):
        return [(("clients",), "workload.arrivals clients needs a clients section (the users' requests)")] if c is None \
            else [(("workload", "arrivals"), "a clients section needs workload.arrivals: clients")]
    if c is None:
        return []
    found = []
    roles = {n: s.role for n, s in topo.nodes.items()}
    users = c.users if c.users is not None else [n for n in topo.hosts() if roles[n] == "user"]
    if not users:
        found.append((("clients", "users"), f"topology {topo.name} has no host with role user"))
    for i, u in enumerate(c.users or []):
        if roles.get(u) != "user":
            found.append((("clients", "users", i), f"{u} is {'not in the topology' if u not in roles else 'a ' + roles[u]}"
                                                   f"; expected a host with role user"))
    drafters = exp.drafters.nodes or [n for n in topo.hosts() if roles[n] == "drafter"]
    if c.drafter is not None and c.drafter not in drafters:
        found.append((("clients", "drafter"), f"{c.drafter} is not one of the drafters ({', '.join(drafters)})"))
    elif len(drafters) != 1:
        found.append((("drafters", "nodes"), f"with workload.arrivals clients one drafter serves every user; got "
                                             f"{len(drafters)} ({', '.join(drafters)})"))
    if c.arrivals == "poisson" and c.rate_per_s is None:
        found.append((("clients", "rate_per_s"), "arrivals poisson needs rate_per_s (requests per second per user)"))
    if c.prompt_len.dist == "dataset" or (c.output_len is not None and c.output_len.dist == "dataset"):
        found.append((("clients",), "prompt_len and output_len: fixed, uniform or lognormal (no dataset here)"))
    if w.duration_s is not None:
        found.append((("workload", "duration_s"), "not with arrivals clients: the users' requests are the workload"))
    return found


def users(exp) -> list[str]:
    topo = exp.topology_obj()
    c = exp.clients
    return list(c.users) if c.users is not None else [n for n in topo.hosts() if topo.nodes[n].role == "user"]


def requests(exp, user: str) -> list[ClientRequest]:
    """User `user`'s requests, drawn from the experiment's seed and the user's name."""
    c = exp.clients
    rng = random.Random(f"clients/{exp.seed}/{user}")
    prompts = OutputLengths(c.prompt_len, 32768, rng.getrandbits(32))
    outputs = OutputLengths(c.output_len, exp.workload.max_new, rng.getrandbits(32))
    at, out = 0.0, []
    for i in range(c.requests):
        if c.arrivals == "poisson":
            at += rng.expovariate(c.rate_per_s)
        out.append(ClientRequest(request=f"{user}-r{i}", at_s=round(at, 9), prompt_tokens=prompts.draw(),
                                 max_new=outputs.draw()))
    return out


def total_requests(exp) -> int:
    return exp.clients.requests * len(users(exp))


def demands(exp) -> dict[tuple[str, str], float]:
    """Each user's upload (bytes, all its requests) as the AP's up demand; nothing is known of the down side."""
    if exp.clients is None:
        return {}
    c = exp.clients
    return {(u, "up"): float(sum(r.prompt_tokens * c.chars_per_token + ASK_OVERHEAD_BYTES for r in requests(exp, u)))
            for u in users(exp)}


def client_config(exp, user: str, index: int, endpoint: str, run_dir: Path) -> ClientConfig:
    from testbed.run.node_configs import start_gate
    run_dir = Path(run_dir)
    return ClientConfig(name=user, connect=endpoint, prompts=exp.workload.prompts, prompt_offset=index,
                        chars_per_token=exp.clients.chars_per_token, requests=requests(exp, user),
                        timeout_s=exp.limits.run_timeout_s, log=str(run_dir / "events" / f"{user}.jsonl"),
                        out=str(run_dir / "outputs" / f"{user}.jsonl"), start_gate=str(start_gate(run_dir, user)))


def served_drafter(exp) -> str:
    return exp.clients.drafter or exp.drafter_nodes()[0]
