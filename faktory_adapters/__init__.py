"""Runtime adapters over :mod:`faktory_core`: ``.asyncio`` and ``.thread`` (``.gevent`` next).

Importing this package imports no runtime; each adapter module imports its own.
"""

__all__: list[str] = []
