"""OTLP export that reports a broken endpoint once and never holds up a run or its exit.

The OpenTelemetry exporters log every failed batch, and every retry inside it ("Transient
error … retrying in 1.13s", "Failed to export spans batch …"): a down endpoint, one that
speaks the other protocol (gRPC against an HTTP port or the reverse) or one that never
answers fills stderr with a few lines per batch for as long as the program runs.

:class:`ReportingSpanExporter` wraps the exporter flock sets up from ``OTEL_EXPORTER_OTLP_*``:

- While it exports, a :class:`logging.Filter` on the ``opentelemetry.exporter`` loggers (and
  ``urllib3``'s) captures the exporter's own log records *of that thread and call* instead of
  printing them; other threads and other exporters are untouched.
- The first failed batch is reported as one warning on the ``flock.tracing`` logger naming
  the endpoint, the cause (the exporter's first message) and that the spans are still in the
  trace file. Later failures are counted (``failed_batches``, ``failed_spans``), not logged,
  until an export succeeds again ("works again" is logged once), so each outage is reported
  once.
- Export runs in the SDK's batch thread, so the run itself never waits for the endpoint. At
  interpreter exit a batch gets one attempt, not the exporter's retries with back-off (a
  refused port held a short program's exit ~7 s): the exporter's retry wait is cut short
  (its shutdown event is set, which ends the back-off without shutting it down). The exit
  gives up on the endpoint, counting the remaining batches instead of trying them, when it
  was failing already as the exit began, after a slow failure (an endpoint that never
  answers: one ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s by default) or after a second failure;
  a collector that fails one batch (a 503 while it restarts) still gets the others.
"""

from __future__ import annotations

import atexit
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from flock._errors import describe

if TYPE_CHECKING:
    from flock.tracing._attributes import Redactor

__all__ = ["ReportingSpanExporter", "redacted"]

log = logging.getLogger("flock.tracing")

_CAPTURED_LOGGERS = ("opentelemetry.exporter", "urllib3")
_local = threading.local()
SLOW_FAILURE_S = 0.5
"""An exit export that fails after this long (a timeout, not an answer) gives up the rest."""
_RETRYING = re.compile(r",? retrying in [0-9.]+s\.?")


class _CaptureExportLogs(logging.Filter):
    """Diverts records logged while this thread is inside :meth:`ReportingSpanExporter.export`."""

    def filter(self, record: logging.LogRecord) -> bool:
        records: list[logging.LogRecord] | None = getattr(_local, "records", None)
        if records is None:
            return True
        records.append(record)
        on_retry: Callable[[], None] | None = getattr(_local, "on_retry", None)
        if on_retry is not None and _RETRYING.search(record.getMessage()):
            on_retry()  # before the exporter's back-off starts (it logs, then waits)
        return False


_CAPTURE = _CaptureExportLogs()


def _install_capture() -> None:
    # A logger's filters only see records logged on that very logger (not its children's),
    # so the filter goes on every exporter logger that exists once the exporter is imported.
    names = [n for n in list(logging.root.manager.loggerDict) if n.startswith(_CAPTURED_LOGGERS)]
    for name in names:
        logger = logging.getLogger(name)
        if _CAPTURE not in logger.filters:
            logger.addFilter(_CAPTURE)


