"""DL/T 698.45 client requests (GET, SET, ACTION) and server responses, each with
its encoder (clause 8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from drivers.dlt698.apdu.parts import (
    DAR,
    ApduTag,
    FollowReport,
    ResultNormal,
    ResultRecord,
    TimeTag,
    _check_piid,
    _dar_byte,
    _write_optional_time_tag,
)
from drivers.dlt698.axdr import (
    CSD,
    OAD,
    OMD,
    RSD,
    Data,
    encode_data,
    encode_length,
    encode_rcsd,
    encode_rsd,
)
from drivers.errors import EncodeError

# --------------------------------------------------------------------------------------
# Requests (client -> server)


@dataclass(frozen=True)
class GetRequestNormal:
    piid: int
    oad: OAD

    def body(self) -> bytes:
        _check_piid(self.piid)
        return bytes([ApduTag.GET_REQUEST, 1, self.piid]) + self.oad.encode()


@dataclass(frozen=True)
class GetRequestNormalList:
    piid: int
    oads: tuple[OAD, ...]

    def body(self) -> bytes:
        _check_piid(self.piid)
        out = bytearray([ApduTag.GET_REQUEST, 2, self.piid])
        out += encode_length(len(self.oads))
        for oad in self.oads:
            out += oad.encode()
        return bytes(out)


@dataclass(frozen=True)
class GetRequestRecord:
    piid: int
    oad: OAD
    rsd: RSD
    columns: tuple[CSD, ...] = ()  # empty RCSD: every column the meter stores

    def body(self) -> bytes:
        _check_piid(self.piid)
        return (
            bytes([ApduTag.GET_REQUEST, 3, self.piid])
            + self.oad.encode()
            + encode_rsd(self.rsd)
            + encode_rcsd(self.columns)
        )


@dataclass(frozen=True)
class GetRequestNext:
    """Ask for the block after ``last_block`` of an answer the meter split (GetResponseNext)."""

    piid: int
    last_block: int

    def body(self) -> bytes:
        _check_piid(self.piid)
        if not 0 <= self.last_block <= 0xFFFF:
            raise EncodeError(f"block number {self.last_block}: expected 0..65535")
        return bytes([ApduTag.GET_REQUEST, 5, self.piid]) + self.last_block.to_bytes(2, "big")


@dataclass(frozen=True)
class SetRequestNormal:
    piid: int
    oad: OAD
    data: Data

    def body(self) -> bytes:
        _check_piid(self.piid)
        return (
            bytes([ApduTag.SET_REQUEST, 1, self.piid]) + self.oad.encode() + encode_data(self.data)
        )


@dataclass(frozen=True)
class ActionRequestNormal:
    piid: int
    omd: OMD
    data: Data

    def body(self) -> bytes:
        _check_piid(self.piid)
        return (
            bytes([ApduTag.ACTION_REQUEST, 1, self.piid])
            + self.omd.encode()
            + encode_data(self.data)
        )


Request: TypeAlias = (
    GetRequestNormal
    | GetRequestNormalList
    | GetRequestRecord
    | GetRequestNext
    | SetRequestNormal
    | ActionRequestNormal
)


@dataclass(frozen=True)
class ClientApdu:
    """A request and its optional time tag (meters may demand one for SET and ACTION)."""

    service: Request
    time_tag: TimeTag | None = None

    def encode(self) -> bytes:
        return self.service.body() + _write_optional_time_tag(self.time_tag)


# --------------------------------------------------------------------------------------
# Responses (server -> client)


@dataclass(frozen=True)
class GetResponseNormal:
    piid_acd: int
    result: ResultNormal

    def body(self) -> bytes:
        _check_piid(self.piid_acd)
        return bytes([ApduTag.GET_RESPONSE, 1, self.piid_acd]) + self.result.encode()


@dataclass(frozen=True)
class GetResponseNormalList:
    piid_acd: int
    results: tuple[ResultNormal, ...]

    def body(self) -> bytes:
        _check_piid(self.piid_acd)
        out = bytearray([ApduTag.GET_RESPONSE, 2, self.piid_acd])
        out += encode_length(len(self.results))
        for result in self.results:
            out += result.encode()
        return bytes(out)


@dataclass(frozen=True)
class GetResponseRecord:
    piid_acd: int
    result: ResultRecord

    def body(self) -> bytes:
        _check_piid(self.piid_acd)
        return bytes([ApduTag.GET_RESPONSE, 3, self.piid_acd]) + self.result.encode()


@dataclass(frozen=True)
class GetResponseNext:
    """One block of an answer split at the application layer."""

    piid_acd: int
    last: bool
    block: int
    results: tuple[ResultNormal, ...] | tuple[ResultRecord, ...] | DAR | int
    records: bool = False

    def body(self) -> bytes:
        _check_piid(self.piid_acd)
        if not 0 <= self.block <= 0xFFFF:
            raise EncodeError(f"block number {self.block}: expected 0..65535")
        out = bytearray([ApduTag.GET_RESPONSE, 5, self.piid_acd, 1 if self.last else 0])
        out += self.block.to_bytes(2, "big")
        if isinstance(self.results, tuple):
            out.append(2 if self.records else 1)
            out += encode_length(len(self.results))
            for item in self.results:
                if isinstance(item, ResultRecord) != self.records:
                    raise EncodeError("GetResponseNext mixes normal results and records")
                out += item.encode()
        else:
            out.append(0)
            out += _dar_byte(self.results)
        return bytes(out)


@dataclass(frozen=True)
class SetResponseNormal:
    piid_acd: int
    oad: OAD
    dar: DAR | int

    def body(self) -> bytes:
        _check_piid(self.piid_acd)
        return (
            bytes([ApduTag.SET_RESPONSE, 1, self.piid_acd])
            + self.oad.encode()
            + _dar_byte(self.dar)
        )


@dataclass(frozen=True)
class ActionResponseNormal:
    piid_acd: int
    omd: OMD
    dar: DAR | int
    data: Data | None = None

    def body(self) -> bytes:
        _check_piid(self.piid_acd)
        out = bytearray([ApduTag.ACTION_RESPONSE, 1, self.piid_acd])
        out += self.omd.encode() + _dar_byte(self.dar)
        out += b"\x00" if self.data is None else b"\x01" + encode_data(self.data)
        return bytes(out)


Response: TypeAlias = (
    GetResponseNormal
    | GetResponseNormalList
    | GetResponseRecord
    | GetResponseNext
    | SetResponseNormal
    | ActionResponseNormal
)


@dataclass(frozen=True)
class ServerApdu:
    """An answer and its two trailing OPTIONAL fields, FollowReport then TimeTag."""

    service: Response
    follow_report: FollowReport | None = None
    time_tag: TimeTag | None = None

    def encode(self) -> bytes:
        out = bytearray(self.service.body())
        out += b"\x00" if self.follow_report is None else b"\x01" + self.follow_report.encode()
        out += _write_optional_time_tag(self.time_tag)
        return bytes(out)
