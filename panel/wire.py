"""JSON as every channel reads it: one parser, so HTTP and MQTT refuse the same payloads.

Python's ``json`` keeps the last of two equal keys; a client (or a signature) that read the first
would act on a different message than the panel. So a duplicate key is refused on every channel,
naming its path (``relay``, ``ice_servers.0.urls``). NaN and Infinity are not JSON either.
"""

from __future__ import annotations

import json
from typing import Any


class DuplicateKey(ValueError):
    """The JSON text names the same key twice in one object; ``path`` is where (dotted)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: duplicate key; every key may appear once in an object")


class _Pairs(list[tuple[str, Any]]):
    """An object's members in order, duplicates kept, until ``_unique`` has looked at them."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _unique(value: Any, path: str) -> Any:
    if isinstance(value, _Pairs):
        out: dict[str, Any] = {}
        for key, item in value:
            where = f"{path}.{key}" if path else key
            if key in out:
                raise DuplicateKey(where)
            out[key] = _unique(item, where)
        return out
    if isinstance(value, list):
        return [_unique(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(value)]
    return value


def loads_unique(text: str | bytes) -> Any:
    """``json.loads`` that refuses duplicate keys (``DuplicateKey``) and NaN/Infinity (``ValueError``)."""
    # The hook only collects: the path of a duplicate is known only once the whole tree is built.
    tree = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    return _unique(tree, "")
