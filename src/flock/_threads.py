"""Running a plain function off the event loop.

Plain-function engines and sync tools run on flock's own pool of worker threads, not on the
event loop's default executor. The difference is what happens when the awaiting run is cut
off (an agent's ``.timeout()``, a cancelled task): Python cannot stop a thread, so the call
goes on until the function returns. In the default executor (``asyncio.to_thread``) it kept
one of the executor's few threads all that time, and once they were all held by such calls
no later plain-function call of any agent started. Here an abandoned call stops counting
against the pool: the pool starts another thread for waiting calls if it needs one, and the
abandoned call's thread leaves (or rejoins the pool, if it has room) when the function
returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any, Final, TypeVar

__all__ = ["run_sync"]

T = TypeVar("T")

log = logging.getLogger("flock")

POOL_SIZE: Final = min(32, (os.cpu_count() or 1) + 4)
"""Calls that run at once (the default executor's size); abandoned calls are not counted."""

# The states of a call. Every change is made under its pool's lock.
_PENDING: Final = 0  # queued
_RUNNING: Final = 1  # a worker is running it, and its caller is waiting
_ABANDONED: Final = 2  # running, its caller was cancelled: not one of the pool's workers
_CANCELLED: Final = 3  # its caller was cancelled before it started: it is not run
_DONE: Final = 4


async def run_sync(fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, awaited without blocking the loop.

    Like ``asyncio.to_thread``: the caller's context is copied (``contextvars``, so the
    function's spans nest under the caller's span), and cancelling the caller before the call
    started means it never runs. A ``StopIteration`` it raises becomes a ``RuntimeError``:
    asyncio cannot set ``StopIteration`` on a future (``TypeError`` in a callback), so the
    await would never return and the run would hang.

    Unlike ``asyncio.to_thread`` it does not use the loop's default executor (so
    ``loop.set_default_executor`` does not apply) but one pool for the process, shared by
    every event loop: at most :data:`POOL_SIZE` calls run at once, the others wait in line.
    A call whose caller is cancelled while it runs (a run's ``.timeout()`` fired) is
    abandoned: it runs on to its end in its thread, its result or exception is dropped, and
    it no longer counts against the pool, so the calls waiting in line start at once. A
    function that never returns keeps its thread for good, so give blocking calls their own
    timeouts; a warning is logged whenever the abandoned calls still running reach a
    multiple of :data:`POOL_SIZE`.

    The threads are daemon threads: neither ``asyncio.run`` nor the interpreter waits for
    them at exit. A call still running then (an abandoned one: ``asyncio.run`` cancels what
    is left of its tasks first) is stopped where it is, without its ``finally`` blocks, when
    the process ends. A forked child starts with an empty pool of its own.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()
    call = _Call(loop, future, contextvars.copy_context(), fn, args, kwargs)
    pool = _pool
    pool.submit(call)
    try:
        return await future
    except asyncio.CancelledError:
        pool.abandon(call)
        raise


class _Call:
    __slots__ = ("args", "context", "fn", "future", "kwargs", "loop", "state")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        future: asyncio.Future[Any],
        context: contextvars.Context,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self.loop = loop
        self.future = future
        self.context = context
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.state = _PENDING


def _deliver(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)


class _Pool:
    """Worker threads taking calls from one queue.

    Counts, under ``_lock``: ``_workers`` threads that serve the queue (at most ``size``; a
    thread running an abandoned call is not one of them), ``_idle`` of them waiting with no
    queued call meant for them, ``_backlog`` queued calls no worker is meant for yet (only
    while no worker is idle), and ``_abandoned`` abandoned calls still running. Each queued
    call is meant for one worker: a waiting one, a new one, or the next one to finish.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._queue: SimpleQueue[_Call] = SimpleQueue()
        self._workers = 0
        self._idle = 0
        self._backlog = 0
        self._abandoned = 0
        self._names = itertools.count()

    def submit(self, call: _Call) -> None:
        with self._lock:
            self._queue.put(call)
            if self._idle:
                self._idle -= 1
                return
            if self._workers >= self.size:
                self._backlog += 1
                return
            self._workers += 1
        try:
            self._start()
        except BaseException:
            with self._lock:
                self._workers -= 1
                self._backlog += 1
                taken = call.state != _PENDING  # another worker got to it meanwhile
                if not taken:
                    call.state = _CANCELLED  # not run: a later worker skips it
            if not taken:
                raise

    def abandon(self, call: _Call) -> None:
        """The caller of ``call`` was cancelled: drop it, or let it run on without counting
        it against the pool (and start a thread for a waiting call if that needs one)."""
        with self._lock:
            if call.state == _PENDING:
                call.state = _CANCELLED
                return
            if call.state != _RUNNING:
                return
            call.state = _ABANDONED
            self._abandoned += 1
            abandoned = self._abandoned
            self._workers -= 1
            start = self._backlog > 0
            if start:
                self._backlog -= 1
                self._workers += 1
        if abandoned % self.size == 0:
            log.warning(
                "%d plain-function calls (engines or tools) whose runs were cut off by a "
                "timeout or cancellation are still running in their threads; give blocking "
                "calls their own timeouts",
                abandoned,
            )
        if start:
            try:
                self._start()
            except Exception:  # cannot raise here: the caller is being cancelled
                log.exception("could not start a worker thread for plain-function calls")
                with self._lock:
                    self._workers -= 1
                    self._backlog += 1

    def _start(self) -> None:
        name = f"flock-sync-{next(self._names)}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        lock, queue = self._lock, self._queue
        while True:
            call = queue.get()
            with lock:
                run = call.state == _PENDING
                if run:
                    call.state = _RUNNING
            result: Any = None
            error: BaseException | None = None
            if run:
                try:
                    result = call.context.run(call.fn, *call.args, **call.kwargs)
                except StopIteration as exc:
                    name = getattr(call.fn, "__name__", repr(call.fn))
                    error = RuntimeError(f"{name} raised StopIteration")
                    error.__cause__ = exc
                except BaseException as exc:
                    error = exc
            with lock:
                if call.state == _ABANDONED:
                    run = False  # nobody waits for it
                    self._abandoned -= 1
                    if self._workers >= self.size:
                        return  # replaced: this thread ends
                    self._workers += 1  # rejoin the pool
                elif run:
                    call.state = _DONE
                if self._backlog:
                    self._backlog -= 1
                else:
                    self._idle += 1
            if run:
                with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits either
                    call.loop.call_soon_threadsafe(_deliver, call.future, result, error)
            del call, result, error  # keep nothing of a finished call alive while waiting


_pool = _Pool(POOL_SIZE)


def _after_fork() -> None:
    global _pool  # the parent's threads do not exist in the child
    _pool = _Pool(POOL_SIZE)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
