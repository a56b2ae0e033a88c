"""Tests for drivers.modbus_rtu: vectors from the standard, round trips, fuzzing.

Sources of the vectors (none of them is produced by the encoder under test):
  [SL]  MODBUS over Serial Line V1.02: CRC-16/MODBUS, RTU framing.
  [AP]  MODBUS Application Protocol V1.1b3: the example PDUs in §6.3, §6.4, §6.6, §6.12.
  docs/protocols.md §2.5: the SDM read / exception frames, worked out and checked by hand.
"""

from __future__ import annotations

import itertools
import math
import struct
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import EncodeError, FrameError, MeterError
from drivers.modbus_rtu import (
    METER_MODELS,
    SDM120,
    SDM630,
    Decoder,
    ExceptionCode,
    ExceptionResponse,
    Frame,
    FunctionCode,
    ReadRequest,
    ReadResponse,
    Register,
    RequestRejected,
    Role,
    WriteMultipleRequest,
    WriteMultipleResponse,
    WriteSingle,
    char_time,
    check_response,
    crc16,
    decode_request,
    decode_response,
    describe_exception,
    encode,
    exception_response,
    float32_to_registers,
    plan_reads,
    read_holding,
    read_input,
    read_response,
    registers_to_float32,
    reply_length,
    t1_5,
    t3_5,
    unpack_floats,
    wire_time,
    write_multiple,
    write_multiple_response,
    write_single,
    write_single_response,
)

