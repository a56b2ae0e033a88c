"""DL/T 698.45-2017 objects a concentrator reads, and the high-level request/reply API.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum
from typing import TypeAlias

from drivers.dlt698.apdu import (
    DAR,
    ActionRequestNormal,
    ActionResponseNormal,
    ClientApdu,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    ResultNormal,
    SecurityRequest,
    SecurityResponse,
    ServerApdu,
    SetRequestNormal,
    SetResponseNormal,
    TimeTag,
    VerifyRN,
    decode_apdu,
    describe_dar,
    unwrap,
)
from drivers.dlt698.axdr import (
    CSD,
    INTEGER_TYPES,
    NULL,
    OAD,
    OMD,
    TI,
    Data,
    DataType,
    DateTimeS,
    Selector2,
    array,
    integer_range,
    structure,
)
from drivers.dlt698.link import (
    AddressType,
    Frame,
    ServerAddress,
    decode_frame,
    encode_frame,
)
from drivers.errors import EncodeError, FrameError, MeterError
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


# --------------------------------------------------------------------------------------
# Requests


def _server(address: str | ServerAddress) -> ServerAddress:
    return address if isinstance(address, ServerAddress) else ServerAddress(address)


def request_frame(
    address: str | ServerAddress,
    apdu: ClientApdu,
    *,
    client: int = 0,
    preamble: int = 4,
    rn: bytes | None = None,
) -> bytes:
    """A client request frame for ``apdu``; with ``rn`` wrapped as plain text + random
    number (SECURITY-Request), which meters in security mode demand for reads."""
    user_data = apdu.encode()
    if rn is not None:
        user_data = SecurityRequest(user_data, VerifyRN(rn)).encode()
    return encode_frame(Frame(_server(address), user_data, client), preamble=preamble)


def _oads(quantities: Iterable[str | OAD | Quantity]) -> tuple[OAD, ...]:
    return tuple(q if isinstance(q, OAD) else lookup(q).oad for q in quantities)


def build_get(
    address: str | ServerAddress,
    *quantities: str | OAD | Quantity,
    piid: int = 1,
    client: int = 0,
    preamble: int = 4,
    time_tag: TimeTag | None = None,
    rn: bytes | None = None,
) -> bytes:
    """GET-Request Normal for one quantity, NormalList for several."""
    oads = _oads(quantities)
    if not oads:
        raise EncodeError("build_get needs at least one quantity")
    service = (
        GetRequestNormal(piid, oads[0]) if len(oads) == 1 else GetRequestNormalList(piid, oads)
    )
    return request_frame(
        address, ClientApdu(service, time_tag), client=client, preamble=preamble, rn=rn
    )


def build_read_address(*, piid: int = 1, client: int = 0, preamble: int = 4) -> bytes:
    """Read 4001 of the single meter on the line, sent to the wildcard address."""
    return build_get(
        ServerAddress.wildcard(), "comm_address", piid=piid, client=client, preamble=preamble
    )


def build_get_record(
    address: str | ServerAddress,
    record: str | OAD,
    start: dt.datetime,
    end: dt.datetime,
    columns: Sequence[str | OAD | Quantity] = (),
    *,
    interval: TI | None = None,
    time_column: OAD = FREEZE_TIME,
    piid: int = 1,
    client: int = 0,
    preamble: int = 4,
    rn: bytes | None = None,
) -> bytes:
    """GET-Request Record, Selector 2: records whose ``time_column`` lies in [start, end).

    ``interval`` None sends NULL (every record in the range). An empty ``columns`` asks
    for every column the meter stores.
    """
    oad = record if isinstance(record, OAD) else RECORDS[record]
    if end <= start:
        raise EncodeError(f"record range {start} .. {end} is empty")
    rsd = Selector2(
        time_column,
        Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(start)),
        Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(end)),
        NULL if interval is None else Data(DataType.TI, interval),
    )
    service = GetRequestRecord(piid, oad, rsd, _oads(columns))
    return request_frame(address, ClientApdu(service), client=client, preamble=preamble, rn=rn)


def build_set_clock(
    address: str | ServerAddress,
    when: dt.datetime,
    *,
    piid: int = 1,
    client: int = 0,
    preamble: int = 4,
    time_tag: TimeTag | None = None,
) -> bytes:
    """SET-Request Normal of 40000200 (date_time_s)."""
    service = SetRequestNormal(piid, OAD(0x4000, 2, 0), from_value(lookup("clock"), when))
    return request_frame(address, ClientApdu(service, time_tag), client=client, preamble=preamble)


BROADCAST_TIME = OMD(0x4000, 127)  # class 8 method 127: broadcast time synchronisation


def build_broadcast_time(
    when: dt.datetime, *, piid: int = 0, client: int = 0, preamble: int = 4
) -> bytes:
    """ACTION 4000 method 127 with date_time_s to the broadcast address; no meter replies."""
    service = ActionRequestNormal(
        piid, BROADCAST_TIME, Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(when))
    )
    return request_frame(
        ServerAddress.broadcast(), ClientApdu(service), client=client, preamble=preamble
    )


class RemoteControl(IntEnum):
    """Methods of the remote-control object 8000 and the keep-power object 8001.

    The codes are the methods' numbers; ``remote_control_omd`` gives the OMD.
    """

    ALARM = 0x8000_7F  # 8000 method 127
    ALARM_RELEASE = 0x8000_80  # 8000 method 128
    TRIP = 0x8000_81  # 8000 method 129
    CLOSE = 0x8000_82  # 8000 method 130
    KEEP_POWER = 0x8001_7F  # 8001 method 127
    KEEP_POWER_RELEASE = 0x8001_80  # 8001 method 128


def remote_control_omd(action: RemoteControl) -> OMD:
    return OMD(int(action) >> 8, int(action) & 0xFF)


RELAY_OI = 0xF205  # relay outputs; attribute 2 element n is relay n


def build_remote_control(
    address: str | ServerAddress,
    action: RemoteControl,
    *,
    relay: int = 1,
    alarm_delay: int = 0,
    duration: int = 0,
    auto_close: bool = False,
    close_command: int = 0,
    piid: int = 1,
    client: int = 0,
    preamble: int = 4,
    time_tag: TimeTag | None = None,
) -> bytes:
    """ACTION-Request on 8000/8001 in plain text.

    Trip: array of structure {relay OAD F205 02 nn, alarm delay (unsigned), power-off
    duration (long-unsigned), auto-close (bool)}. Close: array of structure {relay OAD,
    command (enum)}. Alarm and keep-power take NULL. Most meters accept control only in
    a security session (ESAM MAC); plain text is what terminals and test benches use.
    """
    if not 1 <= relay <= 0xFF:
        raise EncodeError(f"relay {relay}: expected 1..255")
    relay_oad = Data(DataType.OAD, OAD(RELAY_OI, 2, relay))
    if action is RemoteControl.TRIP:
        for what, value, high in (
            ("alarm delay", alarm_delay, 0xFF),
            ("duration", duration, 0xFFFF),
        ):
            if not 0 <= value <= high:
                raise EncodeError(f"{what} {value}: expected 0..{high}")
        parameter = array(
            structure(
                relay_oad,
                Data(DataType.UNSIGNED, alarm_delay),
                Data(DataType.LONG_UNSIGNED, duration),
                Data(DataType.BOOL, auto_close),
            )
        )
    elif action is RemoteControl.CLOSE:
        if not 0 <= close_command <= 0xFF:
            raise EncodeError(f"close command {close_command}: expected 0..255")
        parameter = array(structure(relay_oad, Data(DataType.ENUM, close_command)))
    else:
        parameter = NULL
    service = ActionRequestNormal(piid, remote_control_omd(action), parameter)
    return request_frame(address, ClientApdu(service, time_tag), client=client, preamble=preamble)


# --------------------------------------------------------------------------------------
# Replies


def check_reply(reply: Frame, address: str | ServerAddress | None = None) -> None:
    """A meter's answer: sent by the server, from a real (single) address that the request
    address selects. A wildcard request is answered with the meter's own address."""
    if not reply.from_server:
        raise FrameError(f"frame from {reply.address} is a request (control 0x{reply.control:02X})")
    if reply.server.type is not AddressType.SINGLE:
        raise FrameError(
            f"reply carries a {reply.server.type.name.lower()} address {reply.address}; "
            "a meter answers with its own single address",
            offset=4,
        )
    if address is not None:
        wanted = _server(address)
        if not wanted.matches(reply.address):
            raise FrameError(f"reply from meter {reply.address}, expected {wanted.address}")


