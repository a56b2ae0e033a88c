"""Replies: built on the meter side (the simulator), checked and split on ours.

A reply is checked against what was asked (function, address) before its data is
trusted; an error reply becomes a ``MeterError`` naming its ERR bits.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.dlt645.frame import (
    BROADCAST,
    DIR_REPLY,
    ERROR_REPLY,
    MORE_FOLLOWS,
    Frame,
    Function,
    address_matches,
    describe_error,
    encode_frame,
)
from drivers.errors import FrameError, MeterError


def build_reply(
    address: str, function: int, data: bytes = b"", *, more: bool = False, preamble: int = 0
) -> bytes:
    control = DIR_REPLY | function | (MORE_FOLLOWS if more else 0)
    return encode_frame(Frame(address, control, data), preamble=preamble)


def build_error_reply(address: str, function: int, err: int, *, preamble: int = 0) -> bytes:
    control = DIR_REPLY | ERROR_REPLY | function
    return encode_frame(Frame(address, control, bytes([err])), preamble=preamble)


@dataclass(frozen=True)
class ReadReply:
    di: int
    value: bytes
    more_follows: bool
    seq: int | None = None


def check_reply(frame: Frame, function: int, address: str) -> None:
    """Raise MeterError for an error reply, FrameError if it answers something else."""
    if not frame.is_reply:
        raise FrameError(f"frame from {frame.address} is a request (control 0x{frame.control:02X})")
    if frame.function != function:
        raise FrameError(
            f"reply function 0x{frame.function:02X}, expected 0x{function:02X}", offset=8
        )
    if address not in (BROADCAST,) and not address_matches(address, frame.address):
        raise FrameError(f"reply from meter {frame.address}, expected {address}", offset=1)
    if frame.is_error:
        err = frame.data[0] if frame.data else 0
        raise MeterError(
            frame.address, err, describe_error(err), raw=encode_frame(frame, preamble=0)
        )


def parse_read_reply(frame: Frame, address: str, di: int) -> ReadReply:
    """Check a 0x91/0xB1/0x92 reply against the request and split DI from value."""
    function = frame.function
    if function not in (Function.READ_DATA, Function.READ_FOLLOW_UP):
        raise FrameError(f"reply function 0x{function:02X} is not a read reply", offset=8)
    check_reply(frame, function, address)
    if len(frame.data) < 4:
        raise FrameError(f"read reply data has {len(frame.data)} bytes, expected at least 4")
    got = int.from_bytes(frame.data[:4], "little")
    if got != di:
        raise FrameError(f"reply carries DI {got:08X}, expected {di:08X}", offset=10)
    value = frame.data[4:]
    seq = None
    if function == Function.READ_FOLLOW_UP:
        if not value:
            raise FrameError("follow-up reply lacks its sequence byte")
        value, seq = value[:-1], value[-1]
    return ReadReply(di, value, frame.more_follows, seq)
