"""The span processor that writes finished spans into the DuckDB trace file.

``on_end`` only appends the span to a queue (a few hundred nanoseconds, never any I/O). A
background thread encodes queued spans into Arrow as soon as ``ENCODE_BATCH`` of them wait
(finished spans are many small Python objects; holding tens of thousands of them makes every
garbage collection of the application slower, so they are turned into compact Arrow memory
early), and every ``flush_interval`` seconds — or when ``batch_size`` rows are encoded, or a
flush is requested — appends everything encoded with a single INSERT, holding the file only
for that append (:class:`~flock.tracing.store.Appender`), so other processes can open it
read-only between flushes. Appends that fall due in normal running go to a second thread,
and the encoder goes on meanwhile (the next batch grows); written batches are freed a few at
a time (freeing them at once held the GIL, and with it the event loop, for 14-25 ms).

When the file is locked by another process the encoded rows stay in memory and the write is
retried with backoff; nothing is dropped unless more than ``max_queue`` spans wait, and drops
are counted (``dropped``) and reported on stderr, never silent.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import ctypes
import logging
import os
import queue
import sys
import threading
import time
import weakref
from collections import deque
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor

from flock._errors import describe, safe_text
from flock.exceptions import TracingError
from flock.tracing._encode import FinishedSpan, replace_surrogates, spans_to_arrow
from flock.tracing.store import MAX_ATTRIBUTE_CHARS, Appender

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from flock.tracing._attributes import Redactor

__all__ = ["DuckDBSpanProcessor", "active_writers"]

log = logging.getLogger("flock.tracing")

_WRITERS: weakref.WeakSet[DuckDBSpanProcessor] = weakref.WeakSet()
_FORKED_APPENDERS: list[Appender] = []  # the parent's DuckDB instances, never used in a child
ENCODE_CHUNK = 256  # spans encoded between GIL releases (~1 ms), to keep the loop responsive
ENCODE_BATCH = 256  # queued spans that wake the writer: encoded before the GC promotes them
ENCODE_SPILL_CHUNK = 65_536  # spans encoded at a time when they are saved at exit
URGENT_RETRY = 0.01  # s between tries to write what a flush waits for, while the file is held
URGENT_RETRY_FOR = 2.0  # s after the flush's request that they stay that frequent (its wait)
RELEASE_CHUNK = 32  # written Arrow tables freed between GIL releases (~1 ms)
FORK_WAIT = 10.0  # the longest a fork waits for the writer's libraries, or for an append
_EXITING: set[int] = set()  # writers shutting down at exit (a SIGTERM then does not cut in)
EXIT_PRIORITY = 10  # of the shutdown among multiprocessing's exit finalizers (higher: earlier)


def active_writers(path: str | Path) -> Iterator[DuckDBSpanProcessor]:
    """The processors of this process that write to ``path``."""
    resolved = Path(path).resolve()
    return (w for w in list(_WRITERS) if w.path == resolved)


def is_lock_error(exc: BaseException) -> bool:
    """DuckDB's "another connection holds the file" errors: another process's, or another
    DuckDB database of this process (a ``duckdb.connect()`` of the file left open beside the
    writer); nothing else: a corrupt file's "checksum ... in block at ..." or any path
    through ``.flock/`` also contains "lock"."""
    text = safe_text(exc)
    return (
        "Could not set lock on file" in text
        or "Conflicting lock is held" in text
        or "Unique file handle conflict" in text
    )


class DuckDBSpanProcessor(SpanProcessor):
    """Queues finished spans and writes them to ``path`` from a background thread."""

    def __init__(
        self,
        path: str | Path,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 100_000,
        max_queue: int = 2_000_000,
        max_attribute_chars: int = MAX_ATTRIBUTE_CHARS,
        redact: Redactor | None = None,
        exit_timeout: float = 10.0,
        retention: timedelta | None = None,
    ) -> None:
        self.path = Path(path).resolve()
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_queue = max_queue
        self.max_attribute_chars = max_attribute_chars
        self.redact = redact
        self.exit_timeout = exit_timeout
        if retention is not None and retention <= timedelta(0):
            raise ValueError(f"retention must be a positive duration, got {retention!r}")
        self.retention = retention
        self.pruned = 0  # spans deleted for being older than the retention
        self._next_prune = time.monotonic()  # the first check comes with the writer's start
        self.dropped = 0  # spans not written on purpose: over the queue bound, or unencodable
        self.unencodable = 0  # of which the encoder could not take (a value out of range)
        self.unencodable_error: str | None = None  # why the last of those could not be
        self.written = 0
        self.last_error: str | None = None
        self._last_write = time.monotonic()
        self._stopping = False
        self._closed = False
        self._warned_lock = False
        self._exit_finalizer: Any = None  # multiprocessing's exit hook (see _exit_with_mp)
        self._fork = threading.local()  # .held: this thread took the append lock to fork
        self._new_pipeline()
        self._check_file()
        self._thread.start()
        _WRITERS.add(self)
        atexit.register(self._shutdown_at_exit)
        self._exit_with_mp()
        if hasattr(os, "register_at_fork"):  # weakly: a processor may be garbage-collected
            before = weakref.WeakMethod(self._before_fork)
            after_fork = weakref.WeakMethod(self._after_fork_in_child)
            after_parent = weakref.WeakMethod(self._after_fork_in_parent)
            os.register_at_fork(
                before=lambda: _call_if_alive(before),
                after_in_parent=lambda: _call_if_alive(after_parent),
                after_in_child=lambda: _call_if_alive(after_fork),
            )

    def _new_pipeline(self) -> None:
        """An empty queue, the writer's threads (not started yet), their locks and a DuckDB
        instance of their own: at start, and again in a forked child."""
        self._queue: deque[FinishedSpan | _Marker] = deque()
        self._encoding_rows = 0  # spans taken off the queue, being encoded
        self._encoded: list[Any] = []  # Arrow tables not yet in the file
        self._encoded_rows = 0
        self._writing_rows = 0  # rows taken for a write in this thread (a flush, the exit)
        self._inflight: tuple[threading.Event, dict[str, Any], list[Any], int] | None = None
        self._inserts: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._inserter: threading.Thread | None = None
        self._appender = Appender(self.path)
        self._wake = threading.Event()
        self._ready = threading.Event()  # set once the writer thread has loaded its libraries
        self._file_lock = threading.Lock()  # held by appends, prunes and pause()
        self._append_lock = threading.Lock()  # held only while the file is attached here
        self._thread = threading.Thread(target=self._loop, name="flock-trace-writer", daemon=True)

    def _before_fork(self) -> None:
        """Before this process forks: let the writer thread finish loading its libraries,
        and fork between two appends. A fork while another thread imports a module leaves
        that module's import lock held in the child by a thread the child does not have, so
        the child's writer would hang for good at its first use of the module; a fork while
        the file is attached leaves it attached, for good, to the DuckDB instance the child
        inherits, and DuckDB refuses the child's own attach of it."""
        self._fork.held = False
        ready, thread = self._ready, self._thread
        if not thread.is_alive() or thread is threading.current_thread():
            return
        if not ready.is_set() and not ready.wait(FORK_WAIT):
            log.warning(
                "flock trace writer: still loading its libraries after %.0f s; forking anyway "
                "(the child's spans may not reach %s)",
                FORK_WAIT,
                self.path,
            )
        self._fork.held = self._append_lock.acquire(timeout=FORK_WAIT)
        if not self._fork.held:
            log.warning(
                "flock trace writer: still appending to %s after %.0f s; forking anyway (the "
                "child's spans may not reach it)",
                self.path,
                FORK_WAIT,
            )

    def _after_fork_in_parent(self) -> None:
        if getattr(self._fork, "held", False):  # (per thread: several may fork at once)
            self._fork.held = False
            self._append_lock.release()

    def _after_fork_in_child(self) -> None:
        """In a forked child (``multiprocessing``'s default on Linux) the writer's threads
        are gone: start new ones, with an empty queue (the parent writes what it queued) and
        a DuckDB instance of the child's own (the parent's is left untouched), so that the
        child's spans reach the file too, as OpenTelemetry's batch processor does."""
        if self._closed:
            return
        _keep_forever(self._appender)
        self._new_pipeline()  # (new locks: the parent's append lock was held for the fork)
        self._fork = threading.local()
        self.dropped = self.unencodable = self.written = self.pruned = 0
        self.unencodable_error = self.last_error = None
        self._warned_lock = False
        self._thread.start()
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is not None:
            # A multiprocessing child clears the finalizers it inherited, then runs these
            # after-fork hooks (Process._bootstrap): register the child's exit hook there.
            mp_util.register_after_fork(self, DuckDBSpanProcessor._exit_with_mp)

    def _exit_with_mp(self) -> None:
        """Shut down (write what is left) when this process ends as a ``multiprocessing``
        child: fork and forkserver children end with ``os._exit``, which skips ``atexit``,
        but first run multiprocessing's finalizers. Without ``multiprocessing`` loaded, this
        process is no such child (a later forked one registers from the fork hooks)."""
        mp_util = sys.modules.get("multiprocessing.util")
        if mp_util is None or self._closed:
            return
        if self._exit_finalizer is not None:
            self._exit_finalizer.cancel()  # an inherited one (a no-op once cleared)
        self._exit_finalizer = mp_util.Finalize(
            None, self._shutdown_at_exit, exitpriority=EXIT_PRIORITY
        )

    def _check_file(self) -> None:
        """Make sure the file can be used (creating it and its table if needed), the way the
        writer opens it: ATTACHed to the appender's in-memory DuckDB instance. (A
        ``duckdb.connect`` of the file would clash with a read-only connection to it open in
        this process, which is merely busy, like another process's.)"""
        try:
            self._appender.check()
        except Exception as exc:
            if is_lock_error(exc):
                return  # another connection reads it right now; the writer will retry
            with contextlib.suppress(Exception):
                self._appender.close()
            raise TracingError(
                f"cannot use trace file {str(self.path)!r}: {type(exc).__name__}: {exc}. "
                "Move or delete the file (or set FLOCK_TRACE_DB to another path, or "
                "FLOCK_TRACE_FILE=false to trace without a file)."
            ) from exc

    @property
    def pending(self) -> int:
        """Spans queued, encoded or being appended, not yet in the file (approximate, never
        blocks). Read in the order spans move through the writer, which counts each stage
        before it clears the one before: a span moving meanwhile may count twice, never not
        at all."""
        pending = len(self._queue) + self._encoding_rows + self._encoded_rows
        pending += self._writing_rows
        inflight = self._inflight  # read once: the writer thread may clear it meanwhile
        # (a failed append's rows are given back only at the next write)
        if inflight is not None and not (inflight[0].is_set() and inflight[1].get("ok")):
            pending += inflight[3]
        return pending

    def _appending(self) -> int:
        """Rows the insert thread is appending right now (0 when it is idle)."""
        inflight = self._inflight  # read once: the writer thread may clear it meanwhile
        return inflight[3] if inflight is not None and not inflight[0].is_set() else 0

    @property
    def closed(self) -> bool:
        """True once :meth:`shutdown` was called (or the writer thread is gone)."""
        return self._closed or not self._thread.is_alive()

    # SpanProcessor --------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if len(queue) + self._encoded_rows >= self.max_queue:
            self._drop(1)
            return
        queue.append(FinishedSpan(span))
        if len(queue) == ENCODE_BATCH:
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Write every span queued so far; False if that did not finish in time."""
        if self.closed:
            return not self._queue and not self._encoded_rows
        written = threading.Event()
        self._mark(written.set)
        return written.wait(timeout_millis / 1000)

    async def flush_async(self, timeout: float) -> bool:
        """:meth:`force_flush` for a coroutine: the writer thread resolves a future on the
        event loop when the spans queued so far are written (no worker thread in between,
        which saves two thread wake-ups per flush). False if that took over ``timeout`` s."""
        if self.closed:
            return not self._queue and not self._encoded_rows
        loop = asyncio.get_running_loop()
        written = loop.create_future()

        def resolve() -> None:
            if not written.done():
                written.set_result(None)

        def wake() -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(resolve)

        self._mark(wake)
        try:
            await asyncio.wait_for(written, timeout)
        except TimeoutError:
            return False
        return True

    def _mark(self, done: Callable[[], None]) -> None:
        """Queue a flush marker (``done`` is called once what precedes it is written)."""
        self._queue.append(_Marker(done))
        self._wake.set()

    def request_flush(self) -> None:
        """Wake the writer to encode what is queued now, without waiting; the write itself
        follows at the flush interval (or at once with :meth:`force_flush`)."""
        self._wake.set()

    def shutdown(self) -> None:
        """Write what is queued (retrying up to ``exit_timeout`` while the file is locked),
        save what cannot be written to ``<file>.pending/``, and report any loss on stderr."""
        if not self._closed:
            self._shutdown()

    def _shutdown_at_exit(self) -> None:
        """:meth:`shutdown` as the process exits (atexit, multiprocessing's exit hooks): a
        SIGTERM meanwhile lets it finish (see :func:`exiting`)."""
        _EXITING.add(id(self))
        try:
            self.shutdown()
        finally:
            _EXITING.discard(id(self))

    def _shutdown(self) -> None:
        self._closed = True
        self._stopping = True
        if self._exit_finalizer is not None:  # done now: no second run at exit
            self._exit_finalizer.cancel()
            self._exit_finalizer = None
        self._wake.set()
        self._thread.join(self.exit_timeout + 5)
        self._inserts.put(None)  # the insert thread is idle: the last write was synchronous
        if not self._thread.is_alive():
            try:
                with self._file_lock:
                    self._appender.close()
            except Exception as exc:  # the spans are in the file's log, which readers replay
                (log.info if is_lock_error(exc) else log.warning)(
                    "could not merge the write-ahead log into %s at exit (%s: %s); the spans "
                    "are in %s.wal and readers see them",
                    self.path,
                    type(exc).__name__,
                    exc,
                    self.path.name,
                )
        queued = list(self._queue)  # a snapshot: other threads may still end spans
        lost = self._encoded_rows + sum(1 for item in queued if isinstance(item, FinishedSpan))
        kept = self._spill() if lost and not self._thread.is_alive() else None
        if kept is not None:
            spilled, rows = kept
            print(
                f"flock: {rows} span(s) could not be written to {self.path} before exit "
                f"({self.last_error or f'not written within exit_timeout={self.exit_timeout:g} s'}); "
                f"they are kept in {spilled} and "
                "added to the trace file by the next flock process that writes to it",
                file=sys.stderr,
            )
            lost = 0
        if lost or self.dropped:
            over_bound = self.dropped - self.unencodable
            print(
                f"flock: {lost + self.dropped} span(s) could not be written to {self.path} "
                f"({over_bound} dropped over the queue bound, {self.unencodable} unencodable"
                f"{' (' + self.unencodable_error + ')' if self.unencodable_error else ''}, "
                f"{lost} unwritten at exit"
                f"{': ' + self.last_error if self.last_error else ''})",
                file=sys.stderr,
            )
        atexit.unregister(self._shutdown_at_exit)

    def _spill(self) -> tuple[Path, int] | None:
        """At exit, save the spans the writer could not write (the file stayed locked) for
        the next writer of the file (see :meth:`Appender.spill`); None if that fails too."""
        items = list(self._queue)  # a snapshot: other threads may still end spans
        spans = [item for item in items if isinstance(item, FinishedSpan)]
        try:
            tables = list(self._encoded)
            for start in range(0, len(spans), ENCODE_SPILL_CHUNK):
                chunk = spans[start : start + ENCODE_SPILL_CHUNK]
                try:
                    table = self._encode(chunk)
                except Exception:  # span by span: the one it cannot take is dropped
                    chunk, table = self._encode_isolating(chunk)
                if chunk:
                    tables.append(table)
            if not tables:
                return None
            spilled = self._appender.spill(tables)
        except Exception as exc:
            log.warning("flock: cannot keep the unwritten spans: %s: %s", type(exc).__name__, exc)
            return None
        for _ in items:  # those kept; spans ended since then stay queued (and are reported)
            self._queue.popleft()
        self._encoded, self._encoded_rows = [], 0
        return spilled, sum(t.num_rows for t in tables)

    # Writer thread --------------------------------------------------------

    def _drop(self, n: int) -> None:
        if not self.dropped:
            log.warning(
                "flock trace queue is full (%d spans); dropping spans until the writer catches "
                "up (the count is reported at exit)",
                self.max_queue,
            )
        self.dropped += n

    def _loop(self) -> None:
        # Load the encoder's libraries as the writer starts (with the application), not with
        # the first batch: loading pyarrow holds the GIL for ~10 ms at a time, which stalled
        # the event loop under the first burst of spans (measured). Everything the writer
        # imports lazily is loaded here, so that a fork waiting for ``_ready`` (see
        # _before_fork) never happens while this thread holds an import lock.
        try:
            import orjson  # noqa: F401
            import pyarrow  # noqa: F401

            import flock.tracing._attributes  # noqa: F401
        except ImportError:  # the first encode fails the same way, keeps the spans, retries
            log.exception("flock trace writer: cannot load its encoder's libraries")
        finally:
            self._ready.set()
        self._prune_if_due()  # as the writer starts: a short script never waits an interval
        while True:
            self._wake.wait(self.flush_interval)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._drain(deadline=time.monotonic() + self.exit_timeout if stopping else None)
            except BaseException as exc:  # never let the writer die silently (SystemExit too)
                error = describe(exc)  # (an exception whose str() raises must not end it)
                if error != self.last_error:
                    log.exception("flock trace writer failed; spans stay queued and are retried")
                self.last_error = error
                time.sleep(min(self.flush_interval, 1.0))
            if stopping:
                return
            self._prune_if_due()

    def _prune_if_due(self) -> None:
        """With a retention, delete the traces that ended longer ago than it: when the
        writer starts, then every tenth of the retention (between 1 minute and 1 hour).
        While another process holds the file it is tried again at the next wake-up."""
        now = time.monotonic()
        if self.retention is None or now < self._next_prune:
            return
        seconds = self.retention.total_seconds()
        cutoff = time.time_ns() - int(seconds * 1e9)
        try:
            with self._file_lock, self._append_lock:
                deleted = self._appender.prune(cutoff)
        except BaseException as exc:  # never let the writer die (see _loop)
            if is_lock_error(exc):
                return
            log.warning(
                "flock trace writer: could not delete the traces older than %s from %s "
                "(%s: %s); trying again later",
                self.retention,
                self.path,
                type(exc).__name__,
                exc,
            )
            deleted = 0
        self._next_prune = now + min(max(seconds / 10, 60.0), 3600.0)
        if deleted:
            self.pruned += deleted
            log.info(
                "flock trace writer: deleted %d span(s) of traces older than %s from %s",
                deleted,
                self.retention,
                self.path,
            )

    def _drain(self, *, deadline: float | None) -> None:
        """Encode what is queued; write it when due (interval, size, a flush marker, exit).

        A write that falls due in normal running goes to the insert thread (DuckDB releases
        the GIL for most of an append; it takes it back for each Arrow chunk it reads), so
        encoding the next spans overlaps it; flushes and exit write synchronously.
        """
        queue = self._queue
        while True:
            if deadline is None and self._stopping:
                return  # shutting down: the loop drains again, with the exit deadline
            if deadline is not None and time.monotonic() > deadline and not self._inflight:
                return  # exit, and spans still coming: shutdown keeps what is left
            batch: list[FinishedSpan] = []
            markers: list[_Marker] = []
            self._encoding_rows = min(len(queue), ENCODE_CHUNK)  # (see pending)
            while queue and len(batch) < ENCODE_CHUNK:
                item = queue.popleft()
                if isinstance(item, _Marker):
                    # Spans queued after the marker join its write (the chunk ends anyway):
                    # workflows ending together share one append, a group commit, instead
                    # of each waiting for the appends of all those that ended before it.
                    markers.append(item)
                else:
                    batch.append(item)
            self._encoding_rows = len(batch)
            if batch:
                try:
                    table = self._encode(batch)
                except (ImportError, MemoryError):  # the encoder cannot run: keep, retry
                    queue.extendleft(reversed([*batch, *markers]))
                    self._encoding_rows = 0
                    raise
                except BaseException:  # a hook's SystemExit, say: isolate the span at fault
                    batch, table = self._encode_isolating(batch)
                if batch:
                    self._encoded.append(table)
                    self._encoded_rows += len(batch)
                self._encoding_rows = 0
                # The spans can go now; and no local may keep the newest table alive past
                # its write: it would pin the top of the allocator's heap, and freeing it
                # last hands everything freed below back to the OS at once (~15 ms holding
                # the GIL at 100,000 spans, measured) instead of a little per _release step.
                del batch, table
            synchronous = bool(markers) or deadline is not None
            # While the insert thread still appends the previous batch, keep encoding: the
            # next batch grows instead of the writer waiting (larger appends cost less per
            # row). Flushes and exit wait for it.
            due = synchronous or (
                not self._appending()
                and (
                    self._encoded_rows >= self.batch_size
                    or time.monotonic() - self._last_write >= self.flush_interval
                )
            )
            if due and (self._encoded_rows or self._inflight is not None):
                if not self._collect() and deadline is None:
                    queue.extendleft(reversed(markers))
                    return
                if self._encoded_rows:
                    if synchronous:
                        urgent = markers[0].created + URGENT_RETRY_FOR if markers else 0.0
                        if not self._write_now(deadline, urgent_until=urgent):
                            queue.extendleft(reversed(markers))
                            return
                    else:
                        self._submit()
            for marker in markers:
                marker.set()
            if not queue:
                return
            time.sleep(0)  # let the event loop thread take the GIL between chunks

    def _take(self) -> tuple[list[Any], int]:
        tables, rows = self._encoded, self._encoded_rows
        self._encoded, self._encoded_rows = [], 0
        self._last_write = time.monotonic()
        return tables, rows

    def _give_back(self, tables: list[Any], rows: int) -> None:
        self._encoded[:0] = tables
        self._encoded_rows += rows

    def _write_now(self, deadline: float | None, *, urgent_until: float = 0.0) -> bool:
        self._writing_rows = self._encoded_rows  # (see pending)
        tables, rows = self._take()
        try:
            written = self._write(
                tables, rows, deadline=deadline, urgent_until=urgent_until, waited_on=True
            )
            if not written:
                self._give_back(tables, rows)
        except BaseException:
            self._give_back(tables, rows)
            raise
        finally:
            self._writing_rows = 0
        if written:
            _release(tables)
        return written

    def _submit(self) -> None:
        """Write every encoded row from the insert thread while the writer goes on encoding.

        The insert thread lives as long as the writer (no thread start per write).
        """
        done = threading.Event()
        outcome: dict[str, Any] = {}
        # counted in pending from here on, before _take() clears the encoded rows
        self._inflight = (done, outcome, self._encoded, self._encoded_rows)
        tables, rows = self._take()
        if self._inserter is None or not self._inserter.is_alive():
            self._inserter = threading.Thread(
                target=self._insert_loop, name="flock-trace-insert", daemon=True
            )
            self._inserter.start()
        self._inserts.put((tables, rows, outcome, done))

    def _insert_loop(self) -> None:
        while True:
            job = self._inserts.get()
            if job is None:
                return
            tables, rows, outcome, done = job
            try:
                outcome["ok"] = self._write(tables, rows, deadline=None)
            except BaseException as exc:  # handed to the writer thread by _collect
                outcome["error"] = exc
            finally:
                done.set()
            if outcome.get("ok"):
                _release(tables)  # not given back: free them now, not at the next write

    def _collect(self) -> bool:
        """Wait for the insert thread; False (rows kept for later) if it could not write."""
        if self._inflight is None:
            return True
        done, outcome, tables, rows = self._inflight
        done.wait()
        if outcome.get("ok"):
            self._inflight = None
            return True
        self._give_back(tables, rows)  # before the inflight rows stop counting (see pending)
        self._inflight = None
        if "error" in outcome:
            raise outcome["error"]
        return False

    def _encode(self, batch: list[FinishedSpan]) -> Any:
        return spans_to_arrow(batch, max_chars=self.max_attribute_chars, redact=self.redact)

    def _encode_isolating(self, batch: list[FinishedSpan]) -> tuple[list[FinishedSpan], Any]:
        """Encode ``batch`` span by span, after encoding it whole failed. A lone surrogate in
        a span's name or status (a file name decoded with ``surrogateescape``, say) is
        replaced by U+FFFD; a span the encoder still cannot take (a value out of any column's
        range, say) is dropped, counted and logged,
        instead of blocking every span queued after it forever. Returns the encodable spans
        and their table (None if there are none)."""
        good: list[FinishedSpan] = []
        for span in batch:
            try:
                try:
                    self._encode([span])
                except UnicodeEncodeError:  # a lone surrogate, which UTF-8 cannot hold
                    replace_surrogates(span)
                    self._encode([span])
            except BaseException as exc:  # as any exception: this thread must go on
                error = describe(exc)
                if error != self.unencodable_error:
                    log.error("flock trace writer: dropping span %r: %s", span._name, error)
                self.unencodable_error = error
                self.unencodable += 1
                self.dropped += 1
            else:
                good.append(span)
        return good, (self._encode(good) if good else None)

    def _write(
        self,
        tables: list[Any],
        rows: int,
        *,
        deadline: float | None,
        urgent_until: float = 0.0,
        waited_on: bool = False,
    ) -> bool:
        """Append ``tables``; retry while the file is locked. False: not yet (or give back).

        Until ``urgent_until`` (monotonic time) a flush waits for this write (a
        ``traced_run`` exit, for at most ``URGENT_RETRY_FOR`` s): while a reader holds the
        file it is retried every :data:`URGENT_RETRY` s, so that the exit follows a short read
        closely; otherwise, and after that, at growing intervals (up to 1 s)."""
        import pyarrow as pa

        table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
        delay = URGENT_RETRY if time.monotonic() < urgent_until else 0.05
        while True:
            try:
                with self._file_lock, self._append_lock:
                    self._appender.append(table, waited_on=waited_on)
            except Exception as exc:
                if not is_lock_error(exc):
                    raise
                self.last_error = describe(exc)
                if not self._warned_lock:
                    self._warned_lock = True
                    log.warning(
                        "trace file %s is locked by another process (or by a connection to "
                        "it left open in this one: close it, or read through "
                        "flock.tracing.query.TraceStore); keeping spans in memory and retrying",
                        self.path,
                    )
                if deadline is not None and time.monotonic() + delay > deadline:
                    return False
                if deadline is None and self._stopping:
                    return False  # the writer retries until its exit deadline, then spills
                if deadline is None and delay >= 1.0:
                    # Keep retrying from the loop so newly queued spans join the same write.
                    time.sleep(delay)
                    return False
                time.sleep(delay)
                if time.monotonic() >= urgent_until:
                    delay = min(delay * 2, 1.0)
                continue
            self.written += rows
            self._warned_lock = False
            self.last_error = None
            return True

    def pause(self) -> _Paused:
        """Hold off writes (e.g. while the file is cleared in this process)."""
        return _Paused(self._file_lock)


def _keep_forever(appender: Appender) -> None:
    """In a forked child, never free the parent's DuckDB instance (the child never uses it):
    its destructor joins threads the child does not have and aborts the process (at the
    child's normal exit at the latest, when the modules are cleared)."""
    _FORKED_APPENDERS.append(appender)
    conn = appender._conn
    if conn is not None:
        with contextlib.suppress(Exception):  # a reference nothing ever releases
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(conn))


def exiting() -> bool:
    """Whether a writer of this process is writing its last spans as the process exits."""
    return bool(_EXITING)


def _call_if_alive(method: weakref.WeakMethod[Callable[[], None]]) -> None:
    """Call a weakly held method, unless its object is gone (a fork hook's target)."""
    bound = method()
    if bound is not None:
        bound()


def _release(tables: list[Any]) -> None:
    """Free written Arrow tables (emptying the list in place, which every holder shares) a
    few at a time. Freeing a 100,000-span write's ~800 tables at once holds the GIL for
    14-25 ms (measured): the event loop's longest pause while spans were exported."""
    while tables:
        del tables[-RELEASE_CHUNK:]
        time.sleep(0)


class _Marker:
    """A flush request in the queue: ``set`` (``done``, called in the writer thread) once
    every span queued before it is written."""

    __slots__ = ("created", "set")

    def __init__(self, done: Callable[[], None]) -> None:
        self.set = done
        self.created = time.monotonic()


class _Paused:
    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
