"""Running the fault tests' child processes and reading what they left in the trace file."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

CHILD = Path(__file__).with_name("_child.py")
REPO = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without FLOCK_*/OTEL_*, tracing on, output off, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOCK_", "OTEL_"))}
    env["FLOCK_AUTO_TRACE"] = "true"
    env["FLOCK_OUTPUT"] = "off"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Ended:
    span_id: str
    name: str
    at: float  # time.monotonic() in the child (the same clock as the parent's on Linux)


@dataclass
class Child:
    """A running child process whose stdout lines are collected by a thread."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    stderr_chunks: list[str] = field(default_factory=list)
    _readers: list[threading.Thread] = field(default_factory=list)

    @classmethod
    def start(cls, cwd: Path, *args: str, script: Path = CHILD, **env: str) -> Child:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args],
            cwd=cwd,
            env=child_env(**env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = cls(proc)
        child._readers = [
            threading.Thread(target=child._pump, daemon=True),
            threading.Thread(target=child._pump_stderr, daemon=True),
        ]
        for reader in child._readers:
            reader.start()
        return child

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr_chunks.append(self.proc.stderr.read())

    def wait_for(self, predicate: Any, timeout: float = 60) -> str:
        """Collect lines until one satisfies ``predicate``; return it."""
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            if line is None:
                raise AssertionError(
                    f"child exited before the expected line; stdout so far: {self.seen[-20:]}"
                )
            self.seen.append(line)
            if predicate(line):
                return line

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for exit; collect the remaining stdout; return (returncode, stderr)."""
        try:
            self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            for reader in self._readers:
                reader.join(10)
            assert self.proc.stdout is not None and self.proc.stderr is not None
            self.proc.stdout.close()
            self.proc.stderr.close()
        while True:
            line = self.lines.get(timeout=10)
            if line is None:
                break
            self.seen.append(line)
        return self.proc.returncode, "".join(self.stderr_chunks)

    def ended(self) -> list[Ended]:
        out = []
        for line in self.seen:
            if line.startswith("ended "):
                _, span_id, name, at = line.split(" ")
                out.append(Ended(span_id, name, float(at)))
        return out


def run_child(cwd: Path, *args: str, timeout: float = 60, **env: str) -> tuple[Child, int, str]:
    child = Child.start(cwd, *args, **env)
    code, stderr = child.finish(timeout)
    return child, code, stderr


def query(db: Path, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    conn = duckdb.connect(str(db), read_only=True)
    try:
        return conn.execute(sql, params or []).fetchall()
    finally:
        conn.close()


def span_rows(db: Path) -> dict[str, tuple[Any, ...]]:
    """span_id -> (name, parent_id, status_code, status_description, events JSON)."""
    return {
        r[0]: r[1:]
        for r in query(
            db,
            "SELECT span_id, name, parent_id, status_code, status_description, events FROM spans",
        )
    }
