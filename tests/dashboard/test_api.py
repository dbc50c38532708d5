"""The dashboard's JSON API, in process (httpx.ASGITransport)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from flock.dashboard import create_app
from tests.dashboard._support import Traced
from tests.dashboard.conftest import client_for


async def trace_id_of(client: httpx.AsyncClient, workflow: str) -> str:
    page = (await client.get("/api/traces", params={"workflow": workflow})).json()
    assert page["total"] >= 1
    return str(page["items"][0]["trace_id"])


async def test_trace_list_newest_first_with_filters(viewer: httpx.AsyncClient) -> None:
    page = (await viewer.get("/api/traces")).json()
    assert [t["name"] for t in page["items"]] == ["baking_workflow", "pizza_workflow"]
    assert page["total"] == 2 and page["limit"] == 50 and page["offset"] == 0
    pizza = page["items"][1]
    assert pizza["errors"] == 0 and pizza["span_count"] == 8 and not pizza["in_progress"]
    assert page["items"][0]["errors"] >= 2  # the agent run, its engine call, the workflow

    async def names(**params: object) -> list[str]:
        r = await viewer.get("/api/traces", params=params)
        assert r.status_code == 200, r.text
        return [t["name"] for t in r.json()["items"]]

    assert await names(errors="true") == ["baking_workflow"]
    assert await names(workflow="pizza_workflow") == ["pizza_workflow"]
    assert await names(name="PIZZA") == ["pizza_workflow"]
    assert await names(q="oven is on fire") == ["baking_workflow"]  # the exception message
    assert await names(q="pizza_master") == ["pizza_workflow"]  # an attribute value
    assert await names(q=pizza["trace_id"][:10]) == ["pizza_workflow"]  # a trace id prefix
    assert await names(min_duration_ms=10**9) == []
    assert len(await names(since="1h")) == 2
    assert await names(until="2000-01-01T00:00") == []
    assert len(await names(since="2000-01-01T00:00Z", until=str(2**62))) == 2


async def test_free_text_is_text_not_sql(viewer: httpx.AsyncClient) -> None:
    for attempt in (
        "'; DROP TABLE spans; --",
        "x' OR 1=1 --",
        "read_csv('/etc/passwd')",
        "%' UNION SELECT read_text('/etc/passwd') --",
    ):
        r = await viewer.get("/api/traces", params={"q": attempt})
        assert r.status_code == 200 and r.json()["items"] == []
    assert (await viewer.get("/api/traces")).json()["total"] == 2


async def test_pagination_is_bounded(viewer: httpx.AsyncClient) -> None:
    first = (await viewer.get("/api/traces", params={"limit": 1})).json()
    second = (await viewer.get("/api/traces", params={"limit": 1, "offset": 1})).json()
    assert [t["name"] for t in first["items"] + second["items"]] == [
        "baking_workflow",
        "pizza_workflow",
    ]
    assert first["total"] == second["total"] == 2
    past = (await viewer.get("/api/traces", params={"offset": 5})).json()
    assert past["items"] == [] and past["total"] == 2
    for params in (
        {"limit": 1_000_000},
        {"limit": 0},
        {"limit": -1},
        {"offset": -1},
        {"limit": "many"},
        {"offset": 10**12},
        {"min_duration_ms": -1},
        {"since": "yesterday-ish"},
    ):
        r = await viewer.get("/api/traces", params=params)
        assert r.status_code == 422, params
    trace_id = await trace_id_of(viewer, "pizza_workflow")
    assert (
        await viewer.get(f"/api/traces/{trace_id}", params={"limit": 10_001})
    ).status_code == 422
    for path in ("/api/correlations", "/api/artifacts"):
        assert (await viewer.get(path, params={"limit": 201})).status_code == 422
    assert (await viewer.get("/api/stats", params={"limit": 10**6})).status_code == 422


async def test_workflow_names(viewer: httpx.AsyncClient) -> None:
    names = (await viewer.get("/api/traces/names")).json()
    assert sorted((n["name"], n["count"]) for n in names) == [
        ("baking_workflow", 1),
        ("pizza_workflow", 1),
    ]


async def test_timeline_is_the_seed_hierarchy(viewer: httpx.AsyncClient) -> None:
    trace_id = await trace_id_of(viewer, "pizza_workflow")
    t = (await viewer.get(f"/api/traces/{trace_id}")).json()
    assert t["name"] == "pizza_workflow" and t["span_count"] == 8 and t["errors"] == 0
    rows = [(s["depth"], s["name"]) for s in t["spans"]]
    assert rows == [
        (0, "pizza_workflow"),
        (1, "Flock.publish"),
        (2, "Agent.execute"),
        (3, "OutputUtilityComponent.on_initialize"),
        (3, "FunctionEngine.evaluate"),
        (3, "OutputUtilityComponent.on_post_evaluate"),
        (1, "Flock.run_until_idle"),
        (2, "Flock.shutdown"),
    ]
    by_name = {s["name"]: s for s in t["spans"]}
    assert by_name["Agent.execute"]["parent_id"] == by_name["Flock.publish"]["span_id"]
    assert by_name["pizza_workflow"]["children"] == 2
    assert by_name["pizza_workflow"]["critical"] and by_name["Flock.run_until_idle"]["critical"]
    assert all(t["start_time"] <= s["start_time"] <= s["end_time"] for s in t["spans"])
    page = (await viewer.get(f"/api/traces/{trace_id}", params={"limit": 3, "offset": 2})).json()
    assert [s["name"] for s in page["spans"]] == [r[1] for r in rows[2:5]]
    assert page["span_count"] == 8 and page["offset"] == 2


async def test_unknown_and_malformed_ids(viewer: httpx.AsyncClient) -> None:
    missing = "0" * 32
    r = await viewer.get(f"/api/traces/{missing}")
    assert r.status_code == 404 and missing in r.json()["detail"]
    trace_id = await trace_id_of(viewer, "pizza_workflow")
    assert (await viewer.get(f"/api/traces/{trace_id}/spans/{'0' * 16}")).status_code == 404
    assert (await viewer.get("/api/traces/not-a-trace-id")).status_code == 422
    assert (await viewer.get(f"/api/traces/{trace_id}/spans/xyz")).status_code == 422
    assert (await viewer.get("/api/correlations/no-such-correlation")).status_code == 404


async def test_span_detail_has_attributes_events_and_links(viewer: httpx.AsyncClient) -> None:
    trace_id = await trace_id_of(viewer, "pizza_workflow")
    spans = (await viewer.get(f"/api/traces/{trace_id}")).json()["spans"]
    execute = next(s for s in spans if s["name"] == "Agent.execute")
    d = (await viewer.get(f"/api/traces/{trace_id}/spans/{execute['span_id']}")).json()
    assert d["attributes"]["workflow"]["name"] == "pizza_workflow"
    assert d["attributes"]["flock"]["agent"]["name"] == "pizza_master"
    assert d["status_code"] != "ERROR" and d["events"] == []
    assert isinstance(d["links"], list) and isinstance(d["resource"], dict)

    failing = await trace_id_of(viewer, "baking_workflow")
    spans = (await viewer.get(f"/api/traces/{failing}")).json()["spans"]
    broken = next(s for s in spans if s["name"] == "Agent.execute")
    assert broken["status_code"] == "ERROR"
    d = (await viewer.get(f"/api/traces/{failing}/spans/{broken['span_id']}")).json()
    (event,) = [e for e in d["events"] if e["name"] == "exception"]
    exc = event["attributes"]["exception"]
    assert exc["type"] == "RuntimeError" and exc["message"] == "the oven is on fire"
    assert "Traceback" in exc["stacktrace"] and "burn" in exc["stacktrace"]


async def test_statistics_per_workflow_and_span(viewer: httpx.AsyncClient) -> None:
    s = (await viewer.get("/api/stats")).json()
    assert s["by"] == "workflow" and s["bucket_ns"] > 0
    rows = {r["name"]: r for r in s["rows"]}
    assert set(rows) == {"pizza_workflow", "baking_workflow"}
    assert rows["baking_workflow"]["error_rate"] == 1.0 and rows["pizza_workflow"]["errors"] == 0
    pizza = rows["pizza_workflow"]
    assert pizza["count"] == 1 and 0 < pizza["p50_ms"] <= pizza["p95_ms"] <= pizza["p99_ms"]
    assert sum(p["count"] for p in pizza["series"]) == 1
    spans = {r["name"]: r for r in (await viewer.get("/api/stats?by=span")).json()["rows"]}
    assert spans["Agent.execute"]["count"] == 2 and spans["Agent.execute"]["error_rate"] == 0.5
    assert spans["Flock.publish"]["errors"] == 0
    only = (await viewer.get("/api/stats", params={"by": "span", "name": "publish"})).json()
    assert [r["name"] for r in only["rows"]] == ["Flock.publish"]
    assert (await viewer.get("/api/stats", params={"by": "service"})).status_code == 422


async def test_correlations_group_runs_and_artifacts(
    viewer: httpx.AsyncClient, live: httpx.AsyncClient
) -> None:
    page = (await viewer.get("/api/correlations")).json()
    assert page["total"] == 2
    agents = sorted(a for c in page["items"] for a in c["agents"])
    assert agents == ["oven", "pizza_master"]
    pizza = next(c for c in page["items"] if c["agents"] == ["pizza_master"])
    assert pizza["runs"] == 1 and pizza["errors"] == 0 and pizza["artifacts"] is None
    trace_id = await trace_id_of(viewer, "pizza_workflow")
    assert pizza["trace_ids"] == [trace_id]
    by_trace = (await viewer.get("/api/correlations", params={"trace_id": trace_id})).json()
    assert [c["correlation_id"] for c in by_trace["items"]] == [pizza["correlation_id"]]

    detail = (await live.get(f"/api/correlations/{pizza['correlation_id']}")).json()
    assert [t["name"] for t in detail["traces"]] == ["pizza_workflow"]
    assert sorted(a["type"] for a in detail["artifacts"]) == ["Pizza", "PizzaIdea"]
    assert detail["correlation"]["artifacts"] == 2


async def test_blackboard_types_and_artifacts(live: httpx.AsyncClient) -> None:
    bb = (await live.get("/api/blackboard")).json()
    agents = {a["name"]: a for a in bb["agents"]}
    assert agents["pizza_master"]["consumes"] == ["PizzaIdea"]
    assert agents["pizza_master"]["publishes"] == ["Pizza"]
    assert agents["pizza_master"]["description"] == "Invents a pizza from an idea"
    assert {"Order", "Pizza", "PizzaIdea"} <= set(bb["types"])
    types = {t["name"]: t["json_schema"] for t in (await live.get("/api/types")).json()}
    assert types["Order"]["required"] == ["dish", "quantity"]
    assert types["Order"]["properties"]["quantity"]["maximum"] == 20
    arts = (await live.get("/api/artifacts", params={"type": "Pizza"})).json()
    assert arts["items"][0]["payload"]["name"].endswith("Pizza") and arts["total"] >= 1
    blank = await live.get("/api/artifacts", params={"type": "  "})
    assert blank.status_code == 422 and "query(type=) takes" in blank.json()["detail"]
    unknown = await live.get("/api/artifacts", params={"type": "other_app.Invoice"})
    assert unknown.status_code == 200 and unknown.json()["total"] == 0


async def test_publish_validates_and_runs_agents(traced: Traced) -> None:
    async with client_for(create_app(traced.db, flock=traced.flock)) as client:
        r = await client.post(
            "/api/artifacts",
            json={"type": "Order", "payload": {"dish": "x", "quantity": 99, "extras": "no"}},
        )
        assert r.status_code == 422
        errors = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
        assert set(errors) == {
            ("body", "payload", "dish"),
            ("body", "payload", "quantity"),
            ("body", "payload", "extras"),
        }
        assert "at least 2 characters" in errors[("body", "payload", "dish")]
        r = await client.post("/api/artifacts", json={"type": "Nope", "payload": {}})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "type"]
        r = await client.post(
            "/api/artifacts",
            content=b'{"type": "Order", "payload": {',
            headers={"content-type": "application/json"},
        )
        assert r.status_code == 422
        assert (await client.post("/api/artifacts", json={"payload": {}})).status_code == 422

        r = await client.post(
            "/api/artifacts",
            json={
                "type": "Order",
                "payload": {"dish": "margherita", "quantity": 2, "extras": ["basil"]},
                "correlation_id": "order-1",
            },
        )
        assert r.status_code == 201, r.text
        assert r.json()["type"] == "Order" and r.json()["correlation_id"] == "order-1"
        await traced.flock.run_until_idle()
        made = (await client.get("/api/artifacts", params={"correlation_id": "order-1"})).json()
        assert [a["type"] for a in made["items"]] == ["Pizza", "Order"]
        assert made["items"][0]["payload"]["name"] == "margherita"
        assert made["items"][0]["produced_by"] == "kitchen"


async def test_read_only_and_no_flock(viewer: httpx.AsyncClient, traced: Traced) -> None:
    assert (await viewer.get("/api/info")).json()["read_only"] is True
    for path in ("/api/blackboard", "/api/types", "/api/artifacts"):
        assert (await viewer.get(path)).status_code == 404
    r = await viewer.post("/api/artifacts", json={"type": "Order", "payload": {}})
    assert r.status_code == 403
    assert (await viewer.post("/api/traces/clear", json={"confirm": True})).status_code == 403
    async with client_for(create_app(traced.db, flock=traced.flock, read_only=True)) as client:
        r = await client.post("/api/artifacts", json={"type": "Order", "payload": {}})
        assert r.status_code == 403


async def test_missing_file_is_empty_not_an_error(empty_db: Path) -> None:
    async with client_for(create_app(empty_db)) as client:
        assert (await client.get("/api/traces")).json() == {
            "items": [],
            "total": 0,
            "limit": 50,
            "offset": 0,
        }
        assert (await client.get("/api/stats")).json()["rows"] == []
        assert (await client.get("/api/correlations")).json()["items"] == []
        assert (await client.get("/api/traces/names")).json() == []
        assert (await client.get("/api/info")).json()["spans"] == 0
        assert (await client.get(f"/api/traces/{'a' * 32}")).status_code == 404


async def test_clear_needs_confirmation(tmp_path: Path) -> None:
    t = Traced(tmp_path / "clear.duckdb")
    try:
        await t.pizza_workflow()
        t.flush()
        async with client_for(create_app(t.db, flock=t.flock)) as client:
            assert (await client.post("/api/traces/clear", json={})).status_code == 422
            r = await client.post("/api/traces/clear", json={"confirm": False})
            assert r.status_code == 422
            assert (await client.get("/api/traces")).json()["total"] == 1
            # Retention: only traces that ended before the given time.
            r = await client.post("/api/traces/clear", json={"confirm": True, "older_than": "1d"})
            assert r.json() == {"success": True, "deleted_count": 0, "error": None}
            r = await client.post(
                "/api/traces/clear", json={"confirm": True, "older_than": "someday"}
            )
            assert r.status_code == 422 and "older_than" in r.text and "not a time" in r.text
            assert (await client.get("/api/traces")).json()["total"] == 1
            r = await client.post(
                "/api/traces/clear", json={"confirm": True, "older_than": "2200-01-01T00:00Z"}
            )
            assert r.json() == {"success": True, "deleted_count": 8, "error": None}
            assert (await client.get("/api/traces")).json()["total"] == 0
            await t.pizza_workflow()
            t.flush()
            r = await client.post("/api/traces/clear", json={"confirm": True})
            assert r.json() == {"success": True, "deleted_count": 8, "error": None}
            assert (await client.get("/api/traces")).json()["total"] == 0
            # Tracing goes on into the cleared file.
            await t.pizza_workflow()
            t.flush()
            assert (await client.get("/api/traces")).json()["total"] == 1
    finally:
        t.close()


async def test_reads_while_this_process_writes(tmp_path: Path) -> None:
    """Reads pause this process's writer: no lock errors, and no span is lost."""
    t = Traced(tmp_path / "busy.duckdb")
    t.writer.flush_interval = 0.01
    try:
        async with client_for(create_app(t.db, flock=t.flock)) as client:
            for i in range(15):
                await t.pizza_workflow(f"topic {i}")
                t.writer.request_flush()
                r = await client.get("/api/traces", params={"limit": 5})
                assert r.status_code == 200, r.text
                assert (await client.get("/api/stats")).status_code == 200
            t.flush()
            page = (await client.get("/api/traces")).json()
            assert page["total"] == 15
            assert {x["span_count"] for x in page["items"]} == {8}
    finally:
        t.close()


