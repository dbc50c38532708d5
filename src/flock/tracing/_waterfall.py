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

import bisect
from collections.abc import Sequence
from typing import Any, TypeVar

__all__ = ["critical_path", "forest", "tree_order"]

Row = TypeVar("Row", bound=Sequence[Any])
# Every row starts with (span_id, parent_id, start_ns, end_ns); further fields ride along.


def forest(rows: Sequence[Row]) -> tuple[list[Row], dict[str, list[Row]]]:
    """Roots and children by parent id, each in start order.

    Roots are the spans without a parent, with a parent missing from the trace, or that are
    their own parent. A parent cycle (corrupt data: ``a`` the parent of ``b`` and ``b`` of
    ``a``) has no way to a root: it is cut at its earliest span, which becomes a root, so
    every span is in exactly one tree.
    """
    ids = {r[0] for r in rows}
    roots: list[Row] = []
    children: dict[str, list[Row]] = {}
    ordered = sorted(rows, key=lambda r: (r[2], r[0]))
    for row in ordered:
        parent = row[1]
        if parent is None or parent not in ids or parent == row[0]:
            roots.append(row)
        else:
            children.setdefault(parent, []).append(row)
    reached = _reach([r[0] for r in roots], children, set())
    if len(reached) < len(ids):
        parent_of = {r[0]: r[1] for r in rows}
        first: dict[str, Row] = {}  # span id -> its earliest row (an id twice: once)
        for row in ordered:
            first.setdefault(row[0], row)
        for row in ordered:
            if row[0] in reached:
                continue
            # Up the parents to the cycle this span hangs from; cut it at its earliest span.
            path: list[str] = []
            on_path: set[str] = set()
            span_id: str = row[0]
            while span_id not in on_path:
                path.append(span_id)
                on_path.add(span_id)
                span_id = parent_of[span_id]
            cycle = path[path.index(span_id) :]
            cut = min((first[c] for c in cycle), key=lambda r: (r[2], r[0]))
            siblings = children[cut[1]]
            siblings[:] = [r for r in siblings if r[0] != cut[0]]
            roots.append(cut)
            _reach([cut[0]], children, reached)
        roots.sort(key=lambda r: (r[2], r[0]))
    return roots, children


def _reach(start: list[str], children: dict[str, list[Row]], reached: set[str]) -> set[str]:
    """``reached`` plus the spans in the trees below the ``start`` span ids."""
    stack = list(start)
    while stack:
        span_id = stack.pop()
        if span_id in reached:
            continue
        reached.add(span_id)
        stack.extend(kid[0] for kid in children.get(span_id, ()))
    return reached


def tree_order(rows: Sequence[Row]) -> list[tuple[Row, int, int]]:
    """``(row, depth, number of children)`` in depth-first order, siblings by start time.

    Spans whose parent is not in the trace, or that are their own parent, are shown as
    roots; a parent cycle (corrupt data) is cut at its earliest span, shown as a root.
    """
    roots, children = forest(rows)
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
    if len(out) < len(rows):  # defensive: no span is lost
        out.extend((r, 0, 0) for r in rows if r[0] not in seen)
    return out


