"""The clear header both messages start with, and the keys and nonces derived from it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contract.wire.errors import fail

MAGIC = b"MF"
VERSION = 3  # what this software sends unless the config pins an older one
VERSIONS = (1, 2, 3)  # every version this software reads (and can send)
FLAG_COMPRESSED = 0x01
FLAG_ACK = 0x02

KEY_BYTES = 32
TAG_BYTES = 16
MAC_BYTES = 16
MAX_SEQ = 2**63 - 1
# A receiver refuses, as a replay, a batch it never saw whose seq is this far below the
# newest it holds from that concentrator.
REPLAY_WINDOW = 100_000
# A concentrator store's backup holds its batch counter raised by this much, so a store
# restored from it never reuses a seq (the AES-GCM nonce, and what the receiver dedupes
# on) that the lost store used after the backup, up to this many batches; half the
# replay window, so the batches in flight in the backup, resent under their own seqs,
# are still inside the window of what the lost store sent since.
RESTORE_SEQ_MARGIN = REPLAY_WINDOW // 2

INFO_UP = b"meterflow/v1/up"
INFO_ACK = b"meterflow/v1/ack"
_FIXED = len(MAGIC) + 3  # magic, version, flags, id length
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SOFTWARE = re.compile(r"[A-Za-z0-9.+_-]{0,32}")


@dataclass(frozen=True, slots=True)
class Header:
    """The clear header. ``header_len`` is where the ciphertext (or ack body) starts."""

    version: int
    flags: int
    concentrator_id: str
    key_id: int
    seq: int
    header_len: int
    software: str | None = None  # version 2 on: the sender's release ("" if unstated)

    @property
    def is_ack(self) -> bool:
        return bool(self.flags & FLAG_ACK)


def build_header(
    flags: int,
    concentrator_id: str,
    key_id: int,
    seq: int,
    version: int = VERSION,
    software: str = "",
) -> bytes:
    if version not in VERSIONS:
        raise ValueError(f"wire version {version}: expected one of {VERSIONS}")
    if not _SOFTWARE.fullmatch(software):
        raise ValueError(f"software {software!r} must be 0-32 characters of [A-Za-z0-9.+_-]")
    if not _ID.fullmatch(concentrator_id):
        raise ValueError(
            f"concentrator_id {concentrator_id!r} must be 1-64 characters of [A-Za-z0-9._-]"
        )
    if not 0 <= key_id < 1 << 32:
        raise ValueError(f"key_id {key_id} does not fit in u32")
    if not 0 < seq <= MAX_SEQ:
        raise ValueError(f"seq {seq} must be 1..2**63-1 (0 is never a valid nonce)")
    cid = concentrator_id.encode("ascii")
    sw = b"" if version == 1 else bytes((len(software),)) + software.encode("ascii")
    return (
        MAGIC
        + bytes((version, flags, len(cid)))
        + cid
        + sw
        + key_id.to_bytes(4, "big")
        + seq.to_bytes(8, "big")
    )


def parse_header(data: bytes) -> Header:
    """Read the clear header without any key. Nothing in it is trusted until opened."""
    if len(data) < len(MAGIC):
        fail("truncated", f"{len(data)} bytes, expected at least {_FIXED} for the header")
    if data[: len(MAGIC)] != MAGIC:
        fail("bad_magic", f"first bytes are {data[:2].hex()}, expected {MAGIC.hex()} ('MF')")
    if len(data) < _FIXED:
        fail("truncated", f"{len(data)} bytes, expected at least {_FIXED} for the header")
    version, flags, id_len = data[2], data[3], data[4]
    if version not in VERSIONS:
        fail("unsupported_version", f"version {version} at byte 2, expected one of {VERSIONS}")
    if flags not in (0, FLAG_COMPRESSED, FLAG_ACK):
        fail("bad_header", f"flags 0x{flags:02X} at byte 3, expected 0x00, 0x01 or 0x02")
    if not 1 <= id_len <= 64:
        fail("bad_header", f"concentrator id length {id_len} at byte 4, expected 1..64")
    at = _FIXED + id_len
    if len(data) < at:
        fail("truncated", f"{len(data)} bytes, expected at least {at} for the header")
    raw_id = bytes(data[_FIXED:at])
    concentrator_id = raw_id.decode("ascii", errors="replace")
    if not _ID.fullmatch(concentrator_id):
        fail("bad_header", f"concentrator id {raw_id!r} at byte 5, expected [A-Za-z0-9._-]")
    software = None
    if version >= 2:
        if len(data) <= at:
            fail("truncated", f"{len(data)} bytes, expected a software length at byte {at}")
        sw_len = data[at]
        if sw_len > 32:
            fail("bad_header", f"software length {sw_len} at byte {at}, expected 0..32")
        raw_sw = bytes(data[at + 1 : at + 1 + sw_len])
        if len(raw_sw) < sw_len:
            fail("truncated", f"{len(data)} bytes, expected {sw_len} software bytes")
        software = raw_sw.decode("ascii", errors="replace")
        if not _SOFTWARE.fullmatch(software):
            fail("bad_header", f"software {raw_sw!r} at byte {at + 1}, expected [A-Za-z0-9.+_-]")
        at += 1 + sw_len
    end = at + 12
    if len(data) < end:
        fail("truncated", f"{len(data)} bytes, expected at least {end} for the header")
    key_id = int.from_bytes(data[end - 12 : end - 8], "big")
    seq = int.from_bytes(data[end - 8 : end], "big")
    if not 1 <= seq <= MAX_SEQ:
        # Sequence numbers live in signed 64-bit database columns on both ends.
        fail("bad_header", f"seq {seq} at byte {end - 8}, expected 1..2**63-1")
    return Header(version, flags, concentrator_id, key_id, seq, end, software)


def derive(key: bytes, concentrator_id: str, info: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        # A configuration error on our side, not a malformed message.
        raise ValueError(f"payload key is {len(key)} bytes, expected {KEY_BYTES}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=concentrator_id.encode("ascii"), info=info
    )
    return hkdf.derive(key)


def nonce(seq: int) -> bytes:
    return bytes(4) + seq.to_bytes(8, "big")
