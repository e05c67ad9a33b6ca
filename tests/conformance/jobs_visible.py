"""Handlers for ``test_job_logs``: a job that waits a few calls deep, in each runtime's way.

Name one registry with ``-r tests.conformance.jobs_visible:thread_jobs`` (or ``asyncio_jobs``,
``gevent_jobs``). ``Nap(token, seconds)`` calls ``innermost_wait``, which prints
``napping TOKEN`` on stdout and waits: from the moment the line is out, a TTIN stack dump must
reach down to that function.
"""

from __future__ import annotations

import asyncio
import sys
import time

from faktory_adapters import Jobs

asyncio_jobs = Jobs()
thread_jobs = Jobs()
gevent_jobs = Jobs()


def napping(token: str) -> None:
    sys.stdout.write(f"napping {token}\n")
    sys.stdout.flush()


@asyncio_jobs.register("Nap")
async def nap_asyncio(token: str, seconds: float) -> None:
    await innermost_wait_asyncio(token, seconds)


async def innermost_wait_asyncio(token: str, seconds: float) -> None:
    napping(token)
    await asyncio.sleep(seconds)


@thread_jobs.register("Nap")
def nap_thread(token: str, seconds: float) -> None:
    innermost_wait_thread(token, seconds)


def innermost_wait_thread(token: str, seconds: float) -> None:
    napping(token)
    time.sleep(seconds)


@gevent_jobs.register("Nap")
def nap_gevent(token: str, seconds: float) -> None:
    innermost_wait_gevent(token, seconds)


def innermost_wait_gevent(token: str, seconds: float) -> None:
    import gevent  # here: the other adapters' workers have no reason to import it

    napping(token)
    gevent.sleep(seconds)
