"""Wire version 3: batches coded against references (values the receiver committed).

Round trips for any readings and any references (scale changes, negative deltas, text
values), and every way a reference can be missing or wrong: the decoder refuses with
"unresolved_reference" and never returns a wrong value.
"""

from __future__ import annotations

import random
from collections import Counter
from decimal import Decimal

import cbor2
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contract import wire
from contract.records import Reading
from contract.wire import Ack, BatchContent, Reference, ReferenceBook, RefKey, WireError
from contract.wire import body as wire_body
from contract.wire import header as wire_header
from contract.wire.columns import unpack
from contract.wire.references import latest

KEY = bytes(range(32))
CID = "cn-ref"
SLOT = 1_750_032_000


def lookup(cid: str, key_id: int) -> bytes | None:
    return KEY


class Db:
    """What a receiver committed, as its readings table holds it."""

    def __init__(self, readings: tuple[Reading, ...] = ()) -> None:
        self.rows: dict[RefKey, tuple[str, float]] = {}
        self.asked: list[RefKey] = []
        self.commit(readings)

    def commit(self, readings: tuple[Reading, ...]) -> None:
        for r in readings:
            self.rows.setdefault((r.meter, r.quantity, r.slot), (r.value, r.read_at))

    def resolve(self, keys: list[RefKey]) -> dict[RefKey, tuple[str, float]]:
        self.asked.extend(keys)
        return {k: self.rows[k] for k in keys if k in self.rows}


def r(meter: str, value: str, slot: int = SLOT, quantity: str = "energy_fwd_total") -> Reading:
    return Reading(meter, quantity, slot, value, "kWh", slot + 1.25)


def seal(content: BatchContent, refs: object = None, seq: int = 1, version: int = 3) -> bytes:
    return wire.seal_batch(
        content, concentrator_id=CID, key_id=1, key=KEY, seq=seq, version=version,
        references=refs,  # type: ignore[arg-type]
    )  # fmt: skip


def book_of(*readings: Reading) -> dict[tuple[str, str], Reference]:
    b = ReferenceBook()
    b.learn(readings)
    return dict(b.usable(0))


def test_a_coded_batch_is_smaller_and_decodes_exactly() -> None:
    rng = random.Random(22)
    base = [rng.uniform(1_000, 99_999) for _ in range(200)]
    before = tuple(r(f"{m:012d}", f"{v:.2f}", SLOT) for m, v in enumerate(base))
    now = tuple(
        r(f"{m:012d}", f"{v + rng.uniform(0, 0.5):.2f}", SLOT + 900) for m, v in enumerate(base)
    )
    db = Db(before)
    coded = seal(BatchContent(now), book_of(*before), seq=2)
    key = seal(BatchContent(now), None, seq=2)
    assert len(coded) < len(key) * 0.6
    got = wire.open_batch(coded, lookup, db.resolve)[1]
    assert Counter(got.readings) == Counter(now)
    assert {k[2] for k in db.asked} == {SLOT}


@pytest.mark.parametrize(
    ("ref", "new"),
    [
        ("12.5", "12.505"),  # more decimals than the reference
        ("12.505", "13.1"),  # fewer
        ("100", "99.99"),  # a negative delta across a change of scale
        ("-3.25", "-7.5"),  # negative values
        ("0", "0.000"),
        ("99999999999999999.9", "-99999999999999999.9"),  # beyond 64 bits: a plain array
    ],
)
def test_deltas_are_exact_across_scale_changes_and_signs(ref: str, new: str) -> None:
    old, now = r("000000000001", ref), r("000000000001", new, SLOT + 900)
    got = wire.open_batch(seal(BatchContent((now,)), book_of(old)), lookup, Db((old,)).resolve)
    assert got[1].readings == (now,)


def test_text_values_and_references_go_whole() -> None:
    # A reference that is not a canonical decimal cannot carry a delta: the series goes
    # as a key value and nothing is asked of the receiver.
    old, now = r("000000000001", "n/a"), r("000000000001", "5.0", SLOT + 900)
    db = Db((old,))
    assert wire.open_batch(seal(BatchContent((now,)), book_of(old)), lookup, db.resolve)[1]
    assert db.asked == []
    # A reading that is text keeps its text; the reference is not used for it.
    old, now = r("000000000001", "5.0"), r("000000000001", "007", SLOT + 900)
    db = Db((old,))
    got = wire.open_batch(seal(BatchContent((now,)), book_of(old)), lookup, db.resolve)[1]
    assert got.readings == (now,) and db.asked == []


def unresolved(data: bytes, db: Db | None) -> str:
    with pytest.raises(WireError) as info:
        wire.open_batch(data, lookup, None if db is None else db.resolve)
    assert info.value.reason == "unresolved_reference"
    return str(info.value)


