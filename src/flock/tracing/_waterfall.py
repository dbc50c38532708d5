"""Pure helpers behind the timeline (waterfall) of one trace: tree order and critical path.

Both work on plain tuples so they stay cheap for traces of tens of thousands of spans.

Example:
    >>> spans = [
    ...     ("a", None, 0, 10),  # (span_id, parent_id, start, end)
    ...     ("b", "a", 1, 4),
    ...     ("c", "a", 5, 9),
    ... ]
    >>> [(s[0], depth) for s, depth, _ in tree_order(spans)]
    [('a', 0), ('b', 1), ('c', 1)]
    >>> sorted(critical_path(spans))  # b and c ran one after the other: both count
    ['a', 'b', 'c']
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["critical_path", "tree_order"]

Row = TypeVar("Row", bound=Sequence[Any])
# Every row starts with (span_id, parent_id, start_ns, end_ns); further fields ride along.


def _children(rows: Sequence[Row]) -> tuple[list[Row], dict[str, list[Row]]]:
    """Roots (no parent, or a parent missing from the trace) and children by parent id,
    each in start order."""
    ids = {r[0] for r in rows}
    roots: list[Row] = []
    children: dict[str, list[Row]] = {}
    for row in sorted(rows, key=lambda r: (r[2], r[0])):
        parent = row[1]
        if parent is None or parent not in ids or parent == row[0]:
            roots.append(row)
        else:
            children.setdefault(parent, []).append(row)
    return roots, children


def tree_order(rows: Sequence[Row]) -> list[tuple[Row, int, int]]:
    """``(row, depth, number of children)`` in depth-first order, siblings by start time.

    Spans whose parent is not in the trace are shown as roots; spans caught in a parent
    cycle (corrupt data) are appended at depth 0 rather than lost.
    """
    roots, children = _children(rows)
    out: list[tuple[Row, int, int]] = []
    seen: set[str] = set()
    stack: list[tuple[Row, int]] = [(r, 0) for r in reversed(roots)]
    while stack:
        row, depth = stack.pop()
        if row[0] in seen:
            continue
        seen.add(row[0])
        kids = children.get(row[0], [])
        out.append((row, depth, len(kids)))
        stack.extend((kid, depth + 1) for kid in reversed(kids))
    if len(out) < len(rows):
        out.extend((r, 0, 0) for r in rows if r[0] not in seen)
    return out


def critical_path(rows: Sequence[Row]) -> set[str]:
    """The span ids on the critical path: the chain of spans that determined when the trace
    ended (the definition Jaeger uses).

    Start at the end of the trace and walk backwards in time: within a span, the child that
    ends last (at or before the current point) is critical; the walk then continues from
    that child's start, picking the child that ended last before it, and so on; each picked
    child is walked the same way, recursively. Children are seen through their parent's
    window: one that outlives its parent counts as ending when the parent ends, one that
    starts after its parent ended (an agent run started by a publish) is not on the path.
    Concurrent siblings that finished before the span that ended last are therefore not
    critical. Several roots (a running trace whose root span is not written yet) are
    walked like the children of one span covering the whole trace.

    Example:
        >>> spans = [
        ...     ("root", None, 0, 10),
        ...     ("slow", "root", 1, 9),   # concurrent with "fast": it decides the end
        ...     ("fast", "root", 1, 3),
        ...     ("late", "root", 11, 12), # starts after its parent ended
        ... ]
        >>> sorted(critical_path(spans))
        ['root', 'slow']
    """
    if not rows:
        return set()
    roots, children = _children(rows)
    path: set[str] = set()
    # (children to walk, their parent's window): a virtual parent over all roots first.
    work: list[tuple[list[Row], int, int]] = [
        (roots, min(r[2] for r in roots), max(max(r[3], r[2]) for r in roots))
    ]
    while work:
        kids, lo, hi = work.pop()
        clipped = [
            (kid, max(kid[2], lo), min(max(kid[3], kid[2]), hi))
            for kid in kids
            if kid[2] <= hi and kid[3] >= lo and kid[0] not in path
        ]
        # Latest end first; of two ending together the longer (earlier start) wins.
        clipped.sort(key=lambda c: (-c[2], c[1], c[0][0]))
        cursor = hi
        for kid, start, end in clipped:
            if end > cursor or kid[0] in path:
                continue
            path.add(kid[0])
            work.append((children.get(kid[0], []), start, end))
            cursor = start
    return path
