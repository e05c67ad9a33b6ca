"""Scraping a Prometheus endpoint, as Prometheus would, for the metrics tests."""

from __future__ import annotations

import urllib.request
from typing import TypeAlias

from prometheus_client.parser import text_string_to_metric_families

#: Each sample's value by its name and labels.
Samples: TypeAlias = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float) -> Samples:
    """GET ``url`` and parse its text exposition format."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
