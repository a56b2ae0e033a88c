"""One load-profile recovery read: the meter's own records for a run of missed slots.

Kept apart from the bus worker (which calls it for a job with ``load`` set) so the
worker's hot path stays small: this module turns slots into a request in the meter's
protocol and the records of its answer back into per-slot values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from concentrator.config import MeterConfig
from drivers import dlt645_load
from drivers.dlt698 import OAD
from drivers.dlt698.freeze import INTERVAL_COLUMNS, MAX_ROWS, canonical_columns
from drivers.dlt698.objects import CANONICAL
from drivers.readers import Dlt645Reader, Dlt645Transport, Dlt698Reader

LOAD_PERIOD_S = 900  # meters record their load curve every 15 minutes
HALF_PERIOD_S = LOAD_PERIOD_S // 2
NOT_HELD = "not in the meter's load memory"  # a missing reason the sweep never retries
BLOCKS = {"dlt645": 8, "dlt698": MAX_ROWS}  # slots asked per request (one job)

# What each protocol's load memory carries, by canonical name; Modbus (Eastron SDM) and
# DL/T 645-1997 meters keep no load curve a concentrator can read (docs/concentrator.md).
_698_NAMES = frozenset(
    m.name
    for oad, m in CANONICAL.items()
    if OAD(oad.oi, oad.attribute, 0) in INTERVAL_COLUMNS or oad in INTERVAL_COLUMNS
)
CARRIED: Mapping[str, frozenset[str]] = {
    "dlt645": frozenset(dlt645_load.FIELDS),
    "dlt698": _698_NAMES,
}


@dataclass(frozen=True)
class Recovered:
    """What one read gave: values per slot, and what the meter does not hold."""

    values: dict[int, dict[str, tuple[str, str]]]  # slot -> name -> (text, unit)
    not_held: dict[int, frozenset[str]]  # slot -> names no record of the meter has


def _local(t: float, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz).replace(tzinfo=None, second=0, microsecond=0)


def _slot_of(at: dt.datetime, tz: dt.tzinfo, first: int) -> int:
    """The slot a record stamped ``at`` (meter-local) belongs to: the nearest one, so a
    meter clock a few minutes off still lands its record in the right slot."""
    t = at.replace(tzinfo=tz).timestamp()
    return first + round((t - first) / LOAD_PERIOD_S) * LOAD_PERIOD_S


async def recover(
    channel: Dlt645Transport,
    meter: MeterConfig,
    wanted: Mapping[int, frozenset[str]],
    tz: dt.tzinfo,
) -> Recovered:
    """Read the records of ``wanted``'s slots (consecutive, oldest first) in one request.

    645-2007: 06000001 from half a period before the first slot, one block per slot.
    698.45: the minute freeze 5002 over [first - half, last + half), every record there.
    A slot no record maps to is not held, unless the meter sent all the blocks asked
    and stopped before it (the next read starts there)."""
    slots = sorted(wanted)
    first, last = slots[0], slots[-1]
    names: frozenset[str] = frozenset().union(*wanted.values())
    got: dict[int, dict[str, tuple[str, str]]] = {}
    complete = True  # the answer covers the whole range asked
    reach: float | None = None
    if meter.protocol == "dlt645":
        records = await Dlt645Reader(channel).load_records(
            meter.address, _local(first - HALF_PERIOD_S, tz), len(slots)
        )
        complete = len(records) < len(slots)
        reach = records[-1].at.replace(tzinfo=tz).timestamp() if records else None
        for rec in records:
            slot = _slot_of(rec.at, tz, first)
            got.setdefault(slot, {}).update(
                (n, (str(v), dlt645_load.FIELDS[n][1].unit)) for n, v in rec.values.items()
            )
    elif meter.protocol == "dlt698":
        columns = canonical_columns(sorted(names & CARRIED["dlt698"]))
        rows = await Dlt698Reader(channel).freeze_records(
            meter.address,
            _local(first - HALF_PERIOD_S, tz),
            _local(last + HALF_PERIOD_S, tz),
            columns,
        )
        for row in rows:
            got.setdefault(_slot_of(row.at, tz, first), {}).update(row.values)
    else:
        raise ValueError(f"meter {meter.address}: {meter.protocol} meters keep no load curve")
    values: dict[int, dict[str, tuple[str, str]]] = {}
    not_held: dict[int, frozenset[str]] = {}
    for slot in slots:
        record = got.get(slot)
        if record is not None:
            have = {n: v for n, v in record.items() if n in wanted[slot]}
            if have:
                values[slot] = have
            if wanted[slot] - set(have):  # a record without that value: never will
                not_held[slot] = wanted[slot] - set(have)
        elif complete or (reach is not None and slot < reach):
            not_held[slot] = wanted[slot]
    return Recovered(values, not_held)
