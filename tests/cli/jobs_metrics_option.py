"""A Worker with its own ``metrics_port`` (0: any free port) and ``metrics_address``
(127.0.0.1), or those CLI_METRICS_PORT and CLI_METRICS_ADDRESS in the environment name:
``faktory-worker`` serves it as it does ``--metrics-port``."""

import os

from faktory_adapters.thread import Worker
from tests.cli.jobs_ok import say

worker = Worker(
    concurrency=2,
    metrics_port=int(os.environ.get("CLI_METRICS_PORT", "0")),
    metrics_address=os.environ.get("CLI_METRICS_ADDRESS", "127.0.0.1"),
)


@worker.register("CliOptionRecord")
def record(token: str) -> None:
    say("ran", token, os.getpid())
