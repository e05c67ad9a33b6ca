"""Job context in log records: ``%(faktory_jid)s`` and ``%(faktory_jobtype)s`` in a format.

The three adapters set :data:`CURRENT` while a job's handler runs (a context variable, so it
follows asyncio tasks, threads and greenlets). :func:`install`, called when a worker starts,
wraps the log record factory once, so every record carries the running job's
``faktory_jid`` and ``faktory_jobtype``, empty outside a job. The prefix is deliberate:
``logging`` refuses an ``extra`` key a record already has, and ``extra={"jid": ...}`` is
common in job code.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Any, Final, Protocol

from faktory_core import Job

__all__ = ["CURRENT", "LOG_FORMAT", "install"]


class _HasJob(Protocol):
    job: Job


#: The running job's context (each adapter's ``JobContext``); unset outside a job.
CURRENT: Final[contextvars.ContextVar[_HasJob]] = contextvars.ContextVar("faktory_job")

#: The format ``faktory-worker`` logs with.
LOG_FORMAT: Final = (
    "%(asctime)s %(levelname)s %(name)s %(faktory_jobtype)s %(faktory_jid)s: %(message)s"
)

_lock: Final = threading.Lock()
_installed = False


def install() -> None:
    """Give every log record ``faktory_jid`` and ``faktory_jobtype`` attributes (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        make_record = logging.getLogRecordFactory()

        def with_job(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            context = CURRENT.get(None)
            if context is None:
                record.faktory_jid = record.faktory_jobtype = ""
            else:
                record.faktory_jid = context.job.jid
                record.faktory_jobtype = context.job.jobtype
            return record

        logging.setLogRecordFactory(with_job)
        _installed = True
