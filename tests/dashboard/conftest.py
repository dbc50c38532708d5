from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from playwright.sync_api import Browser, Page, sync_playwright

from flock.dashboard import create_app
from tests.dashboard._support import Traced, run


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """A trace file holding the seed's pizza workflow and a failing workflow, and the live
    Flock that ran the pizza workflow."""
    t = Traced(tmp_path_factory.mktemp("traces") / "traces.duckdb")
    run(t.pizza_workflow())
    run(t.failing_workflow())
    t.flush()
    yield t
    t.close()


def client_for(app: FastAPI, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://127.0.0.1:8344",
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.fixture
async def viewer(traced: Traced) -> AsyncIterator[httpx.AsyncClient]:
    """The read-only viewer of the trace file (``flock dashboard --db``)."""
    async with client_for(create_app(traced.db)) as client:
        yield client


@pytest.fixture
async def live(traced: Traced) -> AsyncIterator[httpx.AsyncClient]:
    """The dashboard of the live Flock (``flock.serve()``)."""
    async with client_for(create_app(traced.db, flock=traced.flock)) as client:
        yield client


@pytest.fixture
def empty_db(tmp_path: Path) -> Path:
    return tmp_path / "none.duckdb"


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium (Debian's), shared by the browser tests of a module."""
    assert Path(CHROMIUM).exists(), "install Debian chromium: apt-get install -y chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A fresh 1400x860 page; the test fails on any uncaught JavaScript error."""
    context = browser.new_context(viewport={"width": 1400, "height": 860})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, errors
