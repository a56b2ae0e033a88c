"""Load-profile codecs: DL/T 645-2007 load records (06000001) and DL/T 698.45 freeze
records read by time range (GET-Request Record, Selector 2), in the style of
test_dlt645.py and test_dlt698.py: worked vectors whose checksums are recomputed by hand,
whole and byte by byte through the decoders, garbage, and hypothesis round trips."""

from __future__ import annotations

import contextlib
import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import dlt645, dlt645_load, dlt698
from drivers.dlt645_load import CLASS_FIELDS, LoadRecord, decode_records, encode_record
from drivers.dlt698 import (
    DAR,
    OAD,
    Data,
    DataType,
    DateTimeS,
    GetResponseRecord,
    ResultRecord,
    ServerApdu,
)
from drivers.dlt698.freeze import (
    INTERVAL_COLUMNS,
    build_freeze_read,
    canonical_columns,
    parse_freeze_records,
    road,
)
from drivers.errors import DriverError, EncodeError, FrameError, MeterError

M = "123456789012"
AT = dt.datetime(2026, 11, 25, 10, 15)

# One record with class 4 only (energy 12345.67 kWh forward, 0 reverse, 1.50 kvarh
# combined reactive 1): A0 A0, LL = 27 bytes from the time to the last AA, the time
# mm hh DD MM YY, three empty classes (AA each), class 4 and its AA, two empty classes,
# CS = sum of A0 .. last AA mod 256 (recomputed below), one E5 (docs/protocols.md §1.9).
RECORD_BODY = bytes.fromhex(
    "A0 A0 1B 15 10 25 11 26 AA AA AA 67 45 23 01 00 00 00 00 50 01 00 00 00 00 00 00 AA AA AA"
)
RECORD = RECORD_BODY + bytes([sum(RECORD_BODY) & 0xFF]) + b"\xe5"
RECORD_VALUE = LoadRecord(
    AT,
    {
        "energy_fwd_total": Decimal("12345.67"),
        "energy_rev_total": Decimal("0.00"),
        "reactive_combined_1_total": Decimal("1.50"),
        "reactive_combined_2_total": Decimal("0.00"),
    },
)


def _frame_cs(frame: bytes) -> int:
    return sum(frame) & 0xFF


def test_worked_record_vector() -> None:
    assert RECORD[-2] == 0xF9  # by hand: 0xA0 + 0xA0 + 0x1B + ... mod 256
    assert decode_records(RECORD) == [RECORD_VALUE]
    assert encode_record(RECORD_VALUE) == RECORD
    assert RECORD_VALUE.classes == {4}


def test_request_frame_vector() -> None:
    """Read 4 records from 2026-11-25 10:15: DI 06000001 sent 01 00 00 06, NN = 04, the
    time mm hh DD MM YY, each data byte + 0x33."""
    data = bytes.fromhex("01 00 00 06 04 15 10 25 11 26")
    body = bytes.fromhex("68 12 90 78 56 34 12 68 11 0A") + bytes((b + 0x33) & 0xFF for b in data)
    want = b"\xfe" * 4 + body + bytes([_frame_cs(body)]) + b"\x16"
    built = dlt645.build_read(M, dlt645_load.DI_GIVEN_TIME, dlt645_load.request_data(AT, 4))
    assert built == want
    frame = dlt645.decode_frame(built[4:])
    assert dlt645_load.parse_request(frame.data[4:]) == (4, AT)


def test_request_limits() -> None:
    with pytest.raises(EncodeError, match="block count 0"):
        dlt645_load.request_data(AT, 0)
    with pytest.raises(EncodeError, match=r"1\.\.99"):
        dlt645_load.request_data(AT, 100)
    with pytest.raises(FrameError, match="6"):
        dlt645_load.parse_request(b"\x01")
    with pytest.raises(FrameError, match="block count 0"):
        dlt645_load.parse_request(bytes.fromhex("00 15 10 25 11 26"))
    with pytest.raises(FrameError, match="not BCD"):
        dlt645_load.parse_request(bytes.fromhex("0A 15 10 25 11 26"))


