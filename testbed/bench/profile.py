"""`testbed profile MODEL`: time a real model's forward pass over a grid and write a table profile.

Each grid point (batch b, tokens t, context c) is one verifier pass exactly as `nodes/backends/hf.py` runs it
(`batched_forward`: b rows whose KV caches hold c tokens each, t new tokens per row, one padded forward pass,
the rows' caches cut out afterwards). The caches come from one untimed prefill of max(batch) rows of
max(context) random tokens, cut to c tokens per point (a causal model's first c cached tokens are exactly those
of a c-token prefill). `batched_forward` never writes into the caches it is given, so every repeat starts from
the same c tokens. A point's time is the median of `repeats` passes after one warm-up pass; points are measured
in a shuffled (seeded) order so that load from other processes spreads over the grid instead of biasing one end.

The table (read by `nodes.compute.TableCost`): CSV with `# key: value` comment lines first (model; device: the
nodes.compute device class it was measured as, `--device`, default cpu-x86; dtype in nodes.compute's names
(fp32, bf16, fp16, int8 for the ':int8' variants) and torch_dtype; threads, host, cpu, platform, torch, created,
repeats, load: the 1-minute load average before -> after), then `batch,tokens,context,seconds`.
"""
from __future__ import annotations

import csv
import os
import platform
import random
import re
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from testbed.common.errors import ConfigError, Problem

HEADER = ["batch", "tokens", "context", "seconds"]
WHERE = "testbed profile"


@dataclass(frozen=True)
class Grid:
    batch: tuple[int, ...]
    tokens: tuple[int, ...]
    context: tuple[int, ...]

    def points(self) -> list[tuple[int, int, int]]:
        return [(b, t, c) for b in self.batch for t in self.tokens for c in self.context]


GRIDS = {
    "default": Grid((1, 2, 4, 8), (1, 2, 3, 5, 9), (16, 64, 128, 256, 512)),
    "quick": Grid((1, 4), (1, 5), (16, 128)),
}


def bad(field: str, message: str) -> ConfigError:
    """A one-line user error (the CLI prints it and exits 2)."""
    return ConfigError([Problem(WHERE, field, message)])


