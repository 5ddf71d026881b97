"""The base of every config model: unknown fields are errors, and so is a boolean where a number is expected.

YAML reads `true` as a boolean and pydantic's lax mode takes a boolean as the number 1, so `rate_up_mbps: true`
used to be a 1 Mbit/s link. Every field whose type is a number (int or float, possibly optional or annotated, not
also bool) refuses booleans here, with the field's own path in the message.
"""
from __future__ import annotations

import types
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, model_validator


def wants_number(ann: Any) -> bool:
    """Whether a field of this type takes numbers and not booleans."""
    origin = get_origin(ann)
    if origin is Annotated:
        return wants_number(get_args(ann)[0])
    if origin is Union or origin is types.UnionType:
        args = get_args(ann)
        return bool not in args and any(wants_number(a) for a in args)
    return ann in (int, float)


_NUMERIC: dict[type, tuple[str, ...]] = {}     # model -> the names (aliases) of its number fields


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # One check per model, not per field: a 100,000-member pool validates 100,000 links
    @model_validator(mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, data: Any) -> Any:
        if isinstance(data, dict):
            names = _NUMERIC.get(cls)
            if names is None:
                names = _NUMERIC[cls] = tuple(f.alias or n for n, f in cls.model_fields.items()
                                              if wants_number(f.annotation))
            for name in names:
                v = data.get(name)
                if isinstance(v, bool):
                    raise ValueError(f"{name}: expected a number, got {str(v).lower()}")
        return data
