"""DL/T 698.45-2017 application layer: the APDUs a concentrator exchanges with a meter.

Client-APDU (clause 8; the request and its optional time tag)::

    tag  choice  PIID  body ...  [00 | 01 date_time_s TI]
    05 GET-Request     01 Normal (OAD)   02 NormalList (SEQUENCE OF OAD)
                       03 Record (OAD RSD RCSD)   05 Next (long-unsigned last block)
    06 SET-Request     01 Normal (OAD Data)
    07 ACTION-Request  01 Normal (OMD Data)

Server-APDU (the answer, then FollowReport and TimeTag, both OPTIONAL: 00 = absent)::

    tag  choice  PIID-ACD  body ...  [00 | 01 FollowReport]  [00 | 01 TimeTag]
    85 GET-Response    01 Normal: OAD, 00 DAR | 01 Data
                       02 NormalList: SEQUENCE OF the same
                       03 Record: OAD RCSD, 00 DAR | 01 SEQUENCE OF row (one Data per column)
                       05 Next: bool last, long-unsigned block, 00 DAR | 01 normal | 02 records
    86 SET-Response    01 Normal: OAD DAR
    87 ACTION-Response 01 Normal: OMD DAR, OPTIONAL Data

LINK-APDU (01 request / 81 response: login and heartbeat) and SECURITY-APDU (10 / 90:
a plain-text APDU in an octet-string plus its verification, random number or MAC) are
parsed too, so plain-text reads "with RN" can be unwrapped. Ciphertext is not decrypted
(that needs the meter's ESAM keys) and MACs are not checked.

PIID (client): bits 0-5 serial number, bit 7 priority. PIID-ACD (server): the same plus
bit 6, "access demanded" (the server has something to report).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from drivers.dlt698.axdr import (
    CSD,
    OAD,
    OMD,
    RSD,
    SID,
    SIDMAC,
    TI,
    Data,
    DateTime,
    DateTimeS,
    Reader,
    encode_data,
    encode_date_time_s,
    encode_length,
    encode_octets,
    encode_rcsd,
    encode_rsd,
    encode_sid,
    encode_ti,
    read_data,
    read_date_time_s,
    read_oad,
    read_octets,
    read_omd,
    read_rcsd,
    read_rsd,
    read_sid,
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


# --------------------------------------------------------------------------------------
# Link management (login / heartbeat / logout of a terminal to its master station)


class LinkRequestKind(IntEnum):
    LOGIN = 0
    HEARTBEAT = 1
    LOGOUT = 2


@dataclass(frozen=True)
class LinkRequest:
    piid_acd: int
    kind: LinkRequestKind
    heartbeat: int  # seconds
    time: DateTime

    def encode(self) -> bytes:
        _check_piid(self.piid_acd)
        if not 0 <= self.heartbeat <= 0xFFFF:
            raise EncodeError(f"heartbeat {self.heartbeat}: expected 0..65535")
        head = bytes([ApduTag.LINK_REQUEST, self.piid_acd, int(self.kind)])
        return head + self.heartbeat.to_bytes(2, "big") + _date_time_bytes(self.time)


@dataclass(frozen=True)
class LinkResponse:
    piid: int
    result: int  # bit 7 clock credible, bits 0-2 result (0 success)
    requested: DateTime
    received: DateTime
    answered: DateTime

    def encode(self) -> bytes:
        _check_piid(self.piid)
        if not 0 <= self.result <= 0xFF:
            raise EncodeError(f"link result {self.result}: expected 0..255")
        return (
            bytes([ApduTag.LINK_RESPONSE, self.piid, self.result])
            + _date_time_bytes(self.requested)
            + _date_time_bytes(self.received)
            + _date_time_bytes(self.answered)
        )


def _date_time_bytes(t: DateTime) -> bytes:
    return bytes(
        [t.year >> 8, t.year & 0xFF, t.month, t.day, t.weekday, t.hour, t.minute, t.second]
    ) + t.millisecond.to_bytes(2, "big")


def _read_date_time(r: Reader) -> DateTime:
    b = r.take(10, "date_time")
    return DateTime(b[0] << 8 | b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8] << 8 | b[9])


# --------------------------------------------------------------------------------------
# Security wrappers (plain text only)


@dataclass(frozen=True)
class VerifyRN:
    """Verification by a random number the meter answers with a MAC over."""

    rn: bytes


@dataclass(frozen=True)
class VerifyRNMAC:
    rn: bytes
    mac: bytes


@dataclass(frozen=True)
class VerifySID:
    sid: SID


@dataclass(frozen=True)
class VerifySIDMAC:
    sid_mac: SIDMAC


Verification: TypeAlias = VerifySIDMAC | VerifyRN | VerifyRNMAC | VerifySID


@dataclass(frozen=True)
class SecurityRequest:
    """SECURITY-Request: an APDU (plain text unless ``ciphered``) and its verification."""

    apdu: bytes
    verification: Verification
    ciphered: bool = False

    def encode(self) -> bytes:
        out = bytearray([ApduTag.SECURITY_REQUEST, 1 if self.ciphered else 0])
        out += encode_octets(self.apdu)
        v = self.verification
        if isinstance(v, VerifySIDMAC):
            out += b"\x00" + encode_sid(v.sid_mac.sid) + encode_octets(v.sid_mac.mac)
        elif isinstance(v, VerifyRN):
            out += b"\x01" + encode_octets(v.rn)
        elif isinstance(v, VerifyRNMAC):
            out += b"\x02" + encode_octets(v.rn) + encode_octets(v.mac)
        else:
            out += b"\x03" + encode_sid(v.sid)
        return bytes(out)


@dataclass(frozen=True)
class SecurityResponse:
    """SECURITY-Response: the inner APDU (or the DAR that refused it) and an optional MAC."""

    apdu: bytes | DAR | int
    mac: bytes | None = None
    ciphered: bool = False

    def encode(self) -> bytes:
        out = bytearray([ApduTag.SECURITY_RESPONSE])
        if isinstance(self.apdu, bytes):
            out.append(1 if self.ciphered else 0)
            out += encode_octets(self.apdu)
        else:
            out.append(2)
            out += _dar_byte(self.apdu)
        out += b"\x00" if self.mac is None else b"\x01\x00" + encode_octets(self.mac)
        return bytes(out)


Apdu: TypeAlias = (
    ClientApdu | ServerApdu | LinkRequest | LinkResponse | SecurityRequest | SecurityResponse
)


# --------------------------------------------------------------------------------------
# Decoding


def decode_apdu(raw: bytes) -> Apdu:
    """Parse a whole APDU; FrameError for anything malformed, unknown or left over."""
    r = Reader(raw)
    tag = r.byte("APDU tag")
    apdu: Apdu
    if tag == ApduTag.GET_REQUEST:
        apdu = ClientApdu(_read_get_request(r), _read_time_tag(r))
    elif tag == ApduTag.SET_REQUEST:
        apdu = ClientApdu(_read_set_request(r), _read_time_tag(r))
    elif tag == ApduTag.ACTION_REQUEST:
        apdu = ClientApdu(_read_action_request(r), _read_time_tag(r))
    elif tag in (ApduTag.GET_RESPONSE, ApduTag.SET_RESPONSE, ApduTag.ACTION_RESPONSE):
        service = _read_response(r, tag)
        apdu = ServerApdu(service, _read_follow_report(r), _read_time_tag(r))
    elif tag == ApduTag.LINK_REQUEST:
        piid, at = r.byte("PIID-ACD"), r.pos
        kind = r.byte("link request kind")
        if kind > LinkRequestKind.LOGOUT:
            raise FrameError(f"link request kind {kind}, expected 0..2", offset=at)
        apdu = LinkRequest(piid, LinkRequestKind(kind), r.uint(2, "heartbeat"), _read_date_time(r))
    elif tag == ApduTag.LINK_RESPONSE:
        piid, result = r.byte("PIID"), r.byte("link result")
        apdu = LinkResponse(
            piid, result, _read_date_time(r), _read_date_time(r), _read_date_time(r)
        )
    elif tag == ApduTag.SECURITY_REQUEST:
        apdu = _read_security_request(r)
    elif tag == ApduTag.SECURITY_RESPONSE:
        apdu = _read_security_response(r)
    else:
        try:
            name = ApduTag(tag).name
        except ValueError:
            name = "unknown"
        raise FrameError(f"APDU tag {tag} (0x{tag:02X}, {name}) is not supported", offset=0)
    r.end("APDU")
    return apdu


def _choice(r: Reader, what: str, allowed: tuple[int, ...]) -> int:
    at = r.pos
    value = r.byte(what)
    if value not in allowed:
        raise FrameError(f"{what} {value} is not supported (expected {allowed})", offset=at)
    return value


def _read_get_request(r: Reader) -> Request:
    choice = _choice(r, "GET-Request choice", (1, 2, 3, 5))
    piid = r.byte("PIID")
    if choice == 1:
        return GetRequestNormal(piid, read_oad(r))
    if choice == 2:
        n = r.count("OAD list", 4)
        return GetRequestNormalList(piid, tuple(read_oad(r) for _ in range(n)))
    if choice == 3:
        oad = read_oad(r)
        rsd = read_rsd(r)
        return GetRequestRecord(piid, oad, rsd, read_rcsd(r))
    return GetRequestNext(piid, r.uint(2, "last block"))


def _read_set_request(r: Reader) -> Request:
    _choice(r, "SET-Request choice", (1,))
    piid = r.byte("PIID")
    return SetRequestNormal(piid, read_oad(r), read_data(r))


def _read_action_request(r: Reader) -> Request:
    _choice(r, "ACTION-Request choice", (1,))
    piid = r.byte("PIID")
    return ActionRequestNormal(piid, read_omd(r), read_data(r))


def _read_response(r: Reader, tag: int) -> Response:
    if tag == ApduTag.GET_RESPONSE:
        choice = _choice(r, "GET-Response choice", (1, 2, 3, 5))
        piid = r.byte("PIID-ACD")
        if choice == 1:
            return GetResponseNormal(piid, _read_result_normal(r))
        if choice == 2:
            n = r.count("result list", 6)
            return GetResponseNormalList(piid, tuple(_read_result_normal(r) for _ in range(n)))
        if choice == 3:
            return GetResponseRecord(piid, _read_result_record(r))
        last_at = r.pos
        last = r.byte("last block flag")
        if last > 1:
            raise FrameError(f"last block flag {last}, expected 0 or 1", offset=last_at)
        block = r.uint(2, "block number")
        kind = _choice(r, "block content choice", (0, 1, 2))
        if kind == 0:
            return GetResponseNext(piid, bool(last), block, _dar(r.byte("DAR")))
        if kind == 1:
            n = r.count("result list", 6)
            normals = tuple(_read_result_normal(r) for _ in range(n))
            return GetResponseNext(piid, bool(last), block, normals)
        n = r.count("record list", 7)
        records = tuple(_read_result_record(r) for _ in range(n))
        return GetResponseNext(piid, bool(last), block, records, records=True)
    if tag == ApduTag.SET_RESPONSE:
        _choice(r, "SET-Response choice", (1,))
        piid = r.byte("PIID-ACD")
        return SetResponseNormal(piid, read_oad(r), _dar(r.byte("DAR")))
    _choice(r, "ACTION-Response choice", (1,))
    piid = r.byte("PIID-ACD")
    omd = read_omd(r)
    dar = _dar(r.byte("DAR"))
    at = r.pos
    flag = r.byte("ACTION data flag")
    if flag > 1:
        raise FrameError(f"OPTIONAL flag {flag}, expected 0 or 1", offset=at)
    return ActionResponseNormal(piid, omd, dar, read_data(r) if flag else None)


def _read_security_request(r: Reader) -> SecurityRequest:
    ciphered = _choice(r, "security data choice", (0, 1)) == 1
    apdu = read_octets(r, "security APDU")
    choice = _choice(r, "verification choice", (0, 1, 2, 3))
    v: Verification
    if choice == 0:
        sid = read_sid(r)
        v = VerifySIDMAC(SIDMAC(sid, read_octets(r, "MAC")))
    elif choice == 1:
        v = VerifyRN(read_octets(r, "RN"))
    elif choice == 2:
        rn = read_octets(r, "RN")
        v = VerifyRNMAC(rn, read_octets(r, "MAC"))
    else:
        v = VerifySID(read_sid(r))
    return SecurityRequest(apdu, v, ciphered)


def _read_security_response(r: Reader) -> SecurityResponse:
    choice = _choice(r, "security data choice", (0, 1, 2))
    apdu: bytes | DAR | int = (
        _dar(r.byte("DAR")) if choice == 2 else read_octets(r, "security APDU")
    )
    at = r.pos
    flag = r.byte("verification flag")
    if flag > 1:
        raise FrameError(f"OPTIONAL flag {flag}, expected 0 or 1", offset=at)
    mac = None
    if flag:
        _choice(r, "response verification choice", (0,))
        mac = read_octets(r, "MAC")
    return SecurityResponse(apdu, mac, ciphered=choice == 1)


def encode_apdu(apdu: Apdu) -> bytes:
    return apdu.encode()


def unwrap(apdu: Apdu) -> Apdu:
    """The plain APDU inside a SECURITY-Request/Response (ciphertext cannot be unwrapped)."""
    if isinstance(apdu, SecurityRequest | SecurityResponse):
        if apdu.ciphered:
            raise FrameError("ciphertext APDU: needs the meter's keys to decrypt")
        if not isinstance(apdu.apdu, bytes):
            raise FrameError(f"security response carries DAR {int(apdu.apdu)} instead of an APDU")
        return decode_apdu(apdu.apdu)
    return apdu
