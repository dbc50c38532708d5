"""Span attributes as nested JSON: ``{"flock.workflow": true}`` -> ``{"flock": {"workflow": true}}``.

Nesting is what makes ``json_extract(attributes, '$.flock.workflow')`` work. A key that is both
a leaf and a prefix (``a`` and ``a.b``) keeps both: the leaf moves under the empty key
(``{"a": {"": 1, "b": 2}}``) and :func:`flatten` restores it. A key with an empty part
(``""``, ``"a."``, ``".a"``, ``"a..b"``) is not split: it stays whole at the top level, where it
cannot collide with a nested one (``json_extract(attributes, '$."a."')`` finds it).
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import orjson

__all__ = [
    "STATUS_DESCRIPTION_KEY",
    "Redactor",
    "attributes_json",
    "attributes_jsons",
    "cap",
    "flatten",
    "has_non_finite",
    "nest",
    "nested_json",
    "redact_description",
    "redact_flat",
    "to_json",
]

Redactor = Callable[[str, Any], Any]
"""``redact(key, value)`` returns the value to store, or ``None`` to drop the attribute."""

TRUNCATION_MARKER = "…[truncated {} chars]"
LEAF = ""
STATUS_DESCRIPTION_KEY = "otel.status_description"
"""The key a span's status description is given to the redact hook under (the name
OpenTelemetry's non-OTLP exporters store it under)."""


NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}
"""JSON has no NaN or infinity (orjson writes ``null``): they are stored as the strings the
OTLP/JSON encoding uses for them."""


def cap(value: Any, max_chars: int) -> Any:
    """Truncate long strings (alone or in sequences) and mark how much was cut; NaN and
    infinities become their OTLP/JSON strings (see :data:`NON_FINITE`)."""
    cls = value.__class__
    if cls is str:
        if len(value) > max_chars:
            return value[:max_chars] + TRUNCATION_MARKER.format(len(value) - max_chars)
        return value
    if cls is tuple or cls is list:
        return [cap(v, max_chars) for v in value]
    if cls is float and not math.isfinite(value):
        return NON_FINITE[repr(value)]
    return value


_PARTS: dict[str, list[str]] = {}


def _parts(key: str) -> list[str]:
    parts = _PARTS.get(key)
    if parts is None:
        parts = key.split(".")
        if "" in parts:  # "", "a.", ".a", "a..b": kept whole at the top level (see above)
            parts = [key]
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
        if (cls is str and len(value) > max_chars) or cls is tuple or cls is list or cls is float:
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


_MISSING: Any = object()
_THREAD = threading.local()  # each thread's plans: a plan refills one dict (see _compile)
_Plan = tuple[Callable[[tuple[Any, ...]], dict[str, Any]], tuple[None, ...]]
"""A key set's plan and the values that blank its dict (Nones, one per key)."""


def _compile(keys: tuple[str, ...]) -> Callable[[tuple[Any, ...]], dict[str, Any]] | None:
    """A function that writes the values (in ``keys`` order) into the nested dict of this
    key set and returns it: the dict is built once, and each call only assigns its leaves
    (building the nested dicts anew for every span cost ~0.6 µs a span of 2 µs, measured).
    The returned dict is the same object every call: serialize it before the next call, in
    the same thread (plans are per thread, see :func:`attributes_jsons`).

    ``None`` when the keys need :func:`nest`'s general handling (a key that is both a leaf
    and a prefix, or an empty part such as ``"a..b"``).
    """
    tree: dict[str, Any] = {}
    leaves: list[tuple[dict[str, Any], str, int]] = []
    for index, key in enumerate(keys):
        parts = key.split(".")
        if "" in parts:
            return None
        node = tree
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if child.__class__ is not dict:
                return None
            node = child
        if parts[-1] in node:
            return None
        node[parts[-1]] = None
        leaves.append((node, parts[-1], index))
    # Each parent dict is bound to a default argument; the keys are embedded as repr()
    # string literals, the values by index: no user text is ever evaluated as code.
    parents: dict[int, str] = {}
    bound: dict[str, dict[str, Any]] = {"t": tree}
    lines = []
    for node, leaf, index in leaves:
        name = parents.get(id(node))
        if name is None:
            name = parents[id(node)] = f"d{len(parents)}"
            bound[name] = node
        lines.append(f"    {name}[{leaf!r}] = v[{index}]")
    params = ", ".join(f"{name}={name}" for name in bound)
    source = f"def plan(v, {params}):\n" + "\n".join(lines) + "\n    return t\n"
    namespace: dict[str, Any] = {"__builtins__": {}, **bound}
    exec(source, namespace)
    plan: Callable[[tuple[Any, ...]], dict[str, Any]] = namespace["plan"]
    return plan


def attributes_json(
    attributes: Mapping[str, Any], *, max_chars: int, redact: Redactor | None = None
) -> str:
    """``nest(attributes)`` as JSON (see :func:`attributes_jsons`)."""
    return attributes_jsons((attributes,), max_chars=max_chars, redact=redact)[0]


