"""What body versions 2 and 3 share: what both encoders first make of readings already
in series order (the name tables, each series' bounds, and the slot, read-time and
value columns before any coding), and the fields 0 to 9 both decoders read alike. One
place, so the two versions cannot drift apart in it; their bytes are pinned by
tests/test_wire_golden.py."""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate
from typing import NamedTuple

from contract.records import Reading
from contract.wire.columns import int_field, pack_meters, texts, unpack, unpack_meters
from contract.wire.content import MAX_READINGS
from contract.wire.decimals import parse_decimal
from contract.wire.errors import fail

Bounds = list[tuple[int, int]]


class Series(NamedTuple):
    """A tuple, so an encoder unpacks it into its own names in one statement."""

    quantities: list[str]  # sorted, as the body's tables
    units: list[str]
    meter_width: int  # `pack_meters` of the sorted meters: 0 (texts) or their digits
    meter_field: object
    q_index: dict[str, int]
    u_index: dict[str, int]
    m_index: dict[str, int]
    bounds: Bounds  # [start, end) of each series: a run of one (meter, quantity, unit)
    slots: list[int]
    offsets: list[int]  # read_at in ms after the slot
    parsed: list[tuple[int, int] | None]  # (mantissa, decimals); None: not canonical
    step: int  # the gcd of the slot steps inside series (1 if none)


def series_of(readings: Sequence[Reading]) -> Series:
    """``readings`` grouped in series (consecutive readings of one meter, quantity and
    unit, by slot within each); raises ValueError for a read time that is no time."""
    n = len(readings)
    quantities = sorted({r.quantity for r in readings})
    units = sorted({r.unit for r in readings})
    meters = sorted({r.meter for r in readings})
    meter_width, meter_field = pack_meters(meters)
    starts = [
        i
        for i in range(n)
        if i == 0
        or (readings[i].meter, readings[i].quantity, readings[i].unit)
        != (readings[i - 1].meter, readings[i - 1].quantity, readings[i - 1].unit)
    ]
    bounds = list(zip(starts, [*starts[1:], n], strict=False))  # n = 0: no series
    slots = [r.slot for r in readings]
    offsets: list[int] = []
    for r in readings:
        if not math.isfinite(r.read_at):
            raise ValueError(f"read_at {r.read_at} of meter {r.meter!r} is not a finite time")
        offsets.append(round(r.read_at * 1000) - r.slot * 1000)
    step = 0
    for a, b in bounds:
        for i in range(a + 1, b):
            step = math.gcd(step, slots[i] - slots[i - 1])
    return Series(
        quantities=quantities,
        units=units,
        meter_width=meter_width,
        meter_field=meter_field,
        q_index={q: i for i, q in enumerate(quantities)},
        u_index={u: i for i, u in enumerate(units)},
        m_index={m: i for i, m in enumerate(meters)},
        bounds=bounds,
        slots=slots,
        offsets=offsets,
        parsed=[parse_decimal(r.value) for r in readings],
        step=step or 1,
    )


class Tables(NamedTuple):
    """A body's fields 0 to 9, which every version lays out alike (decoded)."""

    n: int  # readings
    s: int  # series
    quantities: list[str]
    units: list[str]
    meters: list[str]
    s_meter: list[int]  # each series' index into meters (accumulated from the deltas)
    s_quantity: list[int]
    s_unit: list[int]
    s_count: list[int]


def parse_tables(fields: object, count: int) -> tuple[list[object], Tables]:
    """Check that ``fields`` is a body of ``count`` fields and decode its tables and
    series columns: every index inside its table, every series of one reading or
    more, the counts adding up to the readings. Raises WireError ("bad_layout")."""
    if not isinstance(fields, list) or len(fields) != count:
        fail("bad_layout", f"body must be an array of {count} fields")
    n = int_field(fields[0], "reading count", 0, MAX_READINGS)
    s = int_field(fields[1], "series count", 1 if n else 0, n)
    quantities = texts(fields[2], "quantities")
    units = texts(fields[3], "units")
    meters = unpack_meters(fields[4], fields[5])
    s_meter = list(accumulate(unpack(fields[6], s, "s_meter")))
    s_quantity = unpack(fields[7], s, "s_quantity")
    s_unit = unpack(fields[8], s, "s_unit")
    s_count = unpack(fields[9], s, "s_count")
    if (s_count and min(s_count) < 1) or sum(s_count) != n:
        fail("bad_layout", f"s_count: series counts must be >= 1 and add up to {n}")
    for what, index, table in (
        ("s_meter", s_meter, meters),
        ("s_quantity", s_quantity, quantities),
        ("s_unit", s_unit, units),
    ):
        if index and (min(index) < 0 or max(index) >= len(table)):
            fail("bad_layout", f"{what}: index outside its table of {len(table)}")
    return fields, Tables(n, s, quantities, units, meters, s_meter, s_quantity, s_unit, s_count)