def test_reply_byte_by_byte_through_the_decoder() -> None:
    """A reply carrying two records, fed one byte at a time, gives one frame whose value
    decodes to both records."""
    second = LoadRecord(AT + dt.timedelta(minutes=15), dict(RECORD_VALUE.values))
    value = RECORD + encode_record(second)
    wire = dlt645.build_reply(M, dlt645.Function.READ_DATA, b"\x01\x00\x00\x06" + value)
    decoder = dlt645.Decoder()
    frames = []
    for i in range(len(wire)):
        decoder.feed(wire[i : i + 1])
        while (f := decoder.next_frame()) is not None:
            frames.append(f)
    assert len(frames) == 1
    reply = dlt645.parse_read_reply(frames[0], M, dlt645_load.DI_GIVEN_TIME)
    assert decode_records(reply.value) == [RECORD_VALUE, second]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b"\xa0\xa1" + b[2:], "expected A0 A0"),
        (lambda b: b[:2], "length byte"),
        (lambda b: b[:20], "runs past"),
        (lambda b: b[:-2] + bytes([b[-2] ^ 1]) + b[-1:], "checksum"),
        (lambda b: b[:-1] + b"\xe4", "ends with E4, expected E5"),
        (lambda b: b[:-1], "runs past"),
    ],
)
def test_bad_records_name_the_problem(mutate: object, message: str) -> None:
    assert callable(mutate)
    with pytest.raises(FrameError, match=message):
        decode_records(mutate(RECORD))


def _with_body(body: bytes) -> bytes:
    head = b"\xa0\xa0" + bytes([len(body)])
    return head + body + bytes([sum(head + body) & 0xFF]) + b"\xe5"


def test_public_request_layout() -> None:
    """The request as an independent concentrator builds it (docs/protocols.md §1.9):
    L = 0x0A, DI 06000001, block count 01, then the start time minute first; here
    2013-06-17 08:45, one block."""
    at = dt.datetime(2013, 6, 17, 8, 45)
    data = bytes.fromhex("01 00 00 06 01 45 08 17 06 13")
    body = bytes.fromhex("68 12 90 78 56 34 12 68 11 0A") + bytes((b + 0x33) & 0xFF for b in data)
    assert dlt645.build_read(M, dlt645_load.DI_GIVEN_TIME, dlt645_load.request_data(at, 1)) == (
        b"\xfe" * 4 + body + bytes([_frame_cs(body)]) + b"\x16"
    )


def test_public_class_1_record_vector() -> None:
    """A class-1-only record laid out as an independent implementation answers 06010001
    (docs/protocols.md §1.9): A0 A0, LL, time mm hh DD MM YY, 17 bytes of voltages,
    currents and frequency, six AA (classes 2..6 empty), CS, E5. Values: 220.1/220.2/
    220.3 V, 1.234/0/-0.500 A, 50.00 Hz at 2026-11-25 10:15; LL = 5 + 17 + 6 = 28 and
    CS recomputed by hand."""
    body = bytes.fromhex(
        "15 10 25 11 26  01 22 02 22 03 22  34 12 00 00 00 00 00 05 80  00 50  AA AA AA AA AA AA"
    )
    raw = b"\xa0\xa0\x1c" + body + b"\x60\xe5"
    assert (0xA0 + 0xA0 + 0x1C + sum(body)) & 0xFF == 0x60  # 0x760: 348 + 1540
    (rec,) = decode_records(raw)
    assert rec.at == AT and rec.classes == {1}
    assert rec.values["voltage_a"] == Decimal("220.1")
    assert rec.values["voltage_c"] == Decimal("220.3")
    assert rec.values["current_a"] == Decimal("1.234")
    assert rec.values["current_c"] == Decimal("-0.500")
    assert rec.values["frequency"] == Decimal("50.00")
    assert encode_record(rec) == raw


def test_record_the_meter_marks_bad_is_skipped() -> None:
    """E0 E0 in place of A0 A0: the meter says this record is not correct; it is checked
    like any other and left out, and the records around it still decode."""
    bad = b"\xe0\xe0" + RECORD[2:-2]
    bad += bytes([sum(bad) & 0xFF]) + b"\xe5"
    assert decode_records(RECORD + bad + RECORD) == [RECORD_VALUE, RECORD_VALUE]
    with pytest.raises(FrameError, match="load record 2: checksum"):
        decode_records(RECORD + bad[:-2] + bytes([bad[-2] ^ 1]) + b"\xe5")


def test_class_layout_errors() -> None:
    stamp = bytes.fromhex("15 10 25 11 26")
    # class 1 is 17 bytes, then AA: 16 bytes then AA is refused
    with pytest.raises(FrameError, match="class 1 is not 17 bytes"):
        decode_records(_with_body(stamp + b"\x00" * 16 + b"\xaa" * 6))
    with pytest.raises(FrameError, match="separator of class 6"):
        decode_records(_with_body(stamp + b"\x00" * 17 + b"\xaa" * 5))
    with pytest.raises(FrameError, match="after class 6"):
        decode_records(_with_body(stamp + b"\xaa" * 6 + b"\x00"))
    with pytest.raises(FrameError, match="at least"):
        decode_records(_with_body(stamp))
    energy = bytes.fromhex("6A 45 23 01") + b"\x00" * 12
    with pytest.raises(FrameError, match=r"energy_fwd_total .* byte 0 is 0x6A, not BCD"):
        decode_records(_with_body(stamp + b"\xaa" * 3 + energy + b"\xaa" * 3))
    with pytest.raises(FrameError, match=r"month must be in 1\.\.12"):
        decode_records(_with_body(bytes.fromhex("15 10 25 13 26") + b"\xaa" * 6))


