"""The web dashboard: traces, timeline, statistics, correlations and the live blackboard.

Served by :meth:`flock.orchestrator.Flock.serve` (with a live Flock) or ``flock dashboard
--db PATH`` (a read-only viewer of a trace file). Unless read-only it also receives spans
over OTLP/HTTP at ``POST /v1/traces`` into its trace file. Needs the ``dashboard`` extra
(FastAPI, uvicorn).

Example:
    >>> from flock.dashboard import create_app
    >>> app = create_app(".flock/traces.duckdb", token="s3cret")
    >>> app.title
    'flock dashboard'
"""

from __future__ import annotations

from flock.dashboard.app import create_app
from flock.dashboard.server import dashboard_url, serve

__all__ = ["create_app", "dashboard_url", "serve"]
