"""The uplink wire format: round trips, header, authentication, and the fuzz invariant."""

from __future__ import annotations

import struct
from collections import Counter

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import wire
from contract.records import Event, Reading
from contract.wire import Ack, BatchContent, WireError
from contract.wire import ack as wire_ack
from contract.wire import body as wire_body
from contract.wire import header as wire_header

KEY = bytes(range(32))
OTHER_KEY = bytes(32)
CID = "cn-01.site_A"


def lookup(cid: str, key_id: int) -> bytes | None:
    return KEY if key_id == 7 else None


def seal(content: BatchContent, seq: int = 1, **kw: object) -> bytes:
    args: dict[str, object] = {"concentrator_id": CID, "key_id": 7, "key": KEY, "seq": seq}
    args.update(kw)
    return wire.seal_batch(content, **args)  # type: ignore[arg-type]


def reading(meter: str = "202400100001", value: str = "12345.67", **kw: object) -> Reading:
    fields: dict[str, object] = {
        "meter": meter,
        "quantity": "energy_fwd_total",
        "slot": 1_750_032_000,
        "value": value,
        "unit": "kWh",
        "read_at": 1_750_032_001.234,
    }
    fields.update(kw)
    return Reading(**fields)  # type: ignore[arg-type]


SAMPLE = BatchContent(
    readings=(
        reading(),
        reading(value="12345.89", slot=1_750_032_900, read_at=1_750_032_901.5),
        reading(meter="202400100002", value="-0.50", quantity="power_total", unit="kW"),
        reading(meter="202400100002", value="49.991936", quantity="freq", unit="Hz"),
    ),
    events=(
        Event("clock_drift", "warning", "202400100001", {"drift_s": 12.5, "set": True}, 1.5e9),
        Event("loss", "critical", None, {"losses": [{"meters": ["a"], "count": 3}]}, 1.7e9),
    ),
)


def assert_same(got: BatchContent, want: BatchContent) -> None:
    # Readings come back grouped by series; events keep their order.
    assert Counter(got.readings) == Counter(want.readings)
    assert len(got.readings) == len(want.readings)
    assert got.events == want.events


# ----------------------------------------------------------------------- round trips


def test_sample_round_trip_and_header() -> None:
    data = seal(SAMPLE, seq=42)
    header = wire.parse_header(data)
    assert header == wire.Header(3, header.flags, CID, 7, 42, 5 + len(CID) + 1 + 12, "")
    assert header.flags in (0, 1) and not header.is_ack
    got_header, got = wire.open_batch(data, lookup)
    assert got_header == header
    assert_same(got, SAMPLE)


def test_header_vector() -> None:
    data = seal(BatchContent(), seq=0x0102030405060708, concentrator_id="c1", key_id=7, version=1)
    # MF, version 1, flags, id length 2, "c1", key_id 7 (u32 BE), seq (u64 BE)
    assert data[:19] == bytes.fromhex("4d4601" + "00" + "02" + "6331" + "00000007") + bytes(
        range(1, 9)
    )
    data = seal(BatchContent(), seq=0x0102030405060708, concentrator_id="c1", key_id=7,
                software="1.2.0", version=2)  # fmt: skip
    # Version 2 (and 3): the software version (length 5, "1.2.0") between the id and key_id.
    assert data[:25] == bytes.fromhex(
        "4d4602" + "00" + "02" + "6331" + "05" + b"1.2.0".hex() + "00000007"
    ) + bytes(range(1, 9))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_both_wire_versions_are_read_and_acked_in_their_own_version(version: int) -> None:
    """A mixed fleet: old concentrators send version 1, new ones version 2; the receiver
    reads both and acks each in the batch's version, which the old code can read."""
    data = seal(SAMPLE, seq=5, version=version, software="0.2.0")
    header, got = wire.open_batch(data, lookup)
    assert header.version == version
    assert header.software == (None if version == 1 else "0.2.0")
    assert_same(got, SAMPLE)
    ack = wire.seal_ack(Ack(5, "stored"), concentrator_id=CID, key_id=7, key=KEY,
                        version=header.version)  # fmt: skip
    assert ack[2] == version
    assert wire.open_ack(ack, KEY) == Ack(5, "stored")


