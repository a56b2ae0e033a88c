"""The requests a concentrator sends, and the meter side's parsers of its commands.

Read (0x11), read follow-up (0x12), read address (0x13), broadcast time (0x08), freeze
(0x16) and remote relay control (0x1C). The read request is built in one step on the
daemon's path (a 12-digit address, a 4-byte DI): the same bytes ``encode_frame`` gives,
without building a ``Frame``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum

from drivers.dlt645.frame import (
    _ADD_OFFSET,
    BROADCAST,
    END,
    START,
    WILDCARD_ALL,
    Frame,
    Function,
    encode_frame,
)
from drivers.dlt645.packed_bcd import _datetime_bcd, _parse_datetime, bcd
from drivers.errors import EncodeError, FrameError


class RelayAction(IntEnum):
    """N1 of the 0x1C control command (DL/T 645 remote control; docs/protocols.md §1.8 [M])."""

    TRIP = 0x1A  # 跳闸: open the load switch
    CLOSE_ALLOW = 0x1B  # 合闸允许: the customer may close it
    CLOSE_DIRECT = 0x1C  # 直接合闸 (2013 amendment)
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A  # 保电: never trip, whatever the balance
    KEEP_POWER_RELEASE = 0x3B


_READ_HEAD = bytes([START])
_READ_MID = bytes([START, 0x11, 4])  # Function.READ_DATA, four DATA bytes (the DI)


def _di_bytes(di: int) -> bytes:
    if not 0 <= di <= 0xFFFFFFFF:
        raise EncodeError(f"data identifier {di:#x}: expected 4 bytes")
    return di.to_bytes(4, "little")


def build_read(address: str, di: int, params: bytes = b"", *, preamble: int = 4) -> bytes:
    """0x11 read data: DI (4 bytes, DI0 first) and optional parameters (load profile)."""
    if (
        not params
        and len(address) == 12
        and address.isascii()
        and address.isdigit()
        and 0 <= di <= 0xFFFFFFFF
    ):
        # The daemon's request, once per read: the bytes `encode_frame` gives, without
        # the Frame and the general checks a 12-digit address and a 4-byte DI pass.
        body = (
            _READ_HEAD
            + bytes.fromhex(address)[::-1]
            + _READ_MID
            + di.to_bytes(4, "little").translate(_ADD_OFFSET)
        )
        return b"\xfe" * preamble + body + bytes((sum(body) & 0xFF, END))
    return encode_frame(
        Frame(address, Function.READ_DATA, _di_bytes(di) + params), preamble=preamble
    )


def build_read_follow_up(address: str, di: int, seq: int, *, preamble: int = 4) -> bytes:
    """0x12 read follow-up frame ``seq`` (1..255) of a reply that announced more frames."""
    if not 1 <= seq <= 255:
        raise EncodeError(f"follow-up sequence {seq}: expected 1..255")
    data = _di_bytes(di) + bytes([seq])
    return encode_frame(Frame(address, Function.READ_FOLLOW_UP, data), preamble=preamble)


def build_read_address(pattern: str = WILDCARD_ALL, *, preamble: int = 4) -> bytes:
    """0x13 read communication address; the reply carries the meter's real address."""
    return encode_frame(Frame(pattern, Function.READ_ADDRESS), preamble=preamble)


def build_broadcast_time(when: dt.datetime, *, preamble: int = 4) -> bytes:
    """0x08 broadcast time sync: ss mm hh DD MM YY to 999999999999; meters do not reply."""
    data = _datetime_bcd(when, "smhDMY")
    return encode_frame(Frame(BROADCAST, Function.BROADCAST_TIME, data), preamble=preamble)


@dataclass(frozen=True)
class FreezeSpec:
    """When the meter should freeze; None stands for the 99 wildcard (every month/day/…).

    All four None means "freeze now" (the instantaneous freeze, data 99999999).
    """

    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None


def build_freeze(address: str, spec: FreezeSpec = FreezeSpec(), *, preamble: int = 4) -> bytes:
    """0x16 freeze: data mm hh DD MM (BCD, 99 = wildcard). May be sent to broadcast."""
    for what, v, low, high in (
        ("month", spec.month, 1, 12),
        ("day", spec.day, 1, 31),
        ("hour", spec.hour, 0, 23),
        ("minute", spec.minute, 0, 59),
    ):
        # bcd() alone would take 0..99, i.e. hour 25 or, worse, 99 meaning "every".
        if v is not None and not low <= v <= high:
            raise EncodeError(f"freeze {what} {v}: expected {low}..{high} or None (every)")
    data = b"".join(
        b"\x99" if v is None else bcd(v, 2) for v in (spec.minute, spec.hour, spec.day, spec.month)
    )
    return encode_frame(Frame(address, Function.FREEZE, data), preamble=preamble)


def build_relay_control(
    address: str,
    action: RelayAction,
    *,
    password_level: int,
    password: str,
    operator: str,
    valid_until: dt.datetime,
    preamble: int = 4,
) -> bytes:
    """0x1C remote control: PA P0 P1 P2, operator C0..C3, N1 action, N2 0, N3..N8 deadline.

    ``password`` is the 6-hex-digit password of level ``password_level`` (02 for remote
    control on most meters), ``operator`` the 8-hex-digit operator code the meter logs.
    """
    if not 0 <= password_level <= 0x99:
        raise EncodeError(f"password level {password_level}: expected 0..99")
    data = bytes([password_level])
    data += _hex_field(password, 6, "password")
    data += _hex_field(operator, 8, "operator code")
    data += bytes([int(action), 0x00])
    data += _datetime_bcd(valid_until, "smhDMY")
    return encode_frame(Frame(address, Function.RELAY_CONTROL, data), preamble=preamble)


def _hex_field(text: str, digits: int, what: str) -> bytes:
    if len(text) != digits:
        raise EncodeError(f"{what} {text!r}: expected {digits} hex digits, got {len(text)}")
    if not all(c in "0123456789abcdefABCDEF" for c in text):
        raise EncodeError(f"{what} {text!r}: expected {digits} hex digits")
    return int(text, 16).to_bytes(digits // 2, "little")


def parse_relay_control(data: bytes) -> tuple[int, str, str, RelayAction, dt.datetime]:
    """Meter side of 0x1C: (password level, password, operator, action, valid until)."""
    if len(data) != 16:
        raise FrameError(f"relay control data has {len(data)} bytes, expected 16")
    level = data[0]
    password = f"{int.from_bytes(data[1:4], 'little'):06X}"
    operator = f"{int.from_bytes(data[4:8], 'little'):08X}"
    try:
        action = RelayAction(data[8])
    except ValueError:
        raise FrameError(f"relay action 0x{data[8]:02X} is not defined", offset=8) from None
    deadline = _parse_datetime(data[10:16], "smhDMY", "relay deadline")
    return level, password, operator, action, deadline


def parse_broadcast_time(data: bytes) -> dt.datetime:
    if len(data) != 6:
        raise FrameError(f"broadcast time data has {len(data)} bytes, expected 6")
    return _parse_datetime(data, "smhDMY", "broadcast time")
