"""DL/T 698.45 replies a concentrator reads: the checks every answer passes (from a
server, from the meter asked, not a security-wrapped surprise) and the parsers of
GET, SET and ACTION responses into values, record tables and meter errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.dlt698.apdu import (
    DAR,
    ActionResponseNormal,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    ResultNormal,
    SecurityResponse,
    ServerApdu,
    SetResponseNormal,
    decode_apdu,
    describe_dar,
    unwrap,
)
from drivers.dlt698.axdr import (
    CSD,
    OAD,
    OMD,
    Data,
)
from drivers.dlt698.link import (
    AddressType,
    Frame,
    ServerAddress,
    decode_frame,
    encode_frame,
)
from drivers.dlt698.objects import (
    QUANTITIES_BY_OAD,
    Quantity,
    Value,
    lookup,
    to_value,
)
from drivers.errors import FrameError, MeterError


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
        wanted = ServerAddress.of(address)
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
