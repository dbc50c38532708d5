"""Text that JSON (UTF-8) cannot carry: lone surrogates.

Python strings may hold lone surrogates (``"\\ud800"``): JSON's ``\\ud800`` escape decodes
to one, and Python code can make one. No UTF-8 encoder takes them, so a single such string
in an artifact would make every response (and live message) that includes it fail.
The dashboard refuses them where they come in (publishing answers 422 naming the field) and
replaces them with U+FFFD where stored data goes out (:func:`scrub`).

Example:
    >>> scrub({"text": "a\\ud800b", "\\udc00": ["ok"]})
    {'text': 'a�b', '�': ['ok']}
    >>> find_surrogate({"tags": ["fine", "bad\\udfff"]})
    ('tags', 1)
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson
from starlette.responses import JSONResponse

__all__ = [
    "SafeJSONResponse",
    "dumps",
    "find_surrogate",
    "has_surrogate",
    "scrub",
    "scrub_text",
]

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"


def has_surrogate(text: str) -> bool:
    """Whether ``text`` holds a code point UTF-8 cannot encode (a lone surrogate)."""
    if text.isascii():
        return False
    return _SURROGATE.search(text) is not None


def scrub_text(text: str) -> str:
    """``text`` with every lone surrogate replaced by U+FFFD."""
    return _SURROGATE.sub(REPLACEMENT, text) if has_surrogate(text) else text


def scrub(value: Any) -> Any:
    """``value`` (JSON-like: dicts, lists, tuples, strings, scalars), or a copy of it with
    lone surrogates in its strings and keys replaced by U+FFFD when it has any; other values
    as they are. Whether it has any is found by orjson, in C (walking every value in Python
    made large payloads' responses 3x slower)."""
    try:
        orjson.dumps(value, default=_opaque, option=orjson.OPT_NON_STR_KEYS)
    except orjson.JSONEncodeError:  # a surrogate (or something else JSON lacks): walk it
        return _scrubbed(value)
    return value


def _opaque(value: Any) -> None:
    return None  # not looked into, as _scrubbed does not


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, dict):
        return {scrub_text(k) if isinstance(k, str) else k: _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrubbed(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_scrubbed(v) for v in value)
    return value


def find_surrogate(value: Any, loc: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """The location (keys and indexes) of the first string or key in ``value`` that holds a
    lone surrogate, or ``None`` when there is none. A bad key is located at itself
    (scrubbed, so the location can be shown)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, loc)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if has_surrogate(item):
                return where
        elif isinstance(item, dict):
            entries = list(item.items())
            for key, _ in entries:
                if isinstance(key, str) and has_surrogate(key):
                    return (*where, scrub_text(key))
            stack.extend((v, (*where, k)) for k, v in reversed(entries))
        elif isinstance(item, list | tuple):
            stack.extend((v, (*where, i)) for i, v in reversed(list(enumerate(item))))
    return None


def dumps(value: Any) -> str:
    """Compact JSON text of ``value`` (as ``WebSocket.send_json`` writes it), lone surrogates
    replaced: it always encodes as UTF-8."""
    return json.dumps(scrub(value), ensure_ascii=False, separators=(",", ":"))


class SafeJSONResponse(JSONResponse):
    """Starlette's ``JSONResponse``, with lone surrogates replaced instead of failing."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(scrub(content))
