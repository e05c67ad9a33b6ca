"""A configured Worker, as an application defines one: ``faktory-worker -r tests.cli.jobs_worker``
runs it as it is (its hooks and middleware), with the command line's options over its own."""

import os
from collections.abc import Callable

from faktory_adapters.thread import JobContext, Worker
from tests.cli.jobs_ok import say

#: The Worker's own queue: a test that gives no -q pushes here, through the job type.
OWN_QUEUE = "cli-worker-own"

worker = Worker(queues=[OWN_QUEUE], concurrency=3)


@worker.on_startup
def started() -> None:
    say("startup", os.getpid())


@worker.on_shutdown
def stopped() -> None:
    say("shutdown", os.getpid())


@worker.use
def around(context: JobContext, call_next: Callable[[], None]) -> None:
    say("around", context.job.jid, os.getpid())
    call_next()


@worker.register  # bare: the job type is "cli_worker_record", pushed to OWN_QUEUE
def cli_worker_record(token: str) -> None:
    say("ran", token, os.getpid())
