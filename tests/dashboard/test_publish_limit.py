"""``POST /api/artifacts`` caps its body: 413 before it is read whole, nothing published."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from flock import Flock
from flock.dashboard import create_app
from flock.store import MemoryStore
from tests.dashboard._support import Order
from tests.dashboard.conftest import client_for

LIMIT = 1_000
JSON = {"content-type": "application/json"}


def quiet_flock() -> Flock:
    """A Flock without agents: what is published stays on its blackboard, untouched."""
    return Flock(store=MemoryStore(), tracer_provider=TracerProvider())


def order_body(size: int) -> bytes:
    """A valid publish request for an Order, exactly ``size`` bytes long."""

    def body(dish: str) -> bytes:
        request = {"type": "Order", "payload": {"dish": dish, "quantity": 1}}
        return json.dumps(request).encode()

    data = body("xx" + "x" * (size - len(body("xx"))))
    assert len(data) == size
    return data


async def published(flock: Flock) -> list[str]:
    return [a.type for a in await flock.store.query()]


async def test_a_body_over_the_limit_is_413_and_publishes_nothing(tmp_path: Path) -> None:
    flock = quiet_flock()
    app = create_app(tmp_path / "t.duckdb", flock=flock, max_publish_body=LIMIT)
    async with client_for(app) as client:
        r = await client.post("/api/artifacts", content=order_body(LIMIT + 1), headers=JSON)
        assert r.status_code == 413, r.text[:300]
        detail = r.json()["detail"]
        assert f"larger than {LIMIT} bytes" in detail and "max_publish_body" in detail
        assert await published(flock) == []

        r = await client.post("/api/artifacts", content=order_body(LIMIT), headers=JSON)
        assert r.status_code == 201, r.text[:300]
        assert Order.model_validate(r.json()["payload"]).dish.startswith("xx")
        assert await published(flock) == ["Order"]


async def test_a_chunked_body_over_the_limit_is_refused_while_it_streams(
    tmp_path: Path,
) -> None:
    flock = quiet_flock()
    app = create_app(tmp_path / "t.duckdb", flock=flock, max_publish_body=LIMIT)
    body = order_body(10 * LIMIT)
    sent: list[int] = []

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for i in range(0, len(body), 100):
            sent.append(i)
            yield body[i : i + 100]

    async with client_for(app) as client:
        r = await client.post("/api/artifacts", content=chunks(), headers=JSON)
        assert "content-length" not in r.request.headers
        assert r.status_code == 413, r.text[:300]
        assert f"larger than {LIMIT} bytes" in r.json()["detail"]
        assert len(sent) <= LIMIT // 100 + 1 < len(body) // 100  # it stopped reading early
        assert await published(flock) == []

        # A Content-Length that understates the body does not get it through either.
        r = await client.post(
            "/api/artifacts", content=body, headers={**JSON, "content-length": "10"}
        )
        assert r.status_code == 413, r.text[:300]
        assert await published(flock) == []

        small = order_body(LIMIT - 1)

        async def small_chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(small), 100):
                yield small[i : i + 100]

        r = await client.post("/api/artifacts", content=small_chunks(), headers=JSON)
        assert r.status_code == 201, r.text[:300]
        assert len(await published(flock)) == 1


async def test_the_default_limit_is_one_mib_and_documented(tmp_path: Path) -> None:
    flock = quiet_flock()
    app = create_app(tmp_path / "t.duckdb", flock=flock)
    async with client_for(app) as client:
        r = await client.post("/api/artifacts", content=order_body(2**20 + 1), headers=JSON)
        assert r.status_code == 413, r.text[:300]
        assert f"larger than {2**20} bytes" in r.json()["detail"]
        r = await client.post("/api/artifacts", content=order_body(2**20), headers=JSON)
        assert r.status_code == 201, r.text[:300]
        assert len(await published(flock)) == 1
        spec = (await client.get("/api/openapi.json")).json()
    post = spec["paths"]["/api/artifacts"]["post"]
    assert "413" in post["responses"]
    assert {"201", "403", "422"} <= set(post["responses"])
    # The request body is still documented as a PublishRequest.
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/PublishRequest")


async def test_under_the_limit_the_endpoint_answers_as_before(tmp_path: Path) -> None:
    flock = quiet_flock()
    async with client_for(create_app(tmp_path / "t.duckdb", flock=flock)) as client:
        r = await client.post(
            "/api/artifacts", json={"type": "Order", "payload": {"dish": "x", "quantity": 1}}
        )
        assert r.status_code == 422
        assert r.json()["detail"][0]["loc"] == ["body", "payload", "dish"]
        r = await client.post("/api/artifacts", content=b'{"type": "Order", ', headers=JSON)
        assert r.status_code == 422
        r = await client.post("/api/artifacts", json={"payload": {}})
        assert r.status_code == 422
        assert ["body", "type"] in [e["loc"] for e in r.json()["detail"]]
        assert await published(flock) == []
    read_only = create_app(tmp_path / "t.duckdb", flock=flock, read_only=True)
    async with client_for(read_only) as client:
        r = await client.post("/api/artifacts", content=order_body(100), headers=JSON)
        assert r.status_code == 403
    assert await published(flock) == []
