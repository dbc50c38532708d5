"""Query parameters at their edges: times, search text with LIKE's wildcards, correlation
ids (exact, past the last page, with slashes)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import quote

import duckdb
import httpx
import pytest

from flock.dashboard import create_app
from flock.tracing.query import TraceStore, parse_since
from flock.tracing.store import SCHEMA
from tests.dashboard._support import server
from tests.dashboard.conftest import client_for

BASE_NS = 1_700_000_000 * 10**9
# "order-1" is the oldest of 251 ids starting with "order-1": the 201st newest.
ORDER_IDS = ["order-1", *(f"order-{n}" for n in range(1000, 1250))]
ODD_IDS = [
    "50%_off",
    "500-off",
    "a_b",
    "axb",
    "back\\slash",
    "team/42",
    "/lead",
    "trail/",
    "a/../b",
]


def agent_runs_file(db: Path, correlation_ids: list[str]) -> Path:
    """One trace per id, with one ``Agent.execute`` span; later ids are newer."""
    rows = [
        (
            f"{i + 1:032x}",
            f"{i + 1:016x}",
            None,
            "Agent.execute",
            "svc",
            "execute",
            "INTERNAL",
            BASE_NS + i * 10**9,
            BASE_NS + i * 10**9 + 10**6,
            1.0,
            "OK",
            None,
            json.dumps({"flock": {"correlation_id": cid, "agent": {"name": "chef"}}}),
            "[]",
            "[]",
            "{}",
        )
        for i, cid in enumerate(correlation_ids)
    ]
    conn = duckdb.connect(str(db))
    try:
        conn.execute(SCHEMA)
        conn.executemany(f"INSERT INTO spans VALUES ({', '.join(['?'] * 16)})", rows)
    finally:
        conn.close()
    return db


@pytest.fixture(scope="module")
def runs_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corr") / "traces.duckdb"
    return agent_runs_file(path, [*ORDER_IDS, *ODD_IDS])


@pytest.fixture
async def runs(runs_db: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(create_app(runs_db)) as client:
        yield client


# ---- times -----------------------------------------------------------------


@pytest.mark.parametrize("route", ["/api/traces", "/api/stats"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("²", "is not a time"),  # str.isdigit() is true, int() refuses it
        ("١٢٣", "is not a time"),  # Arabic-Indic digits
        ("9" * 40, "is out of range"),  # beyond DuckDB's BIGINT (and HUGEINT)
        (str(2**63), "is out of range"),
        ("9" * 30 + "w", "is out of range"),
        ("9" * 60 + "s", "is out of range"),  # float() is inf
        ("0001-01-01", "is out of range"),
        ("9999-12-31T23:59:59", "is out of range"),
        ("-5", "is not a time"),
    ],
)
@pytest.mark.parametrize("param", ["since", "until"])
async def test_bad_times_are_422_with_a_reason(
    viewer: httpx.AsyncClient, route: str, param: str, value: str, message: str
) -> None:
    r = await viewer.get(route, params={param: value})
    assert r.status_code == 422, r.text
    [error] = r.json()["detail"]
    assert error["loc"] == ["query", param] and message in error["msg"], error


async def test_times_at_the_edges_of_the_range_still_work(viewer: httpx.AsyncClient) -> None:
    for params in (
        {"until": str(2**63 - 1)},
        {"since": "0"},
        {"since": "1677-09-22T00:00Z", "until": "2262-04-10T00:00Z"},
        {"since": "1000w"},
    ):
        for route in ("/api/traces", "/api/stats"):
            r = await viewer.get(route, params=params)
            assert r.status_code == 200, (route, params, r.text)
    page = (await viewer.get("/api/traces", params={"until": str(2**63 - 1)})).json()
    assert page["total"] == 2


def test_parse_since_raises_value_error_only() -> None:
    for value in ("9" * 30 + "w", "9" * 400 + "s", "0001-01-01", "9999-12-31", "²", "٣m"):
        with pytest.raises(ValueError, match=r"out of range|is not a time"):
            parse_since(value)
    assert parse_since("1969-12-31T23:59:59.5Z") == -500_000_000
    assert parse_since("2025-01-31T12:00:00.25Z") == 1_738_324_800_250_000_000


# ---- LIKE wildcards are text -----------------------------------------------


async def test_percent_and_underscore_are_not_wildcards(runs: httpx.AsyncClient) -> None:
    async def correlations(q: str) -> list[str]:
        r = await runs.get("/api/correlations", params={"q": q, "limit": 200})
        assert r.status_code == 200, r.text
        return [c["correlation_id"] for c in r.json()["items"]]

    assert await correlations("50%") == ["50%_off"]
    assert await correlations("%") == []
    assert await correlations("a_") == ["a_b"]
    assert await correlations("_") == []
    assert await correlations("back\\") == ["back\\slash"]
    assert await correlations("BACK\\S") == ["back\\slash"]  # still case-insensitive

    async def traces(**params: str) -> int:
        r = await runs.get("/api/traces", params=params)
        assert r.status_code == 200, r.text
        return int(r.json()["total"])

    assert await traces(q="%") == 1  # the trace of "50%_off"
    assert await traces(q="_off") == 1
    assert await traces(q="0" * 31 + "_") == 0  # a trace id prefix, not a pattern
    assert await traces(q="0" * 31 + "1") == 1
    assert await traces(name="%") == 0 and await traces(name="_") == 0
    assert await traces(name="agent.") == len(ORDER_IDS) + len(ODD_IDS)
    stats = (await runs.get("/api/stats", params={"by": "span", "name": "%"})).json()
    assert stats["rows"] == []


def test_store_searches_escape_wildcards(runs_db: Path) -> None:
    store = TraceStore(runs_db)
    assert store.search_traces(text="%").total == 1
    assert store.stats(by="span", name="_") == []
    rows, total = store.correlations(correlation_id="50%")
    assert [r.correlation_id for r in rows] == ["50%_off"] and total == 1


# ---- correlations ----------------------------------------------------------


async def test_correlation_detail_is_an_exact_lookup(runs: httpx.AsyncClient) -> None:
    listed = (await runs.get("/api/correlations", params={"q": "order-1", "limit": 200})).json()
    assert listed["total"] == len(ORDER_IDS)
    assert "order-1" not in [c["correlation_id"] for c in listed["items"]]  # the 201st
    for cid in ("order-1", "order-1000", "order-1249", "50%_off", "a_b"):
        r = await runs.get(f"/api/correlations/{quote(cid, safe='')}")
        assert r.status_code == 200, (cid, r.text)
        assert r.json()["correlation"]["correlation_id"] == cid
        assert len(r.json()["traces"]) == 1
    for cid in ("order-", "order-10", "order-12", "ORDER-1", "%", "a%", "a_c", "50%"):
        r = await runs.get(f"/api/correlations/{quote(cid, safe='')}")
        assert r.status_code == 404, (cid, r.text)
    assert TraceStore((await runs.get("/api/info")).json()["db_path"]).correlation("x") is None


async def test_correlation_total_does_not_depend_on_the_page(runs: httpx.AsyncClient) -> None:
    everything = len(ORDER_IDS) + len(ODD_IDS)
    for offset in (0, 100, everything - 1, everything, 1000, 10_000_000):
        page = (await runs.get("/api/correlations", params={"offset": offset})).json()
        assert page["total"] == everything, offset
        assert len(page["items"]) == max(0, min(50, everything - offset))
    page = (await runs.get("/api/correlations", params={"q": "order-1", "offset": 500})).json()
    assert page == {"items": [], "total": len(ORDER_IDS), "limit": 50, "offset": 500}
    past = (await runs.get("/api/correlations", params={"q": "nothing", "offset": 5})).json()
    assert past["total"] == 0


@pytest.fixture(scope="module")
def running(runs_db: Path) -> Iterator[str]:
    with server(runs_db) as srv:
        yield srv.url


@pytest.mark.parametrize("cid", ["team/42", "/lead", "trail/", "a/../b"])
def test_correlation_ids_with_slashes_open(running: str, cid: str) -> None:
    """Over a real server: the UI's ``encodeURIComponent`` sends ``/`` as %2F, which the
    server decodes before routing."""
    with httpx.Client() as client:
        r = client.get(f"{running}api/correlations/{quote(cid, safe='')}")
        assert r.status_code == 200, (cid, r.text)
        assert r.json()["correlation"]["correlation_id"] == cid
        # The other routes under /api are not taken over by the path parameter.
        assert client.get(f"{running}api/correlations").json()["total"] > 250
        assert client.get(f"{running}api/correlations/team").status_code == 404
        listing = client.get(f"{running}api/correlations/", follow_redirects=True)
        assert listing.status_code == 200 and listing.json()["total"] > 250
        assert client.get(f"{running}api/traces/names").status_code == 200


def test_the_ui_encodes_correlation_ids() -> None:
    """The URL the UI builds for a correlation is the one the route above accepts."""
    from flock.dashboard.app import STATIC_DIR

    js = (STATIC_DIR / "js" / "correlations.js").read_text()
    assert "`/api/correlations/${encodeURIComponent(cid)}`" in js
