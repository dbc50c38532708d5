"""Artifacts: the immutable envelopes in which validated payloads live on the blackboard."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanContext
from pydantic import BaseModel

__all__ = ["EXTERNAL", "Artifact"]

EXTERNAL = "external"
"""``produced_by`` of artifacts published from outside any agent."""


_VERSION_4 = (0x4 << 76) | (0x8 << 60)  # the version and variant bits of a UUID4
_VERSION_MASK = ~((0xF << 76) | (0xC << 60))


def new_id() -> str:
    """A random (version 4) UUID string.

    Drawn from ``random`` rather than ``os.urandom``: ids need uniqueness, not secrecy, and
    urandom costs ~10 µs a call on some VMs. The ``random`` module reseeds itself in forked
    children, so worker processes do not repeat each other's ids. Formatted directly (not
    through ``uuid.UUID``, whose validation costs ~4 µs).
    """
    h = "%032x" % (random.getrandbits(128) & _VERSION_MASK | _VERSION_4)
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Artifact:
    """A validated payload on the blackboard, with where it came from.

    Attributes:
        type: the registered type name of ``payload`` (see :mod:`flock.registry`).
        payload: the validated Pydantic model.
        produced_by: the agent that published it, or ``"external"``.
        correlation_id: groups the artifacts of one workflow; outputs inherit it from inputs.
        tags: free labels given at publish time.
        span_context: the trace context of the span that published it, so consumers can be
            parented to it or linked to it (W3C ``traceparent`` via :attr:`traceparent`).
    """

    type: str
    payload: BaseModel
    produced_by: str = EXTERNAL
    correlation_id: str = field(default_factory=new_id)
    tags: frozenset[str] = frozenset()
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    span_context: SpanContext | None = None

    @property
    def traceparent(self) -> str | None:
        """The W3C ``traceparent`` of the publishing span, or ``None`` if untraced."""
        ctx = self.span_context
        if ctx is None or not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (for the dashboard, exports and logs)."""
        return {
            "id": self.id,
            "type": self.type,
            "payload": self.payload.model_dump(mode="json"),
            "produced_by": self.produced_by,
            "correlation_id": self.correlation_id,
            "tags": sorted(self.tags),
            "created_at": self.created_at.isoformat(),
            "traceparent": self.traceparent,
        }
