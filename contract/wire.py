"""The uplink wire format: one definition, imported by the concentrator and the receiver.

Two messages share one clear header. Version 2 adds the sender's software version to
the header (between the id and ``key_id``: one length byte, 0..32, then that many bytes
of [A-Za-z0-9.+_-]), so the receiver learns from every authenticated message which
release sent it; a rollout is judged on that. Version 1, still sent by concentrators not
upgraded yet (and by any whose ``[uplink] wire_version`` pins it), has no such field.
The receiver reads both and answers each batch with an ack of the batch's own version.
Version 1::

    batch (concentrator -> receiver, topic mf/v1/<id>/up)

      0    2   3     4   5      5+n      9+n        17+n
      +----+---+-----+---+------+--------+----------+-------------------+--------+
      | MF | 1 |flags| n |  id  | key_id |   seq    | ciphertext        | tag    |
      |    |   |     |   | n B  | u32 BE |  u64 BE  | (body, maybe zstd)| 16 B   |
      +----+---+-----+---+------+--------+----------+-------------------+--------+
      |<---- clear header = AES-GCM associated data ---->|

      n     = 1..64 bytes of [A-Za-z0-9._-]
      key   = HKDF-SHA256(payload key, salt = id, info = b"meterflow/v1/up")
      nonce = 00 00 00 00 || seq (u64 BE); seq 0 is invalid
      flags = bit0: the body is zstd-compressed; no other bit may be set

    ack (receiver -> concentrator, topic mf/v1/<id>/ack)

      +----+---+-----+---+------+--------+----------+-------------------+--------+
      | MF | 1 | 0x02| n |  id  | key_id | seq      | CBOR {seq, status,| HMAC   |
      |    |   |     |   |      |        | (acked)  |       reason?}    | 16 B   |
      +----+---+-----+---+------+--------+----------+-------------------+--------+

      mac = HMAC-SHA256(HKDF(payload key, salt = id, info = b"meterflow/v1/ack"),
                        header || body)[:16]

Why these choices:

- The clear header is authenticated (it is the associated data), yet readable without
  the key. That lets the receiver route, rate-limit and quarantine on it
  (`parse_header`) before it looks up a key.
- The nonce is the batch sequence number. The concentrator persists ``seq`` before it
  uses it and never repeats one under a key, so a nonce never repeats (the idea of
  DLMS security suite 0's invocation counter). ``seq`` 0 is refused, so a zeroed
  counter cannot go out as a valid batch.
- Acks are MACed, not encrypted. A forged ack would make the concentrator drop data
  that was never stored. The receiver may send several different acks for one
  ``seq`` (stored, then duplicate), and under GCM these would reuse a nonce. A MAC
  has no nonce to reuse. Replaying an old ack does no harm, because a ``seq`` is
  never used again under a key.
- Separate HKDF keys per purpose and per concentrator (the salt) mean that a batch can
  never verify as an ack, and a payload key shared by mistake still gives each
  concentrator its own keys.

The body layout (CBOR, columnar, delta-encoded) is described in `_encode_body`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import math
import re
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise
from typing import Literal, NoReturn, cast, get_args

import cbor2
import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contract.records import Event, Reading

__all__ = [
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_READINGS",
    "VERSION",
    "VERSIONS",
    "Ack",
    "AckStatus",
    "BatchContent",
    "Header",
    "WireError",
    "WireErrorReason",
    "open_ack",
    "open_batch",
    "parse_header",
    "seal_ack",
    "seal_batch",
]

MAGIC = b"MF"
VERSION = 2  # what this software sends unless the config pins an older one
VERSIONS = (1, 2)  # every version this software reads (and can send)
FLAG_COMPRESSED = 0x01
FLAG_ACK = 0x02

KEY_BYTES = 32
TAG_BYTES = 16
MAC_BYTES = 16
# A decompressed body larger than this is refused, so a small message cannot expand
# into gigabytes (a zip bomb). A full day of 2,000 meters x 4 quantities is ~6 MiB raw.
MAX_BODY_BYTES = 64 * 1024 * 1024
# Bounds the memory the decoder allocates before it has looked at any column.
MAX_READINGS = 1_000_000

_INFO_UP = b"meterflow/v1/up"
_INFO_ACK = b"meterflow/v1/ack"
_FIXED = len(MAGIC) + 3  # magic, version, flags, id length
_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_SOFTWARE = re.compile(r"[A-Za-z0-9.+_-]{0,32}")
_ZSTD_LEVEL = 19  # chosen by measurement (bench/wire.py); level 19 still seals >100k readings/s

WireErrorReason = Literal[
    "truncated",
    "bad_magic",
    "unsupported_version",
    "bad_header",
    "unknown_key",
    "auth_failed",
    "bad_compression",
    "too_large",
    "bad_cbor",
    "bad_layout",
]
AckStatus = Literal["stored", "duplicate", "rejected"]
_ACK_STATUSES: frozenset[str] = frozenset(get_args(AckStatus))


class WireError(Exception):
    """A message that cannot be accepted. ``reason`` says why, for metrics and quarantine.

    "truncated" may become valid with more bytes; every other reason means the message
    is wrong as it stands. Only "auth_failed" and "unknown_key" can be caused by keys
    rather than by the sender.
    """

    def __init__(self, reason: WireErrorReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason: WireErrorReason = reason


def _fail(reason: WireErrorReason, message: str) -> NoReturn:
    raise WireError(reason, message)


# -------------------------------------------------------------------------- records


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


@dataclass(frozen=True, slots=True)
class BatchContent:
    """What one batch carries.

    The wire groups readings by series, so `open_batch` returns them in its own order
    (quantity, unit, meter, slot), not the order they were sealed in: compare as
    multisets. Events keep their order. ``read_at`` comes back rounded to the
    millisecond, the precision the store keeps.
    """

    readings: tuple[Reading, ...] = ()
    events: tuple[Event, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """The receiver's answer for batch ``seq``, sent after its database commit.

    "stored" and "duplicate" both let the concentrator drop the batch. "rejected" means
    the receiver will never store it (``reason`` says why); the concentrator keeps the
    rows and raises an event rather than resending forever.
    """

    seq: int
    status: AckStatus
    reason: str | None = None


# --------------------------------------------------------------------------- header


def _header(
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


MAX_SEQ = 2**63 - 1


def parse_header(data: bytes) -> Header:
    """Read the clear header without any key. Nothing in it is trusted until opened."""
    if len(data) < len(MAGIC):
        _fail("truncated", f"{len(data)} bytes, expected at least {_FIXED} for the header")
    if data[: len(MAGIC)] != MAGIC:
        _fail("bad_magic", f"first bytes are {data[:2].hex()}, expected {MAGIC.hex()} ('MF')")
    if len(data) < _FIXED:
        _fail("truncated", f"{len(data)} bytes, expected at least {_FIXED} for the header")
    version, flags, id_len = data[2], data[3], data[4]
    if version not in VERSIONS:
        _fail("unsupported_version", f"version {version} at byte 2, expected one of {VERSIONS}")
    if flags not in (0, FLAG_COMPRESSED, FLAG_ACK):
        _fail("bad_header", f"flags 0x{flags:02X} at byte 3, expected 0x00, 0x01 or 0x02")
    if not 1 <= id_len <= 64:
        _fail("bad_header", f"concentrator id length {id_len} at byte 4, expected 1..64")
    at = _FIXED + id_len
    if len(data) < at:
        _fail("truncated", f"{len(data)} bytes, expected at least {at} for the header")
    raw_id = bytes(data[_FIXED:at])
    concentrator_id = raw_id.decode("ascii", errors="replace")
    if not _ID.fullmatch(concentrator_id):
        _fail("bad_header", f"concentrator id {raw_id!r} at byte 5, expected [A-Za-z0-9._-]")
    software = None
    if version >= 2:
        if len(data) <= at:
            _fail("truncated", f"{len(data)} bytes, expected a software length at byte {at}")
        sw_len = data[at]
        if sw_len > 32:
            _fail("bad_header", f"software length {sw_len} at byte {at}, expected 0..32")
        raw_sw = bytes(data[at + 1 : at + 1 + sw_len])
        if len(raw_sw) < sw_len:
            _fail("truncated", f"{len(data)} bytes, expected {sw_len} software bytes")
        software = raw_sw.decode("ascii", errors="replace")
        if not _SOFTWARE.fullmatch(software):
            _fail("bad_header", f"software {raw_sw!r} at byte {at + 1}, expected [A-Za-z0-9.+_-]")
        at += 1 + sw_len
    end = at + 12
    if len(data) < end:
        _fail("truncated", f"{len(data)} bytes, expected at least {end} for the header")
    key_id = int.from_bytes(data[end - 12 : end - 8], "big")
    seq = int.from_bytes(data[end - 8 : end], "big")
    if not 1 <= seq <= MAX_SEQ:
        # Sequence numbers live in signed 64-bit database columns on both ends.
        _fail("bad_header", f"seq {seq} at byte {end - 8}, expected 1..2**63-1")
    return Header(version, flags, concentrator_id, key_id, seq, end, software)


def _derive(key: bytes, concentrator_id: str, info: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        # A configuration error on our side, not a malformed message.
        raise ValueError(f"payload key is {len(key)} bytes, expected {KEY_BYTES}")
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=concentrator_id.encode("ascii"), info=info
    )
    return hkdf.derive(key)


def _nonce(seq: int) -> bytes:
    return bytes(4) + seq.to_bytes(8, "big")


# -------------------------------------------------------------------------- batches


def seal_batch(
    content: BatchContent,
    *,
    concentrator_id: str,
    key_id: int,
    key: bytes,
    seq: int,
    version: int = VERSION,
    software: str = "",
) -> bytes:
    """Encode, compress when that is smaller, and encrypt one batch.

    The caller must have persisted ``seq`` first and must never seal twice under one
    ``(key, seq)`` with different content: that would reuse a GCM nonce. Raises
    ValueError for content or arguments the format cannot carry.
    """
    body = _encode_body(content)
    flags = 0
    packed = zstandard.ZstdCompressor(level=_ZSTD_LEVEL).compress(body)
    if len(packed) < len(body):
        body, flags = packed, FLAG_COMPRESSED
    aad = _header(flags, concentrator_id, key_id, seq, version, software)
    aead = AESGCM(_derive(key, concentrator_id, _INFO_UP))
    return aad + aead.encrypt(_nonce(seq), body, aad)


def open_batch(
    data: bytes, key_lookup: Callable[[str, int], bytes | None]
) -> tuple[Header, BatchContent]:
    """Verify, decrypt and decode one batch.

    ``key_lookup(concentrator_id, key_id)`` returns the 32-byte payload key or None.
    Every fault in ``data`` raises WireError; whatever ``key_lookup`` raises passes
    through unchanged.
    """
    header = parse_header(data)
    if header.is_ack:
        _fail("bad_header", "flags 0x02 mark an ack, expected a batch (0x00 or 0x01)")
    sealed = bytes(data[header.header_len :])
    if len(sealed) < TAG_BYTES:
        _fail("truncated", f"{len(sealed)} bytes after the header, expected at least {TAG_BYTES}")
    key = key_lookup(header.concentrator_id, header.key_id)
    if key is None:
        _fail("unknown_key", f"no key {header.key_id} for concentrator {header.concentrator_id}")
    aead = AESGCM(_derive(key, header.concentrator_id, _INFO_UP))
    try:
        body = aead.decrypt(_nonce(header.seq), sealed, bytes(data[: header.header_len]))
    except InvalidTag:
        _fail("auth_failed", "GCM tag does not match the header and ciphertext for this key")
    if header.flags & FLAG_COMPRESSED:
        body = _decompress(body)
    elif len(body) > MAX_BODY_BYTES:
        _fail("too_large", f"body of {len(body)} bytes, expected at most {MAX_BODY_BYTES}")
    return header, _decode_body(body)


def _decompress(data: bytes) -> bytes:
    # The frame must declare its size (our encoder always writes it), so the size is
    # checked before a single byte is inflated.
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        _fail("bad_compression", f"not a zstd frame ({exc})")
    if size < 0:
        _fail("bad_compression", "zstd frame without a content size, expected one")
    if size > MAX_BODY_BYTES:
        _fail("too_large", f"body inflates to {size} bytes, expected at most {MAX_BODY_BYTES}")
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError as exc:
        _fail("bad_compression", f"zstd frame does not decompress ({exc})")


# ----------------------------------------------------------------------------- acks


def seal_ack(
    ack: Ack, *, concentrator_id: str, key_id: int, key: bytes, version: int = VERSION
) -> bytes:
    """An ack in ``version``: the receiver answers in the version of the batch it acks,
    so a concentrator that sends version 1 only ever has to read version 1."""
    if ack.status not in _ACK_STATUSES:
        raise ValueError(f"ack status {ack.status!r} is not one of {sorted(_ACK_STATUSES)}")
    header = _header(FLAG_ACK, concentrator_id, key_id, ack.seq, version, "")
    fields: dict[str, object] = {"seq": ack.seq, "status": ack.status}
    if ack.reason is not None:
        fields["reason"] = ack.reason
    message = header + cbor2.dumps(fields)
    return message + _mac(key, concentrator_id, message)


def open_ack(data: bytes, key: bytes) -> Ack:
    """Verify one ack with the concentrator's own payload key."""
    header = parse_header(data)
    if not header.is_ack:
        _fail("bad_header", f"flags 0x{header.flags:02X} mark a batch, expected an ack (0x02)")
    if len(data) < header.header_len + MAC_BYTES:
        _fail("truncated", f"{len(data)} bytes, expected a body and a {MAC_BYTES}-byte MAC")
    message, mac = bytes(data[:-MAC_BYTES]), bytes(data[-MAC_BYTES:])
    if not hmac.compare_digest(mac, _mac(key, header.concentrator_id, message)):
        _fail("auth_failed", "ack MAC does not match for this key")
    fields = _loads(message[header.header_len :])
    if not isinstance(fields, dict) or not {"seq", "status"} <= fields.keys() <= {
        "seq",
        "status",
        "reason",
    }:
        _fail("bad_layout", "ack body must be a map {seq, status, reason?}")
    seq, status, reason = fields["seq"], fields["status"], fields.get("reason")
    if seq != header.seq or type(seq) is not int:
        _fail("bad_layout", f"ack seq {seq!r} in the body, expected {header.seq} as in the header")
    if status not in _ACK_STATUSES:
        _fail("bad_layout", f"ack status {status!r}, expected one of {sorted(_ACK_STATUSES)}")
    if reason is not None and not isinstance(reason, str):
        _fail("bad_layout", f"ack reason {reason!r}, expected text")
    return Ack(seq=seq, status=cast(AckStatus, status), reason=reason)


