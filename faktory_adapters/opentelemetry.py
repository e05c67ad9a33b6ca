"""OpenTelemetry tracing of pushes and jobs: ``client.observe(PushTracer())`` on producers,
``instrument_worker(worker)`` on workers.

It needs the ``opentelemetry`` extra (``pip install 'faktory-sansio[opentelemetry]'``), which
brings ``opentelemetry-api``; exporting the spans takes an SDK, the application's choice.

Each push is a PRODUCER span, ``push <queue>``, whose context goes with the job in its
``custom`` hash, under the keys of the globally configured propagator (``traceparent`` and
``tracestate`` for W3C Trace Context, the default, and ``baggage``). Each run of a job is a
CONSUMER span, ``process <queue>``, child of the push's span (and linked to it), current while
the job's handler runs. Span names, attributes and the key layout: docs/tracing.md.
"""

from __future__ import annotations

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.propagators import textmap
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode
except ImportError as missing:  # pragma: no cover - depends on the environment
    raise ImportError(
        "faktory_adapters.opentelemetry needs opentelemetry-api: "
        "pip install 'faktory-sansio[opentelemetry]'"
    ) from missing

import sys
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any, Final

import attrs

from faktory_core import Job, __version__

from ._common import JobAborted, describe_error
from ._driver import JobContextBase
from ._observe import ClientObserver, PushOutcome

if TYPE_CHECKING:  # full names: the docs link them
    import faktory_adapters.asyncio
    import faktory_adapters.gevent
    import faktory_adapters.thread

__all__ = ["DEFAULT_MAX_PENDING", "PushTracer", "instrument_worker"]

#: How many pushes a :class:`PushTracer` keeps a span open for, waiting for their end.
DEFAULT_MAX_PENDING: Final = 10_000

_SYSTEM: Final = "faktory"
# Workers instrumented already: a second middleware would nest a second span in each job's.
_INSTRUMENTED: Final[weakref.WeakSet[object]] = weakref.WeakSet()
_INSTRUMENTED_LOCK: Final = threading.Lock()


def _tracer(tracer_provider: trace.TracerProvider | None) -> trace.Tracer:
    return trace.get_tracer(__name__, __version__, tracer_provider)


class PushTracer(ClientObserver):
    """A PRODUCER span for each job a Client pushes (``push`` or each job of ``push_bulk``),
    its context injected into the job's ``custom``: ``client.observe(PushTracer())``.

    The span starts when the job is about to go out, as a child of the current span, and
    ends when its push ended, with the :class:`~faktory_adapters.PushOutcome` (an error
    status unless pushed). Spans come from ``tracer_provider`` (by default the global one);
    the context is injected by the global propagator. One PushTracer may observe several
    Clients, of any adapter.

    A span waits for its push's end for at most ``max_pending`` pushes at once: beyond, the
    oldest is ended without an outcome (a ``push_bulk`` of more jobs than that ends the
    spans of its first jobs early), so a push whose end never comes holds no memory for ever.
    """

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None = None,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if type(max_pending) is not int:
            raise TypeError(f"max_pending must be an int, got {type(max_pending).__name__}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be at least 1, got {max_pending}")
        self.max_pending = max_pending
        self._tracer = _tracer(tracer_provider)
        self._pending: dict[str, trace.Span] = {}  # by jid, the oldest first
        self._lock = threading.Lock()  # pushes of several threads at once

    def pushing(self, job: Job) -> Job:
        span = self._tracer.start_span(
            f"push {job.queue}",
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": _SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "push",
                "messaging.destination.name": job.queue,
                "messaging.message.id": job.jid,
                "faktory.job.type": job.jobtype,
            },
        )
        with self._lock:
            # The same jid pushed again before its first push ended: that span ends now.
            superseded = self._pending.pop(job.jid, None)
            self._pending[job.jid] = span
            oldest = None
            if len(self._pending) > self.max_pending:
                oldest = self._pending.pop(next(iter(self._pending)))
        # Ended outside the lock: an exporter may do I/O, and switch greenlets.
        for abandoned in (superseded, oldest):
            if abandoned is not None:
                abandoned.end()
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        # The propagator's keys left from an earlier push (a fetched job pushed again) are
        # not this push's context: they go, and every other key stays.
        fields = propagate.get_global_textmap().fields
        before = job.custom or {}
        custom = {key: value for key, value in before.items() if key not in fields}
        custom.update(carrier)
        if custom == before:  # no context to send (no SDK, no current span)
            return job
        return attrs.evolve(job, custom=custom)

    def pushed(self, job: Job, outcome: PushOutcome, error: str | None) -> None:
        with self._lock:
            span = self._pending.pop(job.jid, None)
        if span is None:  # ended already: see max_pending
            return
        span.set_attribute("faktory.push.outcome", outcome.value)
        if outcome is not PushOutcome.PUSHED:
            span.set_attribute("error.type", outcome.value)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()

    def __repr__(self) -> str:
        return f"PushTracer(max_pending={self.max_pending})"


