"""Span attributes as nested JSON: ``{"flock.workflow": true}`` -> ``{"flock": {"workflow": true}}``.

Nesting is what makes ``json_extract(attributes, '$.flock.workflow')`` work. A key that is both
a leaf and a prefix (``a`` and ``a.b``) keeps both: the leaf moves under the empty key
(``{"a": {"": 1, "b": 2}}``) and :func:`flatten` restores it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["Redactor", "cap", "flatten", "nest"]

Redactor = Callable[[str, Any], Any]
"""``redact(key, value)`` returns the value to store, or ``None`` to drop the attribute."""

TRUNCATION_MARKER = "…[truncated {} chars]"
LEAF = ""


def cap(value: Any, max_chars: int) -> Any:
    """Truncate long strings (alone or in sequences) and mark how much was cut."""
    cls = value.__class__
    if cls is str:
        if len(value) > max_chars:
            return value[:max_chars] + TRUNCATION_MARKER.format(len(value) - max_chars)
        return value
    if cls is tuple or cls is list:
        return [cap(v, max_chars) for v in value]
    return value


_PARTS: dict[str, list[str]] = {}


def _parts(key: str) -> list[str]:
    parts = _PARTS.get(key)
    if parts is None:
        parts = key.split(".")
        if len(_PARTS) < 10_000:  # attribute keys are few; don't grow without bound
            _PARTS[key] = parts
    return parts


def nest(
    attributes: Mapping[str, Any], *, max_chars: int, redact: Redactor | None = None
) -> dict[str, Any]:
    """Dotted keys to nested dicts, values capped (and redacted when a hook is given).

    This runs once per span in the writer thread, so it avoids per-key overhead where it can.
    """
    root: dict[str, Any] = {}
    for key, value in attributes.items():
        if redact is not None:
            value = redact(key, value)
            if value is None:
                continue
        cls = value.__class__
        if (cls is str and len(value) > max_chars) or cls is tuple or cls is list:
            value = cap(value, max_chars)
        parts = _parts(key)
        node = root
        for part in parts[:-1]:
            child = node.get(part)
            if child.__class__ is not dict:
                child = {} if child is None else {LEAF: child}
                node[part] = child
            node = child
        last = parts[-1]
        existing = node.get(last)
        if existing.__class__ is dict:
            existing[LEAF] = value
        else:
            node[last] = value
    return root


def flatten(nested: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The inverse of :func:`nest` (without the capping)."""
    flat: dict[str, Any] = {}
    for key, value in nested.items():
        if key == LEAF:
            flat[prefix] = value
            continue
        full = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            flat.update(flatten(value, full))
        else:
            flat[full] = value
    return flat
