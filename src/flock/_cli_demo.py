"""``flock demo``'s run: the pizza workflow, and which trace (if any) it recorded where.

The demo draws the trace of the run it just did (the trace id of its ``pizza_workflow``
traced_run), never an older one from the file. When tracing is off, it says which setting
turned it off.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flock._demo import Pizza
    from flock.tracing.setup import TracingSettings

__all__ = ["DemoTrace", "run_traced_demo"]

WORKFLOW = "pizza_workflow"


@dataclass(frozen=True, slots=True)
class DemoTrace:
    """Where the demo's trace went: ``file`` and ``trace_id``, or ``why`` there is none
    (``failed``: tracing was on but the trace file could not be used)."""

    file: Path | None = None
    trace_id: str | None = None
    why: str = ""
    failed: bool = False


def run_traced_demo(topic: str) -> tuple[list[Pizza], DemoTrace]:
    """Run the pizza workflow (tracing set up from the environment, as any Flock does)."""
    from flock._demo import run_demo
    from flock.tracing import configure

    settings = configure()  # what the demo's Flock gets: idempotent
    pizzas, trace_id = asyncio.run(run_demo(topic))
    off = _no_trace(settings)
    if off is not None:
        return pizzas, off
    assert settings is not None and settings.file is not None
    if trace_id is None:  # pragma: no cover - a traced run always has a trace id
        return pizzas, DemoTrace(why=f"the run opened no {WORKFLOW!r} trace", failed=True)
    return pizzas, DemoTrace(file=settings.file.path, trace_id=trace_id)


def _no_trace(settings: TracingSettings | None) -> DemoTrace | None:
    """Why this process writes no trace file (``None``: it does)."""
    from flock.tracing.setup import env_flag

    def setting(name: str) -> str:
        return f"{name}={os.environ.get(name, '')}"

    if settings is None:
        if env_flag("OTEL_SDK_DISABLED", False):
            return DemoTrace(why=f"{setting('OTEL_SDK_DISABLED')} turns all tracing off")
        if not env_flag("FLOCK_AUTO_TRACE", True):
            return DemoTrace(
                why=f"{setting('FLOCK_AUTO_TRACE')} turns tracing off "
                "(unset it, or set it to true, to trace the demo)"
            )
        return DemoTrace(why="the installed tracer provider is not OpenTelemetry's SDK")
    if settings.file is not None:
        return None
    if not env_flag("FLOCK_TRACE_FILE", True):
        return DemoTrace(
            why=f"{setting('FLOCK_TRACE_FILE')} turns the trace file off "
            "(spans go only to an OTLP exporter, if one is set)"
        )
    return DemoTrace(why="the trace file could not be used (see the warning above)", failed=True)
