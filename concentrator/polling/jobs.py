"""What a bus worker is handed and counts: the read job, its priority, a bus command,
the worker's tallies, and the small job and value helpers the reads share.

Kept apart from `bus_worker` so the schedulers, the backfills and the carrier worker
describe work without the worker's queue, port and reads beside it; `bus_worker`
re-exports every name here that was imported from it before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum

from concentrator.config import MeterConfig
from drivers import dlt645, meter_quantities
from drivers.readers import Dlt645Reader, QuantityValue

BLOCK_PARTS = meter_quantities.BLOCK_PARTS
FREEZE_QUANTITIES = ("frozen_daily_time", "frozen_daily_energy_fwd")


class Priority(IntEnum):
    ONDEMAND = 0
    POLL = 1
    # A scheduled daily freeze stays in the meter for 62 days and can be backfilled; an
    # interval reading only from a meter that keeps a load curve (`loadprofile`), and
    # only for days. So a freeze yields to every interval read, even one whose
    # deadline is later (a freeze left over from yesterday near midnight otherwise took
    # the bus in the first minutes of the new day's first slot).
    FREEZE = 2
    BACKFILL = 3


def stored_names(meter: MeterConfig, quantity: str) -> list[str]:
    """The quantity names a task quantity is stored under (`drivers.meter_quantities`)."""
    return meter_quantities.stored_names(meter.protocol, quantity)


# A command for one bus (relay control, broadcast time) run by its worker between reads,
# so it never collides with a poll; it gets the worker's DL/T 645 reader.
BusAction = Callable[[Dlt645Reader], Awaitable[list[QuantityValue]]]


@dataclass(order=True)
class Job:
    """One meter's share of a slot. Ordered by priority (see `Priority`), then earliest
    deadline, then arrival."""

    priority: int
    deadline: float  # monotonic
    seq: int
    meter: MeterConfig = field(compare=False)
    quantities: list[str] = field(compare=False)  # task-level names still to read
    slot: int | None = field(compare=False)  # None: on-demand, not stored
    retries_left: int = field(compare=False, default=0)
    backoff: float = field(compare=False, default=1.0)  # wall seconds, doubled per retry
    not_before: float = field(compare=False, default=0.0)  # monotonic
    source: str = field(compare=False, default="poll")
    freeze_day: dt.date | None = field(compare=False, default=None)
    backfill: bool = field(compare=False, default=False)
    # Load-profile recovery: slot -> the names to recover from the meter's load memory.
    load: dict[int, frozenset[str]] | None = field(compare=False, default=None)
    future: asyncio.Future[list[QuantityValue]] | None = field(compare=False, default=None)
    action: BusAction | None = field(compare=False, default=None)  # a command, not a read
    done: list[QuantityValue] = field(compare=False, default_factory=list)


@dataclass
class WorkerStats:
    jobs: int = 0
    reads_ok: int = 0
    reads_failed: int = 0
    missing: int = 0
    readings: int = 0  # handed to the store (a block read gives several)


def single(job: Job, name: str) -> Job:
    """The job narrowed to one quantity: how one unsupported quantity is recorded missing
    while the rest are read."""
    return Job(job.priority, job.deadline, job.seq, job.meter, [name], job.slot, source=job.source)


def expand(entry: dlt645.DataId, value: QuantityValue) -> list[QuantityValue]:
    """A DL/T 645 energy block (total and four tariffs in one reply) as one value per part,
    under the names it is stored as; any other value as it is."""
    if entry.kind != "energy_block":
        return [value]
    parts = value.value.split(" / ")
    return [
        QuantityValue(
            value.meter, f"{entry.name}_{part}", value.key, text, value.unit, value.read_at
        )
        for part, text in zip(BLOCK_PARTS, parts, strict=True)
    ]
