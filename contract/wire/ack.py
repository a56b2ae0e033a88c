"""The receiver's ack: a MACed, not encrypted, answer for one batch."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Literal, cast, get_args

import cbor2

from contract.wire.columns import loads
from contract.wire.errors import fail
from contract.wire.header import (
    FLAG_ACK,
    INFO_ACK,
    MAC_BYTES,
    VERSION,
    build_header,
    derive,
    parse_header,
)

AckStatus = Literal["stored", "duplicate", "rejected", "resync"]
_ACK_STATUSES: frozenset[str] = frozenset(get_args(AckStatus))
RESYNC_SINCE = 3  # the first wire version whose batches can be coded against references


@dataclass(frozen=True, slots=True)
class Ack:
    """The receiver's answer for batch ``seq``, sent after its database commit.

    "stored" and "duplicate" both let the concentrator drop the batch. "rejected" means
    the receiver will never store it (``reason`` says why); the concentrator keeps the
    rows and raises an event rather than resending forever. "resync" (version 3 on)
    means the receiver stored nothing because it could not resolve the batch's
    references: the concentrator forgets its references and sends the same readings
    again, as a key batch under a new ``seq``.
    """

    seq: int
    status: AckStatus
    reason: str | None = None


def seal_ack(
    ack: Ack, *, concentrator_id: str, key_id: int, key: bytes, version: int = VERSION
) -> bytes:
    """An ack in ``version``: the receiver answers in the version of the batch it acks,
    so a concentrator that sends version 1 only ever has to read version 1."""
    if ack.status not in _ACK_STATUSES:
        raise ValueError(f"ack status {ack.status!r} is not one of {sorted(_ACK_STATUSES)}")
    if ack.status == "resync" and version < RESYNC_SINCE:
        raise ValueError(f"a resync ack needs wire version {RESYNC_SINCE}, not {version}")
    header = build_header(FLAG_ACK, concentrator_id, key_id, ack.seq, version, "")
    fields: dict[str, object] = {"seq": ack.seq, "status": ack.status}
    if ack.reason is not None:
        fields["reason"] = ack.reason
    message = header + cbor2.dumps(fields)
    return message + mac(key, concentrator_id, message)


def open_ack(data: bytes, key: bytes) -> Ack:
    """Verify one ack with the concentrator's own payload key."""
    header = parse_header(data)
    if not header.is_ack:
        fail("bad_header", f"flags 0x{header.flags:02X} mark a batch, expected an ack (0x02)")
    if len(data) < header.header_len + MAC_BYTES:
        fail("truncated", f"{len(data)} bytes, expected a body and a {MAC_BYTES}-byte MAC")
    message, tag = bytes(data[:-MAC_BYTES]), bytes(data[-MAC_BYTES:])
    if not hmac.compare_digest(tag, mac(key, header.concentrator_id, message)):
        fail("auth_failed", "ack MAC does not match for this key")
    fields = loads(message[header.header_len :])
    if not isinstance(fields, dict) or not {"seq", "status"} <= fields.keys() <= {
        "seq",
        "status",
        "reason",
    }:
        fail("bad_layout", "ack body must be a map {seq, status, reason?}")
    seq, status, reason = fields["seq"], fields["status"], fields.get("reason")
    if seq != header.seq or type(seq) is not int:
        fail("bad_layout", f"ack seq {seq!r} in the body, expected {header.seq} as in the header")
    if status not in _ACK_STATUSES or (status == "resync" and header.version < RESYNC_SINCE):
        fail("bad_layout", f"ack status {status!r}, expected one of {sorted(_ACK_STATUSES)}")
    if reason is not None and not isinstance(reason, str):
        fail("bad_layout", f"ack reason {reason!r}, expected text")
    return Ack(seq=seq, status=cast(AckStatus, status), reason=reason)


def mac(key: bytes, concentrator_id: str, message: bytes) -> bytes:
    ack_key = derive(key, concentrator_id, INFO_ACK)
    return hmac.new(ack_key, message, hashlib.sha256).digest()[:MAC_BYTES]