def test_encode_refuses_a_partial_class() -> None:
    with pytest.raises(EncodeError, match="energy_rev_total missing"):
        encode_record(LoadRecord(AT, {"energy_fwd_total": Decimal("1.00")}))


def _value(kind: str, length: int, decimals: int) -> st.SearchStrategy[Decimal]:
    digits = length * 2
    top = 10**digits - 1 if kind == "bcd" else 8 * 10 ** (digits - 1) - 1
    low = 0 if kind == "bcd" else -top
    return st.integers(low, top).map(lambda n: Decimal(n).scaleb(-decimals))


@st.composite
def records(draw: st.DrawFn) -> LoadRecord:
    at = draw(st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31, 23, 59)))
    classes = draw(st.sets(st.integers(1, 6)))
    values = {
        f.name: draw(_value(f.kind, f.length, f.decimals))
        for n in classes
        for f in CLASS_FIELDS[n - 1]
    }
    return LoadRecord(at.replace(second=0, microsecond=0), values)


@given(st.lists(records(), max_size=4))
def test_round_trip(recs: list[LoadRecord]) -> None:
    raw = b"".join(encode_record(r) for r in recs)
    back = decode_records(raw)
    assert [r.at for r in back] == [r.at for r in recs]
    for got, want in zip(back, recs, strict=True):
        assert got.values == want.values  # Decimal equality: -0 == 0


@given(records(), st.data())
def test_truncated_or_garbled_records_raise_frame_errors(
    rec: LoadRecord, data: st.DataObject
) -> None:
    raw = encode_record(rec)
    cut = data.draw(st.integers(1, len(raw) - 1))
    with pytest.raises(FrameError):
        decode_records(raw[:cut])
    pos = data.draw(st.integers(0, len(raw) - 1))
    flip = data.draw(st.integers(1, 255))
    garbled = raw[:pos] + bytes([raw[pos] ^ flip]) + raw[pos + 1 :]
    # A garbled record is refused, or (a flip the checksum cannot see) decoded: never
    # any other exception.
    with contextlib.suppress(FrameError):
        decode_records(garbled)


@given(st.binary(max_size=300))
@settings(max_examples=300)
def test_garbage_never_raises_anything_but_frame_errors(raw: bytes) -> None:
    with contextlib.suppress(FrameError):
        decode_records(raw)


# --------------------------------------------------------------------------- 698.45

SERVER = "000000000001"
START = dt.datetime(2026, 11, 25, 10, 0)
END = dt.datetime(2026, 11, 25, 11, 0)


def test_freeze_read_request_layout() -> None:
    """GET-Request Record (05 03 PIID), OAD 5002 0200, RSD Selector 2 on 2021 0200 with
    date_time_s start and end (tag 1C) and TI 15 minutes (tag 54, unit 01, 00 0F), then
    the RCSD: the freeze time and the value columns, each CSD choice 0 (OAD)."""
    wire = build_freeze_read(SERVER, START, END, piid=7)
    frame = dlt698.decode_frame(wire[4:])
    apdu = frame.user_data
    assert apdu[:3] == bytes.fromhex("05 03 07")
    assert apdu[3:7] == bytes.fromhex("50 02 02 00")
    assert apdu[7:12] == bytes.fromhex("02 20 21 02 00")
    assert apdu[12:20] == bytes.fromhex("1C 07 EA 0B 19 0A 00 00")
    assert apdu[20:28] == bytes.fromhex("1C 07 EA 0B 19 0B 00 00")
    assert apdu[28:32] == bytes.fromhex("54 01 00 0F")
    assert apdu[32] == len(INTERVAL_COLUMNS)
    assert apdu[33:38] == bytes.fromhex("00 20 21 02 00")
    assert road(dlt698.MINUTE_FREEZE).related == INTERVAL_COLUMNS