def _mac(key: bytes, concentrator_id: str, message: bytes) -> bytes:
    ack_key = _derive(key, concentrator_id, _INFO_ACK)
    return hmac.new(ack_key, message, hashlib.sha256).digest()[:MAC_BYTES]


def _loads(body: bytes) -> object:
    stream = io.BytesIO(body)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises many types (and RecursionError) on bad input
        _fail("bad_cbor", f"body is not one well-formed CBOR item ({type(exc).__name__}: {exc})")
    if stream.tell() != len(body):
        # cbor2.loads would ignore them; a strict reader keeps one encoding per message.
        _fail("bad_cbor", f"{len(body) - stream.tell()} bytes after the CBOR item, expected none")
    return item


# ----------------------------------------------------------------- integer columns
#
# A column of integers travels as zig-zag values in the narrowest of 1/2/4/8 bytes,
# with the bytes transposed into planes (all low bytes, then all next bytes...). Deltas
# are small, so the high planes are nearly all zero and the compressor makes them
# almost free, while the whole column is packed and unpacked by C code. A column whose
# values do not fit in 64 bits travels as a plain CBOR array of integers instead.

_TYPECODES = {array(c).itemsize: c for c in "BHILQ"[::-1]}
_BIG_ENDIAN = sys.byteorder == "big"
_LIST_LIMIT = 1 << 128  # bound on the plain-array fallback, so decoding stays cheap


