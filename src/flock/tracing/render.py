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
    """The trace as Rich text (error spans in red); ``str()`` of it is the plain drawing."""
    text = Text()
    for i, root in enumerate(roots):
        if i:
            text.append("\n")
        label = " ← ROOT" if root.parent_id is None else " ← (parent not recorded)"
        _line(text, "", root, label)
        if attributes:
            for line in _attribute_lines(root):
                text.append(f"\n   {line}", style="dim")
        for line_prefix, node, child_prefix in _walk(root.children, "", depth, 1):
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
    nodes: list[SpanNode], prefix: str, depth: int | None, level: int
) -> Iterator[tuple[str, SpanNode, str]]:
    if depth is not None and level > depth:
        return
    for i, node in enumerate(nodes):
        last = i == len(nodes) - 1
        child_prefix = prefix + ("   " if last else "│  ")
        yield prefix + ("└─ " if last else "├─ "), node, child_prefix
        yield from _walk(node.children, child_prefix, depth, level + 1)


def _attribute_lines(node: SpanNode) -> list[str]:
    return [
        f"{k} = {json.dumps(v, ensure_ascii=False)}"
        for k, v in sorted(flatten(node.attributes).items())
    ]
