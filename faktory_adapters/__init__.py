"""Runtime adapters over :mod:`faktory_core`: ``.asyncio``, ``.thread`` and ``.gevent``.

Importing this package imports no runtime; each adapter module imports its own.
"""

__all__: list[str] = []