def test_freeze_read_refuses_bad_requests() -> None:
    with pytest.raises(EncodeError, match="5002 0200 or 5004 0200"):
        build_freeze_read(SERVER, START, END, record=OAD(0x5003, 2, 0))
    with pytest.raises(EncodeError, match="freeze time"):
        build_freeze_read(SERVER, START, END, columns=(OAD(0x0010, 2, 0),))
    with pytest.raises(EncodeError, match="empty"):
        build_freeze_read(SERVER, END, START)
    assert canonical_columns(["energy_fwd_total", "voltage_a", "power_total"]) == (
        dlt698.FREEZE_TIME,
        OAD(0x0010, 2, 0),
        OAD(0x2000, 2, 0),
        OAD(0x2004, 2, 0),
    )
    with pytest.raises(KeyError, match="meter_time"):
        canonical_columns(["meter_time"])


def _reply(result: ResultRecord) -> dlt698.Frame:
    user = ServerApdu(GetResponseRecord(1, result)).encode()
    wire = dlt698.encode_frame(
        dlt698.Frame(dlt698.ServerAddress(SERVER), user, 0, from_server=True), preamble=0
    )
    return dlt698.decode_frame(wire)


def _row(at: dt.datetime, kwh: int, watts: int) -> tuple[Data, ...]:
    energy = dlt698.array(*(Data(DataType.DOUBLE_LONG_UNSIGNED, kwh) for _ in range(5)))
    power = dlt698.array(*(Data(DataType.DOUBLE_LONG, watts) for _ in range(4)))
    return (Data(DataType.DATE_TIME_S, DateTimeS.from_datetime(at)), energy, power)


COLUMNS = (dlt698.FREEZE_TIME, OAD(0x0010, 2, 0), OAD(0x2004, 2, 0))


def test_freeze_rows_typed_and_canonical() -> None:
    rows = (_row(START, 1234567, 12345), _row(START + dt.timedelta(minutes=15), 1234600, -5))
    got = parse_freeze_records(_reply(ResultRecord(dlt698.MINUTE_FREEZE, COLUMNS, rows)))
    assert [r.at for r in got] == [START, START + dt.timedelta(minutes=15)]
    assert got[0].values["energy_fwd_total"] == ("12345.67", "kWh")
    assert got[0].values["power_total"] == ("1.2345", "kW")  # W, scaler -1, stored in kW
    assert got[1].values["power_a"] == ("-0.0005", "kW")


def test_freeze_answers_without_data() -> None:
    empty = ResultRecord(dlt698.MINUTE_FREEZE, COLUMNS, ())
    assert parse_freeze_records(_reply(empty)) == []
    refused = ResultRecord(dlt698.MINUTE_FREEZE, COLUMNS, DAR.OBJECT_NOT_EXIST)
    with pytest.raises(MeterError, match="does not exist"):
        parse_freeze_records(_reply(refused))
    other = ResultRecord(dlt698.DAILY_FREEZE, COLUMNS, ())
    with pytest.raises(FrameError, match="expected 5002"):
        parse_freeze_records(_reply(other))
    no_time = ResultRecord(dlt698.MINUTE_FREEZE, COLUMNS[1:], ())
    with pytest.raises(FrameError, match="freeze-time column"):
        parse_freeze_records(_reply(no_time))
    bad = ResultRecord(
        dlt698.MINUTE_FREEZE, COLUMNS, ((Data(DataType.LONG, 3), *_row(START, 1, 1)[1:]),)
    )
    with pytest.raises(FrameError, match="record row 0"):
        parse_freeze_records(_reply(bad))


@given(
    st.lists(
        st.tuples(
            st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31)),
            st.integers(0, 2**32 - 1),
            st.integers(-(2**31), 2**31 - 1),
        ),
        max_size=5,
    )
)
def test_freeze_rows_round_trip(rows: list[tuple[dt.datetime, int, int]]) -> None:
    table = tuple(_row(at.replace(microsecond=0), kwh, w) for at, kwh, w in rows)
    got = parse_freeze_records(_reply(ResultRecord(dlt698.MINUTE_FREEZE, COLUMNS, table)))
    assert [r.at for r in got] == [at.replace(microsecond=0) for at, _, _ in rows]
    for rec, (_, kwh, w) in zip(got, rows, strict=True):
        assert Decimal(rec.values["energy_fwd_t3"][0]) == Decimal(kwh).scaleb(-2)
        assert Decimal(rec.values["power_b"][0]) == Decimal(w).scaleb(-4)


@given(st.binary(max_size=200))
@settings(max_examples=200)
def test_freeze_garbage_apdus_raise_driver_errors(user: bytes) -> None:
    wire = dlt698.encode_frame(
        dlt698.Frame(dlt698.ServerAddress(SERVER), user, 0, from_server=True), preamble=0
    )
    with contextlib.suppress(DriverError):
        parse_freeze_records(dlt698.decode_frame(wire))


