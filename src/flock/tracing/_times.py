"""The times a trace file can hold (ns since the epoch in a BIGINT) and ``--since`` values:
durations (``10m``, ``2h``, ``1d``) and ISO times, as the CLI, the dashboard, retention and
``clear_traces`` take them."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

__all__ = ["MAX_NS", "MIN_NS", "check_ns", "duration_ns", "parse_since"]

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE | re.ASCII)
_UNIT_NS = {"s": 1e9, "sec": 1e9, "m": 60e9, "min": 60e9, "h": 3600e9, "d": 86400e9, "w": 604800e9}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
MIN_NS, MAX_NS = -(2**63), 2**63 - 1
"""The times a trace file can hold: ns since the epoch in a BIGINT (1677-09-21 to
2262-04-11)."""


def check_ns(ns: int, value: object) -> int:
    """``ns`` if a trace file can hold it (see :data:`MAX_NS`), else a ``ValueError`` that
    names ``value`` (what it came from)."""
    if not MIN_NS <= ns <= MAX_NS:
        raise ValueError(
            f"{value!r} is out of range: times must be between 1677-09-21 and 2262-04-11"
        )
    return ns


def duration_ns(value: str) -> float | None:
    """``"30s"``, ``"10m"``, ``"2h"``, ``"1d"``, ``"1w"`` in ns; None if ``value`` is no such
    duration."""
    match = _RELATIVE.match(value)
    return float(match.group(1)) * _UNIT_NS[match.group(2).lower()] if match else None


def parse_since(value: str, *, now_ns: int | None = None) -> int:
    """A start time in ns since the epoch from ``"10m"``, ``"2h"``, ``"1d"``, ``"1w"``, ``"30s"``
    (that long ago) or an ISO 8601 time (``"2025-01-31T12:00"``, local time unless it has an
    offset or ``Z``). Raises ``ValueError`` with a readable message otherwise, also for a time
    outside 1677-09-21 … 2262-04-11 (what a trace file's ns can hold)."""
    ago = duration_ns(value)
    if ago is not None:
        now = time.time_ns() if now_ns is None else now_ns
        if ago > MAX_NS:  # also inf
            raise ValueError(f"{value!r} is out of range: that is before 1677-09-21")
        return check_ns(now - int(ago), value)
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: use a duration like 10m, 2h, 1d, 1w or an ISO time "
            "like 2025-01-31T12:00"
        ) from None
    try:
        if moment.tzinfo is None:
            moment = moment.astimezone()  # local time
        ns = (moment - _EPOCH) // _US * 1_000
    except (OverflowError, ValueError):  # e.g. 0001-01-01 in a zone east of UTC
        ns = MIN_NS - 1 if moment.year < 1970 else MAX_NS + 1
    return check_ns(ns, value)