class _CustomGetter(textmap.Getter[Mapping[str, Any]]):
    """Reads a propagator's keys from a job's ``custom``, whose values may be anything."""

    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value] if isinstance(value, str) else None

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key, value in carrier.items() if isinstance(value, str)]


_CUSTOM_GETTER: Final = _CustomGetter()


class _JobSpans:
    """The middleware that runs each job in a CONSUMER span, for either kind of adapter;
    ``aborted`` is what an abort raises in the job in that adapter."""

    def __init__(self, tracer: trace.Tracer, aborted: type[BaseException]) -> None:
        self._tracer = tracer
        self._aborted = aborted

    def start(self, context: JobContextBase) -> tuple[trace.Span, Token[otel_context.Context]]:
        """Start the job's span and make it current; the span, and the token to detach."""
        job = context.job
        # The job's context only: what is current in the worker is not the job's parent.
        parent = propagate.extract(
            job.custom or {}, context=otel_context.Context(), getter=_CUSTOM_GETTER
        )
        created = trace.get_current_span(parent).get_span_context()
        attributes: dict[str, str | int] = {
            "messaging.system": _SYSTEM,
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.jid,
            "messaging.client.id": context.worker.wid,
            "faktory.job.type": job.jobtype,
        }
        if job.failure is not None:
            attributes["faktory.job.retry_count"] = job.failure.retry_count
        span = self._tracer.start_span(
            f"process {job.queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            # The messaging conventions correlate a consumer with its producer by a link,
            # whatever the parent: it is both here.
            links=[Link(created)] if created.is_valid else None,
        )
        # In the job's context, with the baggage the producer sent.
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        return span, token

    def end(
        self,
        span: trace.Span,
        token: Token[otel_context.Context],
        context: JobContextBase,
        error: BaseException | None,
    ) -> None:
        """Record how the job ended (``error``: what it raised), end its span, detach it."""
        try:
            reason = context.abort.reason
            if reason is not None:  # FAILed when it was aborted, whatever it did since
                span.set_attribute("faktory.job.aborted", reason)
                span.set_attribute("error.type", "JobAborted")
                span.set_status(Status(StatusCode.ERROR, f"aborted: {reason}"))
                if error is not None and not isinstance(error, self._aborted):
                    span.record_exception(error)
            elif error is not None:
                span.set_attribute("error.type", type(error).__name__)  # the FAIL's errtype
                span.set_status(Status(StatusCode.ERROR, describe_error(error)))
                span.record_exception(error)
        finally:
            # An abort raised in a job's thread can land anywhere, in the lines above too:
            # the span still ends.
            try:
                otel_context.detach(token)
            finally:
                span.end()

    async def process_async(
        self, context: JobContextBase, call_next: Callable[[], Awaitable[None]]
    ) -> None:
        """The asyncio adapter's middleware."""
        span, token = self.start(context)
        error = None
        try:
            await call_next()
        except BaseException as raised:
            error = raised
            raise
        finally:
            self.end(span, token, context, error)

    def process(self, context: JobContextBase, call_next: Callable[[], None]) -> None:
        """The thread and gevent adapters' middleware."""
        span, token = self.start(context)
        error = None
        try:
            call_next()
        except BaseException as raised:
            error = raised
            raise
        finally:
            self.end(span, token, context, error)


def _adapter_of(worker: object) -> str | None:
    """The adapter whose Worker ``worker`` is: its module is loaded then, and no other is
    imported to find out."""
    for name in ("asyncio", "thread", "gevent"):
        module = sys.modules.get(f"faktory_adapters.{name}")
        if module is not None and isinstance(worker, module.Worker):
            return name
    return None


def instrument_worker(
    worker: faktory_adapters.asyncio.Worker
    | faktory_adapters.thread.Worker
    | faktory_adapters.gevent.Worker,
    *,
    tracer_provider: trace.TracerProvider | None = None,
) -> None:
    """Run each job of ``worker`` in a CONSUMER span that continues the trace of its push.

    It adds the middleware that suits the worker's adapter (asyncio, thread or gevent) with
    ``worker.use``: call it before the worker's other ``use``, so that they run inside the
    span. A worker is instrumented once (ValueError the second time); anything but a Worker
    of the three adapters is a TypeError. Spans come from ``tracer_provider`` (by default the
    global one).
    """
    adapter = _adapter_of(worker)
    if adapter is None:
        raise TypeError(
            "instrument_worker(worker): worker must be a Worker of faktory_adapters.asyncio, "
            f".thread or .gevent, got {type(worker).__module__}.{type(worker).__qualname__}"
        )
    with _INSTRUMENTED_LOCK:
        if worker in _INSTRUMENTED:
            raise ValueError(
                "instrument_worker(worker): this worker is instrumented already (a second "
                "time would give each job two spans)"
            )
        _INSTRUMENTED.add(worker)
    tracer = _tracer(tracer_provider)
    if adapter == "asyncio":
        import asyncio  # loaded with the adapter already

        # An abort cancels the job's task.
        worker.use(_JobSpans(tracer, asyncio.CancelledError).process_async)
    else:
        worker.use(_JobSpans(tracer, JobAborted).process)
