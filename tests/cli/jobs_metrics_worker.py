"""A Worker that observes its own PrometheusMetrics: ``faktory-worker --metrics-port`` keeps it
rather than add one, so its jobs count once."""

import os

from faktory_adapters.prometheus import PrometheusMetrics
from faktory_adapters.thread import Worker
from tests.cli.jobs_ok import say

worker = Worker(concurrency=3)
worker.observe(PrometheusMetrics())


@worker.register("CliMetricsRecord")
def record(token: str) -> None:
    say("ran", token, os.getpid())