async def test_openapi_documents_every_route(viewer: httpx.AsyncClient) -> None:
    doc = (await viewer.get("/api/openapi.json")).json()
    assert set(doc["paths"]) == {
        "/api/traces",
        "/api/traces/names",
        "/api/traces/{trace_id}",
        "/api/traces/{trace_id}/spans/{span_id}",
        "/api/stats",
        "/api/correlations",
        "/api/correlations/{correlation_id}",
        "/api/traces/clear",
        "/api/blackboard",
        "/api/types",
        "/api/artifacts",
        "/api/info",
        "/api/health",
        "/v1/traces",
    }
    assert set(doc["paths"]["/v1/traces"]["post"]["requestBody"]["content"]) == {
        "application/x-protobuf",
        "application/json",
    }
    assert doc["paths"]["/api/traces"]["get"]["parameters"][0]["schema"]["maximum"] == 200


async def test_ui_and_static_files(viewer: httpx.AsyncClient) -> None:
    r = await viewer.get("/")
    assert r.status_code == 200 and "/static/js/main.js" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for asset in ("/static/app.css", "/static/js/main.js", "/static/js/timeline.js"):
        r = await viewer.get(asset)
        assert r.status_code == 200 and len(r.content) > 500
    assert "javascript" in (await viewer.get("/static/js/api.js")).headers["content-type"]
    assert "//cdn" not in (await viewer.get("/")).text