def server_apdu(
    reply: Frame, address: str | ServerAddress | None = None, *, piid: int | None = None
) -> ServerApdu:
    """The reply's Server-APDU, unwrapped from a plain-text SECURITY-Response if need be."""
    check_reply(reply, address)
    if reply.fragment:
        raise FrameError("reply is an APDU fragment: reassemble it first (link.Reassembler)")
    outer = decode_apdu(reply.user_data)
    if isinstance(outer, SecurityResponse) and not isinstance(outer.apdu, bytes):
        # refused at the security layer (ESAM, MAC, authorisation): the meter's answer
        raise _meter_error(reply, int(outer.apdu), "security")
    apdu = unwrap(outer)
    if not isinstance(apdu, ServerApdu):
        raise FrameError(f"reply carries {type(apdu).__name__}, expected a Server-APDU")
    if piid is not None and (apdu.service.piid_acd & 0x3F) != (piid & 0x3F):
        raise FrameError(
            f"reply PIID serial {apdu.service.piid_acd & 0x3F}, expected {piid & 0x3F}"
        )
    return apdu


def _meter_error(reply: Frame, code: int, what: str) -> MeterError:
    return MeterError(
        reply.address, code, f"{what}: {describe_dar(code)}", raw=encode_frame(reply, preamble=0)
    )


