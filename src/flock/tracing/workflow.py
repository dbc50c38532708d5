"""Workflow traces: ``traced_run`` and ``FLOCK_AUTO_WORKFLOW_TRACE``.

A workflow span is a span named as the user chose, with ``flock.workflow=true`` and
``workflow.name``; it is stored in the OpenTelemetry context so every span started inside it
(by flock or any other library) gets the same two attributes from
:class:`WorkflowSpanProcessor` — which is what lets the documented DuckDB queries count all
spans of a workflow.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode, Tracer

from flock.exceptions import ConfigurationError

__all__ = ["WORKFLOW_KEY", "WorkflowSpanProcessor", "Workflows", "current_workflow"]

WORKFLOW_KEY = otel_context.create_key("flock.workflow")


def current_workflow(ctx: Context | None = None) -> str | None:
    """The name of the (outermost) workflow around ``ctx`` (default: the current context)."""
    value = otel_context.get_value(WORKFLOW_KEY, ctx)
    return value if isinstance(value, str) else None


class WorkflowSpanProcessor:
    """Copies the enclosing workflow's attributes onto every span started inside it.

    A duck-typed OpenTelemetry SDK ``SpanProcessor`` (this module imports only the API).
    """

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        name = current_workflow(parent_context)
        if name is None:
            return
        attributes = getattr(span, "attributes", None)  # an SDK span (the API type lacks it)
        if not (attributes and attributes.get("flock.workflow")):
            span.set_attribute("flock.workflow", True)
            span.set_attribute("workflow.name", name)

    def on_end(self, span: object) -> None:
        pass

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True

    def _on_ending(self, span: object) -> None:  # SDK ≥ 1.36 calls this when present
        pass


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(
            f"traced_run needs a non-empty workflow name, got {name!r}; "
            'e.g. flock.traced_run("pizza_workflow")'
        )
    return name


class Workflows:
    """Opens workflow spans on ``tracer`` and flushes the trace file when the outermost ends."""

    def __init__(
        self,
        tracer: Tracer | None,
        *,
        flush: Callable[[], Awaitable[object]] | None = None,
        request_flush: Callable[[], None] | None = None,
        auto: bool = False,
    ) -> None:
        self.tracer = tracer
        self._flush = flush
        self._request_flush = request_flush
        self.auto = auto
        self._auto_span: Span | None = None
        self._auto_token: object | None = None

    @asynccontextmanager
    async def workflow(self, name: str) -> AsyncIterator[Span]:
        _check_name(name)
        if self.tracer is None:
            yield INVALID_SPAN
            return
        outer = current_workflow()
        # A nested traced_run is a step of the workflow around it: its span and everything
        # inside carry the outermost workflow's name, so that the documented query (grouped
        # by trace and workflow name) counts all spans of the workflow in one row. The step
        # keeps its own name as the span's name and in ``workflow.step``.
        workflow = outer or name
        attributes: dict[str, str | bool] = {"flock.workflow": True, "workflow.name": workflow}
        if outer is not None:
            attributes["workflow.step"] = name
        span = self.tracer.start_span(name, attributes=attributes)
        token = otel_context.attach(
            otel_context.set_value(WORKFLOW_KEY, workflow, trace.set_span_in_context(span))
        )
        try:
            yield span
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        else:
            span.set_status(Status(StatusCode.OK))
        finally:
            otel_context.detach(token)
            span.end()
            if outer is None:
                await self.flush()

    async def flush(self) -> None:
        """Write queued spans to the trace file (the writer thread does; the loop waits)."""
        if self._flush is not None:
            await self._flush()

    def request_flush(self) -> None:
        if self._request_flush is not None:
            self._request_flush()

    # FLOCK_AUTO_WORKFLOW_TRACE ---------------------------------------------

    def auto_begin(self) -> None:
        """Open an implicit workflow at a top-level publish (when auto mode is on)."""
        if not self.auto or self.tracer is None or self._auto_span is not None:
            return
        if current_workflow() is not None or trace.get_current_span().get_span_context().is_valid:
            return
        name = auto_workflow_name()
        span = self.tracer.start_span(
            name, attributes={"flock.workflow": True, "workflow.name": name, "workflow.auto": True}
        )
        # Attached in the caller's context: `await flock.publish(...)` runs in the caller's
        # task, so the following publish/run_until_idle calls happen inside this span.
        self._auto_token = otel_context.attach(
            otel_context.set_value(WORKFLOW_KEY, name, trace.set_span_in_context(span))
        )
        self._auto_span = span

    async def auto_end(self, error: BaseException | None = None) -> None:
        """Close the implicit workflow after run_until_idle (recording ``error`` if any)."""
        span, token = self._auto_span, self._auto_token
        if span is None:
            return
        if trace.get_current_span() is not span:
            return  # run_until_idle called from elsewhere (another task); keep it open
        self._auto_span = self._auto_token = None
        otel_context.detach(token)  # type: ignore[arg-type]
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()
        await self.flush()


def auto_workflow_name() -> str:
    name = os.environ.get("FLOCK_WORKFLOW_NAME")
    if name:
        return name
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return f"{script}_workflow" if script and script != "-c" else "auto_workflow"
