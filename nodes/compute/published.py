"""Published measurements beside the roofline model's predictions (`python -m nodes.compute.published`).

The rows live in data/published.csv, each with its source. The class efficiencies in devices.yaml were chosen
so that this table's median absolute relative error stays small (docs/compute.md says how);
tests/test_compute.py recomputes it.
"""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass
from pathlib import Path

from nodes.compute.costs import RooflineCost
from nodes.compute.profiles import DATA_DIR, ProfileError, get_device, get_model
from testbed.common.errors import Problem

PUBLISHED_FILE = DATA_DIR / "published.csv"
METRICS = ("decode_tok_s", "prefill_tok_s", "e2e_tok_s")


@dataclass(frozen=True)
class PublishedPoint:
    model: str
    device: str
    dtype: str
    batch: int
    prompt_tokens: int
    output_tokens: int
    metric: str
    measured: float
    source: str
    note: str
    predicted: float
    line: int

    @property
    def rel_error(self) -> float:
        """(predicted - measured) / measured: positive when the model is optimistic."""
        return (self.predicted - self.measured) / self.measured


def predict(cost: RooflineCost, metric: str, batch: int, prompt: int, output: int) -> float:
    """The metric the source reports, from passes of the cost model."""
    prefill_s = cost.pass_s([(0, prompt)] * batch) if prompt else 0.0
    decode_s = sum(cost.pass_s([(prompt + j, 1)] * batch) for j in range(output))
    if metric == "prefill_tok_s":
        return batch * prompt / prefill_s
    if metric == "decode_tok_s":
        return batch * output / decode_s
    return batch * output / (prefill_s + decode_s)


def _rows(path: Path):
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), start=1)
             if line.strip() and not line.startswith("#")]
    reader = csv.DictReader([line for _, line in lines])
    for (number, _), row in zip(lines[1:], reader):
        yield number, row


def published_table(path: str | Path = PUBLISHED_FILE) -> list[PublishedPoint]:
    path = Path(path)
    out, problems = [], []
    for number, row in _rows(path):
        try:
            batch, prompt, output = int(row["batch"]), int(row["prompt_tokens"]), int(row["output_tokens"])
            measured = float(row["measured"])
            if row["metric"] not in METRICS:
                raise ValueError(f"metric: expected one of {', '.join(METRICS)}, got {row['metric']!r}")
            if not row["source"].startswith("http"):
                raise ValueError(f"source: expected a URL, got {row['source']!r}")
            cost = RooflineCost(get_device(row["device"]), get_model(row["model"]), row["dtype"])
        except ProfileError as e:
            problems += [Problem(str(path), p.path, p.message, number) for p in e.problems]
            continue
        except (ValueError, TypeError, KeyError) as e:
            problems.append(Problem(str(path), "", str(e), number))
            continue
        out.append(PublishedPoint(model=row["model"], device=row["device"], dtype=row["dtype"], batch=batch,
                                  prompt_tokens=prompt, output_tokens=output, metric=row["metric"],
                                  measured=measured, source=row["source"], note=row["note"],
                                  predicted=predict(cost, row["metric"], batch, prompt, output), line=number))
    if problems:
        raise ProfileError(problems)
    return out


def median_abs_error(points: list[PublishedPoint]) -> float:
    return statistics.median(abs(p.rel_error) for p in points)


def format_table(points: list[PublishedPoint]) -> str:
    head = f"{'model':<14} {'device':<17} {'dtype':<7} {'batch':>5} {'in/out':>9} {'metric':<14} " \
           f"{'measured':>9} {'predicted':>9} {'error':>7}"
    lines = [head, "-" * len(head)]
    for p in points:
        lines.append(f"{p.model:<14} {p.device:<17} {p.dtype:<7} {p.batch:>5} "
                     f"{f'{p.prompt_tokens}/{p.output_tokens}':>9} {p.metric:<14} {p.measured:>9.2f} "
                     f"{p.predicted:>9.2f} {p.rel_error:>+7.1%}")
    lines.append(f"median absolute relative error: {median_abs_error(points):.1%} over {len(points)} points")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(published_table()))
