"""Experiment field paths (`speculation.gamma`, `links.d1-ap1.delay_ms`) and the sweep over them.

A path names a field of the schema (schema.py); `--set PATH=VALUE`, sweep keys and label placeholders all use
them. A sweep is a grid of `{path: [values]}` axes (YAML key order, the last varying fastest), a `zip` group
being one axis; its points are validated one by one (experiment.py).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel

from testbed.common.errors import Problem
from testbed.common.yamlconf import MAX_EXPANDED_VALUES, Loc, load_value
from testbed.run.schema import Experiment

MAX_POINTS = 1000                      # a sweep expanding to more points than this is surely a mistake
NOT_SWEEPABLE = ("sweep", "label", "name")


# ------------------------------------------------------------------------------------------ field paths

def _submodel(ann: Any) -> type[BaseModel] | None:
    """The model of a field typed Model or Model | None (verifier.draft)."""
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    models = [a for a in get_args(ann) if a is not type(None)]
    if len(models) == 1 and len(get_args(ann)) == 2 and isinstance(models[0], type) and issubclass(models[0], BaseModel):
        return models[0]
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
        if model is Experiment and seg == "topology" and i < len(segs):
            # into an inline topology (a mapping): topology.nodes.ap1.radio.band_mhz, topology.nodes.u.count; the
            # topology's own schema checks the result when the point is built
            return tuple(out + segs[i:])
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


def safe_parse(key: str) -> Loc | None:
    try:
        return parse_path(key)
    except ValueError:
        return None


def check_sets(items: list[str]) -> list[Problem]:
    """The `--set PATH=VALUE` items whose VALUE is not a bounded YAML value (an alias bomb, nesting past the
    stack, a number of thousands of digits, undecodable bytes, a megabyte string), one problem each. The CLI
    runs this before loading the experiment, which then parses the values that passed."""
    problems = []
    for item in items:
        _, eq, text = item.partition("=")
        if eq:
            try:
                load_value(text)
            except ValueError as e:
                problems.append(Problem(f"--set {item}", "", str(e)))
    return problems


def _size(value: Any, memo: dict[int, int]) -> int:
    """How many values `value` holds with shared lists/mappings counted at each place (a YAML alias bomb is a
    few shared lists that validation would walk 10^9 times); each object is counted once, so this is linear."""
    if not isinstance(value, (dict, list)):
        return 1
    n = memo.get(id(value))
    if n is None:
        memo[id(value)] = 1
        items = value.values() if isinstance(value, dict) else value
        memo[id(value)] = n = min(1 + sum(_size(v, memo) for v in items), MAX_EXPANDED_VALUES + 1)
    return n


def set_field(data: dict, loc: Loc, value: Any) -> None:
    """Set a field in the raw mapping, creating groups on the way. Setting one of requests / duration_s
    clears the other (they are alternatives), so `--set workload.duration_s=60` just works."""
    if _size(value, {}) > MAX_EXPANDED_VALUES:
        raise ValueError(f"the value expands to more than {MAX_EXPANDED_VALUES:,} values (a YAML alias bomb?)")
    for i, key in enumerate(loc[:-1]):
        if isinstance(data, list):          # inside an inline topology: topology.links.0.rate_up_mbps
            if not (isinstance(key, str) and key.isdigit() and int(key) < len(data)):
                raise ValueError(f"{'.'.join(map(str, loc[:i]))} is a list of {len(data)}: expected an index "
                                 f"0-{len(data) - 1}, got {key!r}")
            data = data[int(key)]
            continue
        if data.get(key) is None:
            data[key] = {}
        if not isinstance(data[key], dict) and not (loc[0] == "topology" and isinstance(data[key], list)):
            if loc[0] == "topology" and key == "topology":
                raise ValueError("topology is a file here: setting fields inside it needs an inline topology "
                                 "(a mapping in the experiment file)")
            raise ValueError(f"{key} is not a mapping of fields")
        data = data[key]
    if isinstance(data, list):
        if not (loc[-1].isdigit() and int(loc[-1]) < len(data)):
            raise ValueError(f"{'.'.join(loc[:-1])} is a list of {len(data)}: expected an index, got {loc[-1]!r}")
        data[int(loc[-1])] = value
        return
    data[loc[-1]] = value
    other = {("workload", "requests"): "duration_s", ("workload", "duration_s"): "requests"}.get(tuple(loc))
    if other and value is not None:
        data.pop(other, None)


def copy_data(data: Any) -> Any:
    """Deep copy of raw YAML data that does not keep sharing: a YAML alias (`*station`) becomes an independent
    copy, so overriding one aliased mapping does not change the others."""
    if isinstance(data, dict):
        return {k: copy_data(v) for k, v in data.items()}
    if isinstance(data, list):
        return [copy_data(v) for v in data]
    return data


# ------------------------------------------------------------------------------------------ sweep

@dataclass
class Axis:
    keys: list[str]          # the sweep keys as written (one, or several for a zip group)
    paths: list[Loc]         # the field each key names
    where: list[Loc]         # where each key is: ("sweep", key) or ("sweep", "zip", key)
    values: list[list[Any]]  # values[k][i]: the i-th value of key k
    n: int


def parse_sweep(sweep: dict) -> tuple[list[Axis], list[tuple[Loc, str]]]:
    axes: list[Axis] = []
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
            ax = Axis([], [], [], [], 0)
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
                axes.append(Axis([key], [got[0]], [("sweep", key)], [got[1]], len(got[1])))
    total = 1
    for ax in axes:
        total *= ax.n
    if total > MAX_POINTS:
        found.append((("sweep",), f"the sweep expands to {total} runs; at most {MAX_POINTS}"))
    return axes, found


def point_data(data: dict, axes: list[Axis], combo: tuple[int, ...]) -> dict:
    """The raw mapping of one point: the swept fields set to the combo's values, no `sweep`."""
    point = copy_data(data)
    point.pop("sweep", None)
    for ax, i in zip(axes, combo):
        for path, values in zip(ax.paths, ax.values):
            set_field(point, path, copy_data(values[i]))
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


def fmt_value(path: Loc, v: Any) -> str:
    """A field's value as a label shows it."""
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


PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def fill_label(exp: Experiment, template: str | None, swept: list[tuple[str, Loc]]) -> str:
    if template is not None:
        return PLACEHOLDER.sub(lambda m: fmt_value(parse_path(m.group(1)), _value(exp, parse_path(m.group(1)))),
                               template)
    if not swept:
        return "base"
    shorts = [str(path[-1]) for _, path in swept]
    names = [s if shorts.count(s) == 1 else key for s, (key, _) in zip(shorts, swept)]
    return ", ".join(f"{n}={fmt_value(path, _value(exp, path))}" for n, (_, path) in zip(names, swept))