def _pack(values: Sequence[int]) -> bytes | list[int]:
    if not values:
        return b""
    zz = [v << 1 if v >= 0 else (-v << 1) - 1 for v in values]
    top = max(zz)
    for width in (1, 2, 4, 8):
        if top < 1 << (8 * width):
            break
    else:
        return list(values)
    column = array(_TYPECODES[width], zz)
    if _BIG_ENDIAN:
        column.byteswap()
    raw = column.tobytes()
    return bytes((width,)) + b"".join(raw[i::width] for i in range(width))


def _unpack(column: object, n: int, what: str) -> list[int]:
    if isinstance(column, list):
        if len(column) != n or not all(
            type(v) is int and -_LIST_LIMIT < v < _LIST_LIMIT for v in column
        ):
            _fail("bad_layout", f"column {what}: expected {n} integers below 2**128")
        return cast(list[int], column)
    if not isinstance(column, bytes):
        _fail("bad_layout", f"column {what}: expected bytes or an array, got {type(column)}")
    if n == 0:
        if column:
            _fail("bad_layout", f"column {what}: expected no bytes for 0 values")
        return []
    width = column[0] if column else 0
    if width not in _TYPECODES or len(column) != 1 + n * width:
        _fail(
            "bad_layout",
            f"column {what}: {len(column)} bytes, expected 1 + {n} x width (1, 2, 4 or 8)",
        )
    raw = bytearray(n * width)
    for i in range(width):
        raw[i::width] = column[1 + i * n : 1 + (i + 1) * n]
    values = array(_TYPECODES[width])
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    return [(u >> 1) ^ -(u & 1) for u in values]