def parse_get_response(
    reply: Frame,
    quantity: str | OAD | Quantity,
    *,
    address: str | ServerAddress | None = None,
    piid: int | None = None,
) -> Value:
    """The value of a GET-Response Normal; MeterError if the meter answered with a DAR."""
    q = lookup(quantity)
    service = server_apdu(reply, address, piid=piid).service
    if not isinstance(service, GetResponseNormal):
        raise FrameError(f"reply is {type(service).__name__}, expected GetResponseNormal")
    return _result_value(reply, q, service.result)


def _result_value(reply: Frame, q: Quantity, result: ResultNormal) -> Value:
    if result.oad != q.oad:
        raise FrameError(f"reply carries OAD {result.oad}, expected {q.oad}")
    if not isinstance(result.result, Data):
        raise _meter_error(reply, int(result.result), f"{q.name} ({q.oad})")
    return to_value(q, result.result)


def parse_get_list_response(
    reply: Frame,
    quantities: Sequence[str | OAD | Quantity],
    *,
    address: str | ServerAddress | None = None,
    piid: int | None = None,
) -> dict[str, Value | DAR | int]:
    """Values of a GET-Response NormalList by quantity name; a refused one maps to its DAR."""
    wanted = [lookup(q) for q in quantities]
    service = server_apdu(reply, address, piid=piid).service
    if not isinstance(service, GetResponseNormalList):
        raise FrameError(f"reply is {type(service).__name__}, expected GetResponseNormalList")
    by_oad = {r.oad: r for r in service.results}
    out: dict[str, Value | DAR | int] = {}
    for q in wanted:
        result = by_oad.get(q.oad)
        if result is None:
            raise FrameError(f"reply lacks {q.name} ({q.oad})")
        out[q.name] = (
            result.result if not isinstance(result.result, Data) else to_value(q, result.result)
        )
    return out


