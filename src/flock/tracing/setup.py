"""Tracing set-up from the environment, done on first use of a Flock (never at import).

| variable | default | effect |
|---|---|---|
| ``FLOCK_AUTO_TRACE`` | ``true`` | install an OpenTelemetry SDK provider if none is set |
| ``FLOCK_TRACE_FILE`` | ``true`` | write spans to the DuckDB trace file |
| ``FLOCK_TRACE_DB`` | ``.flock/traces.duckdb`` | where the trace file is |
| ``FLOCK_TRACE_FLUSH_INTERVAL`` | ``1.0`` | seconds between background writes (0.01-3600) |
| ``FLOCK_AUTO_WORKFLOW_TRACE`` | ``false`` | group publish…run_until_idle into one workflow trace |
| ``FLOCK_TRACE_RETENTION`` | unset (keep all) | delete traces that ended longer ago (``7d``, ``12h``) |
| ``OTEL_SDK_DISABLED`` | ``false`` | turn all tracing off |
| ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` | unset | also export over OTLP |
| ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` | ``http/protobuf`` | ``grpc`` or ``http/protobuf`` |
| ``OTEL_TRACES_EXPORTER`` | ``otlp`` | ``none`` turns OTLP export off |
| ``OTEL_SERVICE_NAME`` | ``flock`` | ``service.name`` of the spans |

An invalid value of one of these variables gives a ``RuntimeWarning`` naming it and what is
done instead (the default flush interval; no retention; ``http/protobuf`` for ``http/json``, which the
OpenTelemetry SDK cannot send; no OTLP export for an unknown protocol).

A tracer provider the application installed itself is respected: flock adds its processors
to it instead of replacing it (an OpenTelemetry SDK provider), or starts its spans on it as it
is (another implementation of the OpenTelemetry API, which takes no span processors).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import trace

from flock.exceptions import ConfigurationError, TracingError
from flock.tracing._instrument import Instrument
from flock.tracing.store import DEFAULT_DB_PATH, MAX_ATTRIBUTE_CHARS
from flock.tracing.workflow import Workflows, WorkflowSpanProcessor

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

    from flock.tracing._attributes import Redactor
    from flock.tracing.processor import DuckDBSpanProcessor

__all__ = ["TracingSettings", "configure", "instrument_for"]

log = logging.getLogger("flock.tracing")
_lock = threading.Lock()
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_WARNED_FLAGS: set[tuple[str, str]] = set()
EXIT_FLUSH_WAIT_MS = 2_000
"""How long the exit of traced_run waits for its spans to be written (e.g. while another
process holds the file); after that they stay queued and are written on the next chance."""
DEFAULT_FLUSH_INTERVAL = 1.0
FLUSH_INTERVAL_RANGE = (0.01, 3600.0)
"""Accepted ``FLOCK_TRACE_FLUSH_INTERVAL`` values, in seconds (inclusive): ``0`` or less
would keep the writer thread spinning, ``inf`` or huge values kill it."""


def env_flag(name: str, default: bool) -> bool:
    """An on/off variable; unset or blank: ``default``. A value that is neither (a typo such
    as ``ture``) gives the default too, with a ``RuntimeWarning`` (once per value): silently
    reading it as false turned tracing off."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    word = value.strip().lower()
    if word in _TRUE or word in _FALSE:
        return word in _TRUE
    if (name, value) not in _WARNED_FLAGS:
        _WARNED_FLAGS.add((name, value))
        warnings.warn(
            f"{name}={value!r} is neither on ({', '.join(_TRUE)}) nor off "
            f"({', '.join(_FALSE)}); using the default, {str(default).lower()}",
            RuntimeWarning,
            stacklevel=3,
        )
    return default


@dataclass(slots=True)
class TracingSettings:
    """What :func:`configure` set up (one per tracer provider)."""

    provider: Any
    file: DuckDBSpanProcessor | None = None
    file_unusable: bool = False
    """The trace file could not be used (warned once; not retried for this provider)."""
    workflow_processor: WorkflowSpanProcessor | None = None
    redact: Redactor | None = None
    """The redaction hook given to :func:`configure` (applied to the trace file)."""
    max_attribute_chars: int | None = None
    """The attribute cap given to :func:`configure` (default ``MAX_ATTRIBUTE_CHARS`` in the trace file)."""


