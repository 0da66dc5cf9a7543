"""Strict JSON for raw text: duplicate keys and NaN refused, numbers never rounded.

It sits at the bottom of ``pipeline.data``: the raw readers and the size-chart parser both use
it.
"""

from __future__ import annotations

import json

__all__ = ["DuplicateKeyError", "strict_json"]


class DuplicateKeyError(ValueError):
    """A JSON object that names one key twice."""


def _pairs(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        raise DuplicateKeyError
    return record


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def strict_json(text: str) -> object:
    """Parse JSON refusing duplicate keys (a :class:`DuplicateKeyError`, a ``ValueError``) and
    NaN/Infinity. Integers are Python ints (no overflow) and other numbers keep their text,
    so ``1e400`` never becomes inf."""
    return json.loads(
        text, object_pairs_hook=_pairs, parse_float=str, parse_int=int, parse_constant=_no_constant
    )
