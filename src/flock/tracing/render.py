"""Drawing a trace as a tree, exactly like the docs' "Trace Hierarchy Example"::

pizza_workflow (5319ms) ← ROOT
├─ Flock.publish (3ms)
│  └─ Agent.execute (5218ms)
└─ Flock.run_until_idle (5268ms)
   └─ Flock.shutdown (0.17ms)
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from rich.text import Text

from flock.tracing._attributes import flatten
from flock.tracing.query import SpanNode

__all__ = ["format_ms", "render_tree"]


def format_ms(ms: float) -> str:
    """``5319ms`` from one millisecond up, ``0.15ms`` below."""
    return f"{ms:.0f}ms" if ms >= 1 else f"{ms:.2f}ms"


def render_tree(
    roots: list[SpanNode], *, attributes: bool = False, depth: int | None = None
) -> Text:
    """The trace as Rich text (error spans in red); ``str()`` of it is the plain drawing.

    A root whose parent is not in the trace is marked ``(parent not recorded)``, one that is
    its own parent ``(its own parent)``, and the span where a parent cycle was cut (see
    :meth:`TraceStore.tree`) ``(parent cycle)``. Any depth of nesting is drawn (the walk is
    not recursive).
    """
    ids = {node.span_id for root in roots for _, node, _ in _walk([root], "", None)}
    text = Text()
    for i, root in enumerate(roots):
        if i:
            text.append("\n")
        if root.parent_id is None:
            label = " ← ROOT"
        elif root.parent_id == root.span_id:
            label = " ← (its own parent)"
        elif root.parent_id in ids:
            label = " ← (parent cycle)"
        else:
            label = " ← (parent not recorded)"
        _line(text, "", root, label)
        if attributes:
            for line in _attribute_lines(root):
                text.append(f"\n   {line}", style="dim")
        for line_prefix, node, child_prefix in _walk(root.children, "", depth, {id(root)}):
            text.append("\n")
            _line(text, line_prefix, node, "")
            if attributes:
                for line in _attribute_lines(node):
                    text.append(f"\n{child_prefix}   {line}", style="dim")
    return text


def _line(text: Text, prefix: str, node: SpanNode, suffix: str) -> None:
    style = "bold red" if node.status_code == "ERROR" else None
    text.append(prefix)
    text.append(f"{node.name} ({format_ms(node.duration_ms)}){suffix}", style=style)
    if node.status_code == "ERROR":
        text.append(" ✗", style=style)


def _walk(
    nodes: list[SpanNode], prefix: str, depth: int | None, seen: set[int] | None = None
) -> Iterator[tuple[str, SpanNode, str]]:
    """``(line prefix, node, prefix of its lines below)`` depth-first, down to ``depth``
    levels below ``nodes`` (which are level 1); iterative, so a chain of any length is
    drawn. A node met twice, or in ``seen`` (ids of nodes drawn already), is drawn once
    (hand-made nodes may loop)."""
    seen = set() if seen is None else seen
    # (siblings, index of the next one, their prefix, their level)
    stack: list[tuple[list[SpanNode], int, str, int]] = [(nodes, 0, prefix, 1)]
    while stack:
        siblings, i, pre, level = stack.pop()
        if i >= len(siblings) or (depth is not None and level > depth):
            continue
        node = siblings[i]
        stack.append((siblings, i + 1, pre, level))
        if id(node) in seen:
            continue
        seen.add(id(node))
        last = i == len(siblings) - 1
        child_prefix = pre + ("   " if last else "│  ")
        yield pre + ("└─ " if last else "├─ "), node, child_prefix
        stack.append((node.children, 0, child_prefix, level + 1))


def _attribute_lines(node: SpanNode) -> list[str]:
    return [
        f"{k} = {json.dumps(v, ensure_ascii=False)}"
        for k, v in sorted(flatten(node.attributes).items())
    ]