_configured: dict[int, TracingSettings] = {}


def _sdk_disabled() -> bool:
    return env_flag("OTEL_SDK_DISABLED", False)


def _no_global_provider(provider: object) -> bool:
    """True for OpenTelemetry's stand-in before any provider is set globally (the only one
    ``FLOCK_AUTO_TRACE`` replaces: a provider the application installed is never replaced)."""
    return isinstance(provider, trace.ProxyTracerProvider)


def _is_sdk_provider(provider: object) -> bool:
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

    return isinstance(provider, SDKTracerProvider)


def configure(
    provider: Any | None = None,
    *,
    trace_file: bool | None = None,
    db_path: str | None = None,
    redact: Redactor | None = None,
    max_attribute_chars: int | None = None,
) -> TracingSettings | None:
    """Set up tracing for flock (idempotent per provider); ``None`` when tracing is off.

    Args:
        provider: an SDK ``TracerProvider``; default: the global one, or a new one installed
            globally when ``FLOCK_AUTO_TRACE`` is on and none is set. ``None`` is returned
            for a provider that is not the SDK's (flock's spans go to it as they are, see
            :func:`instrument_for`).
        trace_file: write to the DuckDB file (default ``FLOCK_TRACE_FILE``, true; only for
            the global provider unless given).
        db_path: the trace file (default ``FLOCK_TRACE_DB`` or ``.flock/traces.duckdb``).
        redact: ``redact(key, value) -> value | None`` applied to attributes before they are
            written to the file (``None`` drops the attribute).
        max_attribute_chars: longer string attributes are truncated with a marker.

    ``redact`` and ``max_attribute_chars`` may also be given later, after the provider is
    set up (e.g. after a first ``traced_run``): they apply to every span the writer encodes
    from then on, which includes the spans still queued (not those it already encoded, e.g.
    while another process holds the file). ``None`` keeps the current setting. The trace
    file itself cannot change once set up: another ``db_path``, or ``trace_file=False`` when
    the file is written already, raises :class:`~flock.exceptions.ConfigurationError`.
    """
    if redact is not None and not callable(redact):
        raise ConfigurationError(f"redact must be a callable redact(key, value), got {redact!r}")
    if max_attribute_chars is not None and (
        isinstance(max_attribute_chars, bool)
        or not isinstance(max_attribute_chars, int)
        or max_attribute_chars < 1
    ):
        raise ConfigurationError(
            f"max_attribute_chars must be a positive int, got {max_attribute_chars!r}"
        )
    if _sdk_disabled():
        return None
    with _lock:
        explicit = provider is not None
        sdk_provider: SDKTracerProvider
        if provider is None:
            provider = trace.get_tracer_provider()
            if _no_global_provider(provider):
                if not env_flag("FLOCK_AUTO_TRACE", True):
                    return None
                provider = _new_provider()
                trace.set_tracer_provider(provider)
            elif not _is_sdk_provider(provider):
                return None  # the application's own API provider: used as it is
        elif not _is_sdk_provider(provider):
            return None  # a custom API provider: use it as it is
        sdk_provider = cast("SDKTracerProvider", provider)
        settings = _configured.get(id(provider))
        if settings is None or settings.provider is not provider:
            settings = TracingSettings(provider=provider)
            settings.workflow_processor = WorkflowSpanProcessor()
            sdk_provider.add_span_processor(settings.workflow_processor)  # type: ignore[arg-type]
            _configured[id(provider)] = settings
        if redact is not None:
            settings.redact = redact
        if max_attribute_chars is not None:
            settings.max_attribute_chars = max_attribute_chars
        if settings.file is not None:
            _check_unchanged(settings.file, trace_file=trace_file, db_path=db_path)
            # The writer thread reads both for each batch it encodes.
            if redact is not None:
                settings.file.redact = redact
            if max_attribute_chars is not None:
                settings.file.max_attribute_chars = max_attribute_chars
        want_file = (
            trace_file
            if trace_file is not None
            else (not explicit and env_flag("FLOCK_TRACE_FILE", True))
        )
        if want_file and settings.file is None and not settings.file_unusable:
            settings.file = _file_processor(
                db_path or _env_db_path(),
                redact=settings.redact,
                max_attribute_chars=settings.max_attribute_chars,
            )
            if settings.file is not None:
                sdk_provider.add_span_processor(settings.file)
                _install_sigterm_flush()
            else:
                settings.file_unusable = True
        return settings


