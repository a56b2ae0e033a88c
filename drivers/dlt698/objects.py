"""DL/T 698.45-2017 objects a concentrator reads (the requests and replies that carry
them: `drivers.dlt698.requests`, `drivers.dlt698.replies`).

A quantity is an OAD (object, attribute 2 = value, element index) with the data type,
scaler and unit the standard gives its object (attribute 3, Scaler_Unit, holds the same
pair; we do not read it every time). Values come out as ``Decimal`` with exactly the
standard's decimals, signed where the data type is signed (current, power, power factor,
combined energy), ``datetime`` for date_time_s, hex text for octet-strings.

Reading index 0 returns the whole array (total and tariffs, or phases A, B, C); an element
index returns the bare element, never an array of one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import TypeAlias

from drivers.dlt698.axdr import (
    INTEGER_TYPES,
    NULL,
    OAD,
    Data,
    DataType,
    DateTimeS,
    array,
    integer_range,
)
from drivers.errors import EncodeError, FrameError
from drivers.quantity_map import Mapped


class Unit(IntEnum):
    """Physical units of Scaler_Unit (the enum of the standard's unit table)."""

    YEAR = 1
    MONTH = 2
    WEEK = 3
    DAY = 4
    HOUR = 5
    MINUTE = 6
    SECOND = 7
    DEGREE = 8
    CELSIUS = 9
    CURRENCY = 10
    METRE = 11
    METRE_PER_SECOND = 12
    CUBIC_METRE = 13
    CUBIC_METRE_CORRECTED = 14
    CUBIC_METRE_PER_HOUR = 15
    CUBIC_METRE_PER_HOUR_CORRECTED = 16
    CUBIC_METRE_PER_DAY = 17
    CUBIC_METRE_PER_DAY_CORRECTED = 18
    LITRE = 19
    KILOGRAM = 20
    NEWTON = 21
    NEWTON_METRE = 22
    PASCAL = 23
    BAR = 24
    JOULE = 25
    JOULE_PER_HOUR = 26
    WATT = 27
    KILOWATT = 28
    VOLT_AMPERE = 29
    KILOVOLT_AMPERE = 30
    VAR = 31
    KILOVAR = 32
    KILOWATT_HOUR = 33
    KILOVOLT_AMPERE_HOUR = 34
    KILOVAR_HOUR = 35
    AMPERE = 36
    COULOMB = 37
    VOLT = 38
    VOLT_PER_METRE = 39
    FARAD = 40
    OHM = 41
    OHM_SQUARE_METRE_PER_METRE = 42
    WEBER = 43
    TESLA = 44
    AMPERE_PER_METRE = 45
    HENRY = 46
    HERTZ = 47
    PER_WATT_HOUR = 48
    IMPULSES_PER_KWH = 49
    IMPULSES_PER_KVARH = 50
    # 51..56 from two of three sources (a third shifts them by one): see the docs
    PERCENT = 51
    BYTE = 52
    DBM = 53
    YUAN_PER_KWH = 54
    AMPERE_HOUR = 55
    MILLISECOND = 56
    OTHER = 254
    NONE = 255


UNIT_SYMBOL: dict[Unit, str] = {
    Unit.WATT: "W",
    Unit.KILOWATT: "kW",
    Unit.VOLT_AMPERE: "VA",
    Unit.KILOVOLT_AMPERE: "kVA",
    Unit.VAR: "var",
    Unit.KILOVAR: "kvar",
    Unit.KILOWATT_HOUR: "kWh",
    Unit.KILOVOLT_AMPERE_HOUR: "kVAh",
    Unit.KILOVAR_HOUR: "kvarh",
    Unit.AMPERE: "A",
    Unit.VOLT: "V",
    Unit.HERTZ: "Hz",
    Unit.SECOND: "s",
    Unit.MINUTE: "min",
    Unit.CELSIUS: "°C",
    Unit.PERCENT: "%",
}

Value: TypeAlias = Decimal | int | dt.datetime | str | tuple[Decimal | int | None, ...] | None


@dataclass(frozen=True)
class Quantity:
    """One readable value: where it lives, its type, and how to scale it.

    ``scaler`` None means "no scaling": integers stay int. ``array`` marks a whole array
    attribute (read with element index 0).
    """

    name: str
    oad: OAD
    description: str
    type: DataType
    scaler: int | None = None
    unit: Unit | None = None
    array: bool = False

    @property
    def symbol(self) -> str:
        return UNIT_SYMBOL.get(self.unit, "") if self.unit is not None else ""


def _family(
    name: str,
    oi: int,
    description: str,
    data_type: DataType,
    scaler: int,
    unit: Unit,
    elements: Sequence[tuple[str, str]],
) -> list[Quantity]:
    """The array attribute and each of its elements (index 1..n)."""
    whole = Quantity(name, OAD(oi, 2, 0), description, data_type, scaler, unit, array=True)
    parts = [
        Quantity(
            f"{name}_{suffix}", OAD(oi, 2, i), f"{description}, {label}", data_type, scaler, unit
        )
        for i, (suffix, label) in enumerate(elements, start=1)
    ]
    return [whole, *parts]


_TARIFFS = (
    ("total", "total"),
    ("t1", "tariff 1"),
    ("t2", "tariff 2"),
    ("t3", "tariff 3"),
    ("t4", "tariff 4"),
)
_PHASES = (("a", "phase A"), ("b", "phase B"), ("c", "phase C"))
_TOTAL_AND_PHASES = (("total", "total"), *_PHASES)

QUANTITIES: tuple[Quantity, ...] = (
    *_family(
        "energy_combined",
        0x0000,
        "combined active energy",
        DataType.DOUBLE_LONG,
        -2,
        Unit.KILOWATT_HOUR,
        _TARIFFS,
    ),
    *_family(
        "energy_fwd",
        0x0010,
        "forward active energy",
        DataType.DOUBLE_LONG_UNSIGNED,
        -2,
        Unit.KILOWATT_HOUR,
        _TARIFFS,
    ),
    *_family(
        "energy_rev",
        0x0020,
        "reverse active energy",
        DataType.DOUBLE_LONG_UNSIGNED,
        -2,
        Unit.KILOWATT_HOUR,
        _TARIFFS,
    ),
    *_family("voltage", 0x2000, "voltage", DataType.LONG_UNSIGNED, -1, Unit.VOLT, _PHASES),
    *_family("current", 0x2001, "current", DataType.DOUBLE_LONG, -3, Unit.AMPERE, _PHASES),
    *_family(
        "power", 0x2004, "active power", DataType.DOUBLE_LONG, -1, Unit.WATT, _TOTAL_AND_PHASES
    ),
    *_family(
        "power_factor", 0x200A, "power factor", DataType.LONG, -3, Unit.NONE, _TOTAL_AND_PHASES
    ),
    Quantity(
        "frequency", OAD(0x200F, 2, 0), "grid frequency", DataType.LONG_UNSIGNED, -2, Unit.HERTZ
    ),
    Quantity("clock", OAD(0x4000, 2, 0), "meter date and time", DataType.DATE_TIME_S),
    Quantity("comm_address", OAD(0x4001, 2, 0), "communication address", DataType.OCTET_STRING),
    # record columns
    Quantity("freeze_time", OAD(0x2021, 2, 0), "data freeze time", DataType.DATE_TIME_S),
    Quantity(
        "freeze_number", OAD(0x2023, 2, 0), "freeze record number", DataType.DOUBLE_LONG_UNSIGNED
    ),
)

QUANTITIES_BY_NAME: dict[str, Quantity] = {q.name: q for q in QUANTITIES}
QUANTITIES_BY_OAD: dict[OAD, Quantity] = {q.oad: q for q in QUANTITIES}

# The OADs in the canonical vocabulary (contract.quantities, docs/quantities.md), the one
# table that says what each element is stored as. Whole arrays (index 0) are read as
# their elements; powers come in W (scaler -1) and are stored in kW; the total power
# factor is "power_factor"; the clock and address are not measurements.
CANONICAL: dict[OAD, Mapped] = {
    q.oad: Mapped(
        "power_factor" if q.name == "power_factor_total" else q.name,
        "kW" if q.unit == Unit.WATT else q.symbol,
        -3 if q.unit == Unit.WATT else 0,
    )
    for q in QUANTITIES
    if not q.array and q.oad.oi < 0x4000 and q.oad.oi not in (0x2021, 0x2023)
}

# Records (class 9, freeze objects): attribute 2 is the record table, read with GET-Record.
MINUTE_FREEZE = OAD(0x5002, 2, 0)  # the 15-minute curve on most meters
DAILY_FREEZE = OAD(0x5004, 2, 0)
RECORDS: dict[str, OAD] = {"minute_freeze": MINUTE_FREEZE, "daily_freeze": DAILY_FREEZE}
FREEZE_TIME = OAD(0x2021, 2, 0)

DEFAULT_QUANTITIES: tuple[str, ...] = (
    "energy_fwd",
    "energy_rev",
    "voltage",
    "current",
    "power",
    "power_factor",
    "frequency",
    "clock",
)


def lookup(key: str | OAD | int | Quantity) -> Quantity:
    """A quantity by name ("voltage_a"), OAD text ("20000201"), OAD or 32-bit number."""
    if isinstance(key, Quantity):
        return key
    if isinstance(key, str):
        if key in QUANTITIES_BY_NAME:
            return QUANTITIES_BY_NAME[key]
        try:
            key = OAD.parse(key)
        except EncodeError:
            raise KeyError(f"unknown DL/T 698.45 quantity {key!r}") from None
    if isinstance(key, int):
        if not 0 <= key <= 0xFFFFFFFF:
            raise KeyError(f"OAD {key}: expected 32 bits")
        key = OAD(key >> 16, (key >> 8) & 0xFF, key & 0xFF)
    try:
        return QUANTITIES_BY_OAD[key]
    except KeyError:
        raise KeyError(f"no quantity at OAD {key}") from None


def to_value(quantity: Quantity, data: Data) -> Value:
    """A Data from the meter -> the Python value of this quantity (FrameError if it is not)."""
    if data.type is DataType.NULL:
        return None
    if quantity.array:
        if data.type is not DataType.ARRAY or not isinstance(data.value, tuple):
            raise FrameError(
                f"{quantity.name} ({quantity.oad}): expected an array of "
                f"{quantity.type.name}, got {data.type.name}"
            )
        elements = []
        for item in data.value:
            if not isinstance(item, Data):
                raise FrameError(f"{quantity.name}: array element {item!r} is not Data")
            value = _element(quantity, item)
            assert not isinstance(value, dt.datetime | str | tuple)
            elements.append(value)
        return tuple(elements)
    if data.type is DataType.ARRAY and quantity.oad.index:
        raise FrameError(
            f"{quantity.name} ({quantity.oad}): element {quantity.oad.index} came back as an "
            "array; an element read is answered with the bare element"
        )
    return _element(quantity, data)


def _element(quantity: Quantity, data: Data) -> Decimal | int | dt.datetime | str | None:
    if data.type is DataType.NULL:
        return None
    if data.type is not quantity.type:
        raise FrameError(
            f"{quantity.name} ({quantity.oad}): expected {quantity.type.name}, got {data.type.name}"
        )
    value = data.value
    if isinstance(value, int) and not isinstance(value, bool):
        return value if quantity.scaler is None else Decimal(value).scaleb(quantity.scaler)
    if isinstance(value, DateTimeS):
        return value.to_datetime()
    if isinstance(value, bytes):
        return value.hex().upper()
    raise AssertionError(quantity.type)


def from_value(quantity: Quantity, value: Value) -> Data:
    """The inverse of ``to_value`` (the simulator's side)."""
    if value is None:
        return NULL
    if quantity.array:
        if not isinstance(value, tuple):
            raise EncodeError(f"{quantity.name}: expected a tuple of values")
        return array(*(_element_data(quantity, v) for v in value))
    return _element_data(quantity, value)


def _element_data(quantity: Quantity, value: Value) -> Data:
    t, what = quantity.type, f"{quantity.name} ({quantity.oad})"
    if value is None:
        return NULL
    if t in INTEGER_TYPES:
        if quantity.scaler is None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise EncodeError(f"{what}: expected an int")
            number = value
        else:
            if not isinstance(value, Decimal | int) or isinstance(value, bool):
                raise EncodeError(f"{what}: expected a Decimal, got {type(value).__name__}")
            scaled = Decimal(value).scaleb(-quantity.scaler)
            if scaled != scaled.to_integral_value():
                raise EncodeError(f"{what}: {value} has more than {-quantity.scaler} decimals")
            number = int(scaled)
        low, high = integer_range(t)
        if not low <= number <= high:
            raise EncodeError(f"{what}: {value} out of range")
        return Data(t, number)
    if t is DataType.DATE_TIME_S:
        if not isinstance(value, dt.datetime):
            raise EncodeError(f"{what}: expected a datetime")
        return Data(t, DateTimeS.from_datetime(value))
    if t is DataType.OCTET_STRING:
        if not isinstance(value, str):
            raise EncodeError(f"{what}: expected hex text")
        try:
            return Data(t, bytes.fromhex(value))
        except ValueError:
            raise EncodeError(f"{what}: {value!r} is not hex") from None
    raise AssertionError(t)
