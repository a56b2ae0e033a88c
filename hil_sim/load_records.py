"""What a simulated meter keeps of its load curve, in each protocol's form.

The records come from the model's memory (`MeterModel.intervals`: energy registers at
each 15-minute boundary, instantaneous values from `measure` at that moment), so a
recovered interval can be compared with what the meter really measured: every value a
meter sends from its memory is written to the ground truth with ``t`` = the record's
true time and ``key`` naming the record ("06000001" or the OAD of the column).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from decimal import Decimal

from drivers import dlt645_load, dlt698
from drivers.dlt645_load import LoadRecord
from drivers.dlt698.objects import CANONICAL, QUANTITIES_BY_OAD
from drivers.meter_quantities import array_elements
from hil_sim.model import Interval, MeterModel
from hil_sim.truth import TruthRecord

# The classes our simulated 645-2007 meters record (their load-record mode word): the
# model has no quadrant registers (class 5) and no demand (class 6).
DLT645_CLASSES = (1, 2, 3, 4)
ENERGY_ROLLOVER = Decimal(1_000_000)


def _q(x: float, decimals: int) -> Decimal:
    return Decimal(repr(x)).quantize(Decimal(1).scaleb(-decimals))


def dlt645_record(model: MeterModel, rec: Interval) -> LoadRecord:
    """The 645-2007 load record of one interval (classes 1-4)."""
    m = model.measure(rec.t)
    phases = model.phases
    pf = m.power_factor
    tan = math.sqrt(1.0 - pf * pf) / pf
    values: dict[str, Decimal] = {}
    for i, p in enumerate("abc"):
        on = i < phases
        values[f"voltage_{p}"] = _q(m.voltage[i] if on else 0.0, 1)
        values[f"current_{p}"] = _q(m.current[i] if on else 0.0, 3)
        values[f"power_{p}"] = _q(m.power[i] if on else 0.0, 4)
        values[f"reactive_power_{p}"] = _q(m.power[i] * tan if on else 0.0, 4)
        values[f"power_factor_{p}"] = _q(pf if on else 0.0, 3)
    values["frequency"] = _q(m.frequency, 2)
    values["power_total"] = _q(m.power_total, 4)
    values["reactive_power_total"] = _q(m.power_total * tan, 4)
    values["power_factor"] = _q(pf, 3)
    values["energy_fwd_total"] = rec.energy_fwd[0] % ENERGY_ROLLOVER
    values["energy_rev_total"] = rec.energy_rev % ENERGY_ROLLOVER
    values["reactive_combined_1_total"] = rec.reactive % ENERGY_ROLLOVER
    values["reactive_combined_2_total"] = Decimal("0.00")
    return LoadRecord(rec.at, values)


def dlt645_records(
    model: MeterModel, start: dt.datetime, blocks: int
) -> tuple[list[bytes], list[TruthRecord]]:
    """The first ``blocks`` records stamped at or after ``start`` (oldest first), encoded,
    and what they tell."""
    out: list[bytes] = []
    truth: list[TruthRecord] = []
    for rec in model.intervals:
        if len(out) >= blocks:
            break
        if rec.at < start:
            continue
        raw = dlt645_load.encode_record(dlt645_record(model, rec))
        out.append(raw)
        (told,) = dlt645_load.decode_records(raw)  # what the concentrator will decode
        for name, value in told.values.items():
            unit = dlt645_load.FIELDS[name][1].unit
            truth.append(TruthRecord(rec.t, model.address, "dlt645", name, "06000001",
                                     str(value), unit))  # fmt: skip
    return out, truth


def dlt698_rows(
    model: MeterModel,
    selector: dlt698.Selector2,
    columns: tuple[dlt698.CSD, ...],
    element: Callable[[dlt698.Quantity, Interval], dlt698.Value],
) -> tuple[tuple[tuple[dlt698.Data, ...], ...], list[TruthRecord]]:
    """Minute-freeze rows whose freeze time lies in the selector's [start, end), one per
    TI (NULL or 0: every record). ``element(q, t, rec)`` gives a column's value."""
    start, end, step = selector.start.value, selector.end.value, selector.interval
    if not isinstance(start, dlt698.DateTimeS) or not isinstance(end, dlt698.DateTimeS):
        return (), []
    lo, hi = start.to_datetime(), end.to_datetime()
    every = 0
    if isinstance(step.value, dlt698.TI) and step.value.unit is dlt698.TIUnit.MINUTE:
        every = step.value.value
    rows = []
    truth: list[TruthRecord] = []
    for rec in model.intervals:
        if not lo <= rec.at < hi:
            continue
        if every and (rec.at.hour * 60 + rec.at.minute) % every:
            continue
        row = []
        for csd in columns:
            assert isinstance(csd, dlt698.OAD)
            q = QUANTITIES_BY_OAD[csd]
            value = element(q, rec)
            data = dlt698.from_value(q, value)
            row.append(data)
            told = dlt698.to_value(q, data)
            pairs = (
                zip(array_elements(q), told, strict=False)
                if isinstance(told, tuple)
                else [(q, told)]
            )
            for e, v in pairs:
                mapped = CANONICAL.get(e.oad)
                if v is None or mapped is None or isinstance(v, dt.datetime | str):
                    continue
                text = mapped.value(str(v))
                truth.append(
                    TruthRecord(rec.t, model.address, "dlt698", mapped.name, str(e.oad), text,
                                mapped.unit)
                )  # fmt: skip
        rows.append(tuple(row))
    return tuple(rows), truth


def dlt698_daily_rows(
    model: MeterModel, selector: dlt698.Selector2, columns: tuple[dlt698.CSD, ...]
) -> tuple[tuple[tuple[dlt698.Data, ...], ...], list[TruthRecord]]:
    """Daily-freeze (5004) rows whose freeze time lies in the selector's [start, end),
    oldest first: the freeze time and the forward energy as frozen; any other column
    NULL (the model freezes nothing else)."""
    start, end = selector.start.value, selector.end.value
    if not isinstance(start, dlt698.DateTimeS) or not isinstance(end, dlt698.DateTimeS):
        return (), []
    lo, hi = start.to_datetime(), end.to_datetime()
    rows = []
    truth: list[TruthRecord] = []
    for freeze in reversed(model.freezes):
        if not lo <= freeze.at < hi:
            continue
        t = freeze.at.replace(tzinfo=model.tz).timestamp()
        row = []
        for csd in columns:
            assert isinstance(csd, dlt698.OAD)
            q = QUANTITIES_BY_OAD[csd]
            value: dlt698.Value = None
            if csd == dlt698.FREEZE_TIME:
                value = freeze.at
            elif csd.oi == 0x0010:
                value = freeze.energy_fwd if q.array else freeze.energy_fwd[max(csd.index - 1, 0)]
            row.append(dlt698.from_value(q, value) if value is not None else dlt698.NULL)
            told = dlt698.to_value(q, row[-1])
            pairs = (
                zip(array_elements(q), told, strict=False)
                if isinstance(told, tuple)
                else [(q, told)]
            )
            for e, v in pairs:
                mapped = CANONICAL.get(e.oad)
                if v is None or mapped is None or isinstance(v, dt.datetime | str):
                    continue
                text = mapped.value(str(v))
                truth.append(
                    TruthRecord(t, model.address, "dlt698", "frozen_daily_" + mapped.name,
                                str(e.oad), text, mapped.unit)
                )  # fmt: skip
        rows.append(tuple(row))
    return tuple(rows), truth
