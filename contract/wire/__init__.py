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

Version 3 keeps the header of version 2 and changes the body
(`contract.wire.body`): a series may be coded against a *reference*, a value the
receiver has already committed (`contract.wire.references`), and the receiver may
answer "resync" when it cannot resolve one. Versions 1 and 2 keep their body
(`contract.wire.body_v2`). The modules:

- `.header`: the clear header, key derivation and nonces;
- `.batch`: seal and open a batch; `.ack`: seal and open an ack;
- `.content`: what a batch carries, and its events;
- `.body` (version 3) and `.body_v2` (versions 1 and 2): the readings as columns;
- `.references`: what a live batch is coded against, and the book a concentrator
  keeps of it;
- `.columns` and `.decimals`: integer columns, strict CBOR, exact decimal text;
- `.errors`: why a message is refused.
"""

from __future__ import annotations

from contract.wire.ack import Ack, AckStatus, open_ack, seal_ack
from contract.wire.batch import open_batch, seal_batch
from contract.wire.content import MAX_BODY_BYTES, MAX_READINGS, BatchContent
from contract.wire.errors import WireError, WireErrorReason
from contract.wire.header import (
    MAGIC,
    REPLAY_WINDOW,
    RESTORE_SEQ_MARGIN,
    VERSION,
    VERSIONS,
    Header,
    parse_header,
)
from contract.wire.references import Reference, ReferenceBook, RefKey, Resolver

__all__ = [
    "MAGIC",
    "MAX_BODY_BYTES",
    "MAX_READINGS",
    "REPLAY_WINDOW",
    "RESTORE_SEQ_MARGIN",
    "VERSION",
    "VERSIONS",
    "Ack",
    "AckStatus",
    "BatchContent",
    "Header",
    "RefKey",
    "Reference",
    "ReferenceBook",
    "Resolver",
    "WireError",
    "WireErrorReason",
    "open_ack",
    "open_batch",
    "parse_header",
    "seal_ack",
    "seal_batch",
]
