"""Experiment checks beyond one field's type: the topology (file or inline) with the link overrides applied, the
nodes against its roles, drafter/verifier pairing, the workload's files, the policies against each other.

Each check returns `Found`: (field path, message) pairs, blamed on the field the user should change; experiment.py
turns them into `file:line: field.path: message` problems.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pydantic

from nodes.config import DRAFTER_SETTINGS, DraftModel, temperature_problem
from testbed.common.errors import ConfigError, Problem
from testbed.common.yamlconf import Loc, _describe, format_loc
from testbed.net.pools import build as build_topology
from testbed.net.topology import (LinkSpec, Topology, check_topology, load_topology, name_list,
                                  resolve_channel_paths, resolve_trace_paths)
from testbed.run.schema import Experiment, LinkOverride, merge_drafter, parse_drafter_distribution, draw_setting
from testbed.run.sweep import PLACEHOLDER, parse_path

Found = list[tuple[Loc, str]]


def pydantic_found(e: pydantic.ValidationError, prefix: Loc = ()) -> Found:
    out = []
    for err in e.errors(include_url=False):
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        out.append((prefix + loc, _describe(err)))
    return out


def resolve(base_dir: Path, p: str) -> Path:
    return Path(os.path.normpath(base_dir / p))


def load_topology_ref(exp: Experiment, base_dir: Path, file: str,
                      cache: dict) -> tuple[Topology | None, Found, list[Problem]]:
    """`topology`: a file (problems in it are `Problem`s of that file, cached across sweep points) or inline."""
    ref = exp.topology
    if isinstance(ref, str):
        path = resolve(base_dir, ref)
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
    topo, found, _ = build_topology(ref)         # pools expanded, as in a topology file
    if topo is None:
        return None, [(("topology",) + loc, msg) for loc, msg in found], []
    topo._source = file
    return topo, [], []


def apply_links(exp: Experiment, topo: Topology, base_dir: Path) -> tuple[Topology | None, Found]:
    """`links`: the overrides applied ("*" first, a named entry wins), the result checked like a topology."""
    found: Found = []
    names = [l.link_name for l in topo.links]
    for key, o in exp.links.items():
        if key != "*" and key not in names:
            found.append((("links", key), f"unknown link {key!r}; links: {name_list(names)} (or '*' for all)"))
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
            for loc, msg in pydantic_found(e):
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


def check_nodes(exp: Experiment, topo: Topology) -> tuple[Found, str | None, list[str]]:
    """`verifier.node`, `verifier.overrides`, `routing.verifiers`, `drafters.nodes`, `drafters.overrides` against the topology's
    roles; returns the problems, the verifier host and the drafter hosts (defaults filled in)."""
    found: Found = []
    roles = {n: s.role for n, s in topo.nodes.items()}
    verifiers = [n for n in topo.hosts() if roles[n] == "verifier"]
    drafters = [n for n in topo.hosts() if roles[n] == "drafter"]
    vnode = exp.verifier.node
    if exp.routing.policy:
        for i, n in enumerate(exp.routing.verifiers or []):
            if roles.get(n) != "verifier":
                found.append((("routing", "verifiers", i), f"{n!r} is not a verifier host; verifier hosts: "
                                                           f"{name_list(verifiers) or 'none'}"))
        vnode = vnode or (exp.routing.verifiers or verifiers or [None])[0]
    if vnode is None:
        if len(verifiers) == 1:
            vnode = verifiers[0]
        elif not verifiers:
            found.append((("verifier", "node"), f"topology {topo.name} has no host with role verifier"))
        else:
            found.append((("verifier", "node"), f"topology {topo.name} has {len(verifiers)} verifier hosts "
                                                f"({name_list(verifiers)}): name one"))
    elif vnode not in roles:
        found.append((("verifier", "node"), f"unknown node {vnode!r}; verifier hosts: {name_list(verifiers) or 'none'}"))
    elif roles[vnode] != "verifier":
        found.append((("verifier", "node"), f"{vnode} is a {roles[vnode]}; expected a host with role verifier "
                                            f"({name_list(verifiers) or 'none in this topology'})"))
    dnodes = exp.drafters.nodes
    if dnodes is None:
        dnodes = drafters
        if not drafters:
            found.append((("drafters", "nodes"), f"topology {topo.name} has no host with role drafter"))
    else:
        seen: set[str] = set()
        for i, n in enumerate(dnodes):
            if n not in roles:
                found.append((("drafters", "nodes", i), f"unknown node {n!r}; drafter hosts: {name_list(drafters) or 'none'}"))
            elif roles[n] != "drafter":
                found.append((("drafters", "nodes", i), f"{n} is a {roles[n]}; expected a host with role drafter "
                                                        f"({name_list(drafters) or 'none in this topology'})"))
            elif n in seen:
                found.append((("drafters", "nodes", i), f"{n} is listed twice"))
            seen.add(n)
    vhosts = (exp.routing.verifiers or verifiers) if exp.routing.policy else [vnode]
    for n in exp.verifier.overrides:
        if n not in vhosts:
            found.append((("verifier", "overrides", n), f"{n!r} is not one of the verifiers "
                                                        f"({name_list([v for v in vhosts if v]) or 'none'})"))
    for n in exp.drafters.overrides:
        if n not in dnodes:
            found.append((("drafters", "overrides", n), f"{n!r} is not one of the drafters "
                                                        f"({name_list(dnodes) or 'none'})"))
    return found, vnode, list(dnodes)


# backend mininet and local run every drafter and verifier as its own Python process on this one machine:
# ~100 MB resident each (interpreter, numpy, zmq, pydantic; a real model adds its weights), all sharing its
# CPU cores. Past 64 (4 per core of a 16-core machine) the nodes' compute pacing (draft_token_ms, profiled
# passes) and the delay daemons fall behind their schedule, so the emulated timing stops meaning anything;
# a bridge's port names (sn<run>s<i>-eth<port>) also outgrow Linux's 15 characters at 1000 ports. The
# simulator (backend sim) runs every node core on one clock in one process: no such limit.
MAX_NODE_PROCESSES = 64


def check_scale(exp: Experiment, topo: Topology, dnodes: list[str]) -> Found:
    """Refuse, for the backends that start real processes, scenarios one machine cannot host faithfully."""
    if exp.backend == "sim":
        return []
    if exp.routing.policy:
        verifiers = len(exp.routing.verifiers or [n for n in topo.hosts() if topo.nodes[n].role == "verifier"])
    else:
        verifiers = 1
    found: Found = []
    if len(dnodes) + verifiers > MAX_NODE_PROCESSES:
        found.append((("drafters",), f"{len(dnodes)} drafter and {verifiers} verifier processes exceed what the "
                                     f"{exp.backend} backend hosts on one machine (at most {MAX_NODE_PROCESSES} "
                                     "node processes); use backend: sim (or --set backend=sim) for scenarios "
                                     "this large"))
    elif exp.backend == "mininet" and len(topo.hosts()) > MAX_NODE_PROCESSES:
        # mininet brings up every host of the topology, running a node or not, with per-host-pair delay queues
        found.append((("topology",), f"topology {topo.name} has {len(topo.hosts())} hosts, more than the mininet "
                                     f"backend emulates on one machine (at most {MAX_NODE_PROCESSES}; it brings "
                                     "up every host, running a node or not); use backend: sim (or --set "
                                     "backend=sim) for scenarios this large"))
    return found


def check_distributions(exp: Experiment, dnodes: list[str], base_dir: Path) -> tuple[Found, dict]:
    """`drafters.distributions`: each a DraftModel field with a distribution whose every possible choice, and
    every drafter's actual draw, is a valid value of that field. Returns the problems and the update
    (alpha replay files and profile tables in choices made absolute)."""
    dists = exp.drafters.distributions
    if not dists:
        return [], {}
    found: Found = []
    new: dict = {}
    for field, spec in dists.items():
        loc = ("drafters", "distributions", field)
        if field not in DRAFTER_SETTINGS:
            found.append((loc, f"unknown drafter setting {field!r}; distributions apply to "
                               f"{', '.join(DRAFTER_SETTINGS)}"))
            continue
        dist, dfound = parse_drafter_distribution(field, spec)
        if dist is None:
            found += [(loc + sub, msg) for sub, msg in dfound]
            continue
        if dist.kind == "choice":      # every value may be drawn: check them all, not just this run's draws
            values = [dist.as_drawn(v) for v in dist.values]
            bad = [(i, msg) for i, v in enumerate(values) for msg in _setting_problems(field, v)]
            found += [(loc + ("choice", i), msg) for i, msg in bad]
            if not bad:
                new[field] = {**spec, "choice": _absolute(field, values, loc, base_dir, found)}
            continue
        new[field] = spec
        drawn = [n for n in dnodes if not _overridden(exp, n, field)]
        bad_draws = [(n, msg) for n in drawn
                     for msg in _setting_problems(field, draw_setting(field, spec, n, exp.seed))[:1]]
        if bad_draws:
            node, msg = bad_draws[0]
            more = f" and {len(bad_draws) - 1} more of the {len(drawn)} drafters" if len(bad_draws) > 1 else ""
            found.append((loc, f"{msg} (drawn for {node}{more} from {dist.describe()}; narrow the distribution "
                               "or clip it with min/max)"))
    return found, ({"distributions": new} if not found else {})


def _overridden(exp: Experiment, node: str, field: str) -> bool:
    o = exp.drafters.overrides.get(node)
    return o is not None and field in o.model_fields_set and (getattr(o, field) is not None or field == "threads")


def _setting_problems(field: str, value) -> list[str]:
    """What DraftModel's own validation of `field` says about `value` (nothing: valid)."""
    try:
        DraftModel.model_validate({field: value})
    except pydantic.ValidationError as e:
        return [msg for _, msg in pydantic_found(e)]
    return []


