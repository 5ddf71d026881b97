"""Loading experiment files: `load_experiment` (a file, with `--set` overrides), `experiment_from_dict`,
`check_file`; and the sweep's points, each validated like a file.

The fields are declared in schema.py (the experiment schema; node-facing groups come from nodes/config.py),
field paths and sweeps are in sweep.py, the checks across fields and against the topology in checks.py. Errors
are `Problem`s (file:line: field.path: message), all reported together.
"""
from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Iterable

import pydantic
import yaml

from testbed.common.errors import ConfigError, Problem
from testbed.common.yamlconf import Loc, format_loc, load_document, load_value
from testbed.net.topology import check_trace_files
from testbed.run.compute_checks import check_fused, check_profiles
from testbed.run.checks import (Found, apply_links, check_budget, check_control, check_drafters, check_label,
                                check_nodes, check_scale, check_workload, load_topology_ref, pydantic_found)
from testbed.channels.faults import check_faults
from testbed.run.nodefaults import check_node_faults
from testbed.run.schema import Experiment
from testbed.run.workload_files import apply_override_prompts, check_sources
from testbed.run.clients import check_clients
from testbed.run.sweep import copy_data, fill_label, fmt_value, parse_path, parse_sweep, point_data, safe_parse, \
    set_field

__all__ = ["Experiment", "load_experiment", "experiment_from_dict", "check_file", "expand_points"]


def _build(data: Any, base_dir: Path, file: str, cache: dict) -> tuple[Experiment | None, Found, list[Problem]]:
    """Validate one experiment mapping (no sweep expansion). Returns the experiment, or None with the
    problems as (field path, message) in this file plus `Problem`s in other files (a bad topology file)."""
    try:
        exp = Experiment.model_validate(_awc_weights_here(data, base_dir))
    except pydantic.ValidationError as e:
        return None, pydantic_found(e), []
    topo, found, foreign = load_topology_ref(exp, base_dir, file, cache)
    found = list(found)
    found += check_label(exp)
    found += check_control(exp)
    wfound, prompts = check_workload(exp, base_dir)
    found += wfound
    sfound, sforeign, wupdate, own_prompts = check_sources(exp, base_dir)   # per-drafter prompts, output_len, trace
    found += sfound
    foreign = list(foreign) + sforeign
    if topo is not None:
        topo, lfound = apply_links(exp, topo, base_dir)
        found += lfound
    if topo is not None and exp.faults:     # faults name links of the topology (testbed/channels/faults.py)
        found += check_faults(exp.faults, [l.link_name for l in topo.links], exp.channel_interval_ms / 1e3)
    if topo is not None and not found:
        foreign = list(foreign) + check_trace_files(topo, lambda loc, msg: Problem(
            topo.source or file, format_loc(loc), msg))
    if topo is not None:
        nfound, vnode, dnodes = check_nodes(exp, topo)
        found += nfound
        if exp.faults and not nfound:       # node faults name drafters and verifier hosts (testbed/run/nodefaults.py)
            vhosts_ = list(exp.routing.verifiers or [n for n in topo.hosts() if topo.nodes[n].role == "verifier"]) \
                if exp.routing.policy else [vnode]
            found += check_node_faults(exp.faults, list(dnodes), vhosts_, exp.backend, not exp.routing.policy)
        found += check_clients(exp, topo)
        if not nfound:
            found += check_scale(exp, topo, dnodes)     # mininet/local: one machine's worth of node processes
            dfound, dupdate = check_drafters(exp, dnodes, base_dir)
            found += dfound
            found += check_budget(exp, dnodes)
    pfound, pv_update, pd_update = check_profiles(exp, base_dir)
    found += pfound
    vhosts = None if topo is None else (list(exp.routing.verifiers or [n for n in topo.hosts()
                                                                         if topo.nodes[n].role == "verifier"])
                                        if exp.routing.policy else [exp.verifier.node])
    ffound, fv_update = check_fused(exp, base_dir, vhosts)
    found += ffound
    if "overrides" in fv_update and "overrides" in pv_update:   # both touched the overrides: merge per host
        fv_update["overrides"] = {n: o.model_copy(update={"profile": pv_update["overrides"][n].profile})
                                  for n, o in fv_update["overrides"].items()}
    pv_update = {**pv_update, **fv_update}
    if found or foreign or topo is None:
        return None, found, foreign
    v = exp.verifier
    if "overrides" in pd_update and "overrides" in dupdate:   # both made paths absolute: merge per drafter
        pd_update["overrides"] = {n: o.model_copy(update={"profile": pd_update["overrides"][n].profile})
                                  for n, o in dupdate["overrides"].items()}
    exp = exp.model_copy(update={
        "verifier": v.model_copy(update={"node": vnode, "vocab_size": v.vocab_size or exp.drafters.vocab_size,
                                         **pv_update}),
        "drafters": apply_override_prompts(exp.drafters.model_copy(update={"nodes": dnodes, **dupdate, **pd_update}),
                                           own_prompts),
        "workload": exp.workload.model_copy(update={"prompts": prompts, **wupdate}),
    })
    exp._file, exp._base_dir, exp._data, exp._topology = file, base_dir, copy_data(data), topo
    return exp, [], []


