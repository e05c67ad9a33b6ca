"""Scraping a Prometheus endpoint, as Prometheus would, for the metrics tests."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable
from typing import TypeAlias

from prometheus_client.parser import text_string_to_metric_families

#: Each sample's value by its name and labels.
Samples: TypeAlias = dict[tuple[str, frozenset[tuple[str, str]]], float]

#: How often :func:`scrape_until` scrapes: metrics have no event to await.
SCRAPE_INTERVAL = 0.05


def scrape(url: str, timeout: float) -> Samples:
    """GET ``url`` and parse its text exposition format."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``, if scraped."""
    return samples.get((name, frozenset(labels.items())))


def scrape_until(url: str, done: Callable[[Samples], bool], timeout: float) -> Samples:
    """Scrape ``url`` until ``done(samples)``, for ``timeout`` s at most."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url, timeout)
        if done(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"the metrics did not show it within {timeout} s: {samples}")
        time.sleep(SCRAPE_INTERVAL)
