"""A meter's daily freeze of one day: searched for on a DL/T 645 meter, read from its
freeze record 5004 on a DL/T 698.45 meter.

A DL/T 645 meter's last 62 freezes are searched one by one, newest first
(`read_daily_645`); a 698.45 meter is asked for the day directly: GET-Request Record of
5004 with Selector 2 on the freeze time over [the day's midnight, the next midnight)
(meter-local), the freeze time and the forward energy (total and tariffs) as columns
(docs/protocols-dlt698-645-1997.md, "Freeze records"). The values are stored under the
same names as a DL/T 645 meter's (``frozen_daily_energy_fwd_total`` .. ``_t4``,
``frozen_daily_time``), so a daily-freeze task, its backfill and the reports treat both
protocols alike.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from concentrator.polling.jobs import expand
from drivers import dlt645, dlt698
from drivers.dlt698 import OAD
from drivers.errors import DriverError
from drivers.readers import Dlt645Reader, Dlt645Transport, Dlt698Reader, QuantityValue

COLUMNS = (dlt698.FREEZE_TIME, OAD(0x0010, 2, 0))
TIME_KEY = "20210200"  # the freeze-time column, as the reading's key


class FreezeNotTaken(DriverError):
    """The meter holds no daily freeze of the day yet (its clock behind, or the day not
    over): worth asking again, unlike a day it no longer holds. Both protocols."""


async def read_daily(
    channel: Dlt645Transport,
    address: str,
    day: dt.date,
    quantities: Sequence[str],
    today: dt.date,
    now: float,
) -> list[QuantityValue] | None:
    """The daily freeze of ``day`` as readings of ``quantities`` (task-level names), or
    None when the meter no longer holds it. A day not frozen yet (``day`` is ``today``
    or later) raises `FreezeNotTaken`. ``now`` (the daemon's clock) stamps the readings."""
    start = dt.datetime.combine(day, dt.time())
    rows = await Dlt698Reader(channel).freeze_records(
        address, start, start + dt.timedelta(days=1), COLUMNS, record=dlt698.DAILY_FREEZE
    )
    row = next((r for r in rows if r.at.date() == day), None)
    if row is None:
        if day >= today:
            raise FreezeNotTaken(f"meter {address}: no daily freeze of {day} yet (5004)")
        return None
    read_at = now
    out: list[QuantityValue] = []
    if "frozen_daily_energy_fwd" in quantities:
        out += [
            QuantityValue(address, "frozen_daily_" + name, TIME_KEY, text, unit, read_at)
            for name, (text, unit) in sorted(row.values.items())
            if name.startswith("energy_fwd_")
        ]
    if "frozen_daily_time" in quantities:
        stamp = row.at.strftime("%Y%m%d%H%M")  # as DL/T 645 freeze times are stored
        out.append(QuantityValue(address, "frozen_daily_time", TIME_KEY, stamp, "", read_at))
    return out


async def read_daily_645(
    d: Dlt645Reader, address: str, day: dt.date, quantities: Sequence[str]
) -> list[QuantityValue] | None:
    """A DL/T 645 meter's daily freeze of ``day`` as readings of ``quantities``
    (task-level names), found by reading freeze times newest first; None when the meter
    no longer holds it. A newest freeze older than ``day`` raises `FreezeNotTaken`."""
    for n in range(1, dlt645.MAX_DAILY_FREEZES + 1):
        time_entry = dlt645.lookup(dlt645.daily_frozen_time_di(n))
        raw = await d.read_raw(address, time_entry.di)
        frozen_at = dlt645.decode_value(time_entry, raw)
        assert isinstance(frozen_at, dt.datetime)
        if frozen_at.date() < day:
            if n == 1:
                raise FreezeNotTaken(
                    f"meter {address}: latest daily freeze is {frozen_at:%Y-%m-%d}, "
                    f"{day} not frozen yet"
                )
            break  # the day is older than the meter's history gap
        if frozen_at.date() > day:
            continue
        energy_entry = dlt645.lookup(dlt645.daily_frozen_energy_di(n))
        value = await d.read(address, energy_entry)
        base = dlt645.lookup("frozen_daily_energy_fwd")
        renamed = QuantityValue(
            address, base.name, base.code, value.value, value.unit, value.read_at
        )
        out: list[QuantityValue] = []
        if "frozen_daily_energy_fwd" in quantities:
            out += expand(base, renamed)
        if "frozen_daily_time" in quantities:
            out.append(
                QuantityValue(
                    address,
                    "frozen_daily_time",
                    "05060001",
                    dlt645.numeric_text(time_entry, frozen_at),
                    "",
                    value.read_at,
                )
            )
        return out
    # Not in the meter's history any more: nothing to retry.
    return None
