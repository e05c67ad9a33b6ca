"""Handlers for the faktory-worker tests: each prints one line per event, with its pid."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from faktory_adapters import Jobs

jobs = Jobs()


def say(*words: object) -> None:
    # One write: print() writes each word apart, and the log lines of other threads, on the
    # same pipe, could land in between.
    sys.stdout.write(" ".join(map(str, words)) + "\n")
    sys.stdout.flush()


@jobs.register("CliRecord")
def record(token: str) -> None:
    """Runs on every adapter (a plain function)."""
    logging.getLogger("tests.cli").info("recording %s", token)
    say("ran", token, os.getpid())


@jobs.register("CliSleep")
async def sleep(token: str, seconds: float) -> None:
    """For the asyncio adapter: cancelled at an abort."""
    say("started", token, os.getpid())
    await asyncio.sleep(seconds)
    say("done", token, os.getpid())