def _awc_weights_here(data: Any, base_dir: Path) -> Any:
    """speculation.policy's weights_path (awc), like every path of an experiment, relative to the file."""
    spec = data.get("speculation") if isinstance(data, dict) else None
    policy = spec.get("policy") if isinstance(spec, dict) else None
    path = policy.get("weights_path") if isinstance(policy, dict) else None
    if not isinstance(path, str) or not path or Path(path).is_absolute():
        return data
    return {**data, "speculation": {**spec, "policy": {**policy, "weights_path": str((base_dir / path).resolve())}}}


def _check_points(exp: Experiment, cache: dict) -> tuple[Found, list[Problem]]:
    """Expand the sweep and validate every point; a problem in a point is blamed on the swept value that
    caused it: `sweep.<path>[i]` (with the point named when several fields are swept)."""
    axes, found = parse_sweep(exp.sweep or {})
    if found:
        return found, []
    foreign: list[Problem] = []
    seen: set = set()
    for combo in itertools.product(*(range(ax.n) for ax in axes)):
        data = point_data(exp._data, axes, combo)
        point, pfound, pforeign = _build(data, exp._base_dir, exp._file, cache)
        foreign += [p for p in pforeign if p not in foreign]
        if point is not None:
            continue
        swept = [(ax.where[k], path, i, ax.values[k][i]) for ax, i in zip(axes, combo) for k, path in enumerate(ax.paths)]
        point_name = ", ".join(f"{format_loc(path)}={fmt_value(path, v)}" for _, path, _, v in swept)
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


def expand_points(exp: Experiment) -> list[Experiment]:
    """Experiment.points(): the sweep expanded, each point validated, without `sweep` and with `label` filled."""
    if not exp.sweep:
        return [exp.model_copy(update={"sweep": None, "label": fill_label(exp, exp.label, [])})]
    axes, found = parse_sweep(exp.sweep)
    if found:
        raise ConfigError([Problem(exp._file, format_loc(loc), msg) for loc, msg in found])
    out, cache = [], {}
    for combo in itertools.product(*(range(ax.n) for ax in axes)):
        data = point_data(exp._data, axes, combo)
        point, found, foreign = _build(data, exp._base_dir, exp._file, cache)
        if point is None:
            raise ConfigError(foreign + [Problem(exp._file, format_loc(loc), msg) for loc, msg in found])
        swept = [(key, path) for ax in axes for key, path in zip(ax.keys, ax.paths)]
        out.append(point.model_copy(update={"label": fill_label(point, exp.label, swept)}))
    return out


# ------------------------------------------------------------------------------------------ --set

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
            value = load_value(text)      # bounded: size, alias bombs, nesting, huge numbers (yamlconf.py)
        except ValueError as e:
            problems.append(Problem(where, "", str(e)))
            continue
        sets.append((loc, value, item))
    return sets, problems


def _apply_sets(data: dict, sets: list[tuple[Loc, Any, str]]) -> list[Problem]:
    """Apply --set overrides; one naming a swept field replaces that sweep axis."""
    problems = []
    for loc, value, item in sets:
        try:
            set_field(data, loc, value)
        except ValueError as e:
            problems.append(Problem(f"--set {item}", "", str(e)))
            continue
        sweep = data.get("sweep")
        if isinstance(sweep, dict) and loc[0] != "sweep":
            groups = [sweep] + ([sweep["zip"]] if isinstance(sweep.get("zip"), dict) else [])
            for group in groups:
                for key in list(group):
                    if key != "zip" and isinstance(key, str) and safe_parse(key) == loc:
                        del group[key]
            if isinstance(sweep.get("zip"), dict) and not sweep["zip"]:
                del sweep["zip"]
            if not sweep:
                data["sweep"] = None
    return problems


# ------------------------------------------------------------------------------------------ entry points

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
    data = copy_data(doc.data)
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
            # a model-level check (strict.py's booleans) names its group and starts its message with the field
            if sloc[:len(loc)] == loc and msg.startswith(format_loc(sloc[len(loc):]) + ": "):
                return Problem(f"--set {item}", "", msg[len(format_loc(sloc[len(loc):])) + 2:])
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
