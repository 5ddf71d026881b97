"""Where the synthetic draft's acceptance comes from (`drafters.alpha`): a constant or piecewise-constant alpha
(AlphaSchedule), a per-position curve (Curve), or a replay of recorded rounds (Replay, written by
AcceptanceRecorder). The replay file format and how each source is drawn are described in synthetic.py's
docstring; `parse_alpha` turns a config value into one of these."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

@dataclass(frozen=True)
class AlphaSchedule:
    """Piecewise-constant alpha: points (t_seconds, alpha) with increasing t; before the first point the
    first alpha applies. A constant is a one-point schedule."""
    points: tuple[tuple[float, float], ...]

    def at(self, t: float) -> float:
        value = self.points[0][1]
        for start, alpha in self.points:
            if t < start:
                break
            value = alpha
        return value


@dataclass(frozen=True)
class Replay:
    records: tuple[tuple[int, int], ...]   # (gamma, accepted) per recorded round
    path: str = ""


@dataclass(frozen=True)
class Curve:
    """Per-position acceptance: the i-th draft of a round (i = 0 first) is true with probability values[i]
    (the last value past the end), independently, so it is accepted with that probability given all before were."""
    values: tuple[float, ...]

    def at_position(self, i: int) -> float:
        return self.values[min(i, len(self.values) - 1)]


def _check_alpha(a) -> float:
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= float(a) <= 1.0:
        raise ValueError(f"alpha must be a number in [0, 1], got {a!r}")
    return float(a)


MAX_REPLAY_BYTES = 256 << 20


def load_replay(path: str | Path) -> Replay:
    """Read a replay file (see module docstring); every error names the file and line."""
    records = []
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_REPLAY_BYTES + 1)
    except OSError as e:
        raise ValueError(f"{path}: cannot read: {e.strerror}") from None
    if len(raw) > MAX_REPLAY_BYTES:
        raise ValueError(f"{path}: over {MAX_REPLAY_BYTES >> 20} MiB: expected JSON lines of gamma and accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text file (byte {e.start} is not UTF-8): expected JSON lines of gamma and "
                         f"accepted") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict) or set(obj) != {"gamma", "accepted"}:
            raise ValueError(f'{where}: expected {{"gamma": int, "accepted": int}}, got {line}')
        g, a = obj["gamma"], obj["accepted"]
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (g, a)) or not 0 <= a <= g:
            raise ValueError(f"{where}: need integers 0 <= accepted <= gamma, got {line}")
        records.append((g, a))
    if not records:
        raise ValueError(f"{path}: replay file has no records")
    return Replay(tuple(records), str(path))


ALPHA_MAPPINGS = ("replay", "curve", "trace", "published")


def parse_alpha(spec) -> AlphaSchedule | Replay | Curve:
    """alpha spec -> AlphaSchedule, Replay or Curve. Accepts a number in [0, 1], a list of [t_seconds, alpha]
    pairs with t >= 0 strictly increasing, {"replay": path}, {"curve": [a1, a2, ...]} (per-position acceptance),
    {"trace": "pair/dataset"} (a shipped recorded trace, replayed) or {"published": id} (an entry of
    nodes/acceptance/data/published.yaml: its curve, else its alpha); see nodes/acceptance."""
    if isinstance(spec, (AlphaSchedule, Replay, Curve)):
        return spec
    if isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in ALPHA_MAPPINGS:
            raise ValueError(f'alpha as a mapping must be one of {{"replay": path}}, {{"curve": [a1, ...]}}, '
                             f'{{"trace": name}} or {{"published": id}}, got {spec!r}')
        (kind, value), = spec.items()
        if kind == "replay":
            return load_replay(value)
        if kind == "curve":
            if not isinstance(value, (list, tuple)) or not value:
                raise ValueError(f"alpha curve must be a non-empty list of numbers in [0, 1], got {value!r}")
            return Curve(tuple(_check_alpha(a) for a in value))
        from nodes.acceptance import resolve_alpha    # lazily: it imports this module
        return parse_alpha(resolve_alpha(kind, value))
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError("alpha schedule is empty")
        points = []
        for item in spec:
            if not isinstance(item, (list, tuple)) or len(item) != 2:
                raise ValueError(f"alpha schedule entries must be [t_seconds, alpha], got {item!r}")
            t = item[0]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0:
                raise ValueError(f"alpha schedule time must be a number >= 0, got {t!r}")
            points.append((float(t), _check_alpha(item[1])))
        if any(b[0] <= a[0] for a, b in zip(points, points[1:])):
            raise ValueError(f"alpha schedule times must be strictly increasing, got {[p[0] for p in points]}")
        return AlphaSchedule(tuple(points))
    return AlphaSchedule(((0.0, _check_alpha(spec)),))


class AcceptanceRecorder:
    """Appends one replay line per verification round, flushed at once so a crashed run keeps its record."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._f = open(self.path, "a", encoding="utf-8")

    def record(self, gamma: int, accepted: int) -> None:
        if not 0 <= accepted <= gamma:
            raise ValueError(f"need 0 <= accepted <= gamma, got accepted={accepted} gamma={gamma}")
        self._f.write(json.dumps({"gamma": int(gamma), "accepted": int(accepted)}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