def test_software_field_is_bounded_and_checked() -> None:
    with pytest.raises(ValueError, match="software"):
        seal(SAMPLE, software="x" * 33)
    with pytest.raises(ValueError, match="software"):
        seal(SAMPLE, software="1.0 beta")
    with pytest.raises(ValueError, match="wire version 4"):
        seal(SAMPLE, version=4)


def test_empty_batch() -> None:
    assert_same(wire.open_batch(seal(BatchContent()), lookup)[1], BatchContent())


def test_backlog_is_compressed_and_small() -> None:
    readings = tuple(
        reading(meter=f"{202400100001 + m:012d}", slot=s * 900, read_at=s * 900 + 1.0 + m / 1e3)
        for m in range(50)
        for s in range(96)
    )
    data = seal(BatchContent(readings=readings))
    assert wire.parse_header(data).flags == 1
    assert len(data) / len(readings) < 2
    assert_same(wire.open_batch(data, lookup)[1], BatchContent(readings=readings))


decimals = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(allow_nan=False, allow_infinity=False, places=6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: f"{f:.{abs(hash(f)) % 7}f}"),
    st.sampled_from(["0.50", "-1.234", "12345.67", "49.991936", "-0", "-0.00", "007", "1E-7"]),
    st.text(max_size=5),
)
meters = st.one_of(
    st.integers(0, 10**12 - 1).map(lambda m: f"{m:012d}"),
    st.sampled_from(["7", "07", "m-1", "ÄÖ", ""]),
    st.text(max_size=8),
)
# |slot| < 2**38 s (year 10,000) keeps read_at * 1000 within 1/16 ms of an integer in a
# float, so the millisecond survives the round trip; larger slots are not real dates.
slots = st.integers(-(2**28), 2**28).map(lambda s: s * 900) | st.integers(-(2**38), 2**38)
readings = st.builds(
    lambda meter, quantity, slot, value, unit, lag_ms, source: Reading(
        meter, quantity, slot, value, unit, (slot * 1000 + lag_ms) / 1000, source
    ),
    meters,
    st.sampled_from(["energy_fwd_total", "voltage_a", "current_a", "x"]),
    slots,
    decimals,
    st.sampled_from(["kWh", "V", "A", ""]),
    st.integers(-(10**7), 10**9),
    st.sampled_from(["poll", "poll", "backfill", "ondemand"]),
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
events = st.builds(
    Event,
    st.text(),
    st.sampled_from(["info", "warning", "critical"]),
    st.none() | st.text(),
    st.dictionaries(st.text(), json_values, max_size=4),
    st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(readings, max_size=60), st.lists(events, max_size=3), st.integers(1, 2**63 - 1))
def test_round_trip(rs: list[Reading], es: list[Event], seq: int) -> None:
    content = BatchContent(readings=tuple(rs), events=tuple(es))
    header, got = wire.open_batch(seal(content, seq=seq), lookup)
    assert header.seq == seq
    assert_same(got, content)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), decimals), min_size=1, max_size=40))
def test_series_mixing_decimal_counts(points: list[tuple[int, str]]) -> None:
    rs = tuple(reading(value=v, slot=s * 900, read_at=s * 900 + 2.0) for s, v in points)
    got = wire.open_batch(seal(BatchContent(readings=rs)), lookup)[1]
    assert Counter(got.readings) == Counter(rs)


def test_read_at_is_rounded_to_the_millisecond() -> None:
    r = reading(read_at=1_750_032_001.23456)
    (got,) = wire.open_batch(seal(BatchContent(readings=(r,))), lookup)[1].readings
    assert got.read_at == 1_750_032_001.235


def test_nonce_differs_with_seq() -> None:
    a, b = seal(SAMPLE, seq=1), seal(SAMPLE, seq=2)
    header_len = wire.parse_header(a).header_len
    assert a[header_len:] != b[header_len:]