def test_an_unknown_reference_is_refused_never_guessed() -> None:
    old, now = r("000000000001", "10.00"), r("000000000001", "10.25", SLOT + 900)
    data = seal(BatchContent((now,)), book_of(old))
    assert "meter 000000000001 energy_fwd_total at slot 1750032000" in unresolved(data, Db())
    assert "no way to resolve" in unresolved(data, None)  # a caller without a database


def test_a_reference_the_receiver_holds_otherwise_is_refused() -> None:
    # The receiver kept an earlier value for that key (a conflict: the first stands),
    # or a restored backup holds another read time: the check tells, nothing decodes.
    old, now = r("000000000001", "10.00"), r("000000000001", "10.25", SLOT + 900)
    data = seal(BatchContent((now,)), book_of(old))
    assert "differ" in unresolved(data, Db((r("000000000001", "10.01"),)))
    moved = Reading(old.meter, old.quantity, old.slot, old.value, old.unit, old.read_at + 0.002)
    assert "differ" in unresolved(data, Db((moved,)))
    # Equal as decimals is not enough: the check is over the text both ends hold.
    assert "differ" in unresolved(data, Db((r("000000000001", "10.0"),)))


def test_a_reference_older_than_the_receivers_latest_still_resolves() -> None:
    # The concentrator missed the last ack: it codes against slot t-2 while the
    # receiver already holds t-1. The key names the slot, so it resolves all the same.
    t2, t1 = r("000000000001", "10.00"), r("000000000001", "10.25", SLOT + 900)
    now = r("000000000001", "10.50", SLOT + 1800)
    got = wire.open_batch(seal(BatchContent((now,)), book_of(t2)), lookup, Db((t2, t1)).resolve)
    assert got[1].readings == (now,)


def test_a_reference_not_older_than_the_series_is_not_used() -> None:
    same = r("000000000001", "10.00")
    db = Db()
    got = wire.open_batch(seal(BatchContent((same,)), book_of(same)), lookup, db.resolve)[1]
    assert got.readings == (same,) and db.asked == []


def test_version_2_ignores_references() -> None:
    old, now = r("000000000001", "10.00"), r("000000000001", "10.25", SLOT + 900)
    data = seal(BatchContent((now,)), book_of(old), version=2)
    assert wire.open_batch(data, lookup)[1].readings == (now,)


def test_reference_book_keeps_the_newest_and_forgets_on_demand() -> None:
    book = ReferenceBook()
    a, b = r("000000000001", "1.0"), r("000000000001", "2.0", SLOT + 900)
    book.learn(latest([b, a]))
    book.learn([a])  # an older ack arriving late does not go back in time
    assert book.usable(0)[("000000000001", "energy_fwd_total")].value == "2.0"
    assert book.usable(SLOT + 901) == {}  # too old
    book.forget()
    assert len(book) == 0


def test_resync_ack_round_trip_and_version_bound() -> None:
    ack = Ack(9, "resync", "1 of 1 reference(s) not held")
    data = wire.seal_ack(ack, concentrator_id=CID, key_id=1, key=KEY, version=3)
    assert wire.open_ack(data, KEY) == ack
    with pytest.raises(ValueError, match="resync ack needs wire version 3"):
        wire.seal_ack(ack, concentrator_id=CID, key_id=1, key=KEY, version=2)
    from contract.wire.ack import mac

    header = wire_header.build_header(wire_header.FLAG_ACK, CID, 1, 9, 2)
    message = header + cbor2.dumps({"seq": 9, "status": "resync"})
    with pytest.raises(WireError, match="bad_layout: ack status 'resync'"):
        wire.open_ack(message + mac(KEY, CID, message), KEY)


# ----------------------------------------------------------- malformed bodies


def envelope(body: bytes, seq: int = 3) -> bytes:
    aad = wire_header.build_header(0, CID, 1, seq, 3)
    aead = AESGCM(wire_header.derive(KEY, CID, wire_header.INFO_UP))
    return aad + aead.encrypt(wire_header.nonce(seq), body, aad)


def coded_fields() -> tuple[list[object], Db]:
    old = (r("000000000001", "10.00"), r("000000000002", "20.00"))
    now = (r("000000000001", "10.25", SLOT + 900), r("000000000002", "20.50", SLOT + 900))
    fields = cbor2.loads(wire_body.encode_body(BatchContent(now), book_of(*old)))
    assert isinstance(fields, list)
    return fields, Db(old)


