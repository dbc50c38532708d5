from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

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