def test_seal_refuses_what_it_cannot_carry() -> None:
    for kw in ({"seq": 0}, {"seq": 2**63}, {"key_id": -1}, {"concentrator_id": "a b"}):
        with pytest.raises(ValueError):
            seal(SAMPLE, **kw)
    with pytest.raises(ValueError):
        seal(SAMPLE, key=b"short")
    with pytest.raises(ValueError):
        seal(BatchContent(readings=(reading(read_at=float("nan")),)))


# -------------------------------------------------------------- authentication


def reason(data: bytes) -> str:
    with pytest.raises(WireError) as info:
        wire.open_batch(data, lookup)
    return info.value.reason


def test_wrong_key_fails_authentication() -> None:
    assert reason(seal(SAMPLE, key=OTHER_KEY)) == "auth_failed"


def test_unknown_key_id() -> None:
    assert reason(seal(SAMPLE, key_id=8)) == "unknown_key"


def test_every_flipped_bit_is_caught() -> None:
    data = seal(SAMPLE, seq=5)
    header_len = wire.parse_header(data).header_len
    for i in range(len(data)):
        for bit in (0x01, 0x80):
            bad = bytearray(data)
            bad[i] ^= bit
            got = reason(bytes(bad))
            if i >= header_len or i >= 5 + len(CID):  # ciphertext, tag, key_id or seq
                # The top bit of seq makes it >= 2**63: refused as a bad header.
                assert got in ("auth_failed", "unknown_key", "bad_header"), (i, bit, got)
            else:
                assert got != "truncated", (i, bit)


def test_changed_seq_or_concentrator_id_fails_authentication() -> None:
    data = seal(SAMPLE, seq=5)
    cid_end = 5 + len(CID)
    key_at = cid_end + 1  # after version 2's (empty) software field
    moved_seq = data[: key_at + 4] + struct.pack(">Q", 6) + data[key_at + 12 :]
    assert reason(moved_seq) == "auth_failed"
    other_id = data[:5] + b"cn-01.site_B" + data[cid_end:]
    assert reason(other_id) == "auth_failed"


def test_truncated_at_every_length() -> None:
    data = seal(SAMPLE)
    header_len = wire.parse_header(data).header_len
    for n in range(len(data)):
        got = reason(data[:n])
        assert got == ("truncated" if n < header_len + 16 else "auth_failed"), n


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"XY\x01\x00\x01a" + bytes(12 + 16), "bad_magic"),
        (b"MF\x04\x00\x01a" + bytes(12 + 16), "unsupported_version"),
        (b"MF\x02\x00\x01a\x21" + bytes(33 + 12 + 16), "bad_header"),  # software > 32
        (b"MF\x02\x00\x01a\x031 0" + bytes(12 + 16), "bad_header"),  # a space in it
        (b"MF\x02\x00\x01a\x051.0", "truncated"),
        (b"MF\x01\x04\x01a" + bytes(12 + 16), "bad_header"),
        (b"MF\x01\x00\x00" + bytes(12 + 16), "bad_header"),
        (b"MF\x01\x00\x01 " + bytes(12 + 16), "bad_header"),
        (b"MF\x01\x00\x01a" + bytes(12 + 16), "bad_header"),  # seq 0
        (b"MF\x01\x02\x01a" + bytes(11) + b"\x01" + bytes(16), "bad_header"),  # an ack
    ],
)
def test_bad_headers(data: bytes, why: str) -> None:
    assert reason(data) == why


# ------------------------------------------------------------- fuzz invariant


def envelope(body: bytes, flags: int = 0, seq: int = 9) -> bytes:
    """A correctly encrypted batch around an arbitrary body."""
    aad = wire_header.build_header(flags, CID, 7, seq)
    aead = AESGCM(wire_header.derive(KEY, CID, wire_header.INFO_UP))
    return aad + aead.encrypt(wire_header.nonce(seq), body, aad)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(data: bytes) -> None:
    for message in (data, b"MF\x01" + data, envelope(data), envelope(data, flags=1)):
        with pytest.raises(WireError):
            wire.open_batch(message, lookup)
        with pytest.raises(WireError):
            wire.open_ack(message, KEY)


cbor_items = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=6) | st.dictionaries(st.integers() | st.text(), inner, max_size=4)
    ),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(cbor_items)
