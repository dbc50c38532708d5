"""Token, Host and Origin checks, the WebSocket, and serving (Flock.serve, the server)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

import flock.dashboard.server as server_module
from flock.dashboard import create_app, dashboard_url
from flock.dashboard._security import is_loopback
from tests.dashboard._support import Traced, server
from tests.dashboard.conftest import client_for

TOKEN = "s3cret-token"


async def test_token_is_required_when_set(traced: Traced) -> None:
    async with client_for(create_app(traced.db, token=TOKEN)) as client:
        assert (await client.get("/api/traces")).status_code == 401
        r = await client.get("/api/traces", headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401
        assert (await client.get("/api/traces", params={"token": "s3cret"})).status_code == 401
        r = await client.get("/api/traces", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and r.json()["total"] == 2
        assert (await client.get("/api/traces", params={"token": TOKEN})).status_code == 200
        assert (await client.get("/api/openapi.json")).status_code == 401
        # The page itself holds no data; it reads the token from its URL.
        assert (await client.get("/")).status_code == 200
    # With a token, any Host is fine (that is how it is reached beyond loopback).
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(traced.db, token=TOKEN)),
        base_url="http://10.1.2.3:8344",
    ) as client:
        r = await client.get("/api/info", headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200


async def test_without_token_only_loopback_hosts(traced: Traced) -> None:
    app = create_app(traced.db)
    for base in ("http://evil.example:8344", "http://10.1.2.3:8344", "http://0.0.0.0:8344"):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base
        ) as client:
            assert (await client.get("/api/traces")).status_code == 403, base
            assert (await client.get("/")).status_code == 403, base
    for base in ("http://localhost:8344", "http://127.0.0.1", "http://[::1]:8344"):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=base
        ) as client:
            assert (await client.get("/api/traces")).status_code == 200, base
    # Host headers a URL parser reads as localhost, but no browser sends (and no valid Host)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://localhost:8344"
    ) as client:
        for host in ("evil.example@localhost", "localhost/evil.example", "localhost#x", ""):
            r = await client.get("/api/traces", headers={"Host": host})
            assert r.status_code == 403, host


async def test_cross_origin_writes_are_refused(traced: Traced, tmp_path: Path) -> None:
    async with client_for(create_app(traced.db, flock=traced.flock)) as client:
        r = await client.post(
            "/api/traces/clear",
            json={"confirm": True},
            headers={"Origin": "http://evil.example"},
        )
        assert r.status_code == 403
        r = await client.post(
            "/api/artifacts",
            json={"type": "PizzaIdea", "payload": {"topic": "x"}},
            headers={"Origin": "http://localhost:9999"},
        )
        assert r.status_code == 403
        assert (await client.get("/api/traces")).json()["total"] >= 2  # nothing was cleared
        r = await client.post(
            "/api/artifacts",
            json={"type": "Nope", "payload": {}},
            headers={"Origin": "http://127.0.0.1:8344"},
        )
        assert r.status_code == 422  # same origin: it got through to validation


def test_is_loopback() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.1", "example.com", ""]))
    assert dashboard_url("127.0.0.1", 80) == "http://127.0.0.1:80/"


def test_websocket_checks_origin_and_token(traced: Traced) -> None:
    app = create_app(traced.db, token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1:8344") as client:
        for headers, url in (
            ({"origin": "http://evil.example"}, f"ws://127.0.0.1:8344/api/live?token={TOKEN}"),
            ({"origin": "http://127.0.0.1:8344"}, "ws://127.0.0.1:8344/api/live"),
            ({"origin": "http://127.0.0.1:8344"}, "ws://127.0.0.1:8344/api/live?token=nope"),
        ):
            with (
                pytest.raises(WebSocketDisconnect) as refused,
                client.websocket_connect(url, headers=headers),
            ):
                pass
            assert refused.value.code == 1008, (headers, url)
        with client.websocket_connect(
            f"ws://127.0.0.1:8344/api/live?token={TOKEN}",
            headers={"origin": "http://127.0.0.1:8344"},
        ) as ws:
            assert ws.receive_json()["type"] == "hello"


def test_websocket_reports_new_traces_and_artifacts(tmp_path: Path) -> None:
    t = Traced(tmp_path / "live.duckdb")
    try:
        app = create_app(t.db, flock=t.flock, live_interval=0.05)
        with (
            TestClient(app, base_url="http://127.0.0.1:8344") as client,
            client.websocket_connect("ws://127.0.0.1:8344/api/live") as ws,
        ):
            assert ws.receive_json()["type"] == "hello"
            client.portal.call(t.pizza_workflow)  # type: ignore[union-attr]
            t.flush()
            seen: dict[str, dict[str, object]] = {}
            while not {"traces", "artifact"} <= set(seen):
                msg = ws.receive_json()
                seen.setdefault(msg["type"], msg)
            assert seen["traces"]["spans"] == 8
            artifact = seen["artifact"]["artifact"]
            assert isinstance(artifact, dict) and artifact["type"] in {"PizzaIdea", "Pizza"}
    finally:
        t.close()


async def test_flock_serve_prints_url_and_serves_until_cancelled(
    traced: Traced, capsys: pytest.CaptureFixture[str]
) -> None:
    task = asyncio.create_task(traced.flock.serve(port=0))
    try:
        for _ in range(200):
            out = capsys.readouterr().out
            if "http://" in out:
                break
            await asyncio.sleep(0.05)
        url = out.split("flock dashboard: ", 1)[1].split()[0]
        assert url.startswith("http://127.0.0.1:") and "token" not in url
        async with httpx.AsyncClient() as client:
            info = (await client.get(f"{url}api/info")).json()
            assert info["flock"] is True and info["read_only"] is False
            assert (await client.get(url)).status_code == 200
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert task.cancelled()


def test_non_loopback_generates_and_requires_a_token(
    traced: Traced, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pretend 127.0.0.1 is a public address (tests must not listen beyond loopback).
    monkeypatch.setattr(server_module, "is_loopback", lambda host: False)
    with server(traced.db) as srv:
        assert any("not loopback" in line for line in srv.lines)
        assert "?token=" in srv.url
        token = srv.url.split("?token=")[1]
        base = srv.url.split("?")[0]
        assert len(token) >= 30
        with httpx.Client() as client:
            assert client.get(f"{base}api/info").status_code == 401
            assert client.get(f"{base}api/info", params={"token": token}).status_code == 200
    with server(traced.db, token=TOKEN) as srv:
        assert srv.url.endswith(f"?token={TOKEN}")


def test_port_in_use_is_a_clear_error(traced: Traced) -> None:
    with server(traced.db) as first:
        port = int(first.url.rsplit(":", 1)[1].split("/")[0])

        async def second() -> None:
            await server_module.serve(traced.db, port=port, announce=lambda line: None)

        with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(second())
