"""Artifacts: the frozen envelopes in which validated payloads live on the blackboard.

The envelope cannot change; the payload is the model instance as published, shared by every
consumer: treat it as read-only (or declare the model ``frozen=True``), since a consumer
that changes it changes what the others see.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from opentelemetry.trace import SpanContext, TraceFlags
from pydantic import BaseModel

from flock.visibility import PUBLIC, Visibility

__all__ = ["EXTERNAL", "Artifact"]

EXTERNAL = "external"
"""``produced_by`` of artifacts published from outside any agent."""


_VERSION_4 = (0x4 << 76) | (0x8 << 60)  # the version and variant bits of a UUID4
_VERSION_MASK = ~((0xF << 76) | (0xC << 60))


_ids = random.Random()  # seeded from os.urandom; the application's random.seed() leaves it alone
if hasattr(os, "register_at_fork"):  # forked workers must not repeat each other's ids
    os.register_at_fork(after_in_child=_ids.seed)


def new_id() -> str:
    """A random (version 4) UUID string.

    Drawn from a private ``random.Random`` rather than ``os.urandom``: ids need uniqueness,
    not secrecy, and urandom costs ~10 µs a call on some VMs. Private, so that an
    application calling ``random.seed()`` does not make ids repeat; reseeded in forked
    children. Formatted directly (not through ``uuid.UUID``, whose validation costs ~4 µs).
    """
    h = "%032x" % (_ids.getrandbits(128) & _VERSION_MASK | _VERSION_4)
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
        visibility: which agents may see it (see :mod:`flock.visibility`); public by default.
    """

    type: str
    payload: BaseModel
    produced_by: str = EXTERNAL
    correlation_id: str = field(default_factory=new_id)
    tags: frozenset[str] = frozenset()
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    span_context: SpanContext | None = None
    visibility: Visibility = PUBLIC

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
            "payload": _payload_dict(self.payload),
            "produced_by": self.produced_by,
            "correlation_id": self.correlation_id,
            "tags": sorted(self.tags),
            "created_at": self.created_at.isoformat(),
            "traceparent": self.traceparent,
            "visibility": self.visibility.to_json(),
        }


_TRACE_FLAGS: dict[int, TraceFlags] = {}


def shared_flags(context: SpanContext) -> SpanContext:
    """``context`` with one shared ``TraceFlags`` object per value (equal to it).

    The SDK makes a new ``TraceFlags`` (48 bytes) for every span; an artifact keeps its
    publishing span's context as long as it is stored, which for outputs (one span each)
    makes this a tenth of a stored artifact's size.
    """
    flags = context.trace_flags
    shared = _TRACE_FLAGS.setdefault(int(flags), flags)
    if shared is flags:
        return context
    return SpanContext(
        context.trace_id,
        context.span_id,
        context.is_remote,
        trace_flags=shared,
        trace_state=context.trace_state,
    )


def payload_json(payload: BaseModel) -> str:
    """The payload as JSON text for a span attribute or a log; a payload JSON cannot show as
    it is (bytes that are not UTF-8, say) is shown as its ``repr`` instead of failing."""
    try:
        return payload.model_dump_json()
    except ValueError:  # pydantic_core.PydanticSerializationError
        return json.dumps({"unserializable": repr(payload)})


def _payload_dict(payload: BaseModel) -> dict[str, Any]:
    try:
        return payload.model_dump(mode="json")
    except ValueError:
        return {"unserializable": repr(payload)}
