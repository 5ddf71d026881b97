"""Device and model profiles, loaded from the YAML files in nodes/compute/data/.

A `Device` is what one accelerator (or CPU) can do: dense peak FLOP/s per compute type, memory bandwidth and
size, plus the achievable fractions of its class. A `ModelArch` is a decoder-only transformer's shape, enough
to count the FLOPs and bytes of one forward pass. A `Dtype` says how weights are stored and which peak applies.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt

from testbed.common.strict import StrictModel

from testbed.common.errors import ConfigError, Problem
from testbed.common.yamlconf import load_document, validate

DATA_DIR = Path(__file__).resolve().parent / "data"
DEVICES_FILE = DATA_DIR / "devices.yaml"
MODELS_FILE = DATA_DIR / "models.yaml"

ComputeType = Literal["fp32", "fp16", "fp8", "int8"]
# A device without a peak for a compute type runs it at the next wider one (an A100 has no FP8 units).
_FALLBACK: dict[str, tuple[str, ...]] = {
    "int8": ("int8", "fp16", "fp32"), "fp8": ("fp8", "fp16", "fp32"), "fp16": ("fp16", "fp32"), "fp32": ("fp32",)}


class ProfileError(ConfigError, ValueError):
    """Bad profile data, a malformed table or an unknown name: str() is one `FILE:LINE: field: message` line
    per problem. A ConfigError, so the CLI reports it like any other bad input (exit 2)."""


class _Strict(StrictModel):            # unknown fields and booleans for numbers refused (testbed/common/strict.py)
    model_config = ConfigDict(extra="forbid", frozen=True)


class Efficiency(_Strict):
    compute_efficiency: float = Field(gt=0, le=1)
    bandwidth_efficiency: float = Field(gt=0, le=1)
    pass_overhead_s: float = Field(ge=0)
    layer_overhead_s: float = Field(ge=0)


class Device(Efficiency):
    name: str
    device_class: str
    peak_flops: dict[ComputeType, PositiveFloat]
    memory_bandwidth: PositiveFloat     # bytes/s
    memory_bytes: PositiveFloat
    source: str
    note: str = ""

    def peak(self, compute: str) -> float:
        """Dense peak FLOP/s for a compute type, falling back to a wider type the device has."""
        for kind in _FALLBACK[compute]:
            if kind in self.peak_flops:
                return self.peak_flops[kind]
        raise ProfileError([Problem(str(DEVICES_FILE), f"devices.{self.name}.peak_flops",
                                    f"expected a peak for {compute!r} or a wider type, got none")])


class Dtype(_Strict):
    bytes_per_param: PositiveFloat
    head_bytes_per_param: PositiveFloat
    kv_bytes: PositiveFloat
    compute: ComputeType


class ModelArch(_Strict):
    name: str
    source: str
    layers: PositiveInt
    hidden: PositiveInt
    ffn: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: PositiveInt
    vocab: PositiveInt
    tied_embeddings: bool
    default_dtype: str
    dtypes: tuple[str, ...]            # the dtypes this checkpoint can be run in
    dtype_table: dict[str, Dtype]

    @property
    def layer_params(self) -> int:
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        return q_o + k_v + 3 * self.hidden * self.ffn      # gated MLP: gate, up, down

    @property
    def nonembedding_params(self) -> int:
        return self.layers * self.layer_params

    @property
    def total_params(self) -> int:
        return self.nonembedding_params + self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def dtype(self, name: str | None = None) -> Dtype:
        name = name or self.default_dtype
        if name not in self.dtypes:
            raise ProfileError([Problem(str(MODELS_FILE), f"models.{self.name}.dtypes",
                                        f"expected one of {', '.join(self.dtypes)}, got {name!r}")])
        return self.dtype_table[name]

    def weight_bytes(self, dtype: str | None = None) -> float:
        """Bytes of weights one forward pass streams: every block weight plus the LM head (the input
        embedding is a gather of a few rows, so it is not counted)."""
        d = self.dtype(dtype)
        return self.nonembedding_params * d.bytes_per_param + self.vocab * self.hidden * d.head_bytes_per_param

    def kv_bytes_per_token(self, dtype: str | None = None) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype(dtype).kv_bytes


# ------------------------------------------------------------------------------------------------ files

class _DeviceEntry(_Strict):
    device_class: str = Field(alias="class")
    source: str = Field(min_length=1)
    note: str = ""
    peak_flops: dict[ComputeType, PositiveFloat] = Field(min_length=1)
    memory_bandwidth: PositiveFloat
    memory_bytes: PositiveFloat
    compute_efficiency: Optional[float] = Field(None, gt=0, le=1)
    bandwidth_efficiency: Optional[float] = Field(None, gt=0, le=1)
    pass_overhead_s: Optional[float] = Field(None, ge=0)
    layer_overhead_s: Optional[float] = Field(None, ge=0)


class _DevicesFile(_Strict):
    classes: dict[str, Efficiency]
    devices: dict[str, _DeviceEntry]


class _ModelEntry(_Strict):
    source: str = Field(min_length=1)
    layers: PositiveInt
    hidden: PositiveInt
    ffn: PositiveInt
    heads: PositiveInt
    kv_heads: PositiveInt
    head_dim: Optional[PositiveInt] = None
    vocab: PositiveInt
    tied_embeddings: bool
    default_dtype: str
    dtypes: Optional[list[str]] = None
    bytes_per_param: dict[str, PositiveFloat] = {}     # per-checkpoint overrides of the dtype table


class _ModelsFile(_Strict):
    dtypes: dict[str, Dtype]
    models: dict[str, _ModelEntry]


def _load(path: Path, schema: type[BaseModel], checks) -> BaseModel:
    try:
        return validate(load_document(path), schema, checks)
    except ProfileError:
        raise
    except ConfigError as e:
        raise ProfileError(e.problems) from None


def _device_checks(f: _DevicesFile) -> list[tuple[tuple, str]]:
    return [(("devices", name, "class"), f"expected one of {', '.join(sorted(f.classes))}, got {e.device_class!r}")
            for name, e in f.devices.items() if e.device_class not in f.classes]


def _model_checks(f: _ModelsFile) -> list[tuple[tuple, str]]:
    found = []
    known = ", ".join(f.dtypes)
    for name, e in f.models.items():
        for field, values in (("dtypes", e.dtypes or []), ("bytes_per_param", list(e.bytes_per_param)),
                              ("default_dtype", [e.default_dtype])):
            found += [(("models", name, field), f"expected one of {known}, got {v!r}")
                      for v in values if v not in f.dtypes]
        if e.dtypes is not None and e.default_dtype not in e.dtypes:
            found.append((("models", name, "default_dtype"), f"expected one of {e.dtypes}, got {e.default_dtype!r}"))
        if e.head_dim is None and e.hidden % e.heads:
            found.append((("models", name, "head_dim"), f"expected head_dim (hidden {e.hidden} is not a "
                                                        f"multiple of heads {e.heads}), got none"))
    return found


@functools.lru_cache(maxsize=None)
def load_devices(path: str | Path = DEVICES_FILE) -> dict[str, Device]:
    f = _load(Path(path), _DevicesFile, _device_checks)
    out = {}
    for name, e in f.devices.items():
        eff = f.classes[e.device_class].model_dump()
        eff.update({k: v for k, v in e.model_dump().items() if k in eff and v is not None})
        out[name] = Device(name=name, device_class=e.device_class, peak_flops=e.peak_flops,
                           memory_bandwidth=e.memory_bandwidth, memory_bytes=e.memory_bytes,
                           source=e.source, note=e.note, **eff)
    return out


@functools.lru_cache(maxsize=None)
def load_models(path: str | Path = MODELS_FILE) -> dict[str, ModelArch]:
    f = _load(Path(path), _ModelsFile, _model_checks)
    out = {}
    for name, e in f.models.items():
        table = {k: (d.model_copy(update={"bytes_per_param": e.bytes_per_param[k]}) if k in e.bytes_per_param else d)
                 for k, d in f.dtypes.items()}
        out[name] = ModelArch(name=name, source=e.source, layers=e.layers, hidden=e.hidden, ffn=e.ffn,
                              heads=e.heads, kv_heads=e.kv_heads, head_dim=e.head_dim or e.hidden // e.heads,
                              vocab=e.vocab, tied_embeddings=e.tied_embeddings, default_dtype=e.default_dtype,
                              dtypes=tuple(e.dtypes or f.dtypes), dtype_table=table)
    return out


def _unknown(kind: str, name: str, known: dict, file: Path) -> ProfileError:
    return ProfileError([Problem(str(file), kind, f"expected one of {', '.join(sorted(known))}, got {name!r}")])


def get_device(name: str) -> Device:
    devices = load_devices()
    if name not in devices:
        raise _unknown("device", name, devices, DEVICES_FILE)
    return devices[name]


def get_model(name: str) -> ModelArch:
    models = load_models()
    if name not in models:
        raise _unknown("model", name, models, MODELS_FILE)
    return models[name]


__all__ = ["Device", "ModelArch", "Dtype", "ProfileError", "load_devices", "load_models", "get_device",
           "get_model", "DEVICES_FILE", "MODELS_FILE"]