# --------------------------------------------------------------------- decimal text

# Spellings a (mantissa, decimals) pair restores exactly. Anything else ("007", "-0",
# "1E-7", "+5", "n/a") travels verbatim in the exceptions map.
_CANONICAL = re.compile(r"(-?)(0|[1-9][0-9]{0,17})(?:\.([0-9]{1,18}))?")
_MAX_DECIMALS = 18


def _parse_decimal(value: str) -> tuple[int, int] | None:
    match = _CANONICAL.fullmatch(value)
    if match is None:
        return None
    sign, whole, fraction = match.groups()
    mantissa = int(whole + fraction) if fraction else int(whole)
    if sign:
        if mantissa == 0:
            return None  # "-0.0": the sign would be lost
        mantissa = -mantissa
    return mantissa, len(fraction) if fraction else 0


def _format_decimal(mantissa: int, decimals: int) -> str:
    digits = str(-mantissa if mantissa < 0 else mantissa)
    if decimals:
        digits = digits.rjust(decimals + 1, "0")
        digits = f"{digits[:-decimals]}.{digits[-decimals:]}"
    return f"-{digits}" if mantissa < 0 else digits


# ------------------------------------------------------------------------ the body

_DIGITS = re.compile(r"[0-9]{1,38}")
_DEFAULT_SOURCE = "poll"
_BODY_FIELDS = 21