class ReportingSpanExporter(SpanExporter):
    """Wraps an OTLP span exporter; see the module docstring."""

    def __init__(
        self,
        inner: SpanExporter,
        endpoint: str | None = None,
        *,
        redact: Callable[[], Redactor | None] | None = None,
    ) -> None:
        self.inner = inner
        self.redact = redact
        """Gives the redact hook in force (``configure(redact=)``, which may come later):
        spans are exported as :func:`redacted` rewrites them, as the trace file stores them."""
        self.endpoint = endpoint or str(getattr(inner, "_endpoint", "the OTLP endpoint"))
        self.failed_batches = 0
        self.failed_spans = 0
        self.failing = False
        self._exiting = False
        self._give_up = False  # (at exit) the remaining batches are counted, not tried
        self._exit_failures = 0
        self._inner_shut_down = False
        self._lock = threading.Lock()
        _install_capture()
        atexit.register(self._at_exit)  # after the provider's own hook, so it runs before it

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._exiting and self._give_up:
            self._count_failure(len(spans))
            return SpanExportResult.FAILURE
        hook = self.redact() if self.redact is not None else None
        if hook is not None:
            resources: dict[int, Any] = {}
            spans = [redacted(span, hook, resources) for span in spans]
        records: list[logging.LogRecord] = []
        _local.records = records
        _local.on_retry = self._retry_at_exit if self._exiting else None
        reason: str | None = None
        started = time.monotonic()
        try:
            result = self.inner.export(spans)
        except Exception as exc:  # an exporter bug must not kill the SDK's batch thread
            result = SpanExportResult.FAILURE
            reason = describe(exc)
        finally:
            _local.records = _local.on_retry = None
        if result is SpanExportResult.SUCCESS:
            if self.failing:
                self.failing = False
                log.warning("flock: OTLP export to %s works again", self.endpoint)
            return result
        first = self._count_failure(len(spans))
        if self._exiting:
            self._exit_failures += 1
            slow = time.monotonic() - started > SLOW_FAILURE_S
            self._give_up = self._give_up or slow or self._exit_failures >= 2
        if first:
            if reason is None:
                reason = records[0].getMessage() if records else "the exporter reported failure"
                reason = _RETRYING.sub("", reason).rstrip(". ")
            log.warning(
                "flock: OTLP export to %s failed: %s. %s; further export failures are not "
                "reported until export works again (check OTEL_EXPORTER_OTLP_ENDPOINT and "
                "OTEL_EXPORTER_OTLP_PROTOCOL).",
                self.endpoint,
                reason[:500],
                _where_else(),
            )
        return result

    def _count_failure(self, n: int) -> bool:
        """Count a failed batch; True if it starts an outage (the one to report)."""
        with self._lock:
            self.failed_batches += 1
            self.failed_spans += n
            first = not self.failing
            self.failing = True
            return first

    def _at_exit(self) -> None:
        self._give_up = self.failing  # down already: the exit does not wait for it again
        self._exiting = True
        if not self._end_retries() and self.failing:
            self._shutdown_inner()  # (another exporter: ends its wait, and later exports)

    def _end_retries(self) -> bool:
        """From now on, one attempt per batch: set the event the exporter's retry back-off
        waits on (its shutdown event: set, an export fails after its first attempt instead
        of waiting to retry, and later exports still run; a back-off already under way ends).
        False for an exporter without one (another version or kind)."""
        inner: Any = self.inner
        event = getattr(getattr(inner, "_client", None), "_shutdown_event", None)  # HTTP
        if not isinstance(event, threading.Event):
            event = getattr(inner, "_shutdown_in_progress", None)  # gRPC
        if isinstance(event, threading.Event):
            event.set()
            return True
        return False

    def _retry_at_exit(self) -> None:
        """The exporter is about to wait to retry a batch during the exit: not that long."""
        if not self._end_retries():
            self._shutdown_inner()

    def _shutdown_inner(self) -> None:
        with self._lock:
            if self._inner_shut_down:
                return
            self._inner_shut_down = True
        # Captures "Shutdown in progress" and the like; it may run inside export (on_retry),
        # whose capture goes on after.
        outer = getattr(_local, "records", None), getattr(_local, "on_retry", None)
        _local.records, _local.on_retry = [], None
        try:
            self.inner.shutdown()
        finally:
            _local.records, _local.on_retry = outer

    def shutdown(self) -> None:
        atexit.unregister(self._at_exit)
        self._shutdown_inner()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        result: Any = self.inner.force_flush(timeout_millis)
        return bool(result)


def redacted(span: ReadableSpan, redact: Redactor, resources: dict[int, Any]) -> ReadableSpan:
    """A copy of ``span`` as ``redact`` rewrites it for the trace file: its attributes, its
    events', its links', its resource's (each resource once per ``resources`` cache) and its
    status description. Where the hook raises, that part is replaced by a
    ``flock.encode_error`` attribute: never sent unredacted."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event
    from opentelemetry.trace import Link, Status

    from flock.tracing._attributes import redact_description, redact_flat

    def rewrite(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
        try:
            return redact_flat(attributes or {}, redact)
        except BaseException as exc:  # as the trace file's encoder does (SystemExit too)
            return {"flock.encode_error": describe(exc, 300)}

    resource = resources.get(id(span.resource))
    if resource is None:
        resource = resources[id(span.resource)] = Resource(
            rewrite(span.resource.attributes), span.resource.schema_url
        )
    status = span.status
    if status.description is not None:
        status = Status(status.status_code, redact_description(status.description, redact))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=resource,
        attributes=rewrite(span.attributes),
        events=[Event(e.name, rewrite(e.attributes), e.timestamp) for e in span.events],
        links=[Link(link.context, rewrite(link.attributes)) for link in span.links],
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _where_else() -> str:
    """Whether the spans that failed to export are kept anyway (in a trace file)."""
    from flock.tracing.processor import _WRITERS

    # A writer that has shut down wrote the spans that ended before: the OTLP exporter
    # gives up on a batch only after its retries (~8 s against a refused port), often after
    # a short program's writer has already written the same spans and closed.
    files = sorted({str(w.path) for w in list(_WRITERS)})
    if files:
        return f"The spans are still written to the trace file {', '.join(files)}"
    return "No trace file is written in this process (FLOCK_TRACE_FILE=false), so they are lost"