def _absolute(field: str, values: list, loc: Loc, base_dir: Path, found: Found) -> list:
    """Choices naming files (alpha {replay: FILE}, profile {table: FILE}) with the files made absolute."""
    out = []
    for i, v in enumerate(values):
        if field == "alpha" and isinstance(v, dict) and "replay" in v:
            v = {"replay": str(resolve(base_dir, v["replay"]).resolve())}   # existence: check_drafters
        elif field == "profile" and isinstance(v, dict) and "table" in v:
            from testbed.run.compute_checks import _table          # it imports this module
            v = _table(found, loc + ("choice", i), v, base_dir)
        out.append(v)
    return out


def _model_family(spec: str) -> str | None:
    return None if spec.startswith("dir:") else spec.split(":")[0]


def check_drafters(exp: Experiment, dnodes: list[str], base_dir: Path) -> tuple[Found, dict]:
    """Backend pairing and synthetic settings of every drafter, blamed on the entry that set the field.
    Returns the problems and the fields to update (replay paths made absolute)."""
    found: Found = []
    v = exp.verifier
    v_vocab = v.vocab_size if v.vocab_size is not None else exp.drafters.vocab_size

    def where(node: str, field: str) -> Loc:
        o = exp.drafters.overrides.get(node)
        if o is not None and field in o.model_fields_set and getattr(o, field) is not None:
            return ("drafters", "overrides", node, field)
        if field in exp.drafters.distributions:
            return ("drafters", "distributions", field)
        return ("drafters", field)

    found, dist_update = check_distributions(exp, dnodes, base_dir)
    if found:
        return found, {}       # merging would draw from a distribution that does not parse
    if dist_update:
        exp = exp.model_copy(update={"drafters": exp.drafters.model_copy(update=dist_update)})
    for node in dnodes:
        d = merge_drafter(exp.drafters, node, exp.seed)
        if d["backend"] == "ngram" and v.backend != "hf":
            found.append((where(node, "backend"), f"ngram drafters need a verifier with backend hf (they draft "
                                                  f"in its tokenizer's ids); verifier.backend is {v.backend!r}"))
        elif d["backend"] != v.backend and d["backend"] != "ngram":
            found.append((where(node, "backend"), f"{d['backend']} drafters need a verifier with backend "
                                                  f"{d['backend']}; verifier.backend is {v.backend!r}"))
        elif d["backend"] == "synthetic":
            if d["vocab_size"] != v_vocab:
                found.append((where(node, "vocab_size"), f"expected the verifier's vocab_size ({v_vocab}), "
                                                         f"got {d['vocab_size']}"))
            if isinstance(d["alpha"], dict) and "replay" in d["alpha"]:   # {curve|trace|published}: no file
                path = resolve(base_dir, d["alpha"]["replay"])
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
    if isinstance(exp.drafters.alpha, dict) and "replay" in exp.drafters.alpha:
        update["alpha"] = {"replay": str(resolve(base_dir, exp.drafters.alpha["replay"]).resolve())}
    overrides = {}
    for n, o in exp.drafters.overrides.items():
        if isinstance(o.alpha, dict) and "replay" in o.alpha:
            o = o.model_copy(update={"alpha": {"replay": str(resolve(base_dir, o.alpha["replay"]).resolve())}})
        overrides[n] = o
    update["overrides"] = overrides
    update.update(dist_update)
    return found, update


