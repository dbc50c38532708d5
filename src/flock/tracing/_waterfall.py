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
    >>> sorted(critical_path(spans))
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
    ended (as in Jaeger).

    From the latest-ending root, walk backwards in time: the child that ended last is on the
    path; before its start, the child that ended last before that moment; and so on,
    recursively. A child that outlives its parent (an agent run started by a publish) counts
    with its own end.
    """
    if not rows:
        return set()
    roots, children = _children(rows)
    path: set[str] = set()
    root = max(roots, key=lambda r: r[3])
    work: list[tuple[Row, int]] = [(root, root[3])]
    while work:
        span, cursor = work.pop()
        if span[0] in path:
            continue
        path.add(span[0])
        kids = sorted(children.get(span[0], []), key=lambda r: r[3], reverse=True)
        for i, kid in enumerate(kids):
            if i == 0 or kid[3] <= cursor:
                work.append((kid, kid[3]))
                cursor = kid[2]
    return path