# --------------------------------------------------------------------------- simulators


def test_645_simulator_answers_from_its_memory_with_follow_ups() -> None:
    from hil_sim.dlt645_meter import Dlt645Meter
    from hil_sim.model import MeterModel

    t0 = 1_780_000_200 // 900 * 900
    model = MeterModel(M, 3, start=t0)
    meter = Dlt645Meter(model)
    now = t0 + 4 * 3600
    model.advance(now)
    first = model.intervals[0]
    di = dlt645_load.DI_GIVEN_TIME

    def ask(wire: bytes) -> dlt645.Frame:
        answer = meter.answer(dlt645.decode_frame(wire[4:]), now)
        assert answer.reply is not None
        return dlt645.decode_frame(answer.reply)

    reply = dlt645.parse_read_reply(
        ask(dlt645.build_read(M, di, dlt645_load.request_data(first.at, 5))), M, di
    )
    raw, seq = reply.value, 0
    while reply.more_follows:
        seq += 1
        reply = dlt645.parse_read_reply(ask(dlt645.build_read_follow_up(M, di, seq)), M, di)
        assert reply.seq == seq
        raw += reply.value
    recs = decode_records(raw)
    assert seq >= 2  # five records of classes 1-4 do not fit one frame
    assert [r.at for r in recs] == [i.at for i in list(model.intervals)[:5]]
    assert recs[0].values["energy_fwd_total"] == first.energy_fwd[0]
    assert recs[0].classes == {1, 2, 3, 4}
    # a start after the newest record: "no requested data"
    later = model.intervals[-1].at + dt.timedelta(minutes=15)
    frame = ask(dlt645.build_read(M, di, dlt645_load.request_data(later, 1)))
    with pytest.raises(MeterError) as err:
        dlt645.parse_read_reply(frame, M, di)
    assert err.value.code & dlt645.ErrorBits.NO_DATA


def test_698_simulator_answers_minute_freezes_and_no_rows_outside_memory() -> None:
    from hil_sim.dlt698_meter import Dlt698Meter
    from hil_sim.model import MeterModel

    t0 = 1_780_000_200 // 900 * 900
    model = MeterModel(SERVER, 4, start=t0)
    meter = Dlt698Meter(model)
    now = t0 + 3 * 3600
    model.advance(now)
    recs = list(model.intervals)
    wire = build_freeze_read(SERVER, recs[1].at, recs[4].at)
    answer = meter.answer(dlt698.decode_frame(wire[4:]), now)
    assert answer.reply is not None
    got = parse_freeze_records(dlt698.decode_frame(answer.reply), address=SERVER)
    assert [r.at for r in got] == [r.at for r in recs[1:4]]
    assert got[0].values["energy_fwd_total"] == (str(recs[1].energy_fwd[0]), "kWh")
    told = {(t.quantity, t.t): t.value for t in answer.truth}
    assert told[("energy_fwd_total", recs[1].t)] == str(recs[1].energy_fwd[0])
    before = recs[0].at - dt.timedelta(days=1)
    wire = build_freeze_read(SERVER, before, before + dt.timedelta(hours=1))
    answer = meter.answer(dlt698.decode_frame(wire[4:]), now)
    assert answer.reply is not None
    assert parse_freeze_records(dlt698.decode_frame(answer.reply)) == []


def test_698_simulator_answers_daily_freezes_by_time_range() -> None:
    from hil_sim.dlt698_meter import Dlt698Meter
    from hil_sim.model import MeterModel

    t0 = 1_780_000_200 // 900 * 900
    model = MeterModel(SERVER, 5, start=t0)
    meter = Dlt698Meter(model)
    freezes = list(reversed(model.freezes))[-4:]  # the last four days, oldest first
    lo, hi = freezes[0].at, freezes[-1].at + dt.timedelta(minutes=1)
    columns = (dlt698.FREEZE_TIME, OAD(0x0010, 2, 0))
    wire = build_freeze_read(SERVER, lo, hi, columns, record=dlt698.DAILY_FREEZE, interval=None)
    answer = meter.answer(dlt698.decode_frame(wire[4:]), t0)
    assert answer.reply is not None
    got = parse_freeze_records(
        dlt698.decode_frame(answer.reply), address=SERVER, record=dlt698.DAILY_FREEZE
    )
    assert [r.at for r in got] == [f.at for f in freezes]
    assert [r.values["energy_fwd_total"][0] for r in got] == [str(f.energy_fwd[0]) for f in freezes]
    told = {t.value for t in answer.truth if t.quantity == "frozen_daily_energy_fwd_total"}
    assert told == {str(f.energy_fwd[0]) for f in freezes}