def parse_ints(text: str, field: str, minimum: int = 1) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): sorted, distinct, each >= minimum."""
    try:
        values = [int(v) for v in str(text).split(",")]
    except ValueError:
        values = []
    if not values or any(v < minimum for v in values):
        raise bad(field, f"expected comma-separated integers >= {minimum}, got {text!r}")
    return tuple(sorted(set(values)))


def parse_int(text, field: str, minimum: int = 1) -> int:
    try:
        value = int(str(text))
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise bad(field, f"expected an integer >= {minimum}, got {text!r}")
    return value


def make_grid(name: str, batch: str | None, tokens: str | None, context: str | None) -> Grid:
    if name not in GRIDS:
        raise bad("--grid", f"expected one of {sorted(GRIDS)}, got {name!r}")
    g = GRIDS[name]
    return Grid(parse_ints(batch, "--batch") if batch is not None else g.batch,
                parse_ints(tokens, "--tokens") if tokens is not None else g.tokens,
                parse_ints(context, "--context", 0) if context is not None else g.context)


TORCH_DTYPES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}   # torch name -> nodes.compute name
ROOFLINE_NAMES = {"gemma3-270m": "gemma-3-270m"}                          # nodes/models.py -> nodes.compute


def torch_dtype(text: str | None) -> str:
    """float32 (default), bfloat16, float16, or their short names fp32, bf16, fp16 -> the torch name."""
    if text is None:
        return "float32"
    for long, short in TORCH_DTYPES.items():
        if text in (long, short):
            return long
    raise bad("--dtype", f"expected one of {', '.join(TORCH_DTYPES)} (or {', '.join(TORCH_DTYPES.values())}), "
                         f"got {text!r}")


def profile_dtype(spec, dtype: str) -> str:
    """The nodes.compute dtype a loaded model runs in: int8 for the dynamically quantised variants."""
    return "int8" if spec.variant.startswith("int8") else TORCH_DTYPES[dtype]


def roofline_name(spec) -> str:
    name = Path(spec.base[4:]).name.lower() if spec.base.startswith("dir:") else spec.base
    return ROOFLINE_NAMES.get(name, name)


def check_model(spec: str):
    """The parsed spec, or a one-line error naming the known models (no torch import)."""
    from nodes.models import ModelError, ModelSpec
    try:
        return ModelSpec.parse(spec)
    except ModelError as e:
        raise bad("model", str(e)) from None


# ---- host description ------------------------------------------------------------------------------------

def cpu_model() -> str:
    from testbed.run.manifest import cpu_model as manifest_cpu
    return manifest_cpu() or platform.machine()


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def busy_warning(load: float | None, threads: int) -> str | None:
    cpus = os.cpu_count() or 1
    if load is not None and load > 0.5 * cpus:
        return (f"warning: this machine is busy (1-minute load average {load:.1f} on {cpus} CPUs): "
                "other processes share the cores, so times are inflated and noisy"
                + ("; a pass on several threads stalls whenever one is descheduled (--threads 1 is steadier)"
                   if threads > 1 else ""))
    return None


def host_short() -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname().split(".")[0]) or "host"


def default_out(spec) -> Path:
    name = Path(spec.base[4:]).name if spec.base.startswith("dir:") else spec.base
    if spec.variant:
        name += "-" + spec.variant
    return Path("profiles") / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}-{host_short()}.csv"


# ---- table file ------------------------------------------------------------------------------------------

def write_table(path: Path, meta: dict, rows: list[tuple[int, int, int, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        for k, v in meta.items():
            f.write(f"# {k}: {v}\n")
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)
        for b, t, c, s in rows:
            w.writerow([b, t, c, f"{s:.6f}"])
    tmp.replace(path)


def read_table(path: Path) -> tuple[dict, list[tuple[int, int, int, float]]]:
    """(meta, rows) of a table written by write_table; a one-line error if it is not one."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise bad("--check", f"cannot read {path}: {e.strerror or e}") from None
    meta, body = {}, []
    for n, line in enumerate(lines, 1):
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            meta[key.strip()] = value.strip()
        elif line.strip():
            body.append((n, line))
    if not body or [h.strip() for h in body[0][1].split(",")] != HEADER:
        raise bad("--check", f"{path}: expected a header line {','.join(HEADER)!r} after the '#' lines")
    rows = []
    for n, line in body[1:]:
        try:
            b, t, c, s = line.split(",")
            rows.append((int(b), int(t), int(c), float(s)))
        except ValueError:
            raise bad("--check", f"{path}:{n}: expected batch,tokens,context,seconds, got {line!r}") from None
    if not rows:
        raise bad("--check", f"{path}: no data rows")
    return meta, rows


# ---- measuring -------------------------------------------------------------------------------------------

