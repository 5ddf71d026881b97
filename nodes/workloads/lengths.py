"""Output lengths per session (`workload.output_len`), drawn from the drafter's seed, at most `workload.max_new`.

    output_len: fixed                              # every session max_new tokens (the default)
    output_len: {dist: fixed, tokens: 64}
    output_len: {dist: uniform, min: 16, max: 128}  # integers, both ends included
    output_len: {dist: lognormal, median: 80, sigma: 0.8}
    output_len: dataset                            # the prompt's reference answer, in the drafter's tokens

A session's length is the most tokens the verifier generates for it (EOS may end it sooner). The draws come from
their own generator (seeded by the drafter's seed), so they do not move the arrival times; the same seed gives
the same lengths in the same order of sessions.
"""
from __future__ import annotations

import math
import random
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from testbed.common.strict import StrictModel


class OutputLen(StrictModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dist: Literal["fixed", "uniform", "lognormal", "dataset"] = "fixed"
    tokens: int | None = Field(None, ge=1, le=8192)     # fixed: this many [max_new]
    min: int | None = Field(None, ge=1, le=8192)        # uniform
    max: int | None = Field(None, ge=1, le=8192)        # uniform
    median: float | None = Field(None, gt=0, le=8192)   # lognormal: exp(mu)
    sigma: float | None = Field(None, ge=0, le=10)      # lognormal: the log's standard deviation

    @model_validator(mode="before")
    @classmethod
    def _name(cls, data: Any) -> Any:
        return {"dist": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _fields(self) -> "OutputLen":
        need = {"uniform": ("min", "max"), "lognormal": ("median", "sigma")}.get(self.dist, ())
        missing = [k for k in need if getattr(self, k) is None]
        if missing:
            raise ValueError(f"dist {self.dist} needs {' and '.join(need)}; missing {', '.join(missing)}")
        if self.dist == "uniform" and self.min > self.max:
            raise ValueError(f"expected min <= max, got min {self.min} and max {self.max}")
        return self


class OutputLengths:
    """One drafter's draws: `draw(reference_tokens)` for each session in the order they start."""

    def __init__(self, spec: OutputLen | None, max_new: int, seed: int):
        self.spec = spec or OutputLen()
        self.max_new = max_new
        self.rng = random.Random(f"output_len:{seed}")

    def draw(self, reference_tokens: int | None = None) -> int:
        s = self.spec
        if s.dist == "uniform":
            n = self.rng.randint(s.min, s.max)
        elif s.dist == "lognormal":
            n = round(self.rng.lognormvariate(math.log(s.median), s.sigma))
        elif s.dist == "dataset":
            n = self.max_new if reference_tokens is None else reference_tokens
        else:
            n = s.tokens or self.max_new
        return max(1, min(self.max_new, int(n)))
