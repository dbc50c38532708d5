"""Bad input to the dashboard's HTTP API, table-driven: request -> status code and a fragment of
the answer; afterwards nothing is stored, no agent ran, and no file was written.

(The WebSocket's foreign-Origin and token checks are in tests/dashboard/test_security.py:
httpx's ASGI transport has no WebSockets.)
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import TracerProvider

from flock import Flock
from flock.dashboard import create_app
from flock.testing import ScriptedEngine
from flock.tracing import configure
from tests.models import Idea, Pizza

UNKNOWN_TRACE = "0" * 32
PWNED = "/tmp/flock-dashboard-pwned"  # a file the SQL attempts would create


@dataclass
class Case:
    id: str
    method: str
    url: str
    status: int
    fragment: str
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    token: bool = False  # against an app that requires a token


CASES = [
    Case("malformed JSON", "POST", "/api/artifacts", 422, "JSON decode error", body=b"{'type': Idea"),
    Case("JSON that is not an object", "POST", "/api/artifacts", 422, "type", body=b"[1, 2]"),
    Case("body without a type", "POST", "/api/artifacts", 422, '"type"', body={"payload": {"topic": "x"}}),
    Case("unknown type", "POST", "/api/artifacts", 422, "unknown type 'NoSuchType'", body={"type": "NoSuchType", "payload": {}}),
    Case("invalid payload", "POST", "/api/artifacts", 422, '"topic"', body={"type": "Idea", "payload": {"topic": ""}}),
    Case("payload of the wrong type", "POST", "/api/artifacts", 422, "payload", body={"type": "Idea", "payload": "spicy"}),
    Case("huge page size", "GET", "/api/traces?limit=100000000", 422, "less than or equal to 200"),
    Case("negative offset", "GET", "/api/traces?offset=-1", 422, "greater than or equal to 0"),
    Case("huge offset", "GET", "/api/traces?offset=99999999999", 422, "less than or equal to"),
    Case("non-numeric page size", "GET", "/api/traces?limit=ten", 422, "valid integer"),
    Case("huge timeline page", "GET", f"/api/traces/{UNKNOWN_TRACE}?limit=10000001", 422, "less than or equal to 10000"),
    Case("unknown trace id", "GET", f"/api/traces/{UNKNOWN_TRACE}", 404, "trace"),
    Case("malformed trace id", "GET", "/api/traces/not-a-trace", 422, "32"),
    Case("unknown span id", "GET", f"/api/traces/{UNKNOWN_TRACE}/spans/{'0' * 16}", 404, ""),
    Case("path traversal in a trace id", "GET", "/api/traces/..%2F..%2F..%2Fetc%2Fpasswd", 404, ""),
    Case("path traversal in static files", "GET", "/static/..%2F..%2Fapp.py", 404, ""),
    Case("dotted path traversal in static files", "GET", "/static/../../../../etc/passwd", 404, ""),
    Case("SQL in the free-text search", "GET", "/api/traces?q=%27%20OR%201%3D1%20--", 200, '"total":0'),
    Case("SQL COPY in a name filter", "GET", f"/api/traces?name=x%27)%3B%20COPY%20(SELECT%201)%20TO%20%27{PWNED}%27%20--", 200, '"total":0'),
    Case("file read in a workflow filter", "GET", "/api/traces?workflow=%27%20UNION%20SELECT%20*%20FROM%20read_text(%27%2Fetc%2Fpasswd%27)%20--", 200, '"total":0'),
    Case("file read in stats", "GET", "/api/stats?name=read_csv_auto(%27%2Fetc%2Fpasswd%27)", 200, "{"),
    Case("too long a search", "GET", "/api/traces?q=" + "x" * 1000, 422, "at most 200 characters"),
    Case("bad time", "GET", "/api/traces?since=yesterday%27%3B%20DROP%20TABLE%20spans", 422, "since"),
    Case("foreign Host without a token", "GET", "/api/traces", 403, "only answers requests to localhost", headers={"host": "evil.example.com"}),
    Case("foreign Origin on a write", "POST", "/api/artifacts", 403, "cross-origin request", body={"type": "Idea", "payload": {"topic": "x"}}, headers={"origin": "http://evil.example.com"}),
    Case("missing token", "GET", "/api/traces", 401, "missing or wrong token", token=True, headers={"host": "10.0.0.5:8344"}),
    Case("wrong token", "GET", "/api/traces?token=guess", 401, "missing or wrong token", token=True, headers={"host": "10.0.0.5:8344"}),
]  # fmt: skip


@dataclass
class Live:
    flock: Flock
    engine: ScriptedEngine
    db: Path


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    db = tmp_path / "traces.duckdb"
    provider = TracerProvider()
    settings = configure(provider, trace_file=True, db_path=str(db))
    assert settings is not None and settings.file is not None
    flock = Flock(tracer_provider=provider)
    engine = ScriptedEngine(lambda idea: Pizza(name=idea.topic))
    flock.agent("chef").consumes(Idea).publishes(Pizza).with_engines(engine)
    async with flock.traced_run("existing"):
        pass  # one trace in the file, no artifact
    assert settings.file.force_flush()
    yield Live(flock, engine, db)
    provider.shutdown()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_dashboard_bad_input(live: Live, case: Case) -> None:
    app = create_app(live.db, flock=live.flock, token="s3cret" if case.token else None)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1:8344"
    ) as client:
        kwargs: dict[str, Any] = {"headers": case.headers}
        if isinstance(case.body, bytes):
            kwargs["content"] = case.body
            kwargs["headers"] = {"content-type": "application/json", **case.headers}
        elif case.body is not None:
            kwargs["json"] = case.body
        response = await client.request(case.method, case.url, **kwargs)
        assert response.status_code == case.status, response.text
        assert case.fragment in response.text
        assert "Traceback" not in response.text
        await live.flock.run_until_idle(timeout=10)
        assert await live.flock.store.query() == []
        assert live.engine.calls == []
        assert not os.path.exists(PWNED)  # noqa: ASYNC240 - one stat in a test
        # the trace file is intact
        ok = await client.get("/api/traces", headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["total"] == 1


def test_there_are_enough_dashboard_cases() -> None:
    assert len(CASES) >= 20
