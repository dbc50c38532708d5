"""The traces list in headless Chromium: messages, paging text, navigation back from a
trace, staying current (clearing, time labels) and recovering from a server restart."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard._support import ServerThread, Traced, run, server

DASH = "\N{EN DASH}"  # the ranges in the list: "1, dash, 50 of 133 traces"


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """A read-only viewer of a file with a pizza workflow and a failing one."""
    t = Traced(tmp_path_factory.mktemp("two") / "traces.duckdb")
    run(t.pizza_workflow())
    run(t.failing_workflow())
    t.flush()
    t.close()
    with server(t.db) as srv:
        yield srv


def base(srv: ServerThread) -> str:
    return srv.url.split("?")[0].split("#")[0]


def test_empty_results_and_bad_input_get_readable_messages(page: Page, two: ServerThread) -> None:
    rows = page.locator("#traces-table tbody tr")
    page.goto(f"{base(two)}#/traces?q=no-such-thing-anywhere")
    expect(rows.locator(".empty")).to_contain_text("No traces match these filters")
    page.locator("#reset-filters").click()
    expect(rows.locator(".trace-name")).to_have_count(2)
    assert page.evaluate("location.hash") == "#/traces"

    page.goto(f"{base(two)}#/traces?min=-5")
    error = page.locator("#traces-table .error-box")
    expect(error).to_contain_text("min ms")
    expect(error).not_to_contain_text("{")  # not the raw JSON of the 422
    expect(page.locator("#reset-filters")).to_be_visible()

    page.goto(f"{base(two)}#/trace/NOTHEX")
    expect(page.locator(".error-box")).to_contain_text("“nothex” is not a trace id")
    expect(page.locator(".error-box")).not_to_contain_text("{")


def test_an_uppercase_trace_id_in_the_url_opens_the_trace(page: Page, two: ServerThread) -> None:
    page.goto(base(two))
    link = page.locator("#traces-table a.trace-name", has_text="pizza_workflow")
    trace_id = str(link.get_attribute("href")).rsplit("/", 1)[1]
    page.goto(f"{base(two)}#/trace/{trace_id.upper()}")
    expect(page.locator("#trace-title")).to_have_text("pizza_workflow")
    assert page.evaluate("location.hash") == f"#/trace/{trace_id}"


def test_pager_text_for_offsets_set_by_hand(page: Page, two: ServerThread) -> None:
    page.goto(f"{base(two)}#/traces?offset=5000")
    expect(page.locator("#traces-table .empty")).to_contain_text("No traces on this page")
    expect(page.locator(".panel-head .muted.small")).to_have_text("0 of 2 traces")
    expect(page.locator("#pager-text")).to_have_text("past the last page")
    page.locator(".pager").get_by_text("← Newer").click()
    expect(page.locator("#pager-text")).to_have_text("page 1 of 1")  # back to the last page
    page.goto(f"{base(two)}#/traces?offset=1")
    expect(page.locator("#traces-table .trace-name")).to_have_count(1)
    expect(page.locator(".panel-head .muted.small")).to_have_text(f"2{DASH}2 of 2 traces")
    expect(page.locator("#pager-text")).to_have_text(f"traces 2{DASH}2")


def test_back_from_a_trace_keeps_the_lists_filters(page: Page, two: ServerThread) -> None:
    page.goto(f"{base(two)}#/traces?errors=1&q=oven")
    page.locator("#traces-table a.trace-name").first.click()
    expect(page.locator("#trace-title")).to_have_text("baking_workflow")
    page.locator("#back-to-list").click()
    expect(page.locator("#traces-table .trace-name")).to_have_count(1)
    assert page.evaluate("location.hash") == "#/traces?errors=1&q=oven"
    expect(page.locator("#f-errors")).to_be_checked()
    expect(page.locator("#f-q")).to_have_value("oven")


def test_time_labels_advance(page: Page, two: ServerThread) -> None:
    page.clock.install()
    page.goto(base(two))
    started = page.locator("#traces-table tbody tr").first.locator("td").first
    expect(started).to_contain_text("s ago")
    page.clock.fast_forward("10:00")
    expect(started).to_have_text("10m ago")


def test_clearing_updates_the_header_and_other_tabs(browser: Browser, tmp_path: Path) -> None:
    t = Traced(tmp_path / "clear.duckdb")
    try:
        run(t.pizza_workflow())
        t.flush()
        with server(t.db, flock=t.flock) as srv:
            here, other = browser.new_page(), browser.new_page()
            other.goto(srv.url)
            other.locator("#traces-table a.trace-name").first.click()
            expect(other.locator("#trace-title")).to_have_text("pizza_workflow")
            here.goto(srv.url)
            expect(here.locator("#dbinfo")).to_contain_text("· 8 spans")
            here.locator("#clear-btn").click()
            here.locator("#confirm-ok").click()
            expect(here.locator("#toast")).to_contain_text("Deleted 8 spans")
            expect(here.locator("#dbinfo")).to_contain_text("· 0 spans")
            expect(other.locator(".error-box")).to_contain_text("may have been cleared")
            expect(other.locator("#dbinfo")).to_contain_text("· 0 spans")
            here.close()
            other.close()
    finally:
        t.close()


def test_clearing_only_old_traces_keeps_the_recent_ones(browser: Browser, tmp_path: Path) -> None:
    t = Traced(tmp_path / "clear-old.duckdb")
    try:
        run(t.pizza_workflow())
        t.flush()
        ended = time.time_ns() - 10 * 86_400 * 10**9  # a trace that ended 10 days ago
        with t.writer.pause():
            conn = duckdb.connect(str(t.db))
            conn.execute(
                "INSERT INTO spans (trace_id, span_id, name, start_time, end_time, duration_ms,"
                " status_code) VALUES ('0' || repeat('a', 31), '00000000000000aa',"
                " 'old_workflow', ?, ?, 1000.0, 'OK')",
                [ended - 10**9, ended],
            )
            conn.close()
        with server(t.db, flock=t.flock) as srv:
            page = browser.new_page()
            page.goto(srv.url)
            names = page.locator("#traces-table tbody tr .trace-name")
            expect(names).to_have_text(["pizza_workflow", "old_workflow"])
            page.locator("#clear-btn").click()
            expect(page.locator("#confirm-text")).to_contain_text("all 9 spans")
            page.locator("#clear-scope").select_option("7d")
            expect(page.locator("#confirm-text")).to_contain_text("that ended over 7 days ago")
            page.locator("#confirm-ok").click()
            expect(page.locator("#toast")).to_contain_text("Deleted 1 spans")
            expect(names).to_have_text(["pizza_workflow"])
            expect(page.locator("#dbinfo")).to_contain_text("· 8 spans")
            # Opened again, the dialog offers "all traces" first, not the last choice.
            page.locator("#clear-btn").click()
            expect(page.locator("#clear-scope")).to_have_value("")
            expect(page.locator("#confirm-text")).to_contain_text("all 8 spans")
            page.close()
    finally:
        t.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_view_that_lost_the_server_reloads_when_it_is_back(
    browser: Browser, tmp_path: Path
) -> None:
    t = Traced(tmp_path / "restart.duckdb")
    try:
        run(t.pizza_workflow())
        t.flush()
        port = free_port()
        pg = browser.new_page()
        with server(t.db, port=port) as srv:
            pg.goto(srv.url)
            expect(pg.locator("#live.on")).to_be_visible()
        expect(pg.locator("#live.on")).to_have_count(0, timeout=10_000)
        pg.evaluate("location.hash = '#/stats'")
        expect(pg.locator(".error-box.offline")).to_contain_text("Cannot reach", timeout=10_000)
        with server(t.db, port=port):
            stats = pg.locator("#stats-table tr[data-name='pizza_workflow']")
            expect(stats).to_have_count(1, timeout=15_000)
            expect(pg.locator(".error-box")).to_have_count(0)
        pg.close()
    finally:
        t.close()
