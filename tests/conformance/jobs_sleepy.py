"""Handlers for ``test_high_concurrency``: short sleeps, in each runtime's own way.

Name one registry with ``-r tests.conformance.jobs_sleepy:thread_jobs`` (or ``asyncio_jobs``,
``gevent_jobs``). Each registers the job type ``Sleepy(tick, token=None)``: the job sleeps
from one to two ticks (0.05 to 0.1 s for a tick of 0.05), until the second tick boundary of
the monotonic clock, so jobs started within one tick of each other end at the same moment:
hundreds at once at high concurrency, as when a saturated worker runs the same short task over
and over (fixed sleeps drift into such bursts too, only less surely). A job given a ``token``
prints ``woke TOKEN`` as it wakes, in the middle of its burst.
"""

from __future__ import annotations

import asyncio
import sys
import time

from faktory_adapters import Jobs

JOBTYPE = "Sleepy"

asyncio_jobs = Jobs()
thread_jobs = Jobs()
gevent_jobs = Jobs()


def until_next_tick(tick: float) -> float:
    """The seconds from now to the second tick boundary: from one to two ticks."""
    return 2 * tick - time.monotonic() % tick


def woke(token: str | None) -> None:
    if token is not None:
        sys.stdout.write(f"woke {token}\n")
        sys.stdout.flush()


@asyncio_jobs.register(JOBTYPE)
async def sleepy_asyncio(tick: float, token: str | None = None) -> None:
    await asyncio.sleep(until_next_tick(tick))
    woke(token)


@thread_jobs.register(JOBTYPE)
def sleepy_thread(tick: float, token: str | None = None) -> None:
    time.sleep(until_next_tick(tick))
    woke(token)


@gevent_jobs.register(JOBTYPE)
def sleepy_gevent(tick: float, token: str | None = None) -> None:
    import gevent  # here: the other adapters' workers have no reason to import it

    gevent.sleep(until_next_tick(tick))
    woke(token)
