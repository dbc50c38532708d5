"""``flock dashboard`` and ``flock serve`` from the command line (real processes)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from flock.cli import main
from tests.dashboard._support import Traced

FLOCK = [sys.executable, "-m", "flock.cli"]


@contextmanager
def running(args: list[str], cwd: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    env.update(FLOCK_OUTPUT="off", PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [*FLOCK, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not url:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            if "flock dashboard: http" in line:
                url = line.split("flock dashboard: ", 1)[1].strip()
        assert url, f"no URL printed (exit {proc.poll()})"
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(15)
        if proc.stdout is not None:
            proc.stdout.close()


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["dashboard", "--help"]) == 0
    assert "Example: flock dashboard --db" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Example: flock serve app:flock" in out and "--no-dashboard" in out


def test_dashboard_needs_an_existing_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dashboard", "--db", str(tmp_path / "missing.duckdb")]) == 1
    assert "no trace file" in capsys.readouterr().err


def test_serve_reports_bad_targets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "no_colon"]) == 1
    assert "module:flock_object" in capsys.readouterr().err
    assert main(["serve", "no_such_module_xyz:flock"]) == 1
    assert "cannot import" in capsys.readouterr().err
    (tmp_path / "notflock.py").write_text("flock = 42\n")
    assert main(["serve", f"{tmp_path / 'notflock.py'}:flock"]) == 1
    assert "not a Flock" in capsys.readouterr().err


def test_flock_dashboard_serves_a_trace_file_read_only(tmp_path: Path) -> None:
    t = Traced(tmp_path / "t.duckdb")
    from tests.dashboard._support import run

    run(t.pizza_workflow())
    t.flush()
    t.close()
    with running(["dashboard", "--db", str(t.db), "--port", "0"], tmp_path) as (url, _):
        assert url.startswith("http://127.0.0.1:")
        with httpx.Client() as client:
            page = client.get(f"{url}api/traces").json()
            assert [x["name"] for x in page["items"]] == ["pizza_workflow"]
            assert client.get(f"{url}api/info").json()["read_only"] is True
            assert client.post(f"{url}api/traces/clear", json={"confirm": True}).status_code == 403


def test_flock_serve_module_object(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text(
        textwrap.dedent(
            """
            from flock import Flock
            from flock._demo import Pizza, PizzaIdea, offline_chef

            flock = Flock()
            flock.agent("pizza_master").consumes(PizzaIdea).publishes(Pizza).with_engines(
                offline_chef
            )
            """
        )
    )
    db = tmp_path / "served.duckdb"
    args = ["serve", "app:flock", "--port", "0", "--db", str(db), "--token", "tok-123"]
    with running(args, tmp_path) as (url, _):
        assert url.endswith("?token=tok-123")
        base = url.split("?")[0]
        headers = {"Authorization": "Bearer tok-123"}
        with httpx.Client(headers=headers) as client:
            assert httpx.get(f"{base}api/blackboard").status_code == 401
            bb = client.get(f"{base}api/blackboard").json()
            assert [a["name"] for a in bb["agents"]] == ["pizza_master"]
            r = client.post(
                f"{base}api/artifacts", json={"type": "PizzaIdea", "payload": {"topic": "fig"}}
            )
            assert r.status_code == 201
            deadline = time.monotonic() + 20
            names: list[str] = []
            while time.monotonic() < deadline and "Flock.publish" not in names:
                time.sleep(0.3)
                names = [x["name"] for x in client.get(f"{base}api/traces").json()["items"]]
            assert "Flock.publish" in names  # traced into --db, read back live
            arts = client.get(f"{base}api/artifacts").json()["items"]
            assert {a["type"] for a in arts} == {"PizzaIdea", "Pizza"}
    assert db.is_file()
