"""Run a handler in a test as a worker would: its args after the trip through Faktory, inside
a job context, so ``current_job()`` and its abort signal work.

Needs hypothesis, like :mod:`faktory_core.testing`: ``pip install 'faktory-sansio[testing]'``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faktory_core import Job
from faktory_core.testing import as_fetched

from . import _logging
from . import asyncio as asyncio_adapter
from . import thread as thread_adapter
from ._driver import AbortSignalBase, JobContextBase

__all__ = ["run_inline"]

R = TypeVar("R")


def run_inline(handler: Callable[..., R], job: Job, *, abort: AbortSignalBase | None = None) -> R:
    """Call ``handler`` with ``job``'s args as a worker receives them, inside a job context.

    ``current_job()`` (of any adapter) returns a context with the job as fetched, ``worker``
    None, and ``abort``: the signal given (set it first with ``abort.set(reason)`` to see how
    the handler reacts), else a new one of the asyncio adapter for an ``async def`` handler and
    of the thread adapter otherwise (give ``faktory_adapters.gevent.AbortSignal()`` for gevent
    code). For an ``async def`` handler it returns a coroutine to await, which keeps the
    context while it runs. Exceptions propagate; no middleware runs.
    """
    fetched = as_fetched(job)
    if abort is None:
        abort = _default_signal(handler)
    context = JobContextBase(fetched, None)
    context.abort = abort
    with _logging.about(context):
        result = handler(*fetched.args)
    if inspect.isawaitable(result):
        return _in_context(context, result)  # type: ignore[return-value]
    return result


async def _in_context(context: JobContextBase, awaitable: Awaitable[Any]) -> Any:
    with _logging.about(context):
        return await awaitable


def _default_signal(handler: Callable[..., Any]) -> AbortSignalBase:
    if inspect.iscoroutinefunction(inspect.unwrap(handler)):
        return asyncio_adapter.AbortSignal()
    return thread_adapter.AbortSignal()
