"""Sealing and opening a batch: encode, compress when smaller, encrypt (and back)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import zstandard
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contract.wire import body, body_decode, body_v2
from contract.wire.content import MAX_BODY_BYTES, BatchContent
from contract.wire.errors import fail
from contract.wire.header import (
    FLAG_COMPRESSED,
    INFO_UP,
    TAG_BYTES,
    VERSION,
    Header,
    build_header,
    derive,
    nonce,
    parse_header,
)
from contract.wire.references import Reference, Resolver

ZSTD_LEVEL = 19  # chosen by measurement (bench/wire.py); level 19 still seals >100k readings/s
REFERENCES_SINCE = 3  # the first version whose body can carry references


def seal_batch(
    content: BatchContent,
    *,
    concentrator_id: str,
    key_id: int,
    key: bytes,
    seq: int,
    version: int = VERSION,
    software: str = "",
    references: Mapping[tuple[str, str], Reference] | None = None,
) -> bytes:
    """Encode, compress when that is smaller, and encrypt one batch.

    ``references`` (version 3 on; ignored before): per (meter, quantity), a value the
    receiver has committed, which the series' first reading is coded against. The
    caller must have persisted ``seq`` first and must never seal twice under one
    ``(key, seq)`` with different content *or references*: that would reuse a GCM
    nonce. Raises ValueError for content or arguments the format cannot carry.
    """
    if version >= REFERENCES_SINCE:
        raw = body.encode_body(content, references)
    else:
        raw = body_v2.encode_body(content)
    flags = 0
    packed = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)
    if len(packed) < len(raw):
        raw, flags = packed, FLAG_COMPRESSED
    aad = build_header(flags, concentrator_id, key_id, seq, version, software)
    aead = AESGCM(derive(key, concentrator_id, INFO_UP))
    return aad + aead.encrypt(nonce(seq), raw, aad)


def open_batch(
    data: bytes,
    key_lookup: Callable[[str, int], bytes | None],
    resolve: Resolver | None = None,
) -> tuple[Header, BatchContent]:
    """Verify, decrypt and decode one batch.

    ``key_lookup(concentrator_id, key_id)`` returns the 32-byte payload key or None.
    ``resolve`` looks up the references of a version 3 batch in what the receiver
    committed (`contract.wire.references`); without it, a batch with references fails
    as "unresolved_reference". Every fault in ``data`` raises WireError; whatever
    ``key_lookup`` or ``resolve`` raise passes through unchanged.
    """
    header = parse_header(data)
    if header.is_ack:
        fail("bad_header", "flags 0x02 mark an ack, expected a batch (0x00 or 0x01)")
    sealed = bytes(data[header.header_len :])
    if len(sealed) < TAG_BYTES:
        fail("truncated", f"{len(sealed)} bytes after the header, expected at least {TAG_BYTES}")
    key = key_lookup(header.concentrator_id, header.key_id)
    if key is None:
        fail("unknown_key", f"no key {header.key_id} for concentrator {header.concentrator_id}")
    aead = AESGCM(derive(key, header.concentrator_id, INFO_UP))
    try:
        raw = aead.decrypt(nonce(header.seq), sealed, bytes(data[: header.header_len]))
    except InvalidTag:
        fail("auth_failed", "GCM tag does not match the header and ciphertext for this key")
    if header.flags & FLAG_COMPRESSED:
        raw = _decompress(raw)
    elif len(raw) > MAX_BODY_BYTES:
        fail("too_large", f"body of {len(raw)} bytes, expected at most {MAX_BODY_BYTES}")
    if header.version >= REFERENCES_SINCE:
        return header, body_decode.decode_body(raw, resolve)
    return header, body_v2.decode_body(raw)


def _decompress(data: bytes) -> bytes:
    # The frame must declare its size (our encoder always writes it), so the size is
    # checked before a single byte is inflated.
    try:
        size = zstandard.frame_content_size(data)
    except zstandard.ZstdError as exc:
        fail("bad_compression", f"not a zstd frame ({exc})")
    if size < 0:
        fail("bad_compression", "zstd frame without a content size, expected one")
    if size > MAX_BODY_BYTES:
        fail("too_large", f"body inflates to {size} bytes, expected at most {MAX_BODY_BYTES}")
    try:
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_BODY_BYTES)
    except zstandard.ZstdError as exc:
        fail("bad_compression", f"zstd frame does not decompress ({exc})")