class Profiler:
    """A model loaded as the hf verifier loads it, on the CPU, and a timer for its batched forward pass."""

    def __init__(self, spec, dtype: str = "float32", threads: int | None = None, seed: int = 0):
        import torch
        from nodes.models import ModelError, load
        try:
            self.tokenizer, self.model, self.device = load(spec, "cpu", dtype, threads)
        except ModelError as e:
            raise bad("model", str(e)) from None
        self.threads = torch.get_num_threads()
        self.vocab = int(self.model.config.vocab_size)
        self.max_positions = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.rng = random.Random(seed)

    def _ids(self, n: int) -> list[int]:
        return [self.rng.randrange(self.vocab) for _ in range(n)]

    def measure(self, points: list[tuple[int, int, int]], repeats: int, progress: bool = True) -> list[float]:
        """Median seconds of one verifier pass at each point (same order as `points`)."""
        from tqdm import tqdm
        from nodes.backends.hf import batched_forward, crop, kv_len
        too_long = [p for p in points if self.max_positions and p[1] + p[2] > self.max_positions]
        if too_long:
            b, t, c = too_long[0]
            raise bad("--context", f"context {c} + tokens {t} exceeds the model's {self.max_positions} positions")
        max_b, max_c = max(p[0] for p in points), max(p[2] for p in points)
        full = None
        if max_c:
            _, full = batched_forward(self.model, [None] * max_b, [self._ids(max_c) for _ in range(max_b)])
        batched_forward(self.model, [None], [self._ids(8)])       # first-pass costs (allocator, kernels)
        order = list(range(len(points)))
        self.rng.shuffle(order)
        out: list[float] = [0.0] * len(points)
        tty = sys.stderr.isatty()
        bar = tqdm(total=len(points), desc="profile", unit="pt", file=sys.stderr, disable=not progress,
                   mininterval=0.5 if tty else 10)
        for i in order:
            b, t, c = points[i]
            pasts = [[(k.contiguous(), v.contiguous()) for k, v in crop(full[r], c)] for r in range(b)] if c else [None] * b
            feeds = [self._ids(t) for _ in range(b)]
            samples = []
            for rep in range(repeats + 1):
                start = time.perf_counter()
                batched_forward(self.model, pasts, feeds)
                elapsed = time.perf_counter() - start
                if rep:                      # the first pass is the warm-up
                    samples.append(elapsed)
            assert all(kv_len(p) == c for p in pasts), "a cache grew: the context would not stay exact"
            out[i] = statistics.median(samples)
            bar.set_postfix_str(f"b{b} t{t} c{c} {1e3 * out[i]:.1f} ms", refresh=False)
            bar.update(1)
        bar.close()
        return out


def metadata(spec, profiler: Profiler, device: str, dtype: str, repeats: int, load: tuple) -> dict:
    import torch
    return {
        "model": str(spec),
        "device": device,
        "dtype": profile_dtype(spec, dtype),
        "torch_dtype": dtype,
        "threads": profiler.threads,
        "host": socket.gethostname(),
        "cpu": cpu_model(),
        "platform": platform.platform(),
        "torch": torch.__version__.split("+")[0],
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "repeats": repeats,
        "load": " -> ".join("?" if x is None else f"{x:.2f}" for x in load) + f" (1-min average, {os.cpu_count()} CPUs)",
    }


# ---- roofline --------------------------------------------------------------------------------------------

