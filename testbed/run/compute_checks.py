"""`verifier.profile`, `verifier.overrides.<host>.profile`, `drafters.profile` and `drafters.overrides.<node>.profile` against the files they name.

Names (devices, models, dtypes) are checked where the field is validated (nodes/config.py `_profile`); here a
`{table: FILE}` is resolved against the experiment file's directory, read once (TableCost.load), and made
absolute so every node opens the same file from any directory."""
from __future__ import annotations

from pathlib import Path

from testbed.run.checks import Found, resolve


def _table(found: Found, loc: tuple, spec, base_dir: Path):
    """The spec with its table path absolute, or the spec unchanged (a problem recorded in `found`)."""
    if not isinstance(spec, dict) or "table" not in spec:
        return spec
    path = resolve(base_dir, spec["table"])
    if not path.is_file():
        found.append((loc, f"table profile {spec['table']!r} not found (looked for {path}); "
                           f"`testbed profile MODEL` writes one"))
        return spec
    from nodes.compute import ProfileError, TableCost
    try:
        TableCost.load(path)
    except ProfileError as e:
        found.append((loc, f"bad table profile: {str(e).splitlines()[0]}"))
        return spec
    return {"table": str(path.resolve())}


def _override_tables(found: Found, group: str, overrides: dict, base_dir: Path) -> dict:
    """`<group>.overrides`, each override's profile table (if any) resolved as its group's own."""
    return {n: o if o.profile is None else
            o.model_copy(update={"profile": _table(found, (group, "overrides", n, "profile"), o.profile, base_dir)})
            for n, o in overrides.items()}


def check_profiles(exp, base_dir: Path) -> tuple[Found, dict, dict]:
    """Problems, the verifier's update and the drafters' update (profile tables made absolute)."""
    found: Found = []
    vupdate, dupdate = {}, {}
    if exp.verifier.profile is not None:
        vupdate["profile"] = _table(found, ("verifier", "profile"), exp.verifier.profile, base_dir)
    if exp.verifier.backend != "synthetic":
        found += [(("verifier", "overrides", n), f"per-verifier overrides need verifier.backend synthetic "
                                                 f"(it is {exp.verifier.backend})") for n in exp.verifier.overrides]
    if exp.verifier.overrides:
        vupdate["overrides"] = _override_tables(found, "verifier", exp.verifier.overrides, base_dir)
    if exp.drafters.profile is not None:
        dupdate["profile"] = _table(found, ("drafters", "profile"), exp.drafters.profile, base_dir)
    if exp.drafters.overrides:
        dupdate["overrides"] = _override_tables(found, "drafters", exp.drafters.overrides, base_dir)
    return found, vupdate, dupdate
