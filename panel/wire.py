"""JSON as every channel reads it: one parser, so HTTP, MQTT and the media data channel refuse the same
payloads.

Python's ``json`` keeps the last of two equal keys; a client (or a signature) that read the first
would act on a different message than the panel. So a duplicate key is refused on every channel,
naming its path (``relay``, ``ice_servers.0.urls``). NaN and Infinity are not JSON either, and a
string escaping half a surrogate pair is not text.

Nesting is bounded before the parser runs (``MAX_DEPTH``): ``json`` recurses once per level up to
Python's recursion limit (about 1,000), and everything that walks the tree afterwards (this module,
pydantic, RFC 8785, a log formatter) recurses again, so a payload of a few kilobytes of brackets
could raise ``RecursionError`` anywhere downstream. No message the panel takes nests deeper than 5.
"""

from __future__ import annotations

import json
import re
from array import array
from itertools import accumulate
from typing import Any

# Deeper than any message the panel defines (an offer's ice_servers[].urls[] is 4) with room for
# config patches and data-channel payloads; far below the recursion limit.
MAX_DEPTH = 32

# A JSON string, or an unterminated one running to the end: possessive, so each quote is scanned once
# (with a backtracking pattern an unterminated string made the scan quadratic).
_STRING = re.compile(r'"(?:[^"\\]|\\.)*+"?', re.S)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_STEP = bytes.maketrans(b"[{]}", b"\x01\x01\xff\xff")  # +1 / -1 as signed bytes


class DuplicateKey(ValueError):
    """The JSON text names the same key twice in one object; ``path`` is where (dotted)."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path}: duplicate key; every key may appear once in an object")


class TooDeep(ValueError):
    """The JSON text nests arrays and objects deeper than ``MAX_DEPTH``."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        super().__init__(f"the JSON nests {depth} levels deep; at most {MAX_DEPTH} are allowed")


class LoneSurrogate(ValueError):
    """A string escapes half of a UTF-16 surrogate pair (``"\\ud800"``): valid JSON syntax, but not text
    (I-JSON, RFC 7493, refuses it). Nothing could store, sign, log or echo it as UTF-8."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path or '(value)'}: a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff); "
                         "send text")


def _text_ok(value: str) -> bool:
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _Pairs(list[tuple[str, Any]]):
    """An object's members in order, duplicates kept, until ``_unique`` has looked at them."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def nesting(text: str) -> int:
    """How deep ``text`` nests arrays and objects, counted without parsing it (linear time, in C).

    Brackets inside strings do not count; for text that is not JSON the figure is at least as deep
    as a parser would get before it gave up, which is all a bound needs."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(array("b", brackets.encode("ascii").translate(_STEP)), initial=0))


def _text(data: str | bytes) -> str:
    if isinstance(data, str):
        return data
    # What json.loads does with bytes (UTF-8, -16 or -32 by their first bytes), so the bound sees what it parses.
    return data.decode(json.detect_encoding(data), "surrogatepass")


def _unique(value: Any, path: str) -> Any:
    if isinstance(value, _Pairs):
        out: dict[str, Any] = {}
        for key, item in value:
            if not _text_ok(key):
                raise LoneSurrogate(path)
            where = f"{path}.{key}" if path else key
            if key in out:
                raise DuplicateKey(where)
            out[key] = _unique(item, where)
        return out
    if isinstance(value, list):
        return [_unique(item, f"{path}.{i}" if path else str(i)) for i, item in enumerate(value)]
    if isinstance(value, str) and not _text_ok(value):
        raise LoneSurrogate(path)
    return value


def loads_unique(data: str | bytes) -> Any:
    """``json.loads`` that refuses nesting past ``MAX_DEPTH`` (``TooDeep``), duplicate keys
    (``DuplicateKey``), unpaired surrogates (``LoneSurrogate``) and NaN/Infinity (``ValueError``);
    bytes that are not text: ``UnicodeDecodeError``."""
    text = _text(data)
    depth = nesting(text)
    if depth > MAX_DEPTH:
        raise TooDeep(depth)
    # The hook only collects: the path of a duplicate is known only once the whole tree is built.
    tree = json.loads(text, object_pairs_hook=_Pairs, parse_constant=_reject_constant)
    return _unique(tree, "")