def critical_path(rows: Sequence[Row]) -> set[str]:
    """The span ids on the critical path: the chain of spans that determined when the trace
    ended.

    Start at the end of the trace and walk backwards in time (Jaeger's rule): within a span,
    the child that ends last (at or before the current point) is critical; the walk then
    continues from that child's start, picking the child that ended last before it, and so
    on; each picked child is walked the same way, recursively. Children are seen through
    their parent's window: one that outlives its parent counts as ending when the parent
    ends. Concurrent siblings that finished before the span that ended last are therefore
    not critical. Several roots (a running trace whose root span is not written yet) are
    walked like the children of one span covering the whole trace.

    One addition for work that is not a child of what waits for it: an agent run is a child
    of the publish that started it and outlives it, while ``Flock.run_until_idle`` waits
    for it. Such detached spans (that end after their parent) are not walked as their
    parent's children; they compete with the children of a span that has (attached)
    children of its own (a span without any is taken to be doing its own work, not
    waiting): the one that ended last before the current point is critical, whichever it
    is, and the walk goes on from its start.

    Example:
        >>> spans = [
        ...     ("root", None, 0, 10),
        ...     ("slow", "root", 1, 9),   # concurrent with "fast": it decides the end
        ...     ("fast", "root", 1, 3),
        ...     ("late", "root", 11, 12), # starts after its parent ended
        ... ]
        >>> sorted(critical_path(spans))
        ['root', 'slow']
        >>> spans = [
        ...     ("workflow", None, 0, 100),
        ...     ("publish", "workflow", 0, 2),
        ...     ("agent", "publish", 1, 90),     # started by the publish
        ...     ("run_until_idle", "workflow", 3, 99),  # waits for the agent
        ...     ("shutdown", "run_until_idle", 98, 99),
        ... ]
        >>> sorted(critical_path(spans))
        ['agent', 'publish', 'run_until_idle', 'shutdown', 'workflow']
    """
    if not rows:
        return set()
    roots, children = forest(rows)
    parent_of = {r[0]: r[1] for r in rows}
    parent_of.update((r[0], None) for r in roots)  # a parent cycle is cut at its root
    end_of = {r[0]: max(r[3], r[2]) for r in rows}
    detached = [
        r for r in rows if parent_of[r[0]] in end_of and max(r[3], r[2]) > end_of[parent_of[r[0]]]
    ]
    detached_ids = {r[0] for r in detached}
    by_end = sorted(detached, key=lambda r: max(r[3], r[2]))
    ends = [max(r[3], r[2]) for r in by_end]
    path: set[str] = set()

    def ancestors(span_id: str | None) -> set[str]:
        found: set[str] = set()
        while span_id is not None and span_id not in found:
            found.add(span_id)
            span_id = parent_of.get(span_id)
        return found

    def rooted(span_id: str) -> bool:
        """Whether the span's parents lead to a root (not round a parent cycle)."""
        seen: set[str] = set()
        while True:
            parent = parent_of.get(span_id)
            if parent is None or parent not in parent_of:
                return True
            if parent in seen:
                return False
            seen.add(parent)
            span_id = parent

    def waited_on(owner: str | None, lo: int, cursor: int) -> Row | None:
        """The detached span that ended last in ``(lo, cursor]``, not on the path, not
        ``owner`` or one of its ancestors, not in a parent cycle."""
        skip = ancestors(owner)
        i = bisect.bisect_right(ends, cursor)
        while i > 0 and ends[i - 1] > lo:
            i -= 1
            row = by_end[i]
            if row[0] not in path and row[0] not in skip and rooted(row[0]):
                return row
        return None

    # (the span whose children these are, the children, the span's window)
    work: list[tuple[str | None, list[Row], int, int]] = [
        (None, roots, min(r[2] for r in roots), max(max(r[3], r[2]) for r in roots))
    ]
    while work:
        owner, kids, lo, hi = work.pop()
        # A detached child is not waited for by its parent (see waited_on).
        kids = [kid for kid in kids if kid[0] not in detached_ids]
        clipped = [
            (kid, max(kid[2], lo), min(max(kid[3], kid[2]), hi))
            for kid in kids
            if kid[2] <= hi and kid[3] >= lo and kid[0] not in path
        ]
        # Latest end first; of two ending together the longer (earlier start) wins.
        clipped.sort(key=lambda c: (-c[2], c[1], c[0][0]))
        cursor = hi
        queue = iter(clipped)
        pending = next(queue, None)
        while cursor > lo:
            while pending is not None and (pending[2] > cursor or pending[0][0] in path):
                pending = next(queue, None)  # overlaps the point reached, or already walked
            other = waited_on(owner, lo, cursor) if owner is not None and kids else None
            if pending is not None and (other is None or pending[2] >= max(other[3], other[2])):
                kid, start, end = pending
                pending = next(queue, None)
            elif other is not None:  # walked in its own window; what it waited on, too
                kid, start, end = other, other[2], max(other[3], other[2])
            else:
                break
            path.add(kid[0])
            work.append((kid[0], children.get(kid[0], []), start, end))
            cursor = start
    path.update(r[0] for r in roots if r[0] in path or len(roots) == 1)
    return path