HOLDING = FunctionCode.READ_HOLDING_REGISTERS
INPUT = FunctionCode.READ_INPUT_REGISTERS

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def ref_crc(data: bytes) -> int:
    """Bitwise CRC-16/MODBUS straight from [SL] Appendix B §6.2.2 (poly 0xA001, init
    0xFFFF, shift right, no final XOR). Deliberately independent of the table-driven
    ``crc16`` in the module: the vectors below get their CRC from here, not from the
    encoder."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def with_ref_crc(hex_body: str) -> bytes:
    body = bytes.fromhex(hex_body)
    return body + ref_crc(body).to_bytes(2, "little")


def drain(decoder: Decoder, bound: int = 10_000) -> tuple[list[Frame], list[FrameError]]:
    """Pull frames until the decoder needs more bytes; count the errors on the way."""
    frames: list[Frame] = []
    errors: list[FrameError] = []
    for _ in range(bound):
        try:
            frame = decoder.next_frame()
        except FrameError as error:
            errors.append(error)
            continue
        if frame is None:
            return frames, errors
        frames.append(frame)
    raise AssertionError(f"decoder did not settle within {bound} calls")


# ----------------------------------------------------------------------------- CRC


def test_crc_check_value() -> None:
    # The catalogue check value of CRC-16/MODBUS (CRC RevEng), [SL] Appendix B.
    assert crc16(b"123456789") == 0x4B37
    assert ref_crc(b"123456789") == 0x4B37


def test_crc_of_empty_input_is_the_initial_value() -> None:
    assert crc16(b"") == 0xFFFF


@FAST
@given(st.binary(max_size=300))
def test_crc_matches_bitwise_reference(data: bytes) -> None:
    assert crc16(data) == ref_crc(data)
    assert crc16(bytearray(data)) == crc16(memoryview(data))


# ----------------------------------------------------------------------------- vectors

# (role that decodes it, wire bytes, frame). Hex literals were typed from the sources
# named in each comment; the 230 V reply's CRC comes from ref_crc above.
VECTORS: list[tuple[Role, bytes, Frame]] = [
    # docs/protocols.md §2.5: read 1 holding register at 0 from slave 1; CRC 84 0A by hand.
    ("server", bytes.fromhex("01 03 00 00 00 01 84 0A"), ReadRequest(1, HOLDING, 0, 1)),
    # docs/protocols.md §2.5: SDM total active energy, input registers 0x0156..0x0157.
    ("server", bytes.fromhex("01 04 01 56 00 02 90 27"), ReadRequest(1, INPUT, 0x0156, 2)),
    # docs/protocols.md §2.5 / [AP] §7: function 04 | 0x80, exception 02 ILLEGAL DATA ADDRESS.
    (
        "client",
        bytes.fromhex("01 84 02 C2 C1"),
        ExceptionResponse(1, INPUT, ExceptionCode.ILLEGAL_DATA_ADDRESS),
    ),
    # docs/protocols.md §2.5: reply with 230.0 V = IEEE-754 0x43660000; CRC from ref_crc.
    ("client", with_ref_crc("01 04 04 43 66 00 00"), ReadResponse(1, INPUT, (0x4366, 0x0000))),
    # [AP] §6.3 example PDUs (registers 108..110) on slave 0x11, full ADUs as published on
    # simplymodbus.ca; CRCs re-checked with ref_crc in test_extra_vectors_crc.
    ("server", bytes.fromhex("11 03 00 6B 00 03 76 87"), ReadRequest(0x11, HOLDING, 0x6B, 3)),
    (
        "client",
        bytes.fromhex("11 03 06 02 2B 00 00 00 64 C8 BA"),
        ReadResponse(0x11, HOLDING, (0x022B, 0x0000, 0x0064)),
    ),
    # [AP] §6.4 example: read input register 9.
    ("server", bytes.fromhex("11 04 00 08 00 01 B2 98"), ReadRequest(0x11, INPUT, 8, 1)),
    ("client", bytes.fromhex("11 04 02 00 0A F8 F4"), ReadResponse(0x11, INPUT, (0x000A,))),
    # [AP] §6.6 example: write 0x0003 to register 2 (address 1); the reply is an echo.
    ("server", bytes.fromhex("11 06 00 01 00 03 9A 9B"), WriteSingle(0x11, 1, 3)),
    ("client", bytes.fromhex("11 06 00 01 00 03 9A 9B"), WriteSingle(0x11, 1, 3)),
    # [AP] §6.12 example: write 0x000A, 0x0102 to registers 2..3.
    (
        "server",
        bytes.fromhex("11 10 00 01 00 02 04 00 0A 01 02 C6 F0"),
        WriteMultipleRequest(0x11, 1, (0x000A, 0x0102)),
    ),
    ("client", bytes.fromhex("11 10 00 01 00 02 12 98"), WriteMultipleResponse(0x11, 1, 2)),
]
VECTOR_IDS = [f"{role}-{wire.hex()}" for role, wire, _ in VECTORS]

# Bytes that cannot start a frame in either role, each rejected at once (so the decoder
# never waits for a long false frame): slaves 255, 254, 248 are reserved; 00 00 is a
# broadcast with function 0, then 00 01 a broadcast with unknown function 1.
GARBAGE = bytes.fromhex("FF FE F8 00 00")


def test_extra_vectors_crc() -> None:
    for _, wire, _ in VECTORS:
        assert ref_crc(wire[:-2]).to_bytes(2, "little") == wire[-2:]
        assert ref_crc(wire) == 0  # CRC-16/MODBUS residue of a good frame


def test_float_vector_is_230_volts() -> None:
    wire = with_ref_crc("01 04 04 43 66 00 00")
    assert wire.hex(" ") == "01 04 04 43 66 00 00 0e 1f"
    frame = decode_response(wire)
    assert isinstance(frame, ReadResponse)
    assert registers_to_float32(*frame.registers) == 230.0


def decode_whole(role: Role, wire: bytes) -> Frame:
    return decode_request(wire) if role == "server" else decode_response(wire)


@pytest.mark.parametrize(("role", "wire", "frame"), VECTORS, ids=VECTOR_IDS)
class TestVectors:
    def test_encode(self, role: Role, wire: bytes, frame: Frame) -> None:
        assert encode(frame) == wire

    def test_decode_whole(self, role: Role, wire: bytes, frame: Frame) -> None:
        assert decode_whole(role, wire) == frame
        decoder = Decoder(role)
        decoder.feed(wire)
        assert decoder.next_frame() == frame
        assert decoder.next_frame() is None
        assert decoder.buffered == 0
        assert decoder.discarded == 0

    def test_one_byte_at_a_time(self, role: Role, wire: bytes, frame: Frame) -> None:
        decoder = Decoder(role)
        for byte in wire[:-1]:
            decoder.feed(bytes([byte]))
            # Incomplete is not invalid: no error, just "need more".
            assert decoder.next_frame() is None
        decoder.feed(wire[-1:])
        assert decoder.next_frame() == frame
        assert decoder.discarded == 0

    def test_split_everywhere(self, role: Role, wire: bytes, frame: Frame) -> None:
        for cut in range(1, len(wire)):
            decoder = Decoder(role)
            decoder.feed(wire[:cut])
            assert decoder.next_frame() is None
            decoder.feed(wire[cut:])
            assert decoder.next_frame() == frame, cut

    def test_leading_garbage(self, role: Role, wire: bytes, frame: Frame) -> None:
        decoder = Decoder(role)
        decoder.feed(GARBAGE + wire)
        frames, errors = drain(decoder)
        assert frames == [frame]
        assert len(errors) == len(GARBAGE)
        assert decoder.discarded == len(GARBAGE)
        assert all(error.offset in (0, 1) for error in errors)

    def test_trailing_garbage(self, role: Role, wire: bytes, frame: Frame) -> None:
        decoder = Decoder(role)
        decoder.feed(wire + GARBAGE)
        frames, errors = drain(decoder)
        assert frames == [frame]
        # The server role keeps the final 00 waiting: a broadcast write could start so.
        assert len(errors) + decoder.buffered == len(GARBAGE)
        with pytest.raises(FrameError, match="trailing bytes"):
            decode_whole(role, wire + GARBAGE)

    def test_truncated_is_incomplete_not_invalid(
        self, role: Role, wire: bytes, frame: Frame
    ) -> None:
        with pytest.raises(FrameError, match="incomplete ADU"):
            decode_whole(role, wire[:-1])

    def test_every_single_bit_flip_is_caught(self, role: Role, wire: bytes, frame: Frame) -> None:
        # CRC-16 detects all single-bit errors; the header checks may catch them first.
        for position in range(len(wire)):
            for bit in range(8):
                mutated = bytearray(wire)
                mutated[position] ^= 1 << bit
                try:
                    decoded = decode_whole(role, bytes(mutated))
                except FrameError:
                    continue
                raise AssertionError(f"flip of byte {position} bit {bit} gave {decoded}")


def test_bad_crc_names_the_field_and_offset() -> None:
    decoder = Decoder("server")
    decoder.feed(bytes.fromhex("01 03 00 00 00 01 84 0B"))
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert "CRC mismatch" in caught.value.reason
    assert "0x0B84" in caught.value.reason and "0x0A84" in caught.value.reason
    assert caught.value.offset == 6
    assert caught.value.raw == bytes.fromhex("01 03 00 00 00 01 84 0B")
    # Exactly one byte dropped, so the next call looks at the frame one byte later.
    assert decoder.discarded == 1
    assert decoder.buffered == 7


@pytest.mark.parametrize(
    ("role", "wire", "offset", "words"),
    [
        ("client", "00 03", 0, "broadcast"),
        ("server", "F8 03", 0, "reserved"),
        ("client", "01 07", 1, "function code 0x07"),
        ("server", "01 83", 1, "exception bit"),
        ("server", "00 03", 0, "broadcast"),
        ("client", "01 80", 1, "function 0"),
        ("client", "01 03 03", 2, "byte count 3"),
        ("client", "01 04 00", 2, "byte count 0"),
        ("client", "01 04 FC", 2, "byte count 252"),
        ("server", "01 10 00 00 00 00 00", 4, "quantity 0"),
        ("server", "01 10 00 00 00 7C F8", 4, "quantity 124"),
        ("server", "01 10 00 00 00 02 05", 6, "byte count 5"),
    ],
)
def test_header_errors_are_immediate_and_specific(
    role: Role, wire: str, offset: int, words: str
) -> None:
    # These are decided from the header alone: the decoder must not wait for more bytes.
    decoder = Decoder(role)
    decoder.feed(bytes.fromhex(wire))
    with pytest.raises(FrameError) as caught:
        decoder.next_frame()
    assert caught.value.offset == offset
    assert words in str(caught.value)
    assert decoder.discarded == 1


def test_crc_valid_but_illegal_request_is_rejected_with_the_exception_to_send() -> None:
    decoder = Decoder("server")
    decoder.feed(with_ref_crc("05 04 00 00 00 7E") + read_input(5, 0, 2))
    with pytest.raises(RequestRejected) as caught:
        decoder.next_frame()
    rejected = caught.value
    assert (rejected.slave, rejected.function, rejected.code) == (
        5,
        INPUT,
        ExceptionCode.ILLEGAL_DATA_VALUE,
    )
    assert rejected.offset == 4 and "quantity 126" in rejected.reason
    # Its CRC proves where it ends, so the whole frame goes, and the next one is intact.
    assert decoder.discarded == 8
    assert decoder.next_frame() == ReadRequest(5, INPUT, 0, 2)

    with pytest.raises(RequestRejected) as caught:
        decode_request(with_ref_crc("05 03 FF FF 00 02"))
    assert caught.value.code == ExceptionCode.ILLEGAL_DATA_ADDRESS
    with pytest.raises(RequestRejected) as caught:
        decode_request(with_ref_crc("00 10 FF FF 00 02 04 00 01 00 02"))
    assert caught.value.slave == 0  # broadcast: the simulator must stay silent


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        ("01 10 00 00 00 00", "quantity 0"),
        ("01 10 FF FF 00 02", "runs past 0xFFFF"),
        ("01 83 00", "exception code 0"),
    ],
)
def test_crc_valid_but_illegal_reply(wire: str, words: str) -> None:
    decoder = Decoder("client")
    frame = with_ref_crc(wire)
    decoder.feed(frame)
    with pytest.raises(FrameError, match=words):
        decoder.next_frame()
    assert decoder.discarded == len(frame)


def test_unknown_exception_code_is_kept_as_int() -> None:
    frame = decode_response(with_ref_crc("02 83 42"))
    assert frame == ExceptionResponse(2, HOLDING, 0x42)
    assert isinstance(frame, ExceptionResponse) and not isinstance(frame.code, ExceptionCode)
    # Replies to functions we do not frame ourselves are still well-formed exceptions.
    assert decode_response(with_ref_crc("02 81 01")) == ExceptionResponse(
        2, 1, ExceptionCode.ILLEGAL_FUNCTION
    )


def test_reset_recovers_from_a_truncated_frame() -> None:
    decoder = Decoder("client")
    # The head of a 255-byte reply, cut off: without timing the decoder must wait for it.
    decoder.feed(bytes.fromhex("01 03 FA 00 01"))
    good = read_response(1, HOLDING, [7])
    decoder.feed(good)
    assert decoder.next_frame() is None
    # The transport saw a t3.5 silence: the partial frame is dead.
    decoder.reset()
    assert decoder.buffered == 0
    assert decoder.discarded == 5 + len(good)
    decoder.feed(good)
    assert decoder.next_frame() == ReadResponse(1, HOLDING, (7,))


def test_buffer_cap_keeps_newest_bytes() -> None:
    decoder = Decoder("client", max_buffer=256)
    good = read_response(1, INPUT, [1, 2])
    decoder.feed(bytes(300) + good)
    assert decoder.buffered == 256
    assert decoder.discarded == 300 + len(good) - 256
    frames, errors = drain(decoder)
    assert frames == [ReadResponse(1, INPUT, (1, 2))]
    assert len(errors) == 256 - len(good)


def test_decoder_arguments() -> None:
    with pytest.raises(EncodeError, match="max_buffer=100"):
        Decoder("client", max_buffer=100)
    with pytest.raises(EncodeError, match="role='master'"):
        Decoder("master")  # type: ignore[arg-type]


def test_decode_one_rejects_empty_input() -> None:
    with pytest.raises(FrameError, match="got 0 bytes"):
        decode_response(b"")


# ----------------------------------------------------------------------------- builders


def test_builders_match_encode() -> None:
    assert read_holding(1, 0, 1) == bytes.fromhex("01 03 00 00 00 01 84 0A")
    assert read_input(1, 0x156, 2) == bytes.fromhex("01 04 01 56 00 02 90 27")
    assert write_single(0x11, 1, 3) == bytes.fromhex("11 06 00 01 00 03 9A 9B")
    assert write_single_response(0x11, 1, 3) == bytes.fromhex("11 06 00 01 00 03 9A 9B")
    assert write_multiple(0x11, 1, [0x000A, 0x0102]) == bytes.fromhex(
        "11 10 00 01 00 02 04 00 0A 01 02 C6 F0"
    )
    assert write_multiple_response(0x11, 1, 2) == bytes.fromhex("11 10 00 01 00 02 12 98")
    assert read_response(1, 4, [0x4366, 0]) == with_ref_crc("01 04 04 43 66 00 00")
    assert exception_response(1, INPUT, ExceptionCode.ILLEGAL_DATA_ADDRESS) == bytes.fromhex(
        "01 84 02 C2 C1"
    )
    # Broadcast writes are legal (and unanswered).
    assert write_single(0, 1, 3)[0] == 0
    assert write_multiple(0, 1, [1])[0] == 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: read_holding(248, 0, 1), r"slave=248 \(0xF8\): expected 1\.\.247"),
        (lambda: read_input(0, 0, 1), r"slave=0: expected 1\.\.247 \(broadcast 0 is only"),
        (lambda: read_input(1, 0, 0), r"count=0: expected 1\.\.125"),
        (lambda: read_input(1, 0, 126), r"count=126 \(0x7E\): expected 1\.\.125"),
        (lambda: read_input(1, -1, 1), r"address=-1: expected 0\.\.65535"),
        (lambda: read_input(1, 0x10000, 1), r"address=65536 \(0x10000\): expected 0\.\.65535"),
        (lambda: read_input(1, 0xFFFF, 2), r"address=65535 \(0xFFFF\) with count=2: .*0x10001"),
        (lambda: write_single(248, 0, 0), r"slave=248 \(0xF8\): expected 0\.\.247"),
        (lambda: write_single(1, 0, 0x10000), r"value=65536 \(0x10000\): expected a 16-bit"),
        (lambda: write_single(1, 0, -1), r"value=-1: expected a 16-bit"),
        (lambda: write_single_response(0, 0, 0), r"slave=0: expected 1\.\.247"),
        (lambda: write_multiple(1, 0, []), r"values has 0 registers: expected 1\.\.123"),
        (lambda: write_multiple(1, 0, [0] * 124), r"values has 124 registers: expected 1\.\.123"),
        (lambda: write_multiple(1, 0, [1, 0x10000]), r"values\[1\]=65536 .*16-bit"),
        (lambda: write_multiple(1, 0xFFFF, [1, 2]), r"address=65535 .*count=2"),
        (lambda: write_multiple_response(1, 0, 124), r"count=124 .*expected 1\.\.123"),
        (lambda: read_response(1, 6, [1]), r"function=6: expected READ_HOLDING_REGISTERS"),
        (lambda: read_response(1, 3, []), r"registers has 0 registers"),
        (lambda: read_response(0, 3, [1]), r"slave=0: expected 1\.\.247"),
        (lambda: exception_response(1, 0x83, 2), r"function=131 \(0x83\): expected a request"),
        (lambda: exception_response(1, 3, 0), r"code=0: expected an exception code 1\.\.255"),
        (lambda: read_input(1, True, 1), r"address=True: expected"),
    ],
)
def test_encode_errors_name_field_value_and_expectation(
    build: Callable[[], bytes], message: str
) -> None:
    with pytest.raises(EncodeError, match=message):
        build()


def test_encode_rejects_foreign_objects_and_bad_read_function() -> None:
    with pytest.raises(EncodeError, match="expected one of the Frame dataclasses"):
        encode("01 03")  # type: ignore[arg-type]
    with pytest.raises(EncodeError, match="function=16"):
        encode(ReadRequest(1, FunctionCode.WRITE_MULTIPLE_REGISTERS, 0, 1))
    with pytest.raises(EncodeError, match="expected a tuple"):
        encode(ReadResponse(1, HOLDING, 5))  # type: ignore[arg-type]


def test_encode_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        read_input(1, 0, 0)


def test_reply_length() -> None:
    assert reply_length(ReadRequest(1, INPUT, 0x156, 2)) == 9
    assert reply_length(WriteSingle(1, 0, 0)) == 8
    assert reply_length(WriteMultipleRequest(1, 0, (1, 2))) == 8
    with pytest.raises(EncodeError):
        reply_length(WriteMultipleResponse(1, 0, 2))


# ----------------------------------------------------------------------------- exceptions


def test_exception_codes() -> None:
    assert [int(c) for c in ExceptionCode] == [1, 2, 3, 4, 5, 6, 8, 0x0A, 0x0B]
    assert ExceptionCode(2) is ExceptionCode.ILLEGAL_DATA_ADDRESS
    for code in ExceptionCode:
        assert code.description
    assert "illegal data address" in ExceptionCode.ILLEGAL_DATA_ADDRESS.description
    assert describe_exception(0x42) == "unknown exception code 0x42"
    assert [int(f) for f in FunctionCode] == [3, 4, 6, 16]


# ----------------------------------------------------------------------------- check_response


def test_check_response_returns_registers() -> None:
    request = ReadRequest(1, INPUT, 0x156, 2)
    assert check_response(request, ReadResponse(1, INPUT, (0x4366, 0))) == (0x4366, 0)


def test_check_response_raises_meter_error_for_exception_reply() -> None:
    request = ReadRequest(7, INPUT, 0x156, 2)
    reply = decode_response(exception_response(7, INPUT, ExceptionCode.ILLEGAL_DATA_ADDRESS))
    with pytest.raises(MeterError) as caught:
        check_response(request, reply)
    assert caught.value.meter == "7"
    assert caught.value.code == 2
    assert "illegal data address" in caught.value.description
    assert caught.value.raw == exception_response(7, INPUT, 2)
    with pytest.raises(MeterError, match="unknown exception code 0x42"):
        check_response(request, ExceptionResponse(7, INPUT, 0x42))


@pytest.mark.parametrize(
    ("reply", "offset", "words"),
    [
        (ReadResponse(2, INPUT, (1, 2)), 0, "reply from slave 2: expected slave 1"),
        (ExceptionResponse(2, INPUT, 2), 0, "reply from slave 2"),
        (ReadResponse(1, HOLDING, (1, 2)), 1, "reply function 0x03: expected 0x04"),
        (ExceptionResponse(1, HOLDING, 2), 1, "exception reply for function 0x03"),
        (WriteSingle(1, 0x156, 2), 1, "WriteSingle reply: expected a ReadResponse"),
        (ReadResponse(1, INPUT, (1,)), 2, "1 registers (byte count 2): expected 2"),
    ],
)
def test_check_response_mismatch(reply: Frame, offset: int, words: str) -> None:
    with pytest.raises(FrameError) as caught:
        check_response(ReadRequest(1, INPUT, 0x156, 2), reply)
    assert words in str(caught.value)
    assert caught.value.offset == offset


# ----------------------------------------------------------------------------- floats


def test_float_known_values() -> None:
    assert float32_to_registers(230.0) == (0x4366, 0x0000)
    assert registers_to_float32(0x4366, 0x0000) == 230.0
    assert float32_to_registers(-1.5) == (0xBFC0, 0x0000)
    assert float32_to_registers(50.0) == (0x4248, 0x0000)
    assert math.isnan(registers_to_float32(0x7FC0, 0))
    assert registers_to_float32(0x7F80, 0) == math.inf


def test_float_errors() -> None:
    with pytest.raises(EncodeError, match="value=1e\\+40"):
        float32_to_registers(1e40)
    with pytest.raises(EncodeError, match="hi=65536"):
        registers_to_float32(0x10000, 0)


@FAST
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_float_round_trip_from_registers(hi: int, lo: int) -> None:
    value = registers_to_float32(hi, lo)
    if math.isnan(value):
        # NaN payloads survive the struct round trip bit for bit except for signalling
        # NaNs, which some platforms quieten; compare only "still a NaN".
        assert math.isnan(registers_to_float32(*float32_to_registers(value)))
    else:
        assert float32_to_registers(value) == (hi, lo)


@FAST
@given(st.floats(width=32))
def test_float_round_trip_from_value(value: float) -> None:
    back = registers_to_float32(*float32_to_registers(value))
    assert back == value or (math.isnan(back) and math.isnan(value))


# ----------------------------------------------------------------------------- registers


def test_register_map() -> None:
    assert set(SDM630) == {
        "voltage_l1",
        "voltage_l2",
        "voltage_l3",
        "current_l1",
        "current_l2",
        "current_l3",
        "power_l1",
        "power_l2",
        "power_l3",
        "power_total",
        "frequency",
        "energy_import",
        "energy_export",
        "energy_total",
        "reactive_energy_total",
    }
    assert set(SDM120) == {
        "voltage_l1",
        "current_l1",
        "power_l1",
        "frequency",
        "energy_import",
        "energy_export",
        "energy_total",
    }
    assert METER_MODELS == {"sdm630": SDM630, "sdm120": SDM120}
    # Addresses and units from docs/protocols.md §2.4 (3xxxx numbers minus 30001).
    expected = {
        "voltage_l1": (0x0000, "V"),
        "voltage_l2": (0x0002, "V"),
        "voltage_l3": (0x0004, "V"),
        "current_l1": (0x0006, "A"),
        "current_l2": (0x0008, "A"),
        "current_l3": (0x000A, "A"),
        "power_l1": (0x000C, "W"),
        "power_l2": (0x000E, "W"),
        "power_l3": (0x0010, "W"),
        "power_total": (0x0034, "W"),
        "frequency": (0x0046, "Hz"),
        "energy_import": (0x0048, "kWh"),
        "energy_export": (0x004A, "kWh"),
        "energy_total": (0x0156, "kWh"),
        "reactive_energy_total": (0x0158, "kvarh"),
    }
    for name, register in SDM630.items():
        assert register.name == name
        assert (register.address, register.unit) == expected[name]
        assert register.count == 2
        assert register.description
    assert SDM630["voltage_l3"].phases == 3 and SDM630["power_total"].phases == 0
    for name, register in SDM120.items():
        assert register == SDM630[name]
        assert register.phases in (0, 1)


def test_plan_reads_sdm630() -> None:
    assert plan_reads(SDM630.values()) == [(0x0000, 18), (0x0034, 2), (0x0046, 6), (0x0156, 4)]
    # 16 unwanted registers lie between power_total (ends 0x0036) and frequency (0x0046),
    # 34 between power_l3 (ends 0x0012) and power_total.
    assert plan_reads(SDM630.values(), max_gap=15) == plan_reads(SDM630.values())
    assert plan_reads(SDM630.values(), max_gap=16) == [(0x0000, 18), (0x0034, 24), (0x0156, 4)]
    assert plan_reads(SDM630.values(), max_gap=34) == [(0x0000, 76), (0x0156, 4)]
    # max_count splits a contiguous run; values never straddle two reads.
    assert plan_reads(SDM630.values(), max_count=8) == [
        (0x0000, 8),
        (0x0008, 8),
        (0x0010, 2),
        (0x0034, 2),
        (0x0046, 6),
        (0x0156, 4),
    ]


def test_plan_reads_sdm120_and_edge_cases() -> None:
    assert plan_reads(SDM120.values()) == [
        (0x0000, 2),
        (0x0006, 2),
        (0x000C, 2),
        (0x0046, 6),
        (0x0156, 2),
    ]
    assert plan_reads(SDM120.values(), max_gap=4) == [(0x0000, 14), (0x0046, 6), (0x0156, 2)]
    assert plan_reads([]) == []
    one = SDM630["frequency"]
    assert plan_reads([one, one, SDM630["energy_import"]]) == [(0x0046, 4)]
    # Input order does not matter.
    assert plan_reads(reversed(list(SDM630.values()))) == plan_reads(SDM630.values())
    overlapping = [Register("a", 10, "", "", 0, 4), Register("b", 12, "", "", 0, 2)]
    assert plan_reads(overlapping) == [(10, 4)]


def test_plan_reads_errors() -> None:
    with pytest.raises(EncodeError, match="max_count=126"):
        plan_reads(SDM630.values(), max_count=126)
    with pytest.raises(EncodeError, match="max_gap=-1"):
        plan_reads(SDM630.values(), max_gap=-1)
    with pytest.raises(EncodeError, match=r"huge\.count=10"):
        plan_reads([Register("huge", 0, "", "", 0, 10)], max_count=8)
    with pytest.raises(EncodeError, match=r"edge\.count"):
        plan_reads([Register("edge", 0xFFFF, "", "", 0, 2)])


@FAST
@given(
    st.lists(st.sampled_from(sorted(SDM630.values(), key=lambda r: r.address))),
    st.integers(0, 50),
    st.integers(2, 125),
)
def test_plan_reads_covers_everything_within_limits(
    wanted: list[Register], max_gap: int, max_count: int
) -> None:
    plan = plan_reads(wanted, max_gap=max_gap, max_count=max_count)
    for register in wanted:
        assert any(
            start <= register.address and register.address + 2 <= start + count
            for start, count in plan
        ), register
    for start, count in plan:
        assert 1 <= count <= max_count
        read_input(1, start, count)  # every planned read is encodable
    assert [s for s, _ in plan] == sorted({s for s, _ in plan})
    assert len(plan) <= len({r.address for r in wanted})


def test_unpack_floats() -> None:
    registers = [0x4366, 0, 0x4367, 0, 0x4368, 0]
    wanted = [SDM630["voltage_l1"], SDM630["voltage_l3"]]
    assert unpack_floats(0, registers, wanted) == {"voltage_l1": 230.0, "voltage_l3": 232.0}
    with pytest.raises(EncodeError, match="frequency at 0x0046"):
        unpack_floats(0, registers, [SDM630["frequency"]])


# ----------------------------------------------------------------------------- timing


def test_timing() -> None:
    assert char_time(9600) == pytest.approx(11 / 9600)
    assert char_time(9600, 10) == pytest.approx(10 / 9600)
    # docs/protocols.md §2.2: t3.5 @ 9600 11-bit = 4.01 ms, @ 2400 = 16.0 ms, 10-bit @ 9600 = 3.65.
    assert t3_5(9600) == pytest.approx(0.00401, abs=1e-5)
    assert t3_5(2400) == pytest.approx(0.01604, abs=1e-5)
    assert t3_5(9600, 10) == pytest.approx(0.003646, abs=1e-5)
    assert t3_5(19200) == pytest.approx(3.5 * 11 / 19200)
    # [SL] §2.5.1.1: fixed values above 19200 baud.
    assert t3_5(38400) == 0.00175
    assert t3_5(115200, 10) == 0.00175
    assert t1_5(9600) == pytest.approx(1.5 * 11 / 9600)
    assert t1_5(57600) == 0.00075
    # docs/protocols.md §5.3: 17 bytes of 10-bit characters at 2400 baud = 70.8 ms.
    assert wire_time(17, 2400, 10) == pytest.approx(0.0708, abs=1e-4)
    with pytest.raises(EncodeError, match="baud=0"):
        t3_5(0)


# ----------------------------------------------------------------------------- properties

slaves = st.integers(1, 247)
registers16 = st.integers(0, 0xFFFF)


@st.composite
def read_requests(draw: st.DrawFn) -> ReadRequest:
    count = draw(st.integers(1, 125))
    address = draw(st.integers(0, 0x10000 - count))
    return ReadRequest(draw(slaves), draw(st.sampled_from([HOLDING, INPUT])), address, count)


@st.composite
def write_multiple_requests(draw: st.DrawFn) -> WriteMultipleRequest:
    values = draw(st.lists(registers16, min_size=1, max_size=123))
    address = draw(st.integers(0, 0x10000 - len(values)))
    return WriteMultipleRequest(draw(st.integers(0, 247)), address, tuple(values))


@st.composite
def write_multiple_responses(draw: st.DrawFn) -> WriteMultipleResponse:
    count = draw(st.integers(1, 123))
    address = draw(st.integers(0, 0x10000 - count))
    return WriteMultipleResponse(draw(slaves), address, count)


read_responses = st.builds(
    ReadResponse,
    slaves,
    st.sampled_from([HOLDING, INPUT]),
    st.lists(registers16, min_size=1, max_size=125).map(tuple),
)
exception_responses = st.builds(
    ExceptionResponse,
    slaves,
    st.integers(1, 127),
    st.one_of(st.sampled_from(list(ExceptionCode)), st.integers(1, 255)),
)
requests: st.SearchStrategy[Frame] = st.one_of(
    read_requests(),
    st.builds(WriteSingle, st.integers(0, 247), registers16, registers16),
    write_multiple_requests(),
)
responses: st.SearchStrategy[Frame] = st.one_of(
    read_responses,
    st.builds(WriteSingle, slaves, registers16, registers16),
    write_multiple_responses(),
    exception_responses,
)
role_and_frames = st.one_of(
    st.tuples(st.just("server"), st.lists(requests, min_size=1, max_size=4)),
    st.tuples(st.just("client"), st.lists(responses, min_size=1, max_size=4)),
)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@FAST
@given(role_and_frames, st.lists(st.integers(0, 2000), max_size=12))
def test_round_trip_through_decoder(role_frames: tuple[Role, list[Frame]], cuts: list[int]) -> None:
    role, frames = role_frames
    wire = b"".join(encode(frame) for frame in frames)
    decoder = Decoder(role)
    decoded: list[Frame] = []
    for chunk in chunked(wire, cuts):
        decoder.feed(chunk)
        got, errors = drain(decoder)
        assert errors == []
        decoded += got
    assert decoded == frames
    assert decoder.buffered == 0 and decoder.discarded == 0
    for frame in frames:
        assert decode_whole(role, encode(frame)) == frame
        assert ref_crc(encode(frame)) == 0


@FAST
@given(st.one_of(read_requests(), write_multiple_requests()))
def test_reply_length_matches_the_built_reply(request: Frame) -> None:
    if isinstance(request, ReadRequest):
        reply = read_response(request.slave, request.function, [0] * request.count)
    else:
        reply = write_multiple_response(max(request.slave, 1), 0, 1)
    assert len(reply) == reply_length(request)


def feed_and_check(role: Role, data: bytes, cuts: list[int]) -> list[Frame]:
    """The fuzz invariant: only FrameError, always terminates, frames re-encode with a
    valid CRC to bytes that were really on the wire."""
    decoder = Decoder(role)
    chunks = chunked(data, cuts)
    # Each call consumes >= 1 byte or returns None once per chunk.
    bound = len(data) + len(chunks) + 1
    calls = 0
    frames: list[Frame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        while True:
            calls += 1
            assert calls <= bound, "decoder loops without consuming input"
            try:
                frame = decoder.next_frame()
            except FrameError:
                continue
            if frame is None:
                break
            frames.append(frame)
    for frame in frames:
        wire = encode(frame)
        assert ref_crc(wire[:-2]) == int.from_bytes(wire[-2:], "little")
        assert wire in data
    assert decoder.discarded + decoder.buffered + sum(len(encode(f)) for f in frames) == len(data)
    return frames


roles = st.sampled_from(["client", "server"])


@settings(max_examples=300, deadline=None)
@given(roles, st.binary(max_size=600), st.lists(st.integers(0, 2000), max_size=20))
def test_fuzz_random_bytes(role: Role, data: bytes, cuts: list[int]) -> None:
    feed_and_check(role, data, cuts)


mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "set"]),
        st.integers(0, 10_000),
        st.integers(0, 255),
    ),
    max_size=6,
)


def mutate(data: bytes, ops: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for op, position, value in ops:
        index = position % (len(buf) + 1)
        if op == "insert":
            buf.insert(index, value)
        elif buf and index < len(buf):
            if op == "flip":
                buf[index] ^= value or 1
            elif op == "set":
                buf[index] = value
            else:
                del buf[index]
    return bytes(buf)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.tuples(st.just("server"), st.lists(requests, min_size=1, max_size=5)),
        st.tuples(st.just("client"), st.lists(responses, min_size=1, max_size=5)),
    ),
    mutations,
    st.lists(st.integers(0, 2000), max_size=20),
)
def test_fuzz_mutated_frames(
    role_frames: tuple[Role, list[Frame]], ops: list[tuple[str, int, int]], cuts: list[int]
) -> None:
    role, frames = role_frames
    wire = b"".join(encode(frame) for frame in frames)
    frames_seen = feed_and_check(role, mutate(wire, ops), cuts)
    if not ops:
        assert frames_seen == frames


@FAST
@given(role_and_frames)
def test_reset_after_a_corrupted_frame_recovers(role_frames: tuple[Role, list[Frame]]) -> None:
    # A frame with a broken CRC is refused; whatever the resync then makes of its tail,
    # the t3.5 reset() lets the next frame through intact.
    role, frames = role_frames
    first = bytearray(encode(frames[0]))
    first[-1] ^= 0xFF
    decoder = Decoder(role)
    decoder.feed(bytes(first))
    _, errors = drain(decoder)
    assert errors
    decoder.reset()
    decoder.feed(encode(frames[-1]))
    assert drain(decoder) == ([frames[-1]], [])


def test_struct_layout_helper_sanity() -> None:
    # Guards the test file's own hex literals: 230.0 really is 43 66 00 00.
    assert struct.pack(">f", 230.0) == bytes.fromhex("43 66 00 00")
