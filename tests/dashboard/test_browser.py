"""The dashboard in real headless Chromium (Debian ``chromium`` + Python Playwright).

Screenshots of each view go to a temporary directory, or to ``docs/screenshots/`` with
``UPDATE_SCREENSHOTS=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard._support import ServerThread, Traced, run, server

REPO = Path(__file__).resolve().parents[2]
RED = "rgb(229, 72, 77)"  # --err in app.css


@pytest.fixture(scope="module")
def served(traced: Traced) -> Iterator[ServerThread]:
    with server(traced.db, flock=traced.flock) as srv:
        yield srv


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        target = REPO / "docs" / "screenshots"
        target.mkdir(parents=True, exist_ok=True)
        return target
    return tmp_path_factory.mktemp("screenshots")


def snap(page: Page, shots: Path, name: str) -> None:
    path = shots / f"{name}.png"
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000


def open_trace(page: Page, served: ServerThread, workflow: str) -> None:
    page.goto(served.url)
    page.locator("#traces-table a.trace-name", has_text=workflow).first.click()
    expect(page.locator("#trace-title")).to_have_text(workflow)


def test_trace_list_shows_the_workflow(page: Page, served: ServerThread, shots: Path) -> None:
    page.goto(served.url)
    rows = page.locator("#traces-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator(".trace-name")).to_have_text("baking_workflow")
    expect(rows.nth(1).locator(".trace-name")).to_have_text("pizza_workflow")
    expect(rows.nth(0).locator(".badge.err")).to_have_text("4 errors")
    expect(rows.nth(1).locator(".badge.ok")).to_have_text("ok")
    snap(page, shots, "traces")
    page.locator("#f-errors").check()
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".trace-name")).to_have_text("baking_workflow")
    page.locator("#f-errors").uncheck()
    expect(rows).to_have_count(2)
    page.locator("#f-q").fill("pizza_master")
    page.locator("#f-q").press("Enter")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".trace-name")).to_have_text("pizza_workflow")


def test_timeline_nests_publish_and_execute_under_the_workflow(
    page: Page, served: ServerThread, shots: Path
) -> None:
    open_trace(page, served, "pizza_workflow")
    rows = page.locator("#waterfall .wf-row")
    expect(rows).to_have_count(8)
    names = rows.evaluate_all("rs => rs.map(r => [r.dataset.name, Number(r.dataset.depth)])")
    assert names[:3] == [["pizza_workflow", 0], ["Flock.publish", 1], ["Agent.execute", 2]]
    assert ["Flock.run_until_idle", 1] in names
    # Indentation and bars to scale: a child's bar lies within the workflow's bar.
    box = {n: rows.nth(i).locator(".bar").bounding_box() for i, (n, _) in enumerate(names)}
    root, execute = box["pizza_workflow"], box["Agent.execute"]
    assert root and execute and root["x"] <= execute["x"]
    assert execute["x"] + execute["width"] <= root["x"] + root["width"] + 1
    pad = rows.locator(".wf-name").evaluate_all(
        "ns => ns.map(n => parseFloat(n.style.paddingLeft))"
    )
    assert pad[0] < pad[1] < pad[2]
    expect(page.locator("#waterfall .wf-row.crit")).not_to_have_count(0)

    page.locator(".wf-row[data-name='Agent.execute']").click()
    key = page.locator("#attributes [data-path='workflow.name']")
    expect(key).to_be_visible()
    expect(key.locator("xpath=..")).to_contain_text('"pizza_workflow"')
    expect(page.locator("#span-detail h3")).to_have_text("Agent.execute")
    snap(page, shots, "timeline")

    # Collapse / expand.
    page.locator(".wf-row[data-name='Flock.publish'] .toggle").click()
    expect(rows).to_have_count(4)
    page.locator("#expand-all").click()
    expect(rows).to_have_count(8)


def test_an_error_span_is_red_with_its_stack_trace(
    page: Page, served: ServerThread, shots: Path
) -> None:
    open_trace(page, served, "baking_workflow")
    failed = page.locator(".wf-row.err[data-name='Agent.execute']")
    expect(failed).to_have_count(1)
    assert failed.locator(".bar").evaluate("b => getComputedStyle(b).backgroundColor") == RED
    assert failed.locator(".label").evaluate("l => getComputedStyle(l).color") == RED
    ok = page.locator(".wf-row[data-name='Flock.publish']")
    assert ok.locator(".bar").evaluate("b => getComputedStyle(b).backgroundColor") != RED
    failed.click()
    expect(page.locator("#span-detail .event.exception")).to_contain_text(
        "RuntimeError: the oven is on fire"
    )
    expect(page.locator("#span-detail pre.stack")).to_contain_text("Traceback")
    snap(page, shots, "error")


def test_a_new_trace_appears_without_reload(
    page: Page, served: ServerThread, traced: Traced
) -> None:
    page.goto(served.url)
    rows = page.locator("#traces-table tbody tr")
    expect(rows.first.locator(".trace-name")).to_be_visible()
    before = rows.count()
    page.evaluate("window.__marker = 1")
    run(traced.pizza_workflow("live update"))
    traced.flush()
    expect(rows).to_have_count(before + 1, timeout=10_000)
    expect(rows.first.locator(".trace-name")).to_have_text("pizza_workflow")
    assert page.evaluate("window.__marker") == 1  # same page, not reloaded


def test_statistics_and_correlations(page: Page, served: ServerThread, shots: Path) -> None:
    page.goto(f"{served.url.split('?')[0]}#/stats")
    table = page.locator("#stats-table")
    expect(table.locator("tr[data-name='baking_workflow'] td").nth(2)).to_have_text("100%")
    expect(table.locator("tr[data-name='pizza_workflow'] svg.spark")).to_have_count(1)
    snap(page, shots, "stats")
    page.locator("#by-span").click()
    expect(table.locator("tr[data-name='Agent.execute']")).to_have_count(1)

    page.goto(f"{served.url.split('?')[0]}#/correlations")
    rows = page.locator("#correlations-table tbody tr")
    expect(rows.filter(has_text="pizza_master").first).to_be_visible()
    expect(rows.filter(has_text="oven").locator(".badge.err")).to_have_text("1 failed")
    snap(page, shots, "correlations")
    rows.filter(has_text="oven").click()
    expect(page.locator("table.grid")).to_contain_text("baking_workflow")


def test_blackboard_graph_and_publish_form(page: Page, served: ServerThread, shots: Path) -> None:
    page.goto(f"{served.url.split('?')[0]}#/blackboard")
    graph = page.locator("#agent-graph")
    for node in ("pizza_master", "kitchen", "PizzaIdea", "Pizza", "Order"):
        expect(graph.locator(f"g.node[data-node='{node}']")).to_have_count(1)
    expect(graph.locator("path.edge")).to_have_count(4)

    page.locator("#publish-type").select_option("Order")
    page.locator("#field-dish").fill("x")
    page.locator("#field-quantity").fill("50")
    page.locator("#publish-submit").click()
    dish_error = page.locator(".field[data-field='dish'] .field-error")
    expect(dish_error).to_contain_text("at least 2 characters")
    expect(page.locator(".field[data-field='quantity'] .field-error")).to_contain_text(
        "less than or equal to 20"
    )
    snap(page, shots, "blackboard")

    page.locator("#field-dish").fill("quattro formaggi")
    page.locator("#field-quantity").fill("2")
    page.locator("#field-extras").fill("basil, oil")
    page.locator("#publish-submit").click()
    expect(dish_error).to_be_empty()
    feed = page.locator("#artifact-feed")
    expect(feed.locator(".artifact", has_text="quattro formaggi").first).to_be_visible(
        timeout=10_000
    )
    # The kitchen agent ran on it: its Pizza arrives live too.
    expect(
        feed.locator(".artifact", has_text="kitchen").filter(has_text="quattro formaggi")
    ).to_have_count(1, timeout=10_000)


def test_clear_traces_asks_first(browser: Browser, tmp_path: Path) -> None:
    t = Traced(tmp_path / "clear.duckdb")
    try:
        run(t.pizza_workflow())
        t.flush()
        with server(t.db, flock=t.flock) as srv:
            pg = browser.new_page()
            pg.goto(srv.url)
            rows = pg.locator("#traces-table tbody tr")
            expect(rows.locator(".trace-name")).to_have_text(["pizza_workflow"])
            pg.locator("#clear-btn").click()
            expect(pg.locator("#confirm")).to_be_visible()
            expect(pg.locator("#confirm-text")).to_contain_text("all 8 spans")
            pg.locator("#confirm button[value='cancel']").click()
            expect(rows.locator(".trace-name")).to_have_text(["pizza_workflow"])
            pg.locator("#clear-btn").click()
            pg.locator("#confirm-ok").click()
            expect(pg.locator("#toast")).to_contain_text("Deleted 8 spans")
            expect(rows.locator(".empty")).to_contain_text("No traces yet")
            pg.close()
    finally:
        t.close()


def test_read_only_viewer_hides_writes(browser: Browser, traced: Traced) -> None:
    with server(traced.db) as srv:
        pg = browser.new_page()
        pg.goto(srv.url)
        expect(pg.locator("#dbinfo")).to_contain_text("read-only")
        expect(pg.locator("#traces-table tbody tr").first).to_be_visible()
        assert pg.locator("#clear-btn").is_hidden()
        assert pg.locator("#nav-blackboard").is_hidden()
        pg.close()
