"""DL/T 698.45 APDU parts: tags, DAR codes, PIID, the time tag and the result
structures (Normal, Record, FollowReport) that responses are made of."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from drivers.dlt698.axdr import (
    CSD,
    OAD,
    TI,
    Data,
    DateTimeS,
    Reader,
    encode_data,
    encode_date_time_s,
    encode_length,
    encode_rcsd,
    encode_ti,
    read_data,
    read_date_time_s,
    read_oad,
    read_rcsd,
    read_ti,
)
from drivers.errors import EncodeError, FrameError


class ApduTag(IntEnum):
    LINK_REQUEST = 1
    CONNECT_REQUEST = 2
    RELEASE_REQUEST = 3
    GET_REQUEST = 5
    SET_REQUEST = 6
    ACTION_REQUEST = 7
    REPORT_RESPONSE = 8
    PROXY_REQUEST = 9
    SECURITY_REQUEST = 16
    LINK_RESPONSE = 129
    CONNECT_RESPONSE = 130
    RELEASE_RESPONSE = 131
    RELEASE_NOTIFICATION = 132
    GET_RESPONSE = 133
    SET_RESPONSE = 134
    ACTION_RESPONSE = 135
    REPORT_NOTIFICATION = 136
    PROXY_RESPONSE = 137
    SECURITY_RESPONSE = 144


class DAR(IntEnum):
    """Data access result (clause 7.3.3, "DAR")."""

    SUCCESS = 0
    HARDWARE_FAILURE = 1
    TEMPORARY_FAILURE = 2
    ACCESS_DENIED = 3
    OBJECT_UNDEFINED = 4
    CLASS_MISMATCH = 5
    OBJECT_NOT_EXIST = 6
    TYPE_MISMATCH = 7
    OUT_OF_RANGE = 8
    BLOCK_UNAVAILABLE = 9
    TRANSFER_CANCELLED = 10
    NOT_IN_TRANSFER = 11
    BLOCK_WRITE_CANCELLED = 12
    NO_BLOCK_WRITE = 13
    BLOCK_NUMBER_INVALID = 14
    UNAUTHORISED = 15
    BAUD_UNCHANGEABLE = 16
    YEAR_ZONES_EXCEEDED = 17
    DAY_SLOTS_EXCEEDED = 18
    TARIFFS_EXCEEDED = 19
    SECURITY_MISMATCH = 20
    REPEATED_RECHARGE = 21
    ESAM_FAILURE = 22
    SECURITY_FAILURE = 23
    CUSTOMER_MISMATCH = 24
    RECHARGE_COUNT_ERROR = 25
    HOARDING_EXCEEDED = 26
    ADDRESS_ERROR = 27
    SYMMETRIC_DECRYPT_ERROR = 28
    ASYMMETRIC_DECRYPT_ERROR = 29
    SIGNATURE_ERROR = 30
    METER_SUSPENDED = 31
    TIME_TAG_INVALID = 32
    REQUEST_TIMEOUT = 33
    ESAM_P1P2_ERROR = 34
    ESAM_LC_ERROR = 35
    OTHER = 255


_DAR_TEXT = {
    DAR.SUCCESS: "success",
    DAR.HARDWARE_FAILURE: "hardware failure",
    DAR.TEMPORARY_FAILURE: "temporary failure",
    DAR.ACCESS_DENIED: "read/write denied",
    DAR.OBJECT_UNDEFINED: "object undefined",
    DAR.CLASS_MISMATCH: "object interface class does not match",
    DAR.OBJECT_NOT_EXIST: "object does not exist",
    DAR.TYPE_MISMATCH: "type does not match",
    DAR.OUT_OF_RANGE: "out of range",
    DAR.BLOCK_UNAVAILABLE: "data block unavailable",
    DAR.TRANSFER_CANCELLED: "fragmented transfer cancelled",
    DAR.NOT_IN_TRANSFER: "not in a fragmented transfer",
    DAR.BLOCK_WRITE_CANCELLED: "block write cancelled",
    DAR.NO_BLOCK_WRITE: "no block write in progress",
    DAR.BLOCK_NUMBER_INVALID: "data block number invalid",
    DAR.UNAUTHORISED: "password wrong or not authorised",
    DAR.BAUD_UNCHANGEABLE: "baud rate cannot be changed",
    DAR.YEAR_ZONES_EXCEEDED: "year time-zone count exceeded",
    DAR.DAY_SLOTS_EXCEEDED: "daily time-slot count exceeded",
    DAR.TARIFFS_EXCEEDED: "tariff count exceeded",
    DAR.SECURITY_MISMATCH: "security authentication does not match",
    DAR.REPEATED_RECHARGE: "repeated recharge",
    DAR.ESAM_FAILURE: "ESAM verification failed",
    DAR.SECURITY_FAILURE: "security authentication failed",
    DAR.CUSTOMER_MISMATCH: "customer number does not match",
    DAR.RECHARGE_COUNT_ERROR: "recharge count wrong",
    DAR.HOARDING_EXCEEDED: "purchase exceeds the hoarding limit",
    DAR.ADDRESS_ERROR: "address error",
    DAR.SYMMETRIC_DECRYPT_ERROR: "symmetric decryption error",
    DAR.ASYMMETRIC_DECRYPT_ERROR: "asymmetric decryption error",
    DAR.SIGNATURE_ERROR: "signature error",
    DAR.METER_SUSPENDED: "meter suspended",
    DAR.TIME_TAG_INVALID: "time tag invalid",
    DAR.REQUEST_TIMEOUT: "request timed out",
    DAR.ESAM_P1P2_ERROR: "ESAM P1 P2 wrong",
    DAR.ESAM_LC_ERROR: "ESAM LC wrong",
    DAR.OTHER: "other error",
}


def describe_dar(code: int) -> str:
    try:
        return _DAR_TEXT[DAR(code)]
    except ValueError:
        return f"reserved DAR {code}"


def _dar(value: int) -> DAR | int:
    """Known codes as DAR, reserved ones kept as int (they still round-trip)."""
    try:
        return DAR(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------------------
# Small parts


def _check_piid(piid: int) -> None:
    if not 0 <= piid <= 0xFF:
        raise EncodeError(f"PIID {piid}: expected 0..255")


@dataclass(frozen=True)
class TimeTag:
    """When the request was sent and how long it stays valid."""

    sent: DateTimeS
    valid_for: TI

    def encode(self) -> bytes:
        return encode_date_time_s(self.sent) + encode_ti(self.valid_for)


def _read_time_tag(r: Reader) -> TimeTag | None:
    at = r.pos
    flag = r.byte("TimeTag flag")
    if flag == 0:
        return None
    if flag != 1:
        raise FrameError(f"TimeTag OPTIONAL flag {flag}, expected 0 or 1", offset=at)
    return TimeTag(read_date_time_s(r), read_ti(r))


def _write_optional_time_tag(tag: TimeTag | None) -> bytes:
    return b"\x00" if tag is None else b"\x01" + tag.encode()


@dataclass(frozen=True)
class ResultNormal:
    """A-ResultNormal: the OAD and either its Data or the DAR that refused it."""

    oad: OAD
    result: Data | DAR | int

    def encode(self) -> bytes:
        if isinstance(self.result, Data):
            return self.oad.encode() + b"\x01" + encode_data(self.result)
        return self.oad.encode() + b"\x00" + _dar_byte(self.result)


def _dar_byte(value: int) -> bytes:
    if not 0 <= int(value) <= 0xFF:
        raise EncodeError(f"DAR {value}: expected 0..255")
    return bytes([int(value)])


def _read_result_normal(r: Reader) -> ResultNormal:
    oad = read_oad(r)
    at = r.pos
    choice = r.byte("Get-Result choice")
    if choice == 0:
        return ResultNormal(oad, _dar(r.byte("DAR")))
    if choice == 1:
        return ResultNormal(oad, read_data(r))
    raise FrameError(f"Get-Result choice {choice}, expected 0 (DAR) or 1 (Data)", offset=at)


Row: TypeAlias = tuple[Data, ...]


@dataclass(frozen=True)
class ResultRecord:
    """A-ResultRecord: the record OAD, the columns, then rows (one Data per column)."""

    oad: OAD
    columns: tuple[CSD, ...]
    rows: tuple[Row, ...] | DAR | int

    def encode(self) -> bytes:
        out = bytearray(self.oad.encode())
        out += encode_rcsd(self.columns)
        if isinstance(self.rows, tuple):
            out.append(1)
            out += encode_length(len(self.rows))
            for row in self.rows:
                if len(row) != len(self.columns):
                    raise EncodeError(
                        f"record row of {len(row)} cells for {len(self.columns)} columns"
                    )
                for cell in row:
                    out += encode_data(cell)
        else:
            out.append(0)
            out += _dar_byte(self.rows)
        return bytes(out)


def _read_result_record(r: Reader) -> ResultRecord:
    oad = read_oad(r)
    columns = read_rcsd(r)
    at = r.pos
    choice = r.byte("record result choice")
    if choice == 0:
        return ResultRecord(oad, columns, _dar(r.byte("DAR")))
    if choice != 1:
        raise FrameError(f"record result choice {choice}, expected 0 (DAR) or 1", offset=at)
    n = r.count("record rows", max(1, len(columns)))
    if n and not columns:
        raise FrameError(f"{n} record rows without columns", offset=at)
    rows = tuple(tuple(read_data(r) for _ in columns) for _ in range(n))
    return ResultRecord(oad, columns, rows)


@dataclass(frozen=True)
class FollowReport:
    """Data the server adds to its answer: 1 = A-ResultNormal list, 2 = A-ResultRecord list."""

    results: tuple[ResultNormal, ...] | tuple[ResultRecord, ...]
    records: bool = False

    def encode(self) -> bytes:
        out = bytearray([2 if self.records else 1])
        out += encode_length(len(self.results))
        for item in self.results:
            if isinstance(item, ResultRecord) != self.records:
                raise EncodeError("FollowReport mixes normal results and records")
            out += item.encode()
        return bytes(out)


def _read_follow_report(r: Reader) -> FollowReport | None:
    at = r.pos
    flag = r.byte("FollowReport flag")
    if flag == 0:
        return None
    if flag != 1:
        raise FrameError(f"FollowReport OPTIONAL flag {flag}, expected 0 or 1", offset=at)
    at = r.pos
    choice = r.byte("FollowReport choice")
    if choice == 1:
        n = r.count("FollowReport results", 6)
        return FollowReport(tuple(_read_result_normal(r) for _ in range(n)))
    if choice == 2:
        n = r.count("FollowReport records", 7)
        return FollowReport(tuple(_read_result_record(r) for _ in range(n)), records=True)
    raise FrameError(f"FollowReport choice {choice}, expected 1 or 2", offset=at)
