"""Job context in log records: ``%(jid)s`` and ``%(jobtype)s`` work in any formatter.

The three adapters set :data:`CURRENT` while a job's handler runs (a context variable, so it
follows asyncio tasks, threads and greenlets). :func:`install` wraps the log record factory
once, so every record carries the running job's ``jid`` and ``jobtype``, empty outside a job.
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
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(jobtype)s %(jid)s: %(message)s"

_lock: Final = threading.Lock()
_installed = False


def install() -> None:
    """Give every log record ``jid`` and ``jobtype`` attributes (idempotent)."""
    global _installed
    with _lock:
        if _installed:
            return
        make_record = logging.getLogRecordFactory()

        def with_job(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make_record(*args, **kwargs)
            context = CURRENT.get(None)
            if context is None:
                record.jid = record.jobtype = ""
            else:
                record.jid, record.jobtype = context.job.jid, context.job.jobtype
            return record

        logging.setLogRecordFactory(with_job)
        _installed = True
