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


def _draft(found: Found, loc: tuple, draft, verifier_backend: str, vocab: int, base_dir: Path):
    """A verifier's co-located draft model (`draft`, fused rounds) against its verifier: the same kind of backend
    (synthetic with synthetic; hf or ngram with hf), the same vocabulary, its files made absolute."""
    if draft is None:
        return None
    ok = ("synthetic",) if verifier_backend == "synthetic" else ("hf", "ngram")
    if draft.backend not in ok:
        found.append((loc + ("backend",), f"a draft model beside a {verifier_backend} verifier must be "
                                          f"{' or '.join(ok)}, got {draft.backend}"))
    if draft.backend == "synthetic" and draft.vocab_size != vocab:
        found.append((loc + ("vocab_size",), f"must equal the verifier's vocabulary ({vocab}), got {draft.vocab_size}"))
    update = {}
    if draft.profile is not None:
        update["profile"] = _table(found, loc + ("profile",), draft.profile, base_dir)
    if isinstance(draft.alpha, dict) and "replay" in draft.alpha:
        path = resolve(base_dir, draft.alpha["replay"])
        if not path.is_file():
            found.append((loc + ("alpha",), f"replay file {draft.alpha['replay']!r} not found (looked for {path})"))
        update["alpha"] = {"replay": str(path.resolve())}
    return draft.model_copy(update=update) if update else draft


def check_fused(exp, base_dir: Path, hosts: list[str] | None) -> tuple[Found, dict]:
    """`speculation.mode` fused/hybrid needs a co-located draft model on every verifier (`verifier.draft`, or
    `verifier.overrides.<host>.draft`; `hosts`: the verifier hosts, None when the topology is unknown); each one is
    checked against its verifier. Returns the problems and the
    verifier's update (draft files made absolute)."""
    found: Found = []
    v = exp.verifier
    vocab = v.vocab_size or exp.drafters.vocab_size
    update: dict = {}
    if v.draft is not None:
        update["draft"] = _draft(found, ("verifier", "draft"), v.draft, v.backend, vocab, base_dir)
    overrides = {}
    for n, o in v.overrides.items():
        if o.draft is not None:
            o = o.model_copy(update={"draft": _draft(found, ("verifier", "overrides", n, "draft"), o.draft,
                                                     v.backend, vocab, base_dir)})
        overrides[n] = o
    if overrides:
        update["overrides"] = overrides
    if exp.speculation.mode != "distributed":
        lacking = [h for h in (hosts or [None]) if v.draft is None and
                   (h is None or v.overrides.get(h) is None or v.overrides[h].draft is None)]
        if lacking:
            who = "the verifier" if len(hosts or []) <= 1 else f"verifier(s) {', '.join(map(str, lacking))}"
            found.append((("speculation", "mode"), f"{exp.speculation.mode} mode drafts at the verifier: {who} "
                                                   "need a co-located draft model (verifier.draft, or "
                                                   "verifier.overrides.<host>.draft)"))
        if exp.speculation.gamma == 0:
            found.append((("speculation", "gamma"), f"{exp.speculation.mode} mode speculates: gamma must be >= 1"))
    return found, update


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