@dataclass(frozen=True)
class RecordTable:
    """Rows of a GET-Response Record, each a dict keyed by column name (or OAD text)."""

    record: OAD
    columns: tuple[str, ...]
    rows: tuple[dict[str, Value | Data], ...]


def _column_name(csd: CSD) -> str:
    if isinstance(csd, OAD):
        q = QUANTITIES_BY_OAD.get(csd)
        return q.name if q is not None else str(csd)
    return f"{csd.oad}:" + ",".join(str(o) for o in csd.related)


def parse_record_response(
    reply: Frame,
    *,
    address: str | ServerAddress | None = None,
    piid: int | None = None,
) -> RecordTable:
    """Rows of a GET-Response Record: known columns typed and scaled, others left as Data."""
    service = server_apdu(reply, address, piid=piid).service
    if not isinstance(service, GetResponseRecord):
        raise FrameError(f"reply is {type(service).__name__}, expected GetResponseRecord")
    result = service.result
    if not isinstance(result.rows, tuple):
        raise _meter_error(reply, int(result.rows), f"record {result.oad}")
    names = tuple(_column_name(c) for c in result.columns)
    rows = []
    for row in result.rows:
        cells: dict[str, Value | Data] = {}
        for csd, name, cell in zip(result.columns, names, row, strict=True):
            q = QUANTITIES_BY_OAD.get(csd) if isinstance(csd, OAD) else None
            cells[name] = to_value(q, cell) if q is not None else cell
        rows.append(cells)
    return RecordTable(result.oad, names, tuple(rows))


def parse_set_response(
    reply: Frame,
    oad: OAD,
    *,
    address: str | ServerAddress | None = None,
    piid: int | None = None,
) -> None:
    """Nothing if the meter accepted the SET, MeterError with its DAR if not."""
    service = server_apdu(reply, address, piid=piid).service
    if not isinstance(service, SetResponseNormal):
        raise FrameError(f"reply is {type(service).__name__}, expected SetResponseNormal")
    if service.oad != oad:
        raise FrameError(f"reply carries OAD {service.oad}, expected {oad}")
    if service.dar != DAR.SUCCESS:
        raise _meter_error(reply, int(service.dar), f"SET {oad}")


def parse_action_response(
    reply: Frame,
    omd: OMD,
    *,
    address: str | ServerAddress | None = None,
    piid: int | None = None,
) -> Data | None:
    """The data an ACTION returned (usually none); MeterError with its DAR if refused."""
    service = server_apdu(reply, address, piid=piid).service
    if not isinstance(service, ActionResponseNormal):
        raise FrameError(f"reply is {type(service).__name__}, expected ActionResponseNormal")
    if service.omd != omd:
        raise FrameError(f"reply carries OMD {service.omd}, expected {omd}")
    if service.dar != DAR.SUCCESS:
        raise _meter_error(reply, int(service.dar), f"ACTION {omd}")
    return service.data


# --------------------------------------------------------------------------------------
# Benchmark target: decode of a typical GET-Response Normal frame

# Meter 000000000322 answers forward active energy (00100200): total 12345.67 kWh and
# four tariffs (1234.56, 3399.95, 4790.15, 2921.01), FollowReport and TimeTag absent.
# Generated by this module; tests/test_dlt698.py rechecks its CRCs by hand.
TYPICAL_GET_RESPONSE = bytes.fromhex(
    "68 34 00 C3 05 22 03 00 00 00 00 00 D9 F9 85 01 01 00 10 02 00 01 01 05"
    " 06 00 12 D6 87 06 00 01 E2 40 06 00 05 30 1B 06 00 07 4F 27 06 00 04 75"
    " 05 00 00 F6 9F 16"
)


def decode_get_response(wire: bytes = TYPICAL_GET_RESPONSE, quantity: str = "energy_fwd") -> Value:
    """Frame bytes -> link frame -> APDU -> scaled values: the whole receive path."""
    return parse_get_response(decode_frame(wire), quantity)
