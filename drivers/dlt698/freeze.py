"""DL/T 698.45 freeze records (class 9 objects) read by time range: the meter's own
interval curve (minute freeze 5002) and daily freezes (5004), typed.

The request is a GET-Request Record of the freeze object's attribute 2 with RSD
Selector 2 on the freeze-time column 2021 0200: records whose freeze time lies in
[start, end), one every TI (clause 7.3.3 RSD; docs/protocols-dlt698-645-1997.md,
"Freeze records"). The RCSD names the columns, the related OADs of the freeze object's
ROAD (the freeze time first, then the values). Each row of the answer becomes a
`FreezeRecord`: the freeze time and the values under their canonical names.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

from drivers.dlt698.apdu import GetResponseRecord
from drivers.dlt698.axdr import OAD, ROAD, TI, Data, TIUnit
from drivers.dlt698.link import Frame, ServerAddress
from drivers.dlt698.objects import (
    CANONICAL,
    DAILY_FREEZE,
    FREEZE_TIME,
    MINUTE_FREEZE,
    QUANTITIES,
    QUANTITIES_BY_OAD,
    Quantity,
    to_value,
)
from drivers.dlt698.replies import (
    _meter_error,
    server_apdu,
)
from drivers.dlt698.requests import (
    build_get_record,
)
from drivers.errors import EncodeError, FrameError

FIFTEEN_MINUTES = TI(TIUnit.MINUTE, 15)
MAX_ROWS = 4  # rows asked per request: every interval column, about 520 bytes a frame

# The columns a concentrator asks of the minute freeze: the freeze time, then the values
# the interval tasks read (whole arrays; each element becomes its canonical name).
INTERVAL_COLUMNS: tuple[OAD, ...] = (
    FREEZE_TIME,
    OAD(0x0010, 2, 0),  # forward active energy, total and tariffs
    OAD(0x0020, 2, 0),  # reverse active energy
    OAD(0x2000, 2, 0),  # voltage A, B, C
    OAD(0x2001, 2, 0),  # current A, B, C
    OAD(0x2004, 2, 0),  # active power, total and phases
    OAD(0x200A, 2, 0),  # power factor, total and phases
    OAD(0x200F, 2, 0),  # frequency
)


def road(record: OAD, columns: Sequence[OAD] = INTERVAL_COLUMNS) -> ROAD:
    """The freeze object with the OADs its rows carry (the ROAD of a freeze record)."""
    return ROAD(record, tuple(columns))


def canonical_columns(names: Sequence[str]) -> tuple[OAD, ...]:
    """The freeze time and the whole-array OADs whose elements carry ``names``
    (canonical names); KeyError names a quantity no freeze column carries."""
    out: list[OAD] = [FREEZE_TIME]
    for name in names:
        oad = next((o for o, m in CANONICAL.items() if m.name == name), None)
        if oad is None:
            raise KeyError(f"no DL/T 698.45 freeze column carries {name!r}")
        whole = OAD(oad.oi, oad.attribute, 0)
        column = whole if whole in QUANTITIES_BY_OAD else oad
        if column not in out:
            out.append(column)
    return tuple(out)


def build_freeze_read(
    address: str | ServerAddress,
    start: dt.datetime,
    end: dt.datetime,
    columns: Sequence[OAD] = INTERVAL_COLUMNS,
    *,
    record: OAD = MINUTE_FREEZE,
    interval: TI | None = FIFTEEN_MINUTES,
    piid: int = 1,
    client: int = 0,
    preamble: int = 4,
) -> bytes:
    """GET-Request Record of ``record`` (5002 minute / 5004 daily freeze), Selector 2
    on the freeze time over [start, end) (meter-local times), one row per ``interval``."""
    if record not in (MINUTE_FREEZE, DAILY_FREEZE):
        raise EncodeError(f"freeze record {record}: expected 5002 0200 or 5004 0200")
    if not columns or columns[0] != FREEZE_TIME:
        raise EncodeError("freeze columns must start with the freeze time 2021 0200")
    return build_get_record(
        address,
        record,
        start,
        end,
        columns,
        interval=interval,
        piid=piid,
        client=client,
        preamble=preamble,
    )


@dataclass(frozen=True)
class FreezeRecord:
    """One row: the meter-local freeze time and its values, ``name -> (text, unit)``
    under canonical names (power in kW), exact decimal text."""

    at: dt.datetime
    values: dict[str, tuple[str, str]] = field(default_factory=dict)


def _elements(q: Quantity) -> list[Quantity]:
    if not q.array:
        return [q]
    return [
        e
        for e in QUANTITIES
        if e.oad.oi == q.oad.oi and e.oad.attribute == q.oad.attribute and e.oad.index > 0
    ]


def parse_freeze_records(
    reply: Frame,
    *,
    address: str | ServerAddress | None = None,
    piid: int | None = None,
    record: OAD = MINUTE_FREEZE,
) -> list[FreezeRecord]:
    """The rows of a GET-Response Record to `build_freeze_read`, typed. A refusal
    raises MeterError (its DAR); an answer without the freeze-time column, with a cell
    of the wrong type or for another object raises FrameError naming it. No rows (the
    range lies outside the meter's memory) is an empty list."""
    service = server_apdu(reply, address, piid=piid).service
    if not isinstance(service, GetResponseRecord):
        raise FrameError(f"reply is {type(service).__name__}, expected GetResponseRecord")
    result = service.result
    if result.oad != record:
        raise FrameError(f"reply is for record {result.oad}, expected {record}")
    if not isinstance(result.rows, tuple):
        raise _meter_error(reply, int(result.rows), f"record {result.oad}")
    columns: list[Quantity | None] = []
    for csd in result.columns:
        if not isinstance(csd, OAD):
            raise FrameError(f"record column {csd} is a ROAD, expected OADs of the freeze")
        columns.append(QUANTITIES_BY_OAD.get(csd))
    if FREEZE_TIME not in result.columns:
        raise FrameError("record answer lacks the freeze-time column 2021 0200")
    time_at = result.columns.index(FREEZE_TIME)
    out: list[FreezeRecord] = []
    for n, row in enumerate(result.rows):
        stamp = _cell(columns[time_at], row[time_at], n)
        if not isinstance(stamp, dt.datetime):
            raise FrameError(f"record row {n}: freeze time is {stamp!r}, expected date_time_s")
        values: dict[str, tuple[str, str]] = {}
        for i, (q, cell) in enumerate(zip(columns, row, strict=True)):
            if i == time_at or q is None:
                continue  # a column we do not know is skipped, not guessed at
            value = _cell(q, cell, n)
            parts = (
                zip(_elements(q), value, strict=False) if isinstance(value, tuple) else [(q, value)]
            )
            for element, v in parts:
                mapped = CANONICAL.get(element.oad)
                if v is None or mapped is None or isinstance(v, dt.datetime | str):
                    continue
                values[mapped.name] = (mapped.value(str(v)), mapped.unit)
        out.append(FreezeRecord(stamp, values))
    return out


def _cell(q: Quantity | None, cell: Data, row: int) -> object:
    assert q is not None
    try:
        return to_value(q, cell)
    except FrameError as exc:
        raise FrameError(f"record row {row}: {exc.reason}") from None