@pytest.mark.parametrize(
    "raw_path",
    [
        b"/static/../../etc/passwd",
        b"/static/../../../../../../etc/passwd",
        b"/static/%2e%2e/%2e%2e/etc/passwd",
        b"/static/..%2f..%2f..%2fetc%2fpasswd",
        b"/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        b"/static/....//....//etc/passwd",
        b"/static/%252e%252e/%252e%252e/etc/passwd",
        b"/static//etc/passwd",
        b"/static/js/../../_security.py",
        b"/static/js/..%2f..%2f_security.py",
    ],
)
async def test_static_path_traversal_fails(raw_path: bytes, empty_db: Path) -> None:
    """Raw ASGI requests (an HTTP client would normalise the dots away first)."""
    from urllib.parse import unquote

    app = create_app(empty_db)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode()),
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8344")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8344),
    }
    await app(scope, receive, send)
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")  # type: ignore[misc]
    assert status in (400, 404), (raw_path, status)
    assert b"root:" not in body and b"SecurityMiddleware" not in body


async def test_health_is_ok_until_the_trace_writer_cannot_write(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "traces"
    t = Traced(folder / "health.duckdb")
    try:
        async with client_for(create_app(t.db, flock=t.flock)) as client:
            await t.pizza_workflow()
            t.flush()
            r = await client.get("/api/health")
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["status"], body["problems"]) == ("ok", [])
            (writer,) = body["writers"]
            assert writer["written"] == 8 and writer["dropped"] == 0  # the workflow's spans
            assert writer["last_error"] is None
            shutil.rmtree(folder)
            folder.write_text("the trace folder is now a file: no write can succeed")
            await t.pizza_workflow()  # its exit waits for a write that fails
            r = await client.get("/api/health")
            assert r.status_code == 503, r.text
            body = r.json()
            assert body["status"] == "degraded"
            (problem,) = body["problems"]
            assert problem.startswith(f"the trace writer cannot write to {t.db}")
            assert body["writers"][0]["pending"] == 8  # kept, to be retried
    finally:
        if folder.is_file():
            folder.unlink()
        t.close()