def test_random_cbor_raises_only_wire_error(item: object) -> None:
    with pytest.raises(WireError):
        wire.open_batch(envelope(cbor2.dumps(item)), lookup)


def real_fields() -> list[object]:
    body = wire_body.encode_body(SAMPLE)
    fields = cbor2.loads(body)
    assert isinstance(fields, list)
    return fields


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 20), cbor_items)
def test_one_corrupt_field_raises_only_wire_error(index: int, item: object) -> None:
    fields = real_fields()
    fields[index] = item
    try:
        got = wire.open_batch(envelope(cbor2.dumps(fields)), lookup)[1]
    except WireError:
        return
    assert isinstance(got, BatchContent)  # a field may be replaced by a valid one


def test_zip_bomb_is_refused() -> None:
    import zstandard

    bomb = zstandard.ZstdCompressor().compress(bytes(wire.MAX_BODY_BYTES + 1))
    assert reason(envelope(bomb, flags=1)) == "too_large"
    no_size = zstandard.ZstdCompressor(write_content_size=False).compress(b"\x80")
    assert reason(envelope(no_size, flags=1)) == "bad_compression"


def test_trailing_cbor_is_refused() -> None:
    assert reason(envelope(wire_body.encode_body(SAMPLE) + b"\x00")) == "bad_cbor"


# ------------------------------------------------------------------------- acks


@pytest.mark.parametrize(
    "ack", [Ack(5, "stored"), Ack(2**63 - 1, "duplicate"), Ack(3, "rejected", "bad layout")]
)
def test_ack_round_trip(ack: Ack) -> None:
    data = wire.seal_ack(ack, concentrator_id=CID, key_id=7, key=KEY)
    header = wire.parse_header(data)
    assert header.is_ack and header.seq == ack.seq
    assert wire.open_ack(data, KEY) == ack


def ack_reason(data: bytes, key: bytes = KEY) -> str:
    with pytest.raises(WireError) as info:
        wire.open_ack(data, key)
    return info.value.reason


def test_forged_or_tampered_ack_is_rejected() -> None:
    data = wire.seal_ack(Ack(5, "stored"), concentrator_id=CID, key_id=7, key=KEY)
    assert ack_reason(data, OTHER_KEY) == "auth_failed"
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 0x01
        assert ack_reason(bytes(bad)) != "truncated"
    for n in range(len(data)):
        assert ack_reason(data[:n]) in ("truncated", "auth_failed")
    # A batch is never taken for an ack, nor an ack for a batch.
    assert ack_reason(seal(SAMPLE)) == "bad_header"
    assert reason(data) == "bad_header"


def test_ack_under_batch_key_does_not_verify() -> None:
    # An attacker who saw batches still cannot MAC an ack: the ack key is derived apart.
    header = wire_header.build_header(wire_header.FLAG_ACK, CID, 7, 5)
    message = header + cbor2.dumps({"seq": 5, "status": "stored"})
    batch_key = wire_header.derive(KEY, CID, wire_header.INFO_UP)
    import hashlib
    import hmac

    forged = message + hmac.new(batch_key, message, hashlib.sha256).digest()[:16]
    assert ack_reason(forged) == "auth_failed"


def test_ack_body_must_match_header() -> None:
    header = wire_header.build_header(wire_header.FLAG_ACK, CID, 7, 5)
    for body in ({"seq": 6, "status": "stored"}, {"seq": 5, "status": "ok"}, [5, "stored"]):
        message = header + cbor2.dumps(body)
        assert ack_reason(message + wire_ack.mac(KEY, CID, message)) == "bad_layout"


@given(readings)
def test_the_decoders_reading_is_the_constructors(r: Reading) -> None:
    """`decoded_reading` (the decoder's fast constructor) makes the same frozen object."""
    from dataclasses import FrozenInstanceError, astuple

    from contract.records import decoded_reading

    made = decoded_reading(*astuple(r))
    assert made == r and hash(made) == hash(r) and repr(made) == repr(r)
    with pytest.raises(FrozenInstanceError):
        made.value = "1"  # type: ignore[misc]
