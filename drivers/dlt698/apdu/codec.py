"""Decoding and encoding whole DL/T 698.45 APDUs, and unwrapping a plain-text
SECURITY-APDU to the APDU inside."""

from __future__ import annotations

from typing import TypeAlias

from drivers.dlt698.apdu.link_and_security import (
    LinkRequest,
    LinkRequestKind,
    LinkResponse,
    SecurityRequest,
    SecurityResponse,
    Verification,
    VerifyRN,
    VerifyRNMAC,
    VerifySID,
    VerifySIDMAC,
    _read_date_time,
)
from drivers.dlt698.apdu.messages import (
    ActionRequestNormal,
    ActionResponseNormal,
    ClientApdu,
    GetRequestNext,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNext,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    Request,
    Response,
    ServerApdu,
    SetRequestNormal,
    SetResponseNormal,
)
from drivers.dlt698.apdu.parts import (
    DAR,
    ApduTag,
    _dar,
    _read_follow_report,
    _read_result_normal,
    _read_result_record,
    _read_time_tag,
)
from drivers.dlt698.axdr import (
    SIDMAC,
    Reader,
    read_data,
    read_oad,
    read_octets,
    read_omd,
    read_rcsd,
    read_rsd,
    read_sid,
)
from drivers.errors import FrameError

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