def check_workload(exp: Experiment, base_dir: Path) -> tuple[Found, str]:
    """`workload.*` against each other, the limits and the payload; returns the problems and the prompt set
    (a file made absolute; builtin or a dataset name as it is)."""
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
    problem = temperature_problem(w.temperature, exp.speculation.payload)
    if problem:
        found.append((("workload", "temperature"), problem))
    from testbed.run.workload_files import resolve_prompts    # builtin, a dataset or a file
    problem, prompts = resolve_prompts(w.prompts, base_dir)
    if problem:
        found.append((("workload", "prompts"), problem))
    return found, prompts


def check_control(exp: Experiment) -> Found:
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


def check_budget(exp: Experiment, drafters: list[str]) -> Found:
    """A closed loop's sessions are all open at once: the budget must give each min_s (open-loop arrivals may open
    more; the verifier then lowers min_s for those rounds, nodes/core/control.py)."""
    sch = exp.scheduling
    if not sch.scheduler or exp.workload.arrivals != "closed":
        return []
    open_at_once = len(drafters) * exp.workload.sessions
    if open_at_once * sch.min_s <= sch.budget:
        return []
    return [(("scheduling", "budget"), f"expected at least min_s ({sch.min_s}) x {open_at_once} sessions open at "
                                       f"once = {open_at_once * sch.min_s} draft tokens per round, got {sch.budget}; "
                                       "raise the budget or set min_s: 0")]


def check_label(exp: Experiment) -> Found:
    if exp.label is None:
        return []
    for m in PLACEHOLDER.finditer(exp.label):
        try:
            parse_path(m.group(1))
        except ValueError as e:
            return [(("label",), f"placeholder {{{m.group(1)}}}: {e}")]
    return []