def _encode_body(content: BatchContent) -> bytes:
    """CBOR array of 21 fields; readings as columns, events as rows.

    Readings are sorted into series by (quantity, unit, meter) and by slot within a
    series. Quantity-major order puts the same quantity of consecutive meters side by
    side, so first values and read times delta-encode against the previous meter.

    ``n = readings, s = series, t = n - s (readings after each series' first)``::

         0 n            1 s
         2 quantities   [text]   sorted
         3 units        [text]   sorted
         4 meter_width  0: meters are text; w: meters are w-digit numbers
         5 meters       [text] | column of deltas (sorted, so 12-digit DL/T 645
                        addresses of one installation cost about a byte)
         6 s_meter      column(s): meter index - previous series' meter index
         7 s_quantity   column(s): index into quantities
         8 s_unit       column(s): index into units
         9 s_count      column(s): readings in the series
        10 s_scale      column(s): decimals << 1 | mixed
        11 slot_step    the gcd of all slot steps inside series (1 if none)
        12 slot_head    column(s): first slot - previous series' first slot
        13 slot_tail    column(t): (slot - previous slot) / slot_step
        14 value_head   column(s): first mantissa - previous series' first mantissa
        15 value_tail   column(t): mantissa - previous mantissa
        16 value_exp    column: for readings of "mixed" series only, series decimals
                        minus this value's decimals
        17 value_text   {reading index: text} for values no mantissa restores exactly
        18 read_at      column(n): ms after the slot, as the residual of a gradient
                        predictor (see `_predict_read_at`)
        19 sources      null if every source is "poll", else [[text], column(n)]
        20 events       [[kind, severity, meter | null, detail, at], ...]

    Mantissas are at the series' decimals, so "0.50" and "12345.67" are integers and
    a value is never a float. A series whose values have different decimal counts is
    scaled to the largest and carries the per-reading difference in ``value_exp``.
    """
    readings = sorted(content.readings, key=lambda r: (r.quantity, r.unit, r.meter, r.slot))
    n = len(readings)
    if n > MAX_READINGS:
        raise ValueError(f"{n} readings in one batch, at most {MAX_READINGS}")

    quantities = sorted({r.quantity for r in readings})
    units = sorted({r.unit for r in readings})
    meters = sorted({r.meter for r in readings})
    widths = {len(m) for m in meters}
    numeric = len(widths) == 1 and all(_DIGITS.fullmatch(m) for m in meters)
    meter_width = widths.pop() if numeric else 0
    meter_field: object = meters
    if numeric:
        numbers = [int(m) for m in meters]
        meter_field = _pack([b - a for a, b in zip([0, *numbers], numbers, strict=False)])
    q_index = {q: i for i, q in enumerate(quantities)}
    u_index = {u: i for i, u in enumerate(units)}
    m_index = {m: i for i, m in enumerate(meters)}

    # Series boundaries.
    starts = [
        i
        for i in range(n)
        if i == 0
        or (readings[i].meter, readings[i].quantity, readings[i].unit)
        != (readings[i - 1].meter, readings[i - 1].quantity, readings[i - 1].unit)
    ]
    bounds = list(zip(starts, [*starts[1:], n], strict=False))  # n = 0: no series

    slots = [r.slot for r in readings]
    offsets: list[int] = []
    for r in readings:
        if not math.isfinite(r.read_at):
            raise ValueError(f"read_at {r.read_at} of meter {r.meter!r} is not a finite time")
        offsets.append(round(r.read_at * 1000) - r.slot * 1000)
    parsed = [_parse_decimal(r.value) for r in readings]

    step = 0
    for a, b in bounds:
        for i in range(a + 1, b):
            step = math.gcd(step, slots[i] - slots[i - 1])
    step = step or 1

    s_meter: list[int] = []
    s_quantity: list[int] = []
    s_unit: list[int] = []
    s_count: list[int] = []
    s_scale: list[int] = []
    slot_head: list[int] = []
    slot_tail: list[int] = []
    value_head: list[int] = []
    value_tail: list[int] = []
    value_exp: list[int] = []
    value_text: dict[int, str] = {}
    prev_meter = prev_slot = prev_value = 0
    for a, b in bounds:
        first = readings[a]
        meter = m_index[first.meter]
        s_meter.append(meter - prev_meter)
        s_quantity.append(q_index[first.quantity])
        s_unit.append(u_index[first.unit])
        s_count.append(b - a)
        slot_head.append(slots[a] - prev_slot)
        slot_tail.extend((slots[i] - slots[i - 1]) // step for i in range(a + 1, b))
        prev_meter, prev_slot = meter, slots[a]

        scales = {p[1] for p in parsed[a:b] if p is not None}
        decimals = max(scales, default=0)
        mixed = len(scales) > 1
        s_scale.append(decimals << 1 | mixed)
        mantissas: list[int] = []
        last = prev_value
        for i in range(a, b):
            p = parsed[i]
            if p is None:
                value_text[i] = readings[i].value
                mantissas.append(last)  # a zero delta: keeps the neighbours' deltas small
                if mixed:
                    value_exp.append(0)
                continue
            last = p[0] * 10 ** (decimals - p[1])
            mantissas.append(last)
            if mixed:
                value_exp.append(decimals - p[1])
        value_head.append(mantissas[0] - prev_value)
        value_tail.extend(y - x for x, y in pairwise(mantissas))
        prev_value = mantissas[0]

    read_at = _predict_read_at(offsets, slots, bounds, encode=True)

    sources_field: object = None
    if any(r.source != _DEFAULT_SOURCE for r in readings):
        names = sorted({r.source for r in readings})
        index = {s: i for i, s in enumerate(names)}
        sources_field = [names, _pack([index[r.source] for r in readings])]

    events = [[e.kind, e.severity, e.meter, e.detail, e.at] for e in content.events]
    body = cbor2.dumps(
        [
            n,
            len(bounds),
            quantities,
            units,
            meter_width,
            meter_field,
            _pack(s_meter),
            _pack(s_quantity),
            _pack(s_unit),
            _pack(s_count),
            _pack(s_scale),
            step,
            _pack(slot_head),
            _pack(slot_tail),
            _pack(value_head),
            _pack(value_tail),
            _pack(value_exp),
            value_text,
            _pack(read_at),
            sources_field,
            events,
        ]
    )
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"batch body of {len(body)} bytes, at most {MAX_BODY_BYTES}")
    return body


