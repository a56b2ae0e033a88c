"""Why the daemon is not doing its work, if it is not: the one judgement both the status
(``unhealthy``) and the systemd watchdog rest on, so that a wedged bus or store gets the
process restarted rather than a daemon that only looks alive.

It reads the supervised tasks, `Polling` and the writer it is given and the limits the
daemon passes at each call (the daemon keeps them as module constants, which tests
shorten), nothing else of the daemon.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from concentrator.polling.scheduler import Polling
from concentrator.storage import StoreWriter


def unhealthy(
    core: Iterable[asyncio.Task[None]],
    polling: Polling | None,
    writer: StoreWriter | None,
    *,
    hung_job_s: float,
    hung_store_s: float,
) -> str | None:
    """Why the daemon is not doing its work (None when it is): a supervised task
    ended, a bus job has run longer than ``hung_job_s``, or a store call has waited
    longer than ``hung_store_s``."""
    for t in core:
        if t.done():
            return f"task {t.get_name()} ended"
    workers = polling.workers if polling is not None else {}
    for name, w in workers.items():
        stuck = w.stuck_s()
        if stuck > hung_job_s:
            return f"bus {name}: one job has run for {stuck:.0f} s"
    for t in polling.tasks if polling is not None else []:
        if t.done():
            return f"task {t.get_name()} ended"
    if writer is not None and writer.oldest_call_s() > hung_store_s:
        return f"store: a call has waited {writer.oldest_call_s():.0f} s"
    return None
