"""Runtime adapters over :mod:`faktory_core`: ``.asyncio``, ``.thread`` and ``.gevent``.

Importing this package imports no runtime; each adapter module imports its own. The job
registry, :class:`Jobs` and :class:`JobType`, is runtime-free and lives here (each adapter
module re-exports it).
"""

from ._jobs import Jobs, JobType

__all__ = ["JobType", "Jobs"]