def _check_unchanged(
    file: DuckDBSpanProcessor, *, trace_file: bool | None, db_path: str | None
) -> None:
    """Refuse what cannot change once the provider writes its trace file (the SDK cannot
    remove a span processor), instead of silently going on with the old file."""
    from pathlib import Path

    if trace_file is False:
        raise ConfigurationError(
            f"tracing already writes to the trace file {str(file.path)!r}; trace_file=False "
            "cannot turn it off afterwards (call configure(trace_file=False) before the first "
            "Flock is used, or set FLOCK_TRACE_FILE=false)"
        )
    if db_path and Path(db_path).resolve() != file.path:
        raise ConfigurationError(
            f"tracing already writes to the trace file {str(file.path)!r}; db_path={db_path!r} "
            "cannot change it afterwards (call configure(db_path=...) before the first Flock "
            "is used, or set FLOCK_TRACE_DB)"
        )


def trace_file_path(provider: Any | None = None) -> str:
    """The trace file ``provider``'s spans go to (default: the global provider's): the file
    :func:`configure` set up for it, else ``FLOCK_TRACE_DB`` or ``.flock/traces.duckdb``."""
    if provider is None:
        provider = trace.get_tracer_provider()
    settings = _configured.get(id(provider))
    if settings is not None and settings.provider is provider and settings.file is not None:
        return str(settings.file.path)
    return _env_db_path()


def _env_db_path() -> str:
    return os.environ.get("FLOCK_TRACE_DB") or DEFAULT_DB_PATH


def _new_provider() -> SDKTracerProvider:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

    named = os.environ.get("OTEL_SERVICE_NAME") or any(
        item.split("=", 1)[0].strip() == "service.name"
        for item in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(",")
    )
    attributes = {} if named else {"service.name": "flock"}  # the environment's name wins
    provider = SDKTracerProvider(resource=Resource.create(attributes))
    exporter = _otlp_exporter()
    if exporter is not None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from flock.tracing._otlp import ReportingSpanExporter

        # Failures are reported once, not per batch, and never hold up the run or its exit.
        def redact() -> Redactor | None:  # the hook configure() sets, possibly later
            settings = _configured.get(id(provider))
            return settings.redact if settings is not None else None

        exporter = ReportingSpanExporter(exporter, redact=redact)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


def _otlp_exporter() -> Any | None:
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint or not _otlp_wanted():
        return None
    variable = next(
        (
            name
            for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
            if os.environ.get(name)
        ),
        None,
    )
    protocol = os.environ[variable].strip() if variable else "http/protobuf"
    if protocol == "http/json":
        # The SDK has no OTLP/JSON span exporter; protobuf is what every OTLP/HTTP receiver
        # must accept, so send that rather than nothing, and say so.
        warnings.warn(
            f"{variable}='http/json' is not supported by the OpenTelemetry Python SDK (it has "
            "no OTLP/JSON exporter); exporting with 'http/protobuf' to the same endpoint instead",
            RuntimeWarning,
            stacklevel=2,
        )
        protocol = "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    else:
        warnings.warn(
            f"{variable}={protocol!r} is not supported (use 'grpc' or 'http/protobuf'); OTLP "
            "export is off",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    # The exporters read the endpoint, headers, timeout etc. from the OTEL_* variables.
    return OTLPSpanExporter()


def _otlp_wanted() -> bool:
    """``OTEL_TRACES_EXPORTER`` (default ``otlp``): ``none`` turns OTLP export off; flock
    exports with nothing else (other names are ignored, with a warning)."""
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "")
    names = {name.strip().lower() for name in raw.split(",") if name.strip()} or {"otlp"}
    unknown = sorted(names - {"otlp", "none"})
    if unknown:
        off = "" if "otlp" in names else "; OTLP export is off (list 'otlp' to keep it)"
        warnings.warn(
            f"OTEL_TRACES_EXPORTER={raw!r}: flock exports over OTLP ('otlp') or not at all "
            f"('none'); ignoring {', '.join(map(repr, unknown))}{off}",
            RuntimeWarning,
            stacklevel=4,
        )
    return "otlp" in names


