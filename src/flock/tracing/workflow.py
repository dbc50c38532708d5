"""Workflow traces: ``traced_run`` and ``FLOCK_AUTO_WORKFLOW_TRACE``.

A workflow span is a span named as the user chose, with ``flock.workflow=true`` and
``workflow.name``; it is stored in the OpenTelemetry context so every span started inside it
(by flock or any other library) gets the same two attributes from
:class:`WorkflowSpanProcessor` — which is what lets the documented DuckDB queries count all
spans of a workflow.
"""

from __future__ import annotations

import atexit
import os
import sys
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar, Token
from pathlib import Path

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import INVALID_SPAN, Span, Status, StatusCode, Tracer

from flock.exceptions import ConfigurationError
from flock.tracing._instrument import record_error

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
        self._auto_context: Context = Context()
        self._auto_token: object | None = None
        self._owner_token: Token[Span | None] | None = None
        self._ended: weakref.WeakSet[Span] = weakref.WeakSet()  # implicit workflows closed
        self._exit_hook = False

    @asynccontextmanager
    async def workflow(self, name: str) -> AsyncIterator[Span]:
        _check_name(name)
        if self.tracer is None:
            yield INVALID_SPAN
            return
        # An implicit workflow that ended elsewhere may still be current here: not around.
        stale = trace.get_current_span() in self._ended
        outer = None if stale else current_workflow()
        # A nested traced_run is a step of the workflow around it: its span and everything
        # inside carry the outermost workflow's name, so that the documented query (grouped
        # by trace and workflow name) counts all spans of the workflow in one row. The step
        # keeps its own name as the span's name and in ``workflow.step``.
        workflow = outer or name
        attributes: dict[str, str | bool] = {"flock.workflow": True, "workflow.name": workflow}
        if outer is not None:
            attributes["workflow.step"] = name
        span = self.tracer.start_span(
            name, context=_root_context() if stale else None, attributes=attributes
        )
        token = otel_context.attach(
            otel_context.set_value(WORKFLOW_KEY, workflow, trace.set_span_in_context(span))
        )
        try:
            yield span
        except BaseException as exc:
            record_error(span, exc)
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
    #
    # The implicit workflow opens at a top-level publish and closes when a top-level
    # run_until_idle returns. "Top-level" means no span around the call, or only an implicit
    # workflow that has already ended. The opening call attaches the workflow's context. A
    # top-level call made elsewhere joins the open workflow for its duration: publishes
    # gathered in tasks, or publish and run_until_idle in separate asyncio.run calls. Those
    # contexts never saw the attach.

    @contextmanager
    def auto_scope(self, *, begin: bool) -> Iterator[None]:
        """Run a Flock call inside the implicit workflow: open one first (``begin``, a
        publish) if none is open, or join the open one from a top-level call made in another
        context; nothing when auto mode is off or the call is inside a span already."""
        if not self.auto or self.tracer is None or not self._top_level():
            yield
            return
        if self._auto_span is None:
            if begin:
                self._auto_begin(self.tracer)
            yield
            return
        token = otel_context.attach(self._auto_context)
        joined = _AUTO_JOINED.set(self._auto_span)
        try:
            yield
        finally:
            _AUTO_JOINED.reset(joined)
            otel_context.detach(token)

    def _top_level(self) -> bool:
        """No span around the current context, or only an implicit workflow that ended."""
        current = trace.get_current_span()
        return not current.get_span_context().is_valid or current in self._ended

    def _auto_begin(self, tracer: Tracer) -> None:
        name = auto_workflow_name()
        # Started as a root: the current context may hold an ended implicit workflow.
        span = tracer.start_span(
            name,
            context=_root_context(),
            attributes={"flock.workflow": True, "workflow.name": name, "workflow.auto": True},
        )
        self._auto_context = otel_context.set_value(
            WORKFLOW_KEY, name, trace.set_span_in_context(span)
        )
        # Attached in the caller's context: `await flock.publish(...)` runs in the caller's
        # task, so the calls that follow in that task happen inside this span.
        self._auto_token = otel_context.attach(self._auto_context)
        self._owner_token = _AUTO_OWNER.set(span)
        self._auto_span = span
        if not self._exit_hook:
            self._exit_hook = True
            ref = weakref.ref(self)
            atexit.register(_end_at_exit, ref)

    async def auto_end(self, error: BaseException | None = None) -> None:
        """Close the implicit workflow as a top-level run_until_idle returns (recording
        ``error`` if any), in the context that opened it or in one that joined it. A
        run_until_idle inside another span, or in a task the opening context started (which
        goes on inside the workflow), leaves it open."""
        span = self._auto_span
        if span is None or trace.get_current_span() is not span:
            return
        if _AUTO_JOINED.get() is not span:
            try:
                _AUTO_OWNER.reset(self._owner_token)  # type: ignore[arg-type]
            except ValueError:
                return  # a copy of the opening context (a task it started)
            otel_context.detach(self._auto_token)  # type: ignore[arg-type]
        if error is not None:
            record_error(span, error)
        self._close_auto()
        await self.flush()

    def _close_auto(self) -> None:
        """End the implicit workflow. A context that still holds it (the opening one, when
        another closed it) treats it as no span (see _top_level)."""
        span = self._auto_span
        if span is None:
            return
        self._auto_span = self._auto_token = self._owner_token = None
        self._ended.add(span)
        span.end()


_AUTO_OWNER: ContextVar[Span | None] = ContextVar("flock_auto_workflow_owner", default=None)
"""Set in the context that opened an implicit workflow: resetting it succeeds only there,
which tells whether the workflow's context may be detached here."""
_AUTO_JOINED: ContextVar[Span | None] = ContextVar("flock_auto_workflow_joined", default=None)
"""Set while a top-level call of another context runs inside the implicit workflow (see
Workflows.auto_scope)."""


def _root_context() -> Context:
    """The current context without its span: a span started in it is a root."""
    return trace.set_span_in_context(INVALID_SPAN)


def _end_at_exit(ref: weakref.ref[Workflows]) -> None:
    """End an implicit workflow still open as the interpreter exits (a script that published
    without run_until_idle), so that its spans get their root. Registered after the trace
    writer's own exit hook, so it runs before it."""
    workflows = ref()
    if workflows is not None and workflows._auto_span is not None:
        workflows._close_auto()


def auto_workflow_name() -> str:
    name = os.environ.get("FLOCK_WORKFLOW_NAME")
    if name:
        return name
    script = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return f"{script}_workflow" if script and script != "-c" else "auto_workflow"
