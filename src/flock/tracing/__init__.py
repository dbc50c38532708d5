"""Tracing: workflow spans, the DuckDB trace file and OTLP export (see ``setup`` for the
environment variables). Only this package touches the OpenTelemetry SDK and DuckDB."""

from __future__ import annotations

from flock.tracing.setup import TracingSettings, configure
from flock.tracing.store import DEFAULT_DB_PATH, clear_traces
from flock.tracing.workflow import current_workflow

__all__ = ["DEFAULT_DB_PATH", "TracingSettings", "clear_traces", "configure", "current_workflow"]