def _file_processor(
    path: str, *, redact: Redactor | None, max_attribute_chars: int | None
) -> DuckDBSpanProcessor | None:
    from flock.tracing.processor import DuckDBSpanProcessor

    interval = _flush_interval()
    try:
        return DuckDBSpanProcessor(
            path,
            flush_interval=interval,
            retention=_retention(),
            redact=redact,
            max_attribute_chars=max_attribute_chars or MAX_ATTRIBUTE_CHARS,
        )
    except TracingError as exc:
        warnings.warn(f"flock tracing without a trace file: {exc}", RuntimeWarning, stacklevel=3)
        return None


def _flush_interval() -> float:
    """``FLOCK_TRACE_FLUSH_INTERVAL`` in seconds; the default, with a warning, unless it is a
    number within :data:`FLUSH_INTERVAL_RANGE`."""
    raw = os.environ.get("FLOCK_TRACE_FLUSH_INTERVAL")
    if raw is None or not raw.strip():
        return DEFAULT_FLUSH_INTERVAL
    low, high = FLUSH_INTERVAL_RANGE
    try:
        interval = float(raw)
    except ValueError:
        interval = float("nan")
    if low <= interval <= high:  # False for nan
        return interval
    warnings.warn(
        f"FLOCK_TRACE_FLUSH_INTERVAL={raw!r} is not a number of seconds from {low:g} to "
        f"{high:g}; using the default {DEFAULT_FLUSH_INTERVAL}",
        RuntimeWarning,
        stacklevel=4,
    )
    return DEFAULT_FLUSH_INTERVAL


def _retention() -> timedelta | None:
    """``FLOCK_TRACE_RETENTION`` (``"7d"``, ``"12h"``, ``"30m"``); None (keep every trace),
    with a warning, unless it is a positive duration."""
    from flock.tracing._times import MAX_NS, duration_ns

    raw = os.environ.get("FLOCK_TRACE_RETENTION")
    if raw is None or not raw.strip():
        return None
    ns = duration_ns(raw)
    if ns is not None and 0 < ns <= MAX_NS:
        return timedelta(microseconds=ns / 1000)
    warnings.warn(
        f"FLOCK_TRACE_RETENTION={raw!r} is not a positive duration like 7d, 12h or 30m; "
        "keeping every trace",
        RuntimeWarning,
        stacklevel=4,
    )
    return None


_sigterm_installed = False


def _install_sigterm_flush() -> None:
    """On SIGTERM, exit through SystemExit so atexit flushes the trace file.

    Only when SIGTERM has its default handler (the application's own handler wins) and we are
    in the main thread.
    """
    global _sigterm_installed
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return

    def _on_sigterm(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends it at once
        from flock.tracing.processor import exiting

        if exiting():  # already writing its last spans (e.g. a pool worker's exit hook)
            return  # let that finish (within exit_timeout): the process ends right after
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _on_sigterm)
    _sigterm_installed = True


def instrument_for(provider: Any | None) -> tuple[Instrument, Workflows]:
    """The span helper and workflow manager a Flock uses, set up from the environment."""
    auto = env_flag("FLOCK_AUTO_WORKFLOW_TRACE", False)
    settings = configure(provider)
    if settings is None:
        if provider is None and not _sdk_disabled():
            # The application's own global provider (not the SDK's), unless none is set.
            provider = trace.get_tracer_provider()
            if _no_global_provider(provider):
                provider = None
        if provider is not None and not _sdk_disabled():
            tracer = provider.get_tracer("flock")
            return Instrument(tracer), Workflows(tracer, auto=auto)
        return Instrument(None), Workflows(None)
    from flock import __version__

    tracer = settings.provider.get_tracer("flock", __version__)
    file = settings.file
    return Instrument(tracer), Workflows(
        tracer,
        flush=(lambda: file.flush_async(EXIT_FLUSH_WAIT_MS / 1000)) if file is not None else None,
        request_flush=file.request_flush if file is not None else None,
        auto=auto,
    )