@pytest.mark.parametrize(
    ("index", "value", "names"),
    [
        (14, b"\x01\x01\x01", "s_ref"),  # zig-zag 1 = -1: a reference after the series
        (15, None, "ref_check"),
        (15, 2**32, "ref_check"),
        (17, [], "values"),
        (17, [b"\x01\x05"], "values[energy_fwd_total]"),
        (10, b"\x01\xff\x00", "s_code"),
        (16, b"\x01\x00", "value_head"),
        (0, 3, "s_count"),
    ],
)
def test_malformed_coded_bodies_name_the_field(index: int, value: object, names: str) -> None:
    fields, db = coded_fields()
    fields[index] = value
    with pytest.raises(WireError) as info:
        wire.open_batch(envelope(cbor2.dumps(fields)), lookup, db.resolve)
    assert info.value.reason == "bad_layout"
    assert names in str(info.value)


def test_a_key_batch_with_a_ref_check_is_refused() -> None:
    fields = cbor2.loads(wire_body.encode_body(BatchContent((r("000000000001", "1.0"),))))
    fields[15] = 7
    with pytest.raises(WireError, match="ref_check: expected null"):
        wire.open_batch(envelope(cbor2.dumps(fields)), lookup, Db().resolve)


def test_a_delta_that_leaves_a_remainder_is_refused() -> None:
    # Reference "10.00" (2 decimals) and a series of 1 decimal: the sender's delta must
    # be a multiple of 10 at 2 decimals; one that is not cannot be a value.
    old, now = r("000000000001", "10.00"), r("000000000001", "10.5", SLOT + 900)
    fields = cbor2.loads(wire_body.encode_body(BatchContent((now,)), book_of(old)))
    fields[17] = [wire_body.pack([51])]
    with pytest.raises(WireError, match="leaves a remainder"):
        wire.open_batch(envelope(cbor2.dumps(fields)), lookup, Db((old,)).resolve)


# ------------------------------------------------------------------ round trips

_decimal = st.builds(
    lambda m, d: str(Decimal(m).scaleb(-d)) if m or not d else "0." + "0" * d,
    st.integers(-(10**12), 10**12),
    st.integers(0, 6),
)
_value = st.one_of(_decimal, _decimal, _decimal, st.sampled_from(["n/a", "007", "-0.0", "1E+3"]))


@st.composite
def _history(draw: st.DrawFn) -> tuple[tuple[Reading, ...], tuple[Reading, ...]]:
    """Readings the receiver committed, and a batch after them (some series new)."""
    meters = draw(st.lists(st.sampled_from(["000000000001", "000000000002", "m-x"]), min_size=1,
                           max_size=3, unique=True))  # fmt: skip
    quantities = draw(st.lists(st.sampled_from(["energy_fwd_total", "voltage_a"]), min_size=1,
                               max_size=2, unique=True))  # fmt: skip
    old: list[Reading] = []
    new: list[Reading] = []
    for m in meters:
        for q in quantities:
            for k in range(draw(st.integers(0, 2))):
                slot = SLOT + k * 900
                old.append(
                    Reading(m, q, slot, draw(_value), "u", slot + draw(st.integers(0, 9000)) / 1e3)
                )
            for k in range(draw(st.integers(0, 4))):
                slot = SLOT + (3 + k * draw(st.integers(1, 2))) * 900
                new.append(Reading(m, q, slot, draw(_value), draw(st.sampled_from(["u", "v"])),
                                   slot + draw(st.integers(-500, 90_000)) / 1e3))  # fmt: skip
    return tuple(old), tuple(dict.fromkeys(new))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_history(), st.booleans())
