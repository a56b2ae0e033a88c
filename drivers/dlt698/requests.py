"""DL/T 698.45 requests a concentrator sends: GET (one OAD, a list, a record), SET of
the clock, the broadcast time and remote control ACTIONs, each framed for one meter
(`drivers.dlt698.objects` holds the quantities they name)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from enum import IntEnum

from drivers.dlt698.apdu import (
    ActionRequestNormal,
    ClientApdu,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    SecurityRequest,
    SetRequestNormal,
    TimeTag,
    VerifyRN,
)
from drivers.dlt698.axdr import (
    NULL,
    OAD,
    OMD,
    TI,
    Data,
    DataType,
    DateTimeS,
    Selector2,
    array,
    structure,
)
from drivers.dlt698.link import (
    Frame,
    ServerAddress,
    encode_frame,
)
from drivers.dlt698.objects import (
    FREEZE_TIME,
    RECORDS,
    Quantity,
    from_value,
    lookup,
)
from drivers.errors import EncodeError


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
    return encode_frame(Frame(ServerAddress.of(address), user_data, client), preamble=preamble)


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
