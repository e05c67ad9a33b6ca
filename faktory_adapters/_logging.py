"""Job context in log records: ``%(faktory_jid)s`` and ``%(faktory_jobtype)s`` in a format.

The three adapters set :data:`CURRENT` while a job's handler runs (a context variable, so it
follows asyncio tasks, threads and greenlets). :func:`install`, called when
``faktory_adapters`` is imported and again when a worker starts, wraps the log record factory
(unless it is ours already), so every record of the process carries the running job's
``faktory_jid`` and ``faktory_jobtype``, empty outside a job: a format naming them is safe in
a process that never serves a worker. The prefix is deliberate: ``logging`` refuses an
``extra`` key a record already has, and ``extra={"jid": ...}`` is common in job code.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterator
from typing import Any, Final, Protocol

from faktory_core import Job

__all__ = ["CURRENT", "LOG_FORMAT", "about", "current", "install"]


class _HasJob(Protocol):
    @property
    def job(self) -> Job: ...


#: The running job's context (each adapter's ``JobContext``); unset outside a job.
CURRENT: Final[contextvars.ContextVar[_HasJob]] = contextvars.ContextVar("faktory_job")

#: The format ``faktory-worker`` logs with.
LOG_FORMAT: Final = (
    "%(asctime)s %(levelname)s %(name)s %(faktory_jobtype)s %(faktory_jid)s: %(message)s"
)

_lock: Final = threading.Lock()


def current() -> Any:
    """The running job's context; a LookupError that says so outside a job."""
    context = CURRENT.get(None)
    if context is None:
        raise LookupError(
            "current_job() was called outside a job: only a handler (or the middleware around "
            "it) that a worker runs has one; in a test, run the handler with "
            "faktory_adapters.testing.run_inline(handler, job)"
        )
    return context


class _JobOnly:
    """A job without a running context, for log lines about it (a job FAILed unstarted)."""

    __slots__ = ("job",)

    def __init__(self, job: Job) -> None:
        self.job = job


@contextlib.contextmanager
def about(job: Job | _HasJob) -> Iterator[None]:
    """Log records made inside carry ``job``'s jid and type (a Job, or a job's context)."""
    token = CURRENT.set(_JobOnly(job) if isinstance(job, Job) else job)
    try:
        yield
    finally:
        CURRENT.reset(token)


def install() -> None:
    """Give every log record ``faktory_jid`` and ``faktory_jobtype`` attributes.

    Idempotent: it wraps the current record factory unless that is already ours, so a
    factory someone set later without chaining is wrapped again (a worker calls this when
    it starts).
    """
    with _lock:
        make_record = logging.getLogRecordFactory()
        if getattr(make_record, "faktory_fields", False):
            return

        def with_job(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            context = CURRENT.get(None)
            if context is None:
                record.faktory_jid = record.faktory_jobtype = ""
            else:
                record.faktory_jid = context.job.jid
                record.faktory_jobtype = context.job.jobtype
            return record

        with_job.faktory_fields = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(with_job)