def test_any_batch_round_trips_against_any_references(
    history: tuple[tuple[Reading, ...], tuple[Reading, ...]], stale: bool
) -> None:
    old, new = history
    # Units may differ within a series key: keep one reading per (meter, quantity, slot).
    new = tuple({(x.meter, x.quantity, x.slot): x for x in new}.values())
    book = ReferenceBook()
    book.learn(old[: len(old) // 2] if stale else old)  # stale: an older reference
    data = seal(BatchContent(new), book.usable(0))
    got = wire.open_batch(data, lookup, Db(old).resolve)[1]
    assert Counter(got.readings) == Counter(
        Reading(x.meter, x.quantity, x.slot, x.value, x.unit, round(x.read_at * 1000) / 1000)
        for x in new
    )


@st.composite
def _live(draw: st.DrawFn) -> tuple[tuple[Reading, ...], tuple[Reading, ...]]:
    """A live batch: one reading per series (the decoder's column-wise path), some
    series with a reference the receiver holds, some without."""
    old: list[Reading] = []
    new: list[Reading] = []
    slot = SLOT + 3 * 900
    for m in range(draw(st.integers(1, 12))):
        meter = f"{m + 1:012d}"
        for q in ("energy_fwd_total", "voltage_a", "current_a", "power_total"):
            if draw(st.booleans()):
                old.append(Reading(meter, q, SLOT, draw(_value), "u", SLOT + 1.5))
            new.append(Reading(meter, q, slot, draw(_value), "u",
                               slot + draw(st.integers(-500, 90_000)) / 1e3))  # fmt: skip
    return tuple(old), tuple(new)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_live(), st.booleans())
def test_live_batches_round_trip_with_and_without_references(
    history: tuple[tuple[Reading, ...], tuple[Reading, ...]], coded: bool
) -> None:
    old, new = history
    book = ReferenceBook()
    book.learn(old)
    data = seal(BatchContent(new), book.usable(0) if coded else None)
    got = wire.open_batch(data, lookup, Db(old).resolve)[1]
    assert Counter(got.readings) == Counter(
        Reading(x.meter, x.quantity, x.slot, x.value, x.unit, round(x.read_at * 1000) / 1000)
        for x in new
    )


# ------------------------------------------------------------ partner predictors


def _meter_slots(meters: int, slots: int, seed: int = 5) -> list[Reading]:
    """Power, voltage and current of each meter that move together (I = P / U)."""
    rng = random.Random(seed)
    out = []
    for m in range(meters):
        base = rng.uniform(0.2, 1.8)
        for k in range(slots):
            slot = SLOT + 900 * k
            p, u = base * rng.gauss(1, 0.1), 220 + rng.gauss(0, 0.5)
            for j, (q, text) in enumerate(
                (("power_total", f"{p:.4f}"), ("voltage_a", f"{u:.1f}"),
                 ("current_a", f"{p * 1000 / u:.3f}"))
            ):  # fmt: skip
                out.append(Reading(f"{m:012d}", q, slot, text, "x", slot + 1 + m + j * 0.1))
    return out


@pytest.mark.parametrize("coded", [False, True])
def test_current_follows_power_and_voltage(coded: bool) -> None:
    readings = _meter_slots(80, 4 if not coded else 2)
    old = [x for x in readings if x.slot == SLOT]
    new = tuple(x for x in readings if x.slot > SLOT) if coded else tuple(readings)
    refs = book_of(*old) if coded else None
    fields = cbor2.loads(wire_body.encode_body(BatchContent(new), refs))
    first, second = (unpack(c, fields[1], "p") for c in fields[22])
    assert any(first) and any(second)  # the current is predicted from two partners
    got = wire.open_batch(seal(BatchContent(new), refs), lookup, Db(tuple(old)).resolve)[1]
    assert Counter(got.readings) == Counter(new)


@pytest.mark.parametrize(
    ("codes", "names"),
    [
        (([0, 2, 0], [0, 0, 0]), "names 2"),  # past the meter's series (other meter)
        (([0, 0, 0], [0, 2, 0]), "second partner and no first"),
        (([2, 0, -2], [0, 0, 0]), "not a partner it can have"),  # a partner's partner
        (([0], [0]), r"s_partner\[0\]"),
    ],
)
def test_malformed_partners_name_the_field(codes: tuple[list[int], list[int]], names: str) -> None:
    batch = (
        *(
            Reading("000000000001", q, SLOT + 900 * k, f"{k + 1}.5", "x", SLOT + 900 * k + 1)
            for q in ("a", "b")
            for k in range(3)
        ),
        Reading("000000000002", "a", SLOT, "1.0", "x", SLOT + 2.0),
    )
    fields = cbor2.loads(wire_body.encode_body(BatchContent(batch)))
    fields[22] = [wire_body.pack(c) for c in codes]
    with pytest.raises(WireError, match=names):
        wire.open_batch(envelope(cbor2.dumps(fields)), lookup, Db().resolve)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(-50, 50), st.integers(-3, 3), st.integers(0, 3)),
        min_size=2,
        max_size=8,
    ),
    st.integers(1, 3),
)
def test_partners_round_trip_with_zeros_and_signs(
    steps: list[tuple[int, int, int]], meters: int
) -> None:
    # Series that are multiples of each other (with noise, zeros and sign changes),
    # so the encoder picks partners and the decoder meets every division it must.
    readings = []
    for m in range(meters):
        for k, (a, noise, dec) in enumerate(steps):
            slot = SLOT + 900 * k
            for q, value in (("a", a), ("b", 3 * a + noise), ("c", a * (noise + 1))):
                text = str(Decimal(value * (m + 1)).scaleb(-dec)) if value else "0"
                readings.append(Reading(f"m{m}", q, slot, text, "x", slot + 1.0 + m))
    old = tuple(x for x in readings if x.slot == SLOT)
    new = tuple(x for x in readings if x.slot > SLOT)
    for batch, refs in ((tuple(readings), None), (new, book_of(*old))):
        got = wire.open_batch(seal(BatchContent(batch), refs), lookup, Db(old).resolve)[1]
        assert Counter(got.readings) == Counter(batch)
