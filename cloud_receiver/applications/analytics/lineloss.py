"""Line loss per transformer area and day (台区线损率).

    loss = supply − sales        supply = the area total meter's energy of the day
    rate = loss / supply         sales  = Σ the area's customer meters' energy of the day

with day energies from boundary readings (`.energy`). A customer meter
missing that day would show up as loss that is not there, so a day where the total
meter or any customer meter is missing is **incomplete**: its supply and known sales are
reported with the count and names of the missing meters, and no loss or rate at all. A
day with an interpolated boundary is **estimated** (loss reported). Only ``ok`` and
``estimated`` days are loss figures.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from cloud_receiver.applications.analytics.energy import (
    DEFAULT_MAX_GAP_S,
    MeterData,
    MeterDay,
    days_between,
    load_days,
    meter_days,
)
from cloud_receiver.applications.fleet.archive import Archive, ArchiveError, Area
from cloud_receiver.storage import Storage

DayStatus = Literal["ok", "estimated", "incomplete"]


@dataclass(frozen=True)
class AreaDay:
    area: str
    day: dt.date
    supply_kwh: Decimal | None  # None: the total meter is missing
    sales_kwh: Decimal  # Σ of the customer meters that have the day
    loss_kwh: Decimal | None  # None unless complete
    customers: int
    missing_customers: tuple[str, ...]  # customer meters without the day
    estimated: int  # meters whose day used an interpolated boundary
    status: DayStatus

    @property
    def loss_rate(self) -> float | None:
        """Loss / supply (a fraction), None when incomplete or nothing was supplied."""
        if self.loss_kwh is None or not self.supply_kwh:
            return None
        return float(self.loss_kwh / self.supply_kwh)


def require_total(area: Area) -> None:
    if area.total is None:
        raise ArchiveError(
            f"area {area.name} has no total meter in the archive:"
            " import a row with role=total for it"
        )


def area_days(
    area: Area,
    data: dict[str, MeterData],
    days: Sequence[dt.date],
    tz: dt.tzinfo,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> tuple[list[AreaDay], dict[str, list[MeterDay]]]:
    """Loss per day, and every meter's day energies (which the suspect ranking reuses)."""
    require_total(area)
    assert area.total is not None
    per_meter = {m.meter: meter_days(m, data[m.meter], days, tz, max_gap_s) for m in area.meters}
    out: list[AreaDay] = []
    for i, day in enumerate(days):
        supply = per_meter[area.total.meter][i]
        customer_days = [per_meter[c.meter][i] for c in area.customers]
        missing = tuple(d.meter for d in customer_days if d.kwh is None)
        sales = sum((d.kwh for d in customer_days if d.kwh is not None), Decimal("0.00"))
        estimated = sum(d.estimated for d in (supply, *customer_days))
        complete = not missing and supply.kwh is not None
        status: DayStatus = "incomplete" if not complete else "estimated" if estimated else "ok"
        out.append(
            AreaDay(
                area=area.name,
                day=day,
                supply_kwh=supply.kwh,
                sales_kwh=sales,
                loss_kwh=supply.kwh - sales if complete and supply.kwh is not None else None,
                customers=len(area.customers),
                missing_customers=missing,
                estimated=estimated,
                status=status,
            )
        )
    return out, per_meter


def line_loss(
    storage: Storage,
    archive: Archive,
    area_name: str,
    first: dt.date,
    end: dt.date,
    tz: dt.tzinfo,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> list[AreaDay]:
    """Loss of area ``area_name`` for each local day from ``first`` up to ``end``."""
    area = archive.area(area_name)
    require_total(area)
    data = load_days(storage, [m.meter for m in area.meters], first, end, tz, max_gap_s)
    return area_days(area, data, days_between(first, end), tz, max_gap_s)[0]


@dataclass(frozen=True)
class LossSummary:
    days: int
    complete_days: int
    supply_kwh: Decimal
    loss_kwh: Decimal

    @property
    def loss_rate(self) -> float | None:
        return float(self.loss_kwh / self.supply_kwh) if self.supply_kwh else None


def summarise(days: Sequence[AreaDay]) -> LossSummary:
    """Totals over the complete (ok or estimated) days only."""
    good = [d for d in days if d.loss_kwh is not None and d.supply_kwh is not None]
    return LossSummary(
        days=len(days),
        complete_days=len(good),
        supply_kwh=sum((d.supply_kwh for d in good if d.supply_kwh), Decimal("0.00")),
        loss_kwh=sum((d.loss_kwh for d in good if d.loss_kwh is not None), Decimal("0.00")),
    )
