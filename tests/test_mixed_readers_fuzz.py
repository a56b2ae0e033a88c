"""The DL/T 698.45 and 645-1997 readers' answer handling with broken, foreign and random
answers: a clear DriverError naming what is wrong, or values that are the meter's own;
never another exception (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers import dlt645, dlt645_1997, dlt698
from drivers.errors import DriverError, FrameError, MeterError
from drivers.readers import dlt645_1997_values, dlt698_values
from hil_sim.dlt645_1997_meter import Dlt6451997Meter
from hil_sim.dlt698_meter import Dlt698Meter
from hil_sim.model import MeterModel

T0 = dt.datetime(2026, 6, 1, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=8))).timestamp()
ADDRESS = "000000000322"
NAMES = ["energy_fwd", "voltage", "current_a", "power", "power_factor_total", "clock"]
QUANTITIES = [dlt698.lookup(n) for n in NAMES]


def _meter698() -> Dlt698Meter:
    return Dlt698Meter(MeterModel(ADDRESS, seed=7, start=T0))


def _answer(meter: Dlt698Meter, request: bytes) -> bytes:
    decoder = dlt698.Decoder()
    decoder.feed(request)
    frame = decoder.next_frame()
    assert frame is not None
    reply = meter.answer(frame, T0 + 60).reply
    assert reply is not None
    return reply


GOOD = _answer(_meter698(), dlt698.build_get(ADDRESS, *QUANTITIES, piid=5))


def _handle(wire: bytes) -> list[str]:
    """Every frame in ``wire`` through the reader's answer handling; the names read."""
    decoder = dlt698.Decoder()
    decoder.feed(wire)
    names: list[str] = []
    while True:
        try:
            frame = decoder.next_frame()
        except FrameError:
            continue
        if frame is None:
            return names
        try:
            values, _ = dlt698_values(frame, ADDRESS, QUANTITIES, piid=5)
        except DriverError as exc:
            assert str(exc)  # says what is wrong
            continue
        names += [v.quantity for v in values]


def test_the_good_answer_reads_every_element() -> None:
    frame = dlt698.decode_frame(GOOD)
    values, refused = dlt698_values(frame, ADDRESS, QUANTITIES, piid=5)
    assert refused == []
    assert [v.quantity for v in values][:3] == [
        "energy_fwd_total",
        "energy_fwd_t1",
        "energy_fwd_t2",
    ]
    assert {v.unit for v in values if v.quantity.startswith("power_")} >= {"kW"}


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0, max_value=len(GOOD) - 1), st.integers(1, 255))
def test_any_corrupted_byte_is_refused_or_harmless(at: int, xor: int) -> None:
    wire = bytearray(GOOD)
    wire[at] ^= xor
    names = _handle(bytes(wire))
    # The CRCs catch a changed byte; preamble bytes and the end byte are outside them.
    expected = {
        v.quantity for v in dlt698_values(dlt698.decode_frame(GOOD), ADDRESS, QUANTITIES)[0]
    }
    assert set(names) <= expected


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=len(GOOD)))
def test_a_truncated_answer_reads_nothing(cut: int) -> None:
    assert _handle(GOOD[:cut]) == [] or cut == len(GOOD)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise_anything_but_driver_errors(noise: bytes) -> None:
    _handle(noise)
    _handle(noise + GOOD + noise)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_a_valid_frame_with_any_apdu_is_handled(apdu: bytes) -> None:
    """CRCs right, content anything: the APDU parser and the checks must say why."""
    frame = dlt698.Frame(dlt698.ServerAddress(ADDRESS), apdu, from_server=True)
    with pytest.raises(DriverError):
        dlt698_values(frame, ADDRESS, QUANTITIES, piid=5)


def test_answers_to_another_request_are_refused_by_name() -> None:
    meter = _meter698()
    other_piid = dlt698.decode_frame(_answer(meter, dlt698.build_get(ADDRESS, *QUANTITIES, piid=6)))
    with pytest.raises(FrameError, match="PIID serial 6, expected 5"):
        dlt698_values(other_piid, ADDRESS, QUANTITIES, piid=5)
    fewer = dlt698.decode_frame(_answer(meter, dlt698.build_get(ADDRESS, *QUANTITIES[:2], piid=5)))
    with pytest.raises(FrameError, match="2 results for 6 OADs"):
        dlt698_values(fewer, ADDRESS, QUANTITIES, piid=5)
    with pytest.raises(FrameError, match="reply from meter 000000000322, expected 000000000323"):
        dlt698_values(dlt698.decode_frame(GOOD), "000000000323", QUANTITIES, piid=5)
    request = dlt698.decode_frame(dlt698.build_get(ADDRESS, *QUANTITIES, piid=5))
    with pytest.raises(FrameError, match="is a request"):
        dlt698_values(request, ADDRESS, QUANTITIES, piid=5)


def test_a_refused_object_is_named_with_its_dar() -> None:
    unknown = dlt698.OAD(0x2131, 2, 0)  # a monthly voltage-pass rate: not in this meter
    reply = _answer(_meter698(), dlt698.build_get(ADDRESS, QUANTITIES[1].oad, unknown, piid=9))
    frame = dlt698.decode_frame(reply)
    service = dlt698.server_apdu(frame).service
    assert isinstance(service, dlt698.GetResponseNormalList)
    quantities = [QUANTITIES[1], dlt698.Quantity("x", unknown, "x", dlt698.DataType.LONG)]
    values, refused = dlt698_values(frame, ADDRESS, quantities, piid=9)
    assert [v.quantity for v in values] == ["voltage_a", "voltage_b", "voltage_c"]
    [(name, exc)] = refused
    assert name == "x" and isinstance(exc, MeterError)
    assert exc.code == dlt698.DAR.OBJECT_UNDEFINED and "undefined" in exc.description


# ------------------------------------------------------------------ DL/T 645-1997

ENTRIES = list(dlt645_1997.DATA_IDS.values())


@settings(max_examples=500, deadline=None)
@given(st.sampled_from(ENTRIES), st.binary(max_size=24))
def test_1997_value_bytes_are_read_exactly_or_refused(
    entry: dlt645_1997.DataId, raw: bytes
) -> None:
    try:
        values = dlt645_1997_values(ADDRESS, entry, raw)
    except FrameError as exc:
        assert entry.code in str(exc) or "BCD" in str(exc) or "byte" in str(exc)
        return
    assert values and all(v.key == entry.code for v in values)
    if entry.kind == "bcd":
        assert len(values) == 1
        assert dlt645_1997.encode_value(entry, dlt645_1997.decode_value(entry, raw)) == raw


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 30), st.integers(1, 255))
def test_1997_reply_with_a_changed_byte_is_refused_or_harmless(at: int, xor: int) -> None:
    meter = Dlt6451997Meter(MeterModel("000000000123", seed=3, start=T0))
    frame = dlt645.decode_frame(dlt645_1997.build_read("000000000123", 0x901F))
    reply = meter.answer(frame, T0 + 60).reply
    assert reply is not None
    wire = bytearray(reply)
    wire[at % len(wire)] ^= xor
    decoder = dlt645.Decoder()
    decoder.feed(bytes(wire))
    try:
        got = decoder.next_frame()
        if got is None:
            return
        parsed = dlt645_1997.parse_read_reply(got, "000000000123", 0x901F)
        values = dlt645_1997_values("000000000123", dlt645_1997.lookup(0x901F), parsed.value)
    except DriverError:
        return
    assert values[0].quantity == "energy_fwd_total"
