"""Serve a worker that is expected to stop by itself, with a bounded fallback."""

from __future__ import annotations

import threading
from typing import Any

from tests.support.adapters import serve

#: How long a worker gets to stop by itself before the fallback stops it (code 0, then).
FALLBACK = 20.0


def serve_until_it_stops(adapter: str, worker: Any) -> int:
    """``serve()`` the worker and return its code; if it has not stopped by itself after
    FALLBACK s, ``stop()`` it (the code is then 0, which the test can tell from its own)."""
    fallback = threading.Timer(FALLBACK, worker.stop)
    fallback.daemon = True
    fallback.start()
    try:
        return serve(adapter, worker)
    finally:
        fallback.cancel()