def roofline(spec, device: str, dtype: str, points: list[tuple[int, int, int]]) -> tuple[list[float] | None, str]:
    """The roofline's seconds per point for `device`, or (None, why not) in one line."""
    try:
        from nodes.compute import ProfileError, RooflineCost, get_device, get_model
    except ImportError as e:
        return None, f"roofline: not shown, nodes.compute is not available ({e})"
    name = roofline_name(spec)
    try:
        cost = RooflineCost(get_device(device), get_model(name), dtype=profile_dtype(spec, dtype))
        return [cost.pass_s([(c, t)] * b) for b, t, c in points], f"roofline ms: {cost.describe()}"
    except (ProfileError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else str(e).splitlines()[0]
        return None, f"roofline: not shown for {name} on {device}: {msg}"


def format_table(points, measured, predicted) -> str:
    lines = [f"{'batch':>5} {'tokens':>6} {'context':>7} {'measured ms':>12} {'roofline ms':>12} {'ratio':>6}"]
    for i, (b, t, c) in enumerate(points):
        m = 1e3 * measured[i]
        if predicted:
            r = 1e3 * predicted[i]
            lines.append(f"{b:>5} {t:>6} {c:>7} {m:>12.2f} {r:>12.2f} {m / r if r else float('nan'):>6.2f}")
        else:
            lines.append(f"{b:>5} {t:>6} {c:>7} {m:>12.2f} {'-':>12} {'-':>6}")
    if predicted:
        ratios = [measured[i] / predicted[i] for i in range(len(points)) if predicted[i]]
        if ratios:
            lines.append(f"measured / roofline: median {statistics.median(ratios):.2f}, "
                         f"min {min(ratios):.2f}, max {max(ratios):.2f}")
    return "\n".join(lines)


def format_check(points, old, new, tolerance: float) -> tuple[str, float]:
    lines = [f"{'batch':>5} {'tokens':>6} {'context':>7} {'table ms':>9} {'now ms':>9} {'now/table':>9}"]
    devs = []
    for i, (b, t, c) in enumerate(points):
        ratio = new[i] / old[i] if old[i] > 0 else float("inf")
        devs.append(abs(ratio - 1))
        lines.append(f"{b:>5} {t:>6} {c:>7} {1e3 * old[i]:>9.2f} {1e3 * new[i]:>9.2f} {ratio:>9.3f}")
    med = statistics.median(devs)
    lines.append(f"median |now/table - 1| = {100 * med:.1f} % over {len(points)} points "
                 f"(tolerance {100 * tolerance:g} %): {'within' if med <= tolerance else 'OUTSIDE'}")
    return "\n".join(lines), med


# ---- the command -----------------------------------------------------------------------------------------

def run(args) -> int:
    """`testbed profile`; args from testbed/cli.py. 0 written / within tolerance, 1 outside, 2 bad input."""
    repeats = parse_int(args.repeats, "--repeats")
    threads = parse_int(args.threads, "--threads") if args.threads is not None else None
    if args.check:
        try:
            tolerance = float(args.tolerance)
        except ValueError:
            tolerance = -1.0
        if not 0 <= tolerance < float("inf"):
            raise bad("--tolerance", f"expected a number >= 0, got {args.tolerance!r}")
        return _check(args, repeats, threads, tolerance)
    if not args.model:
        raise bad("model", "expected a model name (e.g. smollm2-135m), or --check FILE")
    spec = check_model(args.model)
    grid = make_grid(args.grid, args.batch, args.tokens, args.context)
    points = grid.points()
    out = Path(args.out) if args.out else default_out(spec)
    started = time.monotonic()
    dtype = torch_dtype(args.dtype)
    prof = Profiler(spec, dtype, threads)
    print(f"profiling {spec} on this CPU ({cpu_model()}, {prof.threads} threads, {dtype}): "
          f"{len(points)} points, median of {repeats} after 1 warm-up", file=sys.stderr, flush=True)
    load = [load_average()]
    _warn(busy_warning(load[0], prof.threads))
    measured = prof.measure(points, repeats)
    load.append(load_average())
    write_table(out, metadata(spec, prof, args.device, dtype, repeats, tuple(load)), [p + (s,) for p, s in zip(points, measured)])
    predicted, note = roofline(spec, args.device, dtype, points)
    print(format_table(points, measured, predicted))
    print(note)
    print(f"wrote {out} ({len(points)} points, {time.monotonic() - started:.0f} s)")
    return 0


def _check(args, repeats: int, threads: int | None, tolerance: float) -> int:
    meta, rows = read_table(Path(args.check))
    model = args.model or meta.get("model")
    if not model:
        raise bad("--check", f"{args.check}: no '# model:' line; give the model on the command line")
    spec = check_model(model)
    dtype = torch_dtype(args.dtype or meta.get("torch_dtype") or
                        (meta.get("dtype") if meta.get("dtype") in TORCH_DTYPES.values() else None))
    if threads is None and str(meta.get("threads", "")).isdigit():
        threads = int(meta["threads"])
    points = [(b, t, c) for b, t, c, _ in rows]
    started = time.monotonic()
    prof = Profiler(spec, dtype, threads)
    print(f"re-measuring {len(points)} points of {args.check} ({spec}, {prof.threads} threads, {dtype})",
          file=sys.stderr, flush=True)
    _warn(busy_warning(load_average(), prof.threads))
    new = prof.measure(points, repeats)
    text, med = format_check(points, [s for *_, s in rows], new, tolerance)
    print(f"table: created {meta.get('created', '?')} on {meta.get('host', '?')} ({meta.get('cpu', '?')}), "
          f"load {meta.get('load', '?')}; now on {socket.gethostname()}, load {load_average() or 0:.2f}")
    print(text)
    print(f"checked {args.check} ({time.monotonic() - started:.0f} s)")
    return 0 if med <= tolerance else 1


def _warn(message: str | None) -> None:
    if message:
        print(message, file=sys.stderr, flush=True)
