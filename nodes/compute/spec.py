"""Build a cost model from a small mapping, as written in an experiment or node config:
{device: NAME, model: NAME, dtype?: NAME} for the roofline, or {table: FILE} for a measured table."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from nodes.compute.costs import CostModel, RooflineCost
from nodes.compute.profiles import ProfileError, get_device, get_model
from nodes.compute.table import TableCost
from testbed.common.errors import Problem, shown

_WHERE = "compute profile"


def cost_model_from_spec(spec: dict[str, Any], base_dir: Path) -> CostModel:
    """`table` paths are relative to base_dir (usually the directory of the file the spec came from)."""
    if not isinstance(spec, dict):
        raise ProfileError([Problem(_WHERE, "", f"expected a mapping {{device, model, dtype}} or {{table}}, "
                                                f"got {spec!r}")])
    keys = set(spec)
    if "table" in spec:
        extra = sorted(keys - {"table"})
        if extra:
            raise ProfileError([Problem(_WHERE, k, "expected only `table` with a table profile, got this too")
                                for k in extra])
        if not isinstance(spec["table"], str) or not spec["table"]:    # Path(5) would be a TypeError traceback
            raise ProfileError([Problem(_WHERE, "table", f"expected a file path, got {shown(spec['table'])}")])
        path = Path(spec["table"])
        return TableCost.load(path if path.is_absolute() else Path(base_dir) / path)
    problems = [Problem(_WHERE, k, "unknown field (expected device, model, dtype or table)")
                for k in sorted(keys - {"device", "model", "dtype"})]
    problems += [Problem(_WHERE, k, "required field is missing") for k in ("device", "model") if k not in spec]
    if problems:
        raise ProfileError(problems)
    return RooflineCost(get_device(str(spec["device"])), get_model(str(spec["model"])), spec.get("dtype"))
