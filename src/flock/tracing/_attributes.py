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
    if isinstance(value, str):
        if len(value) > max_chars:
            return value[:max_chars] + TRUNCATION_MARKER.format(len(value) - max_chars)
        return value
    if isinstance(value, tuple | list):
        return [cap(v, max_chars) for v in value]
    return value


def nest(
    attributes: Mapping[str, Any], *, max_chars: int, redact: Redactor | None = None
) -> dict[str, Any]:
    """Dotted keys to nested dicts, values capped (and redacted when a hook is given)."""
    root: dict[str, Any] = {}
    for key, raw in attributes.items():
        value = redact(key, raw) if redact is not None else raw
        if value is None:
            continue
        value = cap(value, max_chars)
        node = root
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {} if child is None else {LEAF: child}
                node[part] = child
            node = child
        last = parts[-1]
        existing = node.get(last)
        if isinstance(existing, dict):
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
