"""Running workflows (no root span written yet) in the API: named after their workflow,
listed under it, and flagged stale when their writer stopped writing."""

from __future__ import annotations

from pathlib import Path

import httpx

from flock.dashboard import create_app
from flock.dashboard._running import STALE_AFTER_NS
from tests.dashboard._support import Traced, add_child, run, running_workflow
from tests.dashboard.conftest import client_for


async def _items(client: httpx.AsyncClient, **params: object) -> list[dict[str, object]]:
    r = await client.get("/api/traces", params=params)
    assert r.status_code == 200, r.text
    items: list[dict[str, object]] = r.json()["items"]
    return items


async def test_a_running_workflow_is_listed_and_filtered_by_its_name(tmp_path: Path) -> None:
    t = Traced(tmp_path / "running.duckdb")
    try:
        run(t.pizza_workflow())
        t.flush()
        root = running_workflow(t, "live_workflow")
        async with client_for(create_app(t.db)) as client:
            items = await _items(client)
            assert [(i["name"], i["in_progress"], i["stale"]) for i in items] == [
                ("live_workflow", True, False),
                ("pizza_workflow", False, False),
            ]
            names = (await client.get("/api/traces/names")).json()
            assert {"name": "live_workflow", "count": 1} in names
            only = await _items(client, workflow="live_workflow")
            assert [i["name"] for i in only] == ["live_workflow"]
            page = (await client.get("/api/traces", params={"workflow": "live_workflow"})).json()
            assert page["total"] == 1
            live_id = only[0]["trace_id"]
            timeline = (await client.get(f"/api/traces/{live_id}")).json()
            assert timeline["name"] == "live_workflow" and timeline["in_progress"]
            assert not timeline["stale"]

            root.end()
            t.flush()
            done = (await client.get(f"/api/traces/{live_id}")).json()
            assert done["name"] == "live_workflow" and not done["in_progress"]
            names = (await client.get("/api/traces/names")).json()
            assert {"name": "live_workflow", "count": 1} in names  # counted once, by its root
            assert len(await _items(client, workflow="live_workflow")) == 1
    finally:
        t.close()


async def test_running_and_finished_runs_of_a_workflow_page_together(tmp_path: Path) -> None:
    t = Traced(tmp_path / "paged.duckdb")
    try:
        for _ in range(3):
            run(t.pizza_workflow())
        t.flush()
        root = running_workflow(t, "pizza_workflow", root_name="pizza_workflow")
        add_child(t, root, "Flock.run_until_idle")
        t.flush()
        async with client_for(create_app(t.db)) as client:
            every = await _items(client, workflow="pizza_workflow", limit=50)
            assert len(every) == 4 and every[0]["in_progress"]
            pages = [
                await _items(client, workflow="pizza_workflow", limit=2, offset=o)
                for o in (0, 1, 2, 3, 4)
            ]
            assert [i["trace_id"] for i in pages[0] + pages[2]] == [i["trace_id"] for i in every]
            assert [i["trace_id"] for i in pages[1]] == [i["trace_id"] for i in every[1:3]]
            assert [i["trace_id"] for i in pages[3]] == [every[3]["trace_id"]]
            assert pages[4] == []
            r = await client.get("/api/traces", params={"workflow": "pizza_workflow", "limit": 1})
            assert r.json()["total"] == 4
        root.end()
    finally:
        t.close()


async def test_a_workflow_whose_writer_died_is_stale(tmp_path: Path) -> None:
    t = Traced(tmp_path / "stale.duckdb")
    try:
        running_workflow(t, "killed_workflow", ago_s=STALE_AFTER_NS / 1e9 + 60)
        running_workflow(t, "busy_workflow", ago_s=STALE_AFTER_NS / 1e9 - 60)
        async with client_for(create_app(t.db)) as client:
            items = {i["name"]: i for i in await _items(client)}
            assert items["killed_workflow"]["in_progress"] and items["killed_workflow"]["stale"]
            assert items["busy_workflow"]["in_progress"] and not items["busy_workflow"]["stale"]
            killed = str(items["killed_workflow"]["trace_id"])
            assert (await client.get(f"/api/traces/{killed}")).json()["stale"]
    finally:
        t.close()