def _predict_read_at(
    values: list[int], slots: list[int], bounds: list[tuple[int, int]], *, encode: bool
) -> list[int]:
    """Turn read_at offsets into residuals (encode) or residuals back into offsets.

    A bus polls its meters in the same order every slot, so the gap between two
    meters' reads barely changes from one slot to the next. Where a series has exactly
    the slots of the series before it, a read is predicted by the gradient
    ``left + up - up_left`` (left: this series' previous slot; up: the previous series,
    same slot). What is left is the jitter of one poll cycle, a few ms. Otherwise the
    prediction is this series' previous read, or the previous series' first.
    """
    out = values[:] if encode else [0] * len(values)
    src = values if encode else out  # predictions always use the decoded offsets
    prev: tuple[int, int] | None = None
    for a, b in bounds:
        aligned = (
            prev is not None
            and (b - a) == (prev[1] - prev[0])
            and slots[a:b] == slots[prev[0] : prev[1]]
        )
        for i in range(a, b):
            if aligned:
                up = i - a + cast(tuple[int, int], prev)[0]
                guess = src[up] if i == a else src[i - 1] + src[up] - src[up - 1]
            elif i > a:
                guess = src[i - 1]
            else:
                guess = src[prev[0]] if prev is not None else 0
            if encode:
                out[i] = values[i] - guess
            else:
                out[i] = values[i] + guess
        prev = (a, b)
    return out