def attributes_jsons(
    batch: Sequence[Mapping[str, Any] | None],
    *,
    max_chars: int,
    redact: Redactor | None = None,
    failed: Callable[[int, BaseException], str] | None = None,
) -> list[str]:
    """``nest(attributes)`` as JSON for each of a batch's attribute mappings (``"{}"`` for
    ``None`` or an empty one), fast for the common case: one call per batch, not per span.

    Spans of one kind share their attribute keys, so the nesting is compiled once per key
    set (and thread: see :func:`_compile`); and when the whole JSON is at most ``max_chars``
    long no string in it can need capping, so capping only runs for the rare large span.
    Where one mapping cannot be encoded (a redact hook that raises, even SystemExit), the
    item is ``failed(index, exc)``; without ``failed`` the exception propagates.

    Returns ``str``: orjson's ``bytes`` results over-allocate, and keeping thousands of them
    alive (a writer batch) costs far more than the encoding itself; a decoded copy does not.
    """
    out: list[str] = []
    append = out.append
    plans: dict[tuple[str, ...], _Plan | None] = {}
    busy = getattr(_THREAD, "busy", False)
    if redact is None and not busy:
        # (A value's __str__, called by orjson's default=str, that encodes attributes in
        # this thread again gets plans of its own: it must not refill the dicts in use.)
        try:
            plans = _THREAD.plans
        except AttributeError:
            plans = _THREAD.plans = {}
    _THREAD.busy = True
    used: list[_Plan] = []  # blanked at the end: a dict must not keep a span's values alive
    dumps = orjson.dumps
    try:
        for index, attributes in enumerate(batch):
            if not attributes:
                append("{}")
                continue
            try:
                if redact is None:
                    keys = tuple(attributes)
                    entry = plans.get(keys, _MISSING)
                    if entry is _MISSING:
                        plan = _compile(keys)
                        entry = None if plan is None else (plan, (None,) * len(keys))
                        if len(plans) < 4096:  # key sets are few; don't grow without bound
                            plans[keys] = entry
                    if entry is not None:
                        if not used or used[-1] is not entry:
                            used.append(entry)
                        nested = entry[0](tuple(attributes.values()))
                        try:
                            data = dumps(nested, default=str)
                        except orjson.JSONEncodeError:
                            data = to_json(nested)
                        if len(data) <= max_chars:
                            append(data.decode())
                            continue
                append(nested_json(attributes, max_chars=max_chars, redact=redact))
            except BaseException as exc:
                if failed is None:
                    raise
                append(failed(index, exc))
    finally:
        _THREAD.busy = busy
        for plan, blank in used:
            plan(blank)
    return out


def to_json(value: Any) -> bytes:
    """``orjson.dumps(value, default=str)``, repairing what JSON cannot hold as it is instead
    of failing the whole value: a lone surrogate (a file name decoded with
    ``surrogateescape``, say) becomes U+FFFD, an integer beyond 64 bits its decimal digits as
    a string. Reported once per process."""
    try:
        return orjson.dumps(value, default=str)
    except orjson.JSONEncodeError:
        data = orjson.dumps(_repaired(value), default=str)  # anything else still raises
    global _REPAIR_REPORTED
    if not _REPAIR_REPORTED:
        _REPAIR_REPORTED = True
        import logging

        logging.getLogger("flock.tracing").warning(
            "flock: a span holds text with lone surrogates or an integer beyond 64 bits, which "
            "JSON cannot hold; stored with U+FFFD in place of each surrogate and the integer "
            "as a string (further ones are not reported)"
        )
    return data


_REPAIR_REPORTED = False
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_JSON_INTS = range(-(2**63), 2**64)  # what orjson writes as numbers


def _repaired(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return _LONE_SURROGATE.sub("\ufffd", value)
    if isinstance(value, int):
        return value if value in _JSON_INTS else str(value)
    if isinstance(value, dict):
        return {_repaired(k) if isinstance(k, str) else k: _repaired(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_repaired(v) for v in value]
    return value


def redact_flat(attributes: Mapping[str, Any], redact: Redactor) -> dict[str, Any]:
    """Attributes as ``redact`` rewrites them (``None`` drops one), keys kept flat."""
    kept: dict[str, Any] = {}
    for key, value in attributes.items():
        value = redact(key, value)
        if value is not None:
            kept[key] = value
    return kept


def redact_description(
    text: str, redact: Redactor, report: Callable[[BaseException], object] | None = None
) -> str | None:
    """A span's status description (typically an exception's message) as ``redact`` rewrites
    it under :data:`STATUS_DESCRIPTION_KEY`; ``None`` drops it. Where the hook raises (even
    SystemExit), ``"flock.encode_error: <Type: message>"`` (and ``report(exc)``): never the
    unredacted text. The trace file and OTLP export store the same."""
    from flock._errors import describe, safe_text

    try:
        value = redact(STATUS_DESCRIPTION_KEY, text)
    except BaseException as exc:
        if report is not None:
            report(exc)
        return f"flock.encode_error: {describe(exc, 300)}"
    return None if value is None else safe_text(value, 1_000_000)


def has_non_finite(values: Iterable[Any]) -> bool:
    """Whether any attribute value is (or holds) a NaN or an infinity."""
    for value in values:
        cls = value.__class__
        if cls is float:
            if not math.isfinite(value):
                return True
        elif (cls is tuple or cls is list) and any(
            v.__class__ is float and not math.isfinite(v) for v in value
        ):
            return True
    return False


def nested_json(
    attributes: Mapping[str, Any], *, max_chars: int, redact: Redactor | None = None
) -> str:
    """``nest(attributes)`` as JSON, always through :func:`cap`: unlike the fast path of
    :func:`attributes_json`, NaN and infinities are kept (as strings), not written as null.
    Attribute values are never None, so a ``null`` in the fast path's JSON means there is
    one (or a string that reads "null"): the encoder checks a whole batch at once."""
    return to_json(nest(attributes, max_chars=max_chars, redact=redact)).decode()


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
