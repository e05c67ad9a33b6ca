"""The demo's job handlers; ``scripts/demo.py`` runs them with ``faktory-worker -r demo_jobs``.

``ResizeImage`` is quick, ``ChargeCard`` always raises :class:`PaymentDeclined`, and
``ExportReport`` writes a report file for a while; when the worker aborts it, it deletes its
partial file before giving up. The handlers log what they do through the ``demo_jobs`` logger,
and the worker logs through ``faktory``, all on stderr, so the demo reads one ordered stream.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from faktory_adapters.asyncio import Jobs, current_job

__all__ = ["PaymentDeclined", "charge_card", "export_report", "jobs", "resize_image"]

jobs = Jobs()
log = logging.getLogger("demo_jobs")


class PaymentDeclined(Exception):
    """The failure ``ChargeCard`` demonstrates: its errtype on the server."""


@jobs.register("ResizeImage")
async def resize_image(image: str) -> None:
    """A quick job."""
    await asyncio.sleep(0.05)
    log.info("resized %s", image)


@jobs.register("ChargeCard")
async def charge_card(card: str) -> None:
    """A job that fails: the worker FAILs it with the exception's type and message."""
    log.info("charging card %s", card)
    raise PaymentDeclined(f"card {card} was declined")


@jobs.register("ExportReport")
async def export_report(directory: str, seconds: float) -> None:
    """A long job writing ``report-<jid>.partial``; aborted, it deletes the file.

    At abort the worker cancels the job's task, so the cleanup runs in ``except
    CancelledError``, which re-raises: the job was FAILed as ShutdownAbort already.
    """
    partial = Path(directory) / f"report-{current_job().job.jid}.partial"
    log.info("writing %s", partial)
    try:
        with partial.open("w") as report:
            for row in range(1, int(seconds * 10) + 1):
                report.write(f"row {row}\n")
                await asyncio.sleep(0.1)
                if row % 10 == 0:
                    log.info("%d rows written", row)
        partial.rename(partial.with_suffix(".csv"))
        log.info("finished %s", partial.with_suffix(".csv"))
    except asyncio.CancelledError:
        # Cleanup may await (the task is cancelled once); the worker waits for it, up to its
        # abort_grace. The sleep stands for real work, such as cancelling an upload.
        await asyncio.sleep(0.5)
        partial.unlink(missing_ok=True)
        log.info("cancelled: deleted %s", partial)
        raise