def _decode_body(body: bytes) -> BatchContent:
    fields = _loads(body)
    try:
        return _decode_fields(fields)
    except WireError:
        raise
    except (TypeError, ValueError, IndexError, KeyError, OverflowError, RecursionError) as exc:
        # A structure the explicit checks below did not foresee. It was authenticated,
        # so it came from a key holder with a broken encoder; say what broke.
        _fail("bad_layout", f"body does not decode ({type(exc).__name__}: {exc})")


def _int_field(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        _fail("bad_layout", f"{what} is {value!r}, expected an integer {low}..{high}")
    return value


def _texts(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        _fail("bad_layout", f"{what}: expected an array of text")
    return cast(list[str], value)


def _decode_fields(fields: object) -> BatchContent:
    if not isinstance(fields, list) or len(fields) != _BODY_FIELDS:
        _fail("bad_layout", f"body must be an array of {_BODY_FIELDS} fields")
    n = _int_field(fields[0], "reading count", 0, MAX_READINGS)
    s = _int_field(fields[1], "series count", 1 if n else 0, n)
    quantities = _texts(fields[2], "quantities")
    units = _texts(fields[3], "units")
    meter_width = _int_field(fields[4], "meter width", 0, 38)
    meters: list[str]
    if meter_width:
        if not isinstance(fields[5], bytes | list):
            _fail("bad_layout", "meters: expected a column of numbers")
        count = len(fields[5]) if isinstance(fields[5], list) else _column_len(fields[5])
        numbers = accumulate(_unpack(fields[5], count, "meters"))
        meters = [str(v).rjust(meter_width, "0") for v in numbers]
        if any(len(m) != meter_width or not _DIGITS.fullmatch(m) for m in meters):
            _fail("bad_layout", f"meters: expected {meter_width}-digit numbers")
    else:
        meters = _texts(fields[5], "meters")

    s_meter = list(accumulate(_unpack(fields[6], s, "s_meter")))
    s_quantity = _unpack(fields[7], s, "s_quantity")
    s_unit = _unpack(fields[8], s, "s_unit")
    s_count = _unpack(fields[9], s, "s_count")
    s_scale = _unpack(fields[10], s, "s_scale")
    if any(c < 1 for c in s_count) or sum(s_count) != n:
        _fail("bad_layout", f"series counts must be >= 1 and add up to {n}")
    for what, index, table in (
        ("s_meter", s_meter, meters),
        ("s_quantity", s_quantity, quantities),
        ("s_unit", s_unit, units),
    ):
        if any(not 0 <= i < len(table) for i in index):
            _fail("bad_layout", f"{what}: index outside its table of {len(table)}")
    if any(not 0 <= sc <= (_MAX_DECIMALS << 1 | 1) for sc in s_scale):
        _fail("bad_layout", f"s_scale: expected decimals 0..{_MAX_DECIMALS}")
    step = _int_field(fields[11], "slot step", 1, 1 << 63)

    t = n - s
    slot_head = _unpack(fields[12], s, "slot_head")
    slot_tail = _unpack(fields[13], t, "slot_tail")
    value_head = _unpack(fields[14], s, "value_head")
    value_tail = _unpack(fields[15], t, "value_tail")
    mixed_n = sum(c for c, sc in zip(s_count, s_scale, strict=True) if sc & 1)
    value_exp = _unpack(fields[16], mixed_n, "value_exp")
    value_text = fields[17]
    if not isinstance(value_text, dict) or not all(
        type(k) is int and 0 <= k < n and isinstance(v, str) for k, v in value_text.items()
    ):
        _fail("bad_layout", "value_text: expected {reading index: text}")

    # Slots and mantissas, series by series.
    bounds: list[tuple[int, int]] = []
    slots: list[int] = []
    mantissas: list[int] = []
    decimals: list[int] = []
    a = tail = exp = 0
    slot = value = 0
    for k in range(s):
        b = a + s_count[k]
        bounds.append((a, b))
        slot += slot_head[k]
        value += value_head[k]
        series_decimals, mixed = s_scale[k] >> 1, s_scale[k] & 1
        row_slot, row_value = slot, value
        for i in range(a, b):
            if i > a:
                row_slot += slot_tail[tail] * step
                row_value += value_tail[tail]
                tail += 1
            slots.append(row_slot)
            mantissas.append(row_value)
            if mixed:
                shift = value_exp[exp]
                exp += 1
                if not 0 <= shift <= series_decimals:
                    _fail("bad_layout", f"value_exp {shift} at reading {i} exceeds the series'")
                decimals.append(series_decimals - shift)
            else:
                decimals.append(series_decimals)
        a = b

    offsets = _predict_read_at(_unpack(fields[18], n, "read_at"), slots, bounds, encode=False)

    sources = [_DEFAULT_SOURCE] * n
    if fields[19] is not None:
        if not isinstance(fields[19], list) or len(fields[19]) != 2:
            _fail("bad_layout", "sources: expected null or [names, column]")
        names = _texts(fields[19][0], "source names")
        index = _unpack(fields[19][1], n, "sources")
        if any(not 0 <= i < len(names) for i in index):
            _fail("bad_layout", f"sources: index outside its table of {len(names)}")
        sources = [names[i] for i in index]

    readings: list[Reading] = []
    for k, (a, b) in enumerate(bounds):
        meter, quantity, unit = meters[s_meter[k]], quantities[s_quantity[k]], units[s_unit[k]]
        for i in range(a, b):
            text = value_text.get(i)
            if text is None:
                mantissa, rest = divmod(mantissas[i], 10 ** ((s_scale[k] >> 1) - decimals[i]))
                if rest:
                    _fail("bad_layout", f"value at reading {i} has more digits than its exponent")
                text = _format_decimal(mantissa, decimals[i])
            readings.append(
                Reading(
                    meter=meter,
                    quantity=quantity,
                    slot=slots[i],
                    value=text,
                    unit=unit,
                    read_at=(slots[i] * 1000 + offsets[i]) / 1000,
                    source=sources[i],
                )
            )
    return BatchContent(readings=tuple(readings), events=_decode_events(fields[20]))


def _column_len(column: bytes) -> int:
    if not column:
        return 0
    if column[0] not in _TYPECODES or (len(column) - 1) % column[0]:
        _fail("bad_layout", "meters: column length is not a multiple of its width")
    return (len(column) - 1) // column[0]


def _decode_events(rows: object) -> tuple[Event, ...]:
    if not isinstance(rows, list):
        _fail("bad_layout", "events: expected an array")
    events = []
    for i, row in enumerate(rows):
        if not (
            isinstance(row, list)
            and len(row) == 5
            and isinstance(row[0], str)
            and isinstance(row[1], str)
            and (row[2] is None or isinstance(row[2], str))
            and isinstance(row[3], dict)
            and type(row[4]) in (int, float)
        ):
            _fail("bad_layout", f"event {i}: expected [kind, severity, meter|null, {{...}}, at]")
        _check_detail(row[3], f"event {i} detail", 0)
        events.append(Event(kind=row[0], severity=row[1], meter=row[2], detail=row[3], at=row[4]))
    return tuple(events)


def _check_detail(value: object, what: str, depth: int) -> None:
    # The store keeps details as JSON, so only JSON's types may arrive. The depth bound
    # also stops a self-referencing structure (CBOR shared references) from looping.
    if depth > 32:
        _fail("bad_layout", f"{what}: nested deeper than 32 levels")
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                _fail("bad_layout", f"{what}: key {k!r} is not text")
            _check_detail(v, what, depth + 1)
    elif isinstance(value, list):
        for v in value:
            _check_detail(v, what, depth + 1)
    elif value is not None and not isinstance(value, str | int | float):
        _fail("bad_layout", f"{what}: {type(value).__name__} is not a JSON type")
