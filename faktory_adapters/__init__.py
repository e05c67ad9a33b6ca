"""Runtime adapters over :mod:`faktory_core`: ``.asyncio``, ``.thread`` and ``.gevent``.

Importing this package imports no runtime; each adapter module imports its own. The job
registry, :class:`Jobs` and :class:`JobType`, is runtime-free and lives here (each adapter
module re-exports it).

Importing it gives every log record of the process ``faktory_jid`` and ``faktory_jobtype``
attributes (empty outside a job), so a format naming them is safe anywhere.
"""

from faktory_core import __version__ as __version__

from . import _logging
from ._jobs import Jobs, JobType
from ._observe import ClientObserver, PushOutcome, WorkerObserver

_logging.install()

__all__ = ["ClientObserver", "JobType", "Jobs", "PushOutcome", "WorkerObserver"]
