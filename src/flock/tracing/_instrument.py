"""Cheap span helpers used at the framework's seams (API only; no SDK import).

When no SDK tracer provider is installed, :meth:`Instrument.span` returns a shared no-op
context manager without touching OpenTelemetry at all, so untraced runs pay nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager

from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind, Tracer

__all__ = ["NOOP_INSTRUMENT", "AttributeValue", "Instrument"]

AttributeValue = (
    str | bool | int | float | Sequence[str] | Sequence[bool] | Sequence[int] | Sequence[float]
)


class _NoopSpanContext(AbstractContextManager[Span]):
    __slots__ = ()

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NOOP = _NoopSpanContext()


class Instrument:
    """Starts flock's own spans on one tracer, or nothing when tracing is off."""

    __slots__ = ("enabled", "tracer")

    def __init__(self, tracer: Tracer | None) -> None:
        self.tracer = tracer
        self.enabled = tracer is not None

    def span(
        self,
        name: str,
        attributes: Mapping[str, AttributeValue] | None = None,
        *,
        links: Sequence[Link] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> AbstractContextManager[Span]:
        """A current span named ``name``; exceptions are recorded and re-raised."""
        if self.tracer is None:
            return _NOOP
        return self.tracer.start_as_current_span(
            name, attributes=attributes, links=links, kind=kind
        )


NOOP_INSTRUMENT = Instrument(None)
"""Starts no spans."""
