"""Plain functions (function engines, sync tools) run in worker threads: a call whose run is
cut off by ``.timeout()`` goes on in its thread (Python cannot stop a thread), but it must
not take a thread away from later calls, nor keep the process from exiting."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import context as otel_context

from flock import AgentFailures, Flock, _threads
from flock._threads import run_sync
from tests.models import Idea, Note, Pizza

# The default executor's size, the pool's size without abandoned calls: one more blocked
# call than this used to leave no thread for anything else.
THREADS = min(32, (os.cpu_count() or 1) + 4)


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """Set at the end of the test, so no blocked worker thread outlives it."""
    event = threading.Event()
    yield event
    event.set()


def small_pool(monkeypatch: pytest.MonkeyPatch, size: int) -> Any:
    pool = _threads._Pool(size)
    monkeypatch.setattr(_threads, "_pool", pool)
    return pool


async def eventually(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true in time"
        await asyncio.sleep(0.005)


async def test_timed_out_runs_do_not_starve_later_plain_function_runs(
    release: threading.Event,
) -> None:
    def hang(idea: Idea) -> Pizza:  # e.g. a blocking HTTP call without its own timeout
        release.wait(60)
        return Pizza(name=idea.topic)

    flock = Flock()
    flock.agent("slow").consumes(Idea).publishes(Pizza).with_engines(hang).timeout(
        0.1
    ).max_concurrency(THREADS + 1).without_output()
    flock.agent("fast").consumes(Note).publishes(Pizza).with_engines(
        lambda note: Pizza(name=note.text)
    ).without_output()
    await flock.publish([Idea(topic=str(i)) for i in range(THREADS + 1)])
    with pytest.raises(AgentFailures) as info:
        await flock.run_until_idle(timeout=10)
    assert len(info.value.exceptions) == THREADS + 1
    assert {type(f.__cause__) for f in info.value.failures} == {TimeoutError}

    await flock.publish(Note(text="quick"))
    await flock.run_until_idle(timeout=5)  # used to time out: no thread left
    assert [p.name for p in await flock.store.payloads(Pizza)] == ["quick"]


async def test_cut_off_calls_do_not_starve_later_calls(release: threading.Event) -> None:
    started = threading.Semaphore(0)

    def blocking() -> str:
        started.release()
        release.wait(60)
        return "late"

    for _ in range(THREADS + 1):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(run_sync(blocking), 0.05)
    assert await asyncio.wait_for(run_sync(lambda: "quick"), 5) == "quick"


async def test_the_pool_runs_at_most_size_calls_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    small_pool(monkeypatch, 2)
    lock = threading.Lock()
    running, most = 0, 0

    def work(i: int) -> int:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return i

    assert await asyncio.gather(*(run_sync(work, i) for i in range(8))) == list(range(8))
    assert most == 2


async def test_an_abandoned_call_stops_counting_against_the_pool(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    pool = small_pool(monkeypatch, 2)
    finished: list[str] = []

    def blocking(name: str) -> str:
        release.wait(60)
        finished.append(name)
        return name

    calls = [asyncio.ensure_future(run_sync(blocking, f"old{i}")) for i in range(2)]
    queued = asyncio.ensure_future(run_sync(lambda: "queued"))  # waits for a thread
    await asyncio.sleep(0.05)
    assert not queued.done()
    with caplog.at_level(logging.WARNING, logger="flock"):
        for call in calls:
            call.cancel()
        # the queued call gets a thread although both old calls still run
        assert await asyncio.wait_for(queued, 5) == "queued"
    assert "2 plain-function calls (engines or tools) whose runs were cut off" in caplog.text
    both = threading.Barrier(3, timeout=5)
    # two new calls at once, next to the two abandoned ones
    assert await asyncio.gather(
        run_sync(both.wait), run_sync(both.wait), asyncio.to_thread(both.wait)
    )
    assert finished == []

    release.set()  # the abandoned calls end; their results go nowhere
    await eventually(lambda: len(finished) == 2)
    await eventually(lambda: pool._abandoned == 0)
    assert all(call.cancelled() for call in calls)
    assert pool._workers <= pool.size
    assert await asyncio.gather(*(run_sync(lambda: 1) for _ in range(4))) == [1, 1, 1, 1]
    live = [t for t in threading.enumerate() if t.name.startswith("flock-sync-")]
    assert all(t.daemon for t in live)


async def test_a_call_cancelled_before_it_started_never_runs(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    small_pool(monkeypatch, 1)
    ran: list[str] = []
    first = asyncio.ensure_future(run_sync(release.wait, 60))
    second = asyncio.ensure_future(run_sync(ran.append, "second"))
    await asyncio.sleep(0.05)
    second.cancel()
    with pytest.raises(asyncio.CancelledError):
        await second
    release.set()
    assert await first is True
    await run_sync(ran.append, "third")
    assert ran == ["third"]


async def test_the_context_is_copied_into_the_thread() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    var.set("caller")
    token = otel_context.attach(otel_context.set_value("flock.test", "span context"))
    try:

        def read_and_set() -> tuple[str, object, bool]:
            seen = (var.get(), otel_context.get_value("flock.test"))
            var.set("thread")
            return (*seen, threading.current_thread() is threading.main_thread())

        assert await run_sync(read_and_set) == ("caller", "span context", False)
        assert var.get() == "caller"  # the function's changes stay in its copy
    finally:
        otel_context.detach(token)


async def test_stop_iteration_becomes_a_runtime_error() -> None:
    def first_even(numbers: list[int]) -> int:
        return next(n for n in numbers if n % 2 == 0)

    with pytest.raises(RuntimeError, match="first_even raised StopIteration") as info:
        await asyncio.wait_for(run_sync(first_even, [1, 3]), 5)  # used to hang
    assert isinstance(info.value.__cause__, StopIteration)


async def test_exceptions_keep_the_function_frames() -> None:
    def fails(x: int, *, by: int) -> int:
        raise ValueError(f"{x}/{by}")

    with pytest.raises(ValueError, match="1/2") as info:
        await run_sync(fails, 1, by=2)
    assert "fails" in [frame.name for frame in traceback.extract_tb(info.value.__traceback__)]
    assert await run_sync(divmod, 7, 2) == (3, 1)


async def test_a_call_finishing_after_its_loop_closed_is_dropped(
    monkeypatch: pytest.MonkeyPatch, release: threading.Event
) -> None:
    pool = small_pool(monkeypatch, 1)
    loop = asyncio.new_event_loop()
    future = loop.create_future()
    call = _threads._Call(loop, future, contextvars.copy_context(), release.wait, (60,), {})
    pool.submit(call)
    loop.close()
    release.set()  # delivering to the closed loop fails; the worker goes on
    assert await asyncio.wait_for(run_sync(lambda: "next"), 5) == "next"
    assert not future.done()


async def test_a_thread_that_cannot_start_fails_the_call_not_the_pool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pool = small_pool(monkeypatch, 1)
    start = pool._start

    def cannot_start() -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(pool, "_start", cannot_start)
    ran: list[str] = []
    with pytest.raises(RuntimeError, match="can't start new thread"):
        await run_sync(ran.append, "refused")
    monkeypatch.setattr(pool, "_start", start)
    assert await asyncio.wait_for(run_sync(lambda: "next"), 5) == "next"
    assert ran == []  # the refused call was skipped, not run late


def test_a_forked_child_gets_its_own_pool() -> None:
    async def once() -> int:
        return await run_sync(os.getpid)

    assert asyncio.run(once()) == os.getpid()  # the parent's pool has an idle thread now
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            code = 0 if asyncio.run(asyncio.wait_for(once(), 5)) == os.getpid() else 1
        except BaseException:
            code = 2
        os._exit(code)
    deadline = time.monotonic() + 20
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child's call never ran")
        time.sleep(0.01)
    assert os.waitstatus_to_exitcode(done[1]) == 0


EXIT_SCRIPT = """
    import asyncio, threading
    from pydantic import BaseModel
    from flock import AgentFailures, Flock, flock_type

    @flock_type
    class In(BaseModel):
        i: int

    def hang(x: In) -> None:
        threading.Event().wait()  # never returns

    flock = Flock()
    flock.agent("hang").consumes(In).with_engines(hang).timeout(0.1).without_output()

    async def main() -> None:
        await flock.publish(In(i=1))
        try:
            await flock.run_until_idle()
        except AgentFailures as failures:
            print(type(failures.failures[0].__cause__).__name__, flush=True)

    asyncio.run(main())
    print("asyncio.run returned", flush=True)
"""


def test_a_hung_abandoned_call_does_not_keep_the_process_alive(tmp_path: Path) -> None:
    script = tmp_path / "hang.py"
    script.write_text(textwrap.dedent(EXIT_SCRIPT))
    env = {**os.environ, "FLOCK_AUTO_TRACE": "false", "FLOCK_OUTPUT": "off"}
    try:
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=30, env=env
        )
    except subprocess.TimeoutExpired as expired:  # asyncio.run waited for the thread
        pytest.fail(f"the process did not exit: {expired.stdout!r}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["TimeoutError", "asyncio.run returned"]
