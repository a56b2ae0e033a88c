"""How a reading is written into a row and read back: packed values, source codes.

A value is one packed integer, ``mantissa * 16 + scale``: the low 4 bits hold the
number of fraction digits, so "0.50" stays "0.50" with no scale column. A decimal
string the packing cannot restore exactly (for example "007" or "-0.0") is stored as
the original text instead. ``read_at`` is kept as milliseconds after the slot start.
"""

from __future__ import annotations

import json
import re
from typing import cast

from concentrator.storage.errors import StoreCorruptError
from concentrator.storage.records import StoredEvent, StoredReading
from contract.records import Event, Reading

# Stored as a small integer: 0 and 1 cost no body bytes in SQLite's record format.
SOURCES: tuple[str, ...] = ("poll", "backfill", "ondemand")

_SCALE_BITS = 4
_SCALE_MASK = (1 << _SCALE_BITS) - 1
SCALE_MASK = _SCALE_MASK  # the most fraction digits a packed value holds (15)
_MANTISSA_LIMIT = 1 << (63 - _SCALE_BITS - 1)
# The spellings `unpack_value` reproduces exactly. Other decimals are stored verbatim.
_CANONICAL_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def pack_value(value: str) -> int | str:
    """Pack the decimal string into one integer, or keep it as text if packing is not exact.

    The low 4 bits hold the number of fraction digits, so "0.50" stays "0.50" and
    "-1.234" stays "-1.234". "-0" and "007" would not survive the round trip, so
    they, and anything longer than 59 bits, are stored as the text itself.
    """
    if _CANONICAL_DECIMAL.fullmatch(value):
        negative = value.startswith("-")
        whole, _, fraction = value.lstrip("-").partition(".")
        mantissa = int(whole + fraction)
        scale = len(fraction)
        if scale <= _SCALE_MASK and mantissa < _MANTISSA_LIMIT and (mantissa or not negative):
            return ((-mantissa if negative else mantissa) << _SCALE_BITS) | scale
    if DECIMAL.fullmatch(value):
        return value
    raise ValueError(f"value {value!r} is not a decimal number")


def unpack_value(stored: object) -> str:
    if isinstance(stored, str):
        return stored
    if not isinstance(stored, int):
        raise StoreCorruptError(f"reading value {stored!r} is neither packed integer nor text")
    scale = stored & _SCALE_MASK
    mantissa = stored >> _SCALE_BITS  # arithmetic shift: floor, correct for negatives
    digits = str(abs(mantissa))
    if scale:
        digits = digits.rjust(scale + 1, "0")
        digits = f"{digits[:-scale]}.{digits[-scale:]}"
    return f"-{digits}" if mantissa < 0 else digits


READING_SELECT = (
    "SELECT r.id, m.name, q.name, r.slot, r.value, u.name, r.read_lag_ms, r.source,"
    " r.uplink_seq FROM readings r"
    " JOIN series s ON s.id = r.series_id"
    " JOIN meters m ON m.id = s.meter_id"
    " JOIN quantities q ON q.id = s.quantity_id"
    " JOIN units u ON u.id = r.unit_id"
)
EVENT_SELECT = "SELECT id, at, kind, severity, meter, detail, uplink_seq FROM events"


def stored_reading(row: tuple[object, ...]) -> StoredReading:
    rid, meter, quantity, slot, value, unit, lag_ms, source, batch_id = row
    slot_i = cast(int, slot)
    return StoredReading(
        id=cast(int, rid),
        reading=Reading(
            meter=str(meter),
            quantity=str(quantity),
            slot=slot_i,
            value=unpack_value(value),
            unit=str(unit),
            read_at=(slot_i * 1000 + cast(int, lag_ms)) / 1000,
            source=SOURCES[cast(int, source)],
        ),
        batch_id=cast("int | None", batch_id),
    )


def stored_event(row: tuple[object, ...]) -> StoredEvent:
    eid, at, kind, severity, meter, detail, batch_id = row
    return StoredEvent(
        id=cast(int, eid),
        event=Event(
            kind=str(kind),
            severity=str(severity),
            meter=cast("str | None", meter),
            detail=cast("dict[str, object]", json.loads(cast(str, detail))),
            at=cast(float, at),
        ),
        batch_id=cast("int | None", batch_id),
    )


def pack_value_for(reading: Reading) -> int | str:
    try:
        return pack_value(reading.value)
    except ValueError as exc:
        raise ValueError(
            f"{exc} (meter {reading.meter!r}, quantity {reading.quantity!r}, slot {reading.slot})"
        ) from None


def source_code(reading: Reading) -> int:
    try:
        return SOURCES.index(reading.source)
    except ValueError:
        raise ValueError(
            f"source {reading.source!r} is not one of {', '.join(SOURCES)}"
            f" (meter {reading.meter!r}, slot {reading.slot})"
        ) from None
