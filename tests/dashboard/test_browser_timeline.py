"""The trace view in headless Chromium: the time axis, long names and values, a running
trace updating live, narrow windows and the keyboard."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import Status, StatusCode
from playwright.sync_api import Browser, Page, expect

from tests.dashboard._support import (
    ServerThread,
    Traced,
    add_child,
    run,
    running_workflow,
    server,
)

LONG_NAME = "a_workflow_with_a_remarkably_long_name_" + "that_goes_on_" * 20
EXCEPTION = "score 1 too low for 'anchovy pizza' " + "x" * 400


def odd_trace(t: Traced) -> None:
    """A trace with what stretches the layout: a long root name, a 4,128-character
    attribute, a long single-line exception message."""
    tracer = t.provider.get_tracer("tests")
    with tracer.start_as_current_span(LONG_NAME) as root:
        root.set_attribute("huge.attr", "A" * 4128)
        root.set_attribute("small.attr", "short")
        with tracer.start_as_current_span("risky_step") as child:
            time.sleep(0.002)
            child.record_exception(ValueError(EXCEPTION))
            child.set_status(Status(StatusCode.ERROR, EXCEPTION))


@pytest.fixture(scope="module")
def odd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    t = Traced(tmp_path_factory.mktemp("odd") / "traces.duckdb")
    run(t.pizza_workflow())
    odd_trace(t)
    t.flush()
    try:
        with server(t.db, flock=t.flock) as srv:
            yield srv
    finally:
        t.close()


def open_trace(page: Page, srv: ServerThread, name: str) -> None:
    page.goto(srv.url)
    page.locator("#traces-table a.trace-name", has_text=name).first.click()
    expect(page.locator("#waterfall .wf-row").first).to_be_visible()


def edge_gap(page: Page) -> float:
    """How far the last axis tick's centre is from the right end of the root's bar."""
    tick = page.locator(".wf-ticks .tick").last.bounding_box()
    bar = page.locator("#waterfall .wf-row").first.locator(".bar").bounding_box()
    assert tick and bar
    return abs(tick["x"] + tick["width"] / 2 - (bar["x"] + bar["width"]))


def test_the_time_axis_lines_up_with_the_bars_at_every_width(page: Page, odd: ServerThread) -> None:
    open_trace(page, odd, "pizza_workflow")
    assert edge_gap(page) < 1.5
    for width in (1100, 1700, 800):
        page.set_viewport_size({"width": width, "height": 860})
        page.wait_for_timeout(100)
        assert edge_gap(page) < 1.5, width


def test_a_long_root_name_is_truncated_and_its_duration_label_stays_on_the_bar(
    page: Page, odd: ServerThread
) -> None:
    open_trace(page, odd, LONG_NAME[:30])
    title = page.locator("#trace-title")
    expect(title).to_have_attribute("title", LONG_NAME)
    assert page.evaluate("document.documentElement.scrollWidth") <= 1400  # no sideways scroll
    tools = page.locator("#collapse-all").bounding_box()
    assert tools and tools["x"] + tools["width"] <= 1400
    assert title.evaluate("t => t.scrollWidth > t.clientWidth")  # cut with an ellipsis
    # The root's bar starts at 0 and fills the column: its label sits inside it, not over
    # the span name to its left.
    root = page.locator("#waterfall .wf-row").first
    label, bars = root.locator(".bar-label").bounding_box(), root.locator(".wf-bars").bounding_box()
    assert label and bars and label["x"] >= bars["x"]


def test_long_values_are_clamped_and_exception_messages_wrap(page: Page, odd: ServerThread) -> None:
    open_trace(page, odd, LONG_NAME[:30])
    page.locator("#waterfall .wf-row").first.click()
    huge = page.locator("#attributes [data-path='huge.attr']").locator("xpath=..")
    expect(huge).to_contain_text("show all")
    box = huge.bounding_box()
    assert box and box["height"] < 160
    huge.locator(".jv-more").click()
    expect(huge.locator(".jv-more")).to_have_text("show less")
    box = huge.bounding_box()
    assert box and box["height"] > 300  # the whole value, wrapped
    assert len(huge.locator(".jv-str").inner_text()) > 4000

    page.locator(".wf-row[data-name='risky_step']").click()
    message = page.locator("#span-detail .event.exception .ex-message")
    expect(message).to_contain_text("too low")
    detail = page.locator("#span-detail").bounding_box()
    box = message.bounding_box()
    assert detail and box and box["x"] + box["width"] <= detail["x"] + detail["width"]
    assert message.evaluate("m => m.scrollWidth <= m.clientWidth")
    for box_el in page.locator("#span-detail .error-box").all():
        assert box_el.evaluate("b => b.scrollWidth <= b.clientWidth")


def test_span_rows_work_with_the_keyboard(page: Page, odd: ServerThread) -> None:
    open_trace(page, odd, "pizza_workflow")
    rows = page.locator("#waterfall .wf-row")
    expect(rows).to_have_count(8)
    first = rows.first
    expect(first).to_have_attribute("role", "treeitem")
    expect(first).to_have_attribute("tabindex", "0")
    page.locator("#collapse-all").focus()
    page.keyboard.press("Tab")  # into the tree
    focused = "document.activeElement.dataset.name"
    assert page.evaluate(focused) == "pizza_workflow"
    page.keyboard.press("ArrowDown")
    assert page.evaluate(focused) == "Flock.publish"
    page.keyboard.press("Enter")
    expect(page.locator("#span-detail h3")).to_have_text("Flock.publish")
    expect(page.locator(".wf-row.selected")).to_have_attribute("data-name", "Flock.publish")
    page.keyboard.press("ArrowLeft")  # collapse its agent run
    expect(rows).to_have_count(4)
    assert page.evaluate(focused) == "Flock.publish"
    page.keyboard.press("ArrowRight")  # expand again
    expect(rows).to_have_count(8)
    page.keyboard.press("ArrowRight")  # on an open row: to its first child
    assert page.evaluate(focused) == "Agent.execute"
    page.keyboard.press("ArrowLeft")  # open: collapse it
    page.keyboard.press("ArrowLeft")  # collapsed: to its parent
    assert page.evaluate(focused) == "Flock.publish"
    page.keyboard.press("ArrowUp")
    page.keyboard.press(" ")
    expect(page.locator("#span-detail h3")).to_have_text("pizza_workflow")


def test_narrow_windows_wrap_the_header_and_show_the_span_detail(
    browser: Browser, odd: ServerThread
) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 800})
    try:
        page.goto(odd.url)
        expect(page.locator("#traces-table a.trace-name").first).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        clear = page.locator("#clear-btn").bounding_box()
        assert clear and clear["x"] + clear["width"] <= 390  # wrapped, not cut off
        page.locator("#traces-table a.trace-name", has_text="pizza_workflow").click()
        page.locator(".wf-row[data-name='Flock.shutdown']").click()
        expect(page.locator("#span-detail h3")).to_have_text("Flock.shutdown")
        page.wait_for_timeout(200)
        detail = page.locator("#span-detail").bounding_box()
        assert detail and 0 <= detail["y"] < 800  # scrolled into view
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
    finally:
        page.close()


def test_a_running_trace_is_named_after_its_workflow_and_updates_until_done(
    browser: Browser, tmp_path: Path
) -> None:
    t = Traced(tmp_path / "live.duckdb")
    try:
        run(t.pizza_workflow())
        dead = running_workflow(t, "dead_workflow", ago_s=3600)  # its writer was killed
        with server(t.db, flock=t.flock) as srv:
            page = browser.new_page(viewport={"width": 1400, "height": 860})
            page.goto(srv.url)
            names = page.locator("#traces-table .trace-name")
            expect(names).to_have_count(2)
            stale = page.locator("#traces-table tr", has_text="dead_workflow").locator(
                ".badge.stale"
            )
            expect(stale).to_have_text("stale")

            # A new workflow starts: listed under its name, and in the workflow menu.
            root = running_workflow(t, "live_workflow")
            expect(names.first).to_have_text("live_workflow", timeout=10_000)
            live_row = page.locator("#traces-table tr", has_text="live_workflow")
            expect(live_row.locator(".badge.running")).to_have_text("running")
            options = page.locator("#f-workflow option")
            expect(options.filter(has_text="live_workflow")).to_have_count(1, timeout=10_000)
            page.locator("#f-workflow").select_option("live_workflow")
            expect(names).to_have_text(["live_workflow"])

            names.first.click()
            expect(page.locator("#trace-title")).to_have_text("live_workflow")
            expect(page.locator("#trace-state")).to_have_text("running")
            rows = page.locator("#waterfall .wf-row")
            expect(rows).to_have_count(2)
            add_child(t, root, "Flock.run_until_idle")
            t.flush()
            expect(rows).to_have_count(3, timeout=10_000)  # updated while it runs

            root.end()
            t.flush()
            expect(rows).to_have_count(4, timeout=10_000)
            expect(page.locator("#trace-state")).to_have_count(0)
            # Complete: it stops reloading even as other traces arrive.
            fetches: list[str] = []
            page.on(
                "request",
                lambda r: fetches.append(r.url) if "/api/traces/" in r.url else None,
            )
            run(t.pizza_workflow())
            t.flush()
            expect(page.locator("#dbinfo")).to_contain_text("spans", timeout=5_000)
            page.wait_for_timeout(2_500)
            assert fetches == []
            page.close()
        dead.end()
    finally:
        t.close()
