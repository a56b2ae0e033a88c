"""DL/T 698.45 LINK-APDU (login, heartbeat, logout of a terminal) and SECURITY-APDU
wrappers (plain text only: ciphertext needs the meter's ESAM keys)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from drivers.dlt698.apdu.parts import (
    DAR,
    ApduTag,
    _check_piid,
    _dar_byte,
)
from drivers.dlt698.axdr import (
    SID,
    SIDMAC,
    DateTime,
    Reader,
    encode_octets,
    encode_sid,
)
from drivers.errors import EncodeError

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
