"""Tests for drivers.dlt698: published frames, hand-made ones, round trips, fuzzing.

No byte string below is produced by the encoder under test; each one's length, HCS and
FCS are recomputed here with an independent bit-by-bit CRC-16/X.25 (test 1). Sources:
  [SPLIT] hlqqlm/split698, app/src/frame_test.py (kFrame: one frame per APDU kind) and
          app/src/main.cc (a commented daily-freeze read in a SECURITY-Request).
  [RS]    chitandahua/dlt698_rs, src/frame.rs and src/checksum.rs (unit tests).
  [TS]    tensoar/DLT698Reader-4N, src/frame/codec/FrameCodec.ts (a commented meter
          answer in a SECURITY-Response).
  [GO]    Yingsuda/DL698, protocol/packet_codec_test.go (a heartbeat LINK-Request).
  [WSD]   float12/WorkProjectsSVN, ElectricityCycle/program/core_sdk_notts-004/wsd_folder/
          wsd_dlt698.c (Adrr_Txd_698: the wildcard read of 4001 a module sends its meter).
  [SIM]   yuani520/Meter698-45Simulator, Meter698.py (a minute-freeze GET-Record).
  [DOC]   the documentation of a C++ DL/T 698.45 client library (pages "device information"
          and "daily freeze"), found through the public code index, which does not name
          the repository (file ids 70374867785, 70401593517).
  [MOCK]  a meter test-station application's mock answer to a 4001 read (code index,
          repository not named; file id 61118814976).
  [TERM]  a terminal firmware's comment with a broadcast time frame (code index, file id
          39448577379).
  [HAND]  laid out here from the standard's layouts (see docs/protocols-dlt698-645-1997.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.dlt698 import (
    COMDCB,
    CSD,
    DAR,
    MAX_FRAME_LEN,
    MIN_FRAME_LEN,
    MS,
    NULL,
    OAD,
    OMD,
    ROAD,
    RSD,
    SID,
    SIDMAC,
    TI,
    TYPICAL_GET_RESPONSE,
    ActionRequestNormal,
    ActionResponseNormal,
    AddressType,
    Apdu,
    BitString,
    ClientApdu,
    Data,
    DataType,
    Date,
    DateTime,
    DateTimeS,
    Decoder,
    FollowReport,
    Fragment,
    FragmentKind,
    Frame,
    GetRequestNext,
    GetRequestNormal,
    GetRequestNormalList,
    GetRequestRecord,
    GetResponseNext,
    GetResponseNormal,
    GetResponseNormalList,
    GetResponseRecord,
    LinkRequest,
    LinkRequestKind,
    LinkResponse,
    Reassembler,
    Region,
    RegionKind,
    RemoteControl,
    ResultNormal,
    ResultRecord,
    ScalerUnit,
    SecurityRequest,
    SecurityResponse,
    SelectNone,
    Selector1,
    Selector2,
    Selector3,
    Selector9,
    Selector10,
    SelectorRangeMS,
    SelectorTimeMS,
    ServerAddress,
    ServerApdu,
    SetRequestNormal,
    SetResponseNormal,
    Time,
    TimeTag,
    TIUnit,
    VerifyRN,
    VerifyRNMAC,
    VerifySID,
    VerifySIDMAC,
    array,
    build_broadcast_time,
    build_get,
    build_get_record,
    build_read_address,
    build_remote_control,
    build_set_clock,
    check_reply,
    crc16,
    decode_apdu,
    decode_data,
    decode_fragment,
    decode_frame,
    decode_get_response,
    describe_dar,
    encode_apdu,
    encode_data,
    encode_frame,
    from_value,
    lookup,
    parse_action_response,
    parse_get_list_response,
    parse_get_response,
    parse_record_response,
    parse_set_response,
    remote_control_omd,
    server_apdu,
    split_apdu,
    structure,
    to_value,
    unwrap,
)
from drivers.dlt698.objects import QUANTITIES, Quantity
from drivers.errors import EncodeError, FrameError, MeterError

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def ref_crc(data: bytes) -> int:
    """CRC-16/X.25 bit by bit, independent of the module's table."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def u(t: DataType, v: int) -> Data:
    return Data(t, v)


def dls(v: int) -> Data:
    return Data(DataType.DOUBLE_LONG, v)


def dlu(v: int) -> Data:
    return Data(DataType.DOUBLE_LONG_UNSIGNED, v)


def lu(v: int) -> Data:
    return Data(DataType.LONG_UNSIGNED, v)


def dts(*fields: int) -> Data:
    return Data(DataType.DATE_TIME_S, DateTimeS(*fields))


M322 = ServerAddress("000000000322")
M000 = ServerAddress("000000000000")


def reply(server: ServerAddress, apdu: bytes, client: int = 0) -> Frame:
    return Frame(server, apdu, client, from_server=True)


# --------------------------------------------------------------------------------------
# Streaming helpers (as in the other codec tests)


@dataclass
class Run:
    frames: list[Frame]
    errors: list[FrameError]


def drain(decoder: Decoder, run: Run) -> None:
    budget = decoder.buffered + 1
    for _ in range(budget):
        before = decoder.buffered
        try:
            frame = decoder.next_frame()
        except FrameError as exc:
            assert decoder.buffered < before, "a FrameError must drop at least one byte"
            run.errors.append(exc)
            continue
        if frame is None:
            return
        assert decoder.buffered < before, "a frame must consume its bytes"
        run.frames.append(frame)
    raise AssertionError(f"next_frame made no progress in {budget} calls")


def stream(chunks: Iterable[bytes], decoder: Decoder | None = None) -> Run:
    decoder = decoder or Decoder()
    run = Run([], [])
    for chunk in chunks:
        decoder.feed(chunk)
        drain(decoder, run)
    return run


def split(data: bytes, sizes: Sequence[int]) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(data):
        n = max(1, sizes[k % len(sizes)])
        out.append(data[i : i + n])
        i += n
        k += 1
    return out


def garbage(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n).replace(b"\x68", b"\x00")


# --------------------------------------------------------------------------------------
# 1. Vectors


@dataclass(frozen=True)
class Vector:
    id: str
    wire: bytes
    frame: Frame
    apdu: Apdu | Fragment  # the user data, decoded


REQ = ServerAddress("000000000322")

VECTORS = [
    # [SPLIT] GET-Request Normal of voltage 20000200, PIID 1, meter 000000000322
    Vector(
        "split_get_voltage",
        h("68170043052203000000000037210501012000020000ceba16"),
        Frame(M322, h("05 01 01 20 00 02 00 00")),
        ClientApdu(GetRequestNormal(1, OAD(0x2000, 2, 0))),
    ),
    # [SPLIT] its answer to a 4001 read: header address 22 03 00.. (reversed), the value
    # 00 00 00 00 03 22 in natural order
    Vector(
        "split_4001_reply",
        h("682100c305220300000000005883850101400102000109060000000003220000043a16"),
        reply(M322, h("85 01 01 40 01 02 00 01 09 06 00 00 00 00 03 22 00 00")),
        ServerApdu(
            GetResponseNormal(
                1, ResultNormal(OAD(0x4001, 2, 0), Data(DataType.OCTET_STRING, h("000000000322")))
            )
        ),
    ),
    # [SPLIT] SET-Request Normal of the clock 40000200 = 2023-08-15 08:39:23 (binary)
    Vector(
        "split_set_clock",
        h("681f004305220300000000009d9d060103400002001c07e7080f08271700872a16"),
        Frame(M322, h("06 01 03 40 00 02 00 1C 07 E7 08 0F 08 27 17 00")),
        ClientApdu(SetRequestNormal(3, OAD(0x4000, 2, 0), dts(2023, 8, 15, 8, 39, 23))),
    ),
    # [SPLIT] SET-Response: DAR success, FollowReport and TimeTag absent
    Vector(
        "split_set_reply",
        h("681900c305220300000000003dac86010540000200000000e82116"),
        reply(M322, h("86 01 05 40 00 02 00 00 00 00")),
        ServerApdu(SetResponseNormal(5, OAD(0x4000, 2, 0), DAR.SUCCESS)),
    ),
    # [SPLIT] ACTION-Response refused with DAR 4 (object undefined), no data
    Vector(
        "split_action_reply",
        h("681a00c305220300000000008e52870106450001000400000079f116"),
        reply(M322, h("87 01 06 45 00 01 00 04 00 00 00")),
        ServerApdu(ActionResponseNormal(6, OMD(0x4500, 1), DAR.OBJECT_UNDEFINED)),
    ),
    # [SPLIT] GET-Response NormalList of four attributes of object 2401
    Vector(
        "split_normal_list",
        h(
            "685600c30501000000000000e4ba8502130424010200010906100000000001240105000105"
            "000000002401060001050000000024010700010105060000000006000000000600000000"
            "060000000006000000000000e52b16"
        ),
        reply(
            ServerAddress("000000000001"),
            h(
                "85 02 13 04 24 01 02 00 01 09 06 10 00 00 00 00 01 24 01 05 00 01 05 00 00 00"
                " 00 24 01 06 00 01 05 00 00 00 00 24 01 07 00 01 01 05 06 00 00 00 00 06 00"
                " 00 00 00 06 00 00 00 00 06 00 00 00 00 06 00 00 00 00 00 00"
            ),
        ),
        ServerApdu(
            GetResponseNormalList(
                0x13,
                (
                    ResultNormal(OAD(0x2401, 2, 0), Data(DataType.OCTET_STRING, h("100000000001"))),
                    ResultNormal(OAD(0x2401, 5, 0), dls(0)),
                    ResultNormal(OAD(0x2401, 6, 0), dls(0)),
                    ResultNormal(OAD(0x2401, 7, 0), array(*[dlu(0)] * 5)),
                ),
            )
        ),
    ),
    # [SPLIT] LINK-Request login, heartbeat 60 s, 2023-07-05 (Wednesday) 15:24:17.000
    Vector(
        "split_link_login",
        h("681e008105220300000000004271010000003c07e70705030f1811000080fa16"),
        Frame(
            M322, h("01 00 00 00 3C 07 E7 07 05 03 0F 18 11 00 00"), 0, True, False, False, False, 1
        ),
        LinkRequest(0, LinkRequestKind.LOGIN, 60, DateTime(2023, 7, 5, 3, 15, 24, 17, 0)),
    ),
    # [SPLIT] LINK-Response, result 0x80 (clock credible, success)
    Vector(
        "split_link_response",
        h(
            "683000010522030000000000c21e81008007e7070b02102b3b000007e7070b02102c0100020"
            "7e7070b02102c01000277ad16"
        ),
        Frame(
            M322,
            h(
                "81 00 80 07 E7 07 0B 02 10 2B 3B 00 00 07 E7 07 0B 02 10 2C 01 00 02"
                " 07 E7 07 0B 02 10 2C 01 00 02"
            ),
            client_initiated=False,
            function=1,
        ),
        LinkResponse(
            0,
            0x80,
            DateTime(2023, 7, 11, 2, 16, 43, 59, 0),
            DateTime(2023, 7, 11, 2, 16, 44, 1, 2),
            DateTime(2023, 7, 11, 2, 16, 44, 1, 2),
        ),
    ),
    # [SPLIT] SECURITY-Request: plain GET NormalList (00100200 20000200 20040200) with a
    # 16-byte random number; client address 0x10
    Vector(
        "split_security_rn",
        h(
            "683500430502000020114310f42b10001105020003001002002000020020040200000110087406"
            "efe4e8900cda5d3ec56df93d3a2b8b16"
        ),
        Frame(
            ServerAddress("431120000002"),
            h(
                "10 00 11 05 02 00 03 00 10 02 00 20 00 02 00 20 04 02 00 00 01 10 08 74 06 EF"
                " E4 E8 90 0C DA 5D 3E C5 6D F9 3D 3A"
            ),
            0x10,
        ),
        SecurityRequest(
            h("05 02 00 03 00 10 02 00 20 00 02 00 20 04 02 00 00"),
            VerifyRN(h("087406efe4e8900cda5d3ec56df93d3a")),
        ),
    ),
    # [RS] GET-Request Normal of F1010200 (security mode parameters), PIID 0x15; FCS 001A
    Vector(
        "rs_get",
        h("681700430502000000000010485e050115f1010200001a0016"),
        Frame(ServerAddress("000000000002"), h("05 01 15 F1 01 02 00 00"), 0x10),
        ClientApdu(GetRequestNormal(0x15, OAD(0xF101, 2, 0))),
    ),
    # [RS] a fragment (control A3) and the confirm a client sends back (control 63)
    Vector(
        "rs_fragment",
        h("681700a30502000000000010c58b050115f1010200001a0016"),
        Frame(
            ServerAddress("000000000002"),
            h("05 01 15 F1 01 02 00 00"),
            0x10,
            from_server=True,
            client_initiated=False,
            fragment=True,
        ),
        Fragment(0x105, FragmentKind.FIRST, h("15 F1 01 02 00 00")),
    ),
    Vector(
        "rs_fragment_confirm",
        h("681100630502000000000010065c0581e71716"),
        Frame(ServerAddress("000000000002"), h("05 81"), 0x10, fragment=True),
        Fragment(0x105, FragmentKind.CONFIRM),
    ),
    # [TS] a meter's SECURITY-Response: plain GET-Response of 30070A00 (event counts),
    # FollowReport and TimeTag absent inside, then a 4-byte MAC
    Vector(
        "ts_security_response",
        h(
            "685500C30532161638209000AD5C90003C8501003007 0A00010104020206000000000600000000"
            "020206000000000600000000020206000000000600000000020206000000000600000000000001"
            "000432F95634F7A816"
        ),
        reply(
            ServerAddress("902038161632"),
            h(
                "90 00 3C 85 01 00 30 07 0A 00 01 01 04"
                + " 02 02 06 00 00 00 00 06 00 00 00 00" * 4
                + " 00 00 01 00 04 32 F9 56 34"
            ),
        ),
        SecurityResponse(
            h(
                "85 01 00 30 07 0A 00 01 01 04"
                + " 02 02 06 00 00 00 00 06 00 00 00 00" * 4
                + " 00 00"
            ),
            mac=h("32F95634"),
        ),
    ),
    # [GO] heartbeat LINK-Request: period 300 s, 2016-09-12 (Monday) 00:00:31.683
    Vector(
        "go_heartbeat",
        h("681e00810501000000000000d2b60110010 12c07e0090c0100001f02ab9d3916".replace(" ", "")),
        Frame(
            ServerAddress("000000000001"),
            h("01 10 01 01 2C 07 E0 09 0C 01 00 00 1F 02 AB"),
            from_server=True,
            client_initiated=False,
            function=1,
        ),
        LinkRequest(0x10, LinkRequestKind.HEARTBEAT, 300, DateTime(2016, 9, 12, 1, 0, 0, 31, 683)),
    ),
    # [WSD] read 4001 of the one meter on the line: wildcard address type (flag 45),
    # client address A0
    Vector(
        "wsd_read_address",
        h("68 17 00 43 45 AA AA AA AA AA AA A0 51 EA 05 01 00 40 01 02 00 00 ED 03 16"),
        Frame(ServerAddress.wildcard(), h("05 01 00 40 01 02 00 00"), 0xA0),
        ClientApdu(GetRequestNormal(0, OAD(0x4001, 2, 0))),
    ),
    # [MOCK] the answer comes from the meter's real address 96 81 32 02 00 90 (header,
    # reversed) and carries 4001 = 90 00 02 32 81 96
    Vector(
        "mock_4001_reply",
        h(
            "68 21 00 C3 05 96 81 32 02 00 90 A0 F5 F6 85 01 00 40 01 02 00 01 09 06 90 00 02"
            " 32 81 96 00 00 BA 13 16"
        ),
        reply(
            ServerAddress("900002328196"),
            h("85 01 00 40 01 02 00 01 09 06 90 00 02 32 81 96 00 00"),
            0xA0,
        ),
        ServerApdu(
            GetResponseNormal(
                0, ResultNormal(OAD(0x4001, 2, 0), Data(DataType.OCTET_STRING, h("900002328196")))
            )
        ),
    ),
    # [TERM] broadcast time: address type 3, one address byte AA, ACTION 40007F00
    # with date_time_s 2017-06-05 10:24:12
    Vector(
        "term_broadcast_time",
        h("68 1A 00 43 C0 AA 00 5E F7 07 01 00 40 00 7F 00 1C 07 E1 06 05 0A 18 0C 00 EC 67 16"),
        Frame(ServerAddress.broadcast(), h("07 01 00 40 00 7F 00 1C 07 E1 06 05 0A 18 0C 00")),
        ClientApdu(ActionRequestNormal(0, OMD(0x4000, 127), dts(2017, 6, 5, 10, 24, 12))),
    ),
    # [DOC] GET-Record of the daily freeze 5004, Selector 2 on 20210200 from 2026-10-03 to
    # 2026-10-06, interval NULL, three columns (element OADs)
    Vector(
        "doc_get_record",
        h(
            "68 3D 00 43 05 00 00 00 00 00 00 00 70 8C 05 03 00 50 04 02 00 02 20 21 02 00 1C"
            " 07 EA 0A 03 00 00 00 1C 07 EA 0A 06 00 00 00 00 03 00 00 10 02 01 00 20 00 02 01"
            " 00 20 01 02 01 00 30 F4 16"
        ),
        Frame(
            M000,
            h(
                "05 03 00 50 04 02 00 02 20 21 02 00 1C 07 EA 0A 03 00 00 00 1C 07 EA 0A 06 00"
                " 00 00 00 03 00 00 10 02 01 00 20 00 02 01 00 20 01 02 01 00"
            ),
        ),
        ClientApdu(
            GetRequestRecord(
                0,
                OAD(0x5004, 2, 0),
                Selector2(OAD(0x2021, 2, 0), dts(2026, 10, 3), dts(2026, 10, 6), NULL),
                (OAD(0x0010, 2, 1), OAD(0x2000, 2, 1), OAD(0x2001, 2, 1)),
            )
        ),
    ),
    # [DOC] its answer: two rows
    Vector(
        "doc_record_reply",
        h(
            "68 44 00 C3 05 00 00 00 00 00 00 00 56 FF 85 03 00 50 04 02 00 03 00 00 10 02 01"
            " 00 20 00 02 01 00 20 01 02 01 01 02 06 00 01 E0 78 12 09 65 05 00 00 13 74 06 00"
            " 01 E2 40 12 09 6D 05 00 00 13 88 00 00 D0 E0 16"
        ),
        reply(
            M000,
            h(
                "85 03 00 50 04 02 00 03 00 00 10 02 01 00 20 00 02 01 00 20 01 02 01 01 02 06"
                " 00 01 E0 78 12 09 65 05 00 00 13 74 06 00 01 E2 40 12 09 6D 05 00 00 13 88 00"
                " 00"
            ),
        ),
        ServerApdu(
            GetResponseRecord(
                0,
                ResultRecord(
                    OAD(0x5004, 2, 0),
                    (OAD(0x0010, 2, 1), OAD(0x2000, 2, 1), OAD(0x2001, 2, 1)),
                    ((dlu(123000), lu(2405), dls(4980)), (dlu(123456), lu(2413), dls(5000))),
                ),
            )
        ),
    ),
    # [DOC] Selector 1 (the record at one freeze time) and an empty answer (0 rows)
    Vector(
        "doc_get_record_at",
        h(
            "68 2A 00 43 05 00 00 00 00 00 00 00 D3 5D 05 03 00 50 04 02 00 01 20 21 02 00 1C"
            " 07 EA 0A 05 00 00 00 01 00 00 10 02 01 00 82 30 16"
        ),
        Frame(
            M000,
            h("05 03 00 50 04 02 00 01 20 21 02 00 1C 07 EA 0A 05 00 00 00 01 00 00 10 02 01 00"),
        ),
        ClientApdu(
            GetRequestRecord(
                0,
                OAD(0x5004, 2, 0),
                Selector1(OAD(0x2021, 2, 0), dts(2026, 10, 5)),
                (OAD(0x0010, 2, 1),),
            )
        ),
    ),
    Vector(
        "doc_record_empty",
        h(
            "68 20 00 C3 05 00 00 00 00 00 00 00 8C 8E 85 03 00 50 04 02 00 01 00 00 10 02 01"
            " 01 00 00 00 D8 F3 16"
        ),
        reply(M000, h("85 03 00 50 04 02 00 01 00 00 10 02 01 01 00 00 00")),
        ServerApdu(GetResponseRecord(0, ResultRecord(OAD(0x5004, 2, 0), (OAD(0x10, 2, 1),), ()))),
    ),
    # [SIM] minute freeze 5002, Selector 2 from 2019-01-11 00:30:00 to 00:44:59 every
    # 15 minutes (TI 01 000F), five columns, in a SECURITY-Request with RN
    Vector(
        "sim_minute_freeze",
        h(
            "685f00430504000000000000ab6710003b0503005002020002202102001c07e3010b001e001c07"
            "e3010b002c3b5401000f0500000002000000100200000020020000003002000020210200000110"
            "dbe874e868e2818062d57a7809720f39bfe616"
        ),
        Frame(
            ServerAddress("000000000004"),
            h(
                "10 00 3B 05 03 00 50 02 02 00 02 20 21 02 00 1C 07 E3 01 0B 00 1E 00 1C 07 E3"
                " 01 0B 00 2C 3B 54 01 00 0F 05 00 00 00 02 00 00 00 10 02 00 00 00 20 02 00 00"
                " 00 30 02 00 00 20 21 02 00 00 01 10 DB E8 74 E8 68 E2 81 80 62 D5 7A 78 09 72"
                " 0F 39"
            ),
        ),
        SecurityRequest(
            h(
                "05 03 00 50 02 02 00 02 20 21 02 00 1C 07 E3 01 0B 00 1E 00 1C 07 E3 01 0B 00"
                " 2C 3B 54 01 00 0F 05 00 00 00 02 00 00 00 10 02 00 00 00 20 02 00 00 00 30 02"
                " 00 00 20 21 02 00 00"
            ),
            VerifyRN(h("DBE874E868E2818062D57A7809720F39")),
        ),
    ),
    # [HAND] current A -1.500, B 0.250, C 12.345 A: double-long, signed, big-endian
    Vector(
        "hand_current_signed",
        h(
            "68 2A 00 C3 05 22 03 00 00 00 00 00 41 C1 85 01 02 20 01 02 00 01 01 03 05 FF FF"
            " FA 24 05 00 00 00 FA 05 00 00 30 39 00 00 B4 C3 16"
        ),
        reply(
            M322,
            h("85 01 02 20 01 02 00 01 01 03 05 FF FF FA 24 05 00 00 00 FA 05 00 00 30 39 00 00"),
        ),
        ServerApdu(
            GetResponseNormal(
                2, ResultNormal(OAD(0x2001, 2, 0), array(dls(-1500), dls(250), dls(12345)))
            )
        ),
    ),
    # [HAND] power factor total 0.999, A -0.500, B 1.000, C -1.000: long, signed
    Vector(
        "hand_power_factor_signed",
        h(
            "68 27 00 C3 05 22 03 00 00 00 00 00 2F 76 85 01 03 20 0A 02 00 01 01 04 10 03 E7"
            " 10 FE 0C 10 03 E8 10 FC 18 00 00 CB C2 16"
        ),
        reply(M322, h("85 01 03 20 0A 02 00 01 01 04 10 03 E7 10 FE 0C 10 03 E8 10 FC 18 00 00")),
        ServerApdu(
            GetResponseNormal(
                3,
                ResultNormal(
                    OAD(0x200A, 2, 0),
                    array(*(Data(DataType.LONG, v) for v in (999, -500, 1000, -1000))),
                ),
            )
        ),
    ),
    # [HAND] active power total -1234.5 W, A 0, B -0.1 W, C 2000000.0 W
    Vector(
        "hand_power_signed",
        h(
            "68 2F 00 C3 05 22 03 00 00 00 00 00 85 CA 85 01 04 20 04 02 00 01 01 04 05 FF FF"
            " CF C7 05 00 00 00 00 05 FF FF FF FF 05 01 31 2D 00 00 00 C2 7F 16"
        ),
        reply(
            M322,
            h(
                "85 01 04 20 04 02 00 01 01 04 05 FF FF CF C7 05 00 00 00 00 05 FF FF FF FF 05"
                " 01 31 2D 00 00 00"
            ),
        ),
        ServerApdu(
            GetResponseNormal(
                4,
                ResultNormal(OAD(0x2004, 2, 0), array(dls(-12345), dls(0), dls(-1), dls(20000000))),
            )
        ),
    ),
    # [HAND] element read 20000201 answered with the bare element: 2200 -> 220.0 V
    Vector(
        "hand_voltage_element",
        h(
            "68 1C 00 C3 05 22 03 00 00 00 00 00 F9 A7 85 01 05 20 00 02 01 01 12 08 98 00 00"
            " 28 53 16"
        ),
        reply(M322, h("85 01 05 20 00 02 01 01 12 08 98 00 00")),
        ServerApdu(GetResponseNormal(5, ResultNormal(OAD(0x2000, 2, 1), lu(2200)))),
    ),
    # [HAND] the same answered with an array of one, as the [SIM] meter simulator's data
    # table does (a valid frame, but not what the standard asks for)
    Vector(
        "hand_voltage_element_as_array",
        h(
            "68 1E 00 C3 05 22 03 00 00 00 00 00 DB 0C 85 01 05 20 00 02 01 01 01 01 12 08 98"
            " 00 00 E0 D6 16"
        ),
        reply(M322, h("85 01 05 20 00 02 01 01 01 01 12 08 98 00 00")),
        ServerApdu(GetResponseNormal(5, ResultNormal(OAD(0x2000, 2, 1), array(lu(2200))))),
    ),
    # [HAND] the clock 2026-11-25 09:35:00, then a FollowReport (voltage A 222.0 V) and a
    # TimeTag (sent 2026-11-25 09:35:00, valid 10 minutes: date_time_s and TI without
    # type tags); PIID-ACD 0x46 (ACD bit set)
    Vector(
        "hand_follow_report_time_tag",
        h(
            "68 35 00 C3 05 22 03 00 00 00 00 00 48 AC 85 01 46 40 00 02 00 01 1C 07 EA 0B 19"
            " 09 23 00 01 01 01 20 00 02 01 01 12 08 AC 01 07 EA 0B 19 09 23 00 01 00 0A B9 1B"
            " 16"
        ),
        reply(
            M322,
            h(
                "85 01 46 40 00 02 00 01 1C 07 EA 0B 19 09 23 00 01 01 01 20 00 02 01 01 12 08"
                " AC 01 07 EA 0B 19 09 23 00 01 00 0A"
            ),
        ),
        ServerApdu(
            GetResponseNormal(0x46, ResultNormal(OAD(0x4000, 2, 0), dts(2026, 11, 25, 9, 35, 0))),
            FollowReport((ResultNormal(OAD(0x2000, 2, 1), lu(2220)),)),
            TimeTag(DateTimeS(2026, 11, 25, 9, 35, 0), TI(TIUnit.MINUTE, 10)),
        ),
    ),
    # [HAND] frequency refused: DAR 6 (object does not exist)
    Vector(
        "hand_dar",
        h("68 1A 00 C3 05 22 03 00 00 00 00 00 8E 52 85 01 07 20 0F 02 00 00 06 00 00 7A E2 16"),
        reply(M322, h("85 01 07 20 0F 02 00 00 06 00 00")),
        ServerApdu(GetResponseNormal(7, ResultNormal(OAD(0x200F, 2, 0), DAR.OBJECT_NOT_EXIST))),
    ),
    # [HAND] frequency 50.02 Hz (long-unsigned 5002)
    Vector(
        "hand_frequency",
        h(
            "68 1C 00 C3 05 22 03 00 00 00 00 00 F9 A7 85 01 08 20 0F 02 00 01 12 13 8A 00 00"
            " 22 DE 16"
        ),
        reply(M322, h("85 01 08 20 0F 02 00 01 12 13 8A 00 00")),
        ServerApdu(GetResponseNormal(8, ResultNormal(OAD(0x200F, 2, 0), lu(5002)))),
    ),
    # [HAND] extended logical address 3: flag 26 (bit 5, 7 bytes), then 03, then the address
    Vector(
        "hand_extended_logical",
        h("68 18 00 43 26 03 22 03 00 00 00 00 00 4B DB 05 01 09 40 01 02 00 00 9E 26 16"),
        Frame(ServerAddress("000000000322", logical=3), h("05 01 09 40 01 02 00 00")),
        ClientApdu(GetRequestNormal(9, OAD(0x4001, 2, 0))),
    ),
    # [HAND] 11-digit address 12345678901: padded with F, sent 1F 90 78 56 34 12
    Vector(
        "hand_odd_address",
        h("68 17 00 43 05 1F 90 78 56 34 12 00 EC 00 05 01 0A 40 00 02 00 00 58 36 16"),
        Frame(ServerAddress("12345678901"), h("05 01 0A 40 00 02 00 00")),
        ClientApdu(GetRequestNormal(10, OAD(0x4000, 2, 0))),
    ),
    # [HAND] scrambled (control bit 3): every user data byte +0x33 on the wire
    Vector(
        "hand_scrambled",
        h("68 17 00 4B 05 22 03 00 00 00 00 00 FD 5E 38 34 3E 73 33 35 33 33 C3 A5 16"),
        Frame(M322, h("05 01 0B 40 00 02 00 00"), scrambled=True),
        ClientApdu(GetRequestNormal(11, OAD(0x4000, 2, 0))),
    ),
    # [HAND] a reply that echoes the wildcard address (valid frame, refused by check_reply)
    Vector(
        "hand_wildcard_echo",
        h(
            "68 21 00 C3 45 AA AA AA AA AA AA 00 34 ED 85 01 00 40 01 02 00 01 09 06 00 00 00"
            " 00 03 22 00 00 14 B4 16"
        ),
        reply(ServerAddress.wildcard(), h("85 01 00 40 01 02 00 01 09 06 00 00 00 00 03 22 00 00")),
        ServerApdu(
            GetResponseNormal(
                0, ResultNormal(OAD(0x4001, 2, 0), Data(DataType.OCTET_STRING, h("000000000322")))
            )
        ),
    ),
    # [HAND] NormalList answer: energy total 12345.67 kWh, voltage A 220.0 V, frequency
    # refused with DAR 4
    Vector(
        "hand_list_reply",
        h(
            "68 2D 00 C3 05 22 03 00 00 00 00 00 A7 61 85 02 0C 03 00 10 02 01 01 06 00 12 D6"
            " 87 20 00 02 01 01 12 08 98 20 0F 02 00 00 04 00 00 E4 42 16"
        ),
        reply(
            M322,
            h(
                "85 02 0C 03 00 10 02 01 01 06 00 12 D6 87 20 00 02 01 01 12 08 98 20 0F 02 00"
                " 00 04 00 00"
            ),
        ),
        ServerApdu(
            GetResponseNormalList(
                12,
                (
                    ResultNormal(OAD(0x0010, 2, 1), dlu(1234567)),
                    ResultNormal(OAD(0x2000, 2, 1), lu(2200)),
                    ResultNormal(OAD(0x200F, 2, 0), DAR.OBJECT_UNDEFINED),
                ),
            )
        ),
    ),
]
IDS = [v.id for v in VECTORS]
BY_ID = {v.id: v for v in VECTORS}


def fe_count(wire: bytes) -> int:
    return len(wire) - len(wire.lstrip(b"\xfe"))


def test_vectors_are_sound() -> None:
    """The vectors themselves, checked without the codec: length, HCS, FCS, end byte."""
    for v in VECTORS:
        b = v.wire.lstrip(b"\xfe")
        assert b[0] == 0x68 and b[-1] == 0x16, v.id
        length = b[1] | b[2] << 8
        assert length == len(b) - 2, v.id
        hcs_at = 5 + (b[4] & 0x0F) + 1 + 1
        assert b[hcs_at] | b[hcs_at + 1] << 8 == ref_crc(b[1:hcs_at]), v.id
        assert b[-3] | b[-2] << 8 == ref_crc(b[1:-3]), v.id
        payload = b[hcs_at + 2 : -3]
        if b[3] & 0x08:
            payload = bytes((x - 0x33) % 256 for x in payload)
        assert payload == v.frame.user_data, v.id


def test_crc_check_values() -> None:
    assert crc16(b"123456789") == 0x906E  # CRC-16/X.25 catalogue check value
    assert ref_crc(b"123456789") == 0x906E
    # [RS] src/checksum.rs: an HCS input and the FCS of its frame
    assert crc16(h("9a 00 43 05 02 00 00 00 00 00 10")) == 0x7B3D
    assert crc16(h("17 00 43 05 02 00 00 00 00 00 10 48 5e 05 01 15 f1 01 02 00 00")) == 0x001A
    rng = random.Random(698)
    for n in range(200):
        data = rng.randbytes(n)
        assert crc16(data) == ref_crc(data)


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_decodes(v: Vector) -> None:
    frame = decode_frame(v.wire)
    assert frame == v.frame
    if frame.fragment:
        assert decode_fragment(frame.user_data) == v.apdu
    else:
        assert decode_apdu(frame.user_data) == v.apdu


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_encodes(v: Vector) -> None:
    assert encode_frame(v.frame, preamble=fe_count(v.wire)) == v.wire
    data = v.apdu.encode()
    assert data == v.frame.user_data
    if not isinstance(v.apdu, Fragment):
        assert encode_apdu(v.apdu) == data


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_streams(v: Vector) -> None:
    wire, expected = v.wire, [v.frame]
    assert stream([wire]) == Run(expected, [])
    assert stream(wire[i : i + 1] for i in range(len(wire))) == Run(expected, [])
    for cut in range(1, len(wire)):
        assert stream([wire[:cut], wire[cut:]]) == Run(expected, []), cut
    rng = random.Random(v.id)
    for _ in range(20):
        data = garbage(rng, rng.randrange(0, 40)) + b"\xfe" * rng.randrange(0, 6) + wire
        assert stream(split(data, [rng.randrange(1, 9) for _ in range(5)])) == Run(expected, [])
    for _ in range(20):
        # bytes after the end byte stay for the next frame: the frame still comes out
        run = stream(split(wire + rng.randbytes(rng.randrange(1, 40)), [rng.randrange(1, 9)]))
        assert run.frames[:1] == expected
    assert stream([wire + b"\xfe\xfe" + wire]) == Run(expected * 2, [])


def test_stray_start_bytes_cost_errors_not_frames() -> None:
    wire = BY_ID["split_get_voltage"].wire
    for noise in (b"\x68", b"\x68\x68", b"\x00\x68\x17", b"\x68\x17\x00\x43\x05"):
        run = stream([noise + wire])
        assert run.frames == [BY_ID["split_get_voltage"].frame]
        assert run.errors


# --------------------------------------------------------------------------------------
# 2. The pitfalls (docs/protocols-dlt698-645-1997.md, "pitfalls")


def test_header_address_and_4001_run_in_opposite_orders() -> None:
    for vid, meter in (("mock_4001_reply", "900002328196"), ("split_4001_reply", "000000000322")):
        v = BY_ID[vid]
        frame = decode_frame(v.wire)
        assert frame.address == meter
        assert parse_get_response(frame, "comm_address") == meter
        header = v.wire[5:11]
        value = v.wire[-11:-5]
        assert header == value[::-1] != value
        # the address read from 4001 is the one to put in the next request
        assert ServerAddress(meter).encode()[1:] == header


def test_length_and_crcs_little_endian_data_big_endian() -> None:
    wire = TYPICAL_GET_RESPONSE
    assert wire[1:3] == h("34 00")  # 52, low byte first
    assert wire[-3:-1] == ref_crc(wire[1:-3]).to_bytes(2, "little")
    assert h("06 00 12 D6 87") in wire  # total 1234567 = 0x0012D687, high byte first
    # a frame longer than 255 bytes: the high length byte is the second one
    columns = (OAD(0x2021, 2, 0), OAD(0x0010, 2, 1))
    rows = tuple((dts(2026, 1, 1, 15 * i // 60, 15 * i % 60, 0), dlu(100 * i)) for i in range(24))
    apdu = ServerApdu(GetResponseRecord(1, ResultRecord(OAD(0x5002, 2, 0), columns, rows)))
    long_wire = encode_frame(reply(M322, apdu.encode()), preamble=0)
    assert len(long_wire) > 300
    assert long_wire[1:3] == (len(long_wire) - 2).to_bytes(2, "little")
    assert long_wire[2] == 0x01
    assert decode_apdu(decode_frame(long_wire).user_data) == apdu


@pytest.mark.parametrize(
    ("vid", "quantity", "value"),
    [
        (
            "hand_current_signed",
            "current",
            (Decimal("-1.500"), Decimal("0.250"), Decimal("12.345")),
        ),
        (
            "hand_power_factor_signed",
            "power_factor",
            (Decimal("0.999"), Decimal("-0.500"), Decimal("1.000"), Decimal("-1.000")),
        ),
        (
            "hand_power_signed",
            "power",
            (Decimal("-1234.5"), Decimal("0.0"), Decimal("-0.1"), Decimal("2000000.0")),
        ),
    ],
)
def test_current_power_and_power_factor_are_signed(
    vid: str, quantity: str, value: tuple[Decimal, ...]
) -> None:
    frame = decode_frame(BY_ID[vid].wire)
    got = parse_get_response(frame, quantity, address=M322)
    assert got == value
    assert isinstance(got, tuple) and all(str(a) == str(b) for a, b in zip(got, value, strict=True))


def test_date_time_s_is_binary() -> None:
    frame = decode_frame(BY_ID["split_set_clock"].wire)
    apdu = decode_apdu(frame.user_data)
    assert isinstance(apdu, ClientApdu) and isinstance(apdu.service, SetRequestNormal)
    assert apdu.service.data == dts(2023, 8, 15, 8, 39, 23)
    assert to_value(lookup("clock"), apdu.service.data) == dt.datetime(2023, 8, 15, 8, 39, 23)
    # read as BCD, 07 E7 would not even be digits and 0F a month of 15
    assert encode_data(from_value(lookup("clock"), dt.datetime(2023, 8, 15, 8, 39, 23))) == h(
        "1C 07 E7 08 0F 08 27 17"
    )
    with pytest.raises(FrameError, match="date_time_s 2023-13-01"):
        DateTimeS(2023, 13, 1).to_datetime()


def test_wildcard_request_and_real_address_reply() -> None:
    wanted = BY_ID["wsd_read_address"].wire
    assert build_read_address(piid=0, client=0xA0, preamble=0) == wanted
    assert wanted[4] == 0x45  # address type 1 (wildcard), six bytes
    # the single-address type with AA digits would be a different, wrong frame
    assert ServerAddress("AAAAAAAAAAAA").encode()[0] == 0x05
    meter_reply = decode_frame(BY_ID["mock_4001_reply"].wire)
    check_reply(meter_reply, ServerAddress.wildcard())
    assert parse_get_response(meter_reply, "comm_address", address=ServerAddress.wildcard()) == (
        "900002328196"
    )
    echo = decode_frame(BY_ID["hand_wildcard_echo"].wire)
    with pytest.raises(FrameError, match="a meter answers with its own single address"):
        check_reply(echo, ServerAddress.wildcard())
    assert ServerAddress.wildcard("AAAAAAAA0322").matches("000000000322")
    assert not ServerAddress.wildcard("AAAAAAAA0323").matches("000000000322")


def test_element_read_returns_the_bare_element() -> None:
    frame = decode_frame(BY_ID["hand_voltage_element"].wire)
    assert parse_get_response(frame, "voltage_a") == Decimal("220.0")
    bad = decode_frame(BY_ID["hand_voltage_element_as_array"].wire)
    with pytest.raises(FrameError, match="element 1 came back as an array"):
        parse_get_response(bad, "voltage_a")
    # index 0 is the whole array
    with pytest.raises(FrameError, match="expected an array of LONG_UNSIGNED"):
        to_value(lookup("voltage"), lu(2200))


def test_follow_report_and_time_tag_trail_the_answer() -> None:
    v = BY_ID["hand_follow_report_time_tag"]
    frame = decode_frame(v.wire)
    assert parse_get_response(frame, "clock") == dt.datetime(2026, 11, 25, 9, 35)
    apdu = server_apdu(frame)
    assert apdu.follow_report is not None and apdu.time_tag is not None
    assert apdu.service.piid_acd & 0x40  # ACD: the meter has more to report
    # without the two trailing fields the APDU is one field short: refused, not misread
    with pytest.raises(FrameError, match="FollowReport flag"):
        decode_apdu(h("85 01 01 40 00 02 00 01 1C 07 EA 0B 19 09 23 00"))
    with pytest.raises(FrameError, match="TimeTag flag"):
        decode_apdu(h("85 01 01 40 00 02 00 01 1C 07 EA 0B 19 09 23 00 00"))
    # the [TS] meter's answer: both absent inside the SECURITY-Response
    inner = unwrap(decode_apdu(decode_frame(BY_ID["ts_security_response"].wire).user_data))
    assert isinstance(inner, ServerApdu) and inner.follow_report is None and inner.time_tag is None


def test_length_field_masks_bits_0_to_13() -> None:
    good = BY_ID["hand_frequency"].wire  # length 1C 00
    for high, reason in ((0x40, "unit bit 14"), (0x80, "reserved bit 15"), (0xC0, "unit bit 14")):
        bad = good[:2] + bytes([good[2] | high]) + good[3:]
        decoder = Decoder()
        decoder.feed(bad)
        with pytest.raises(FrameError, match=reason):
            decoder.next_frame()
        assert decoder.buffered == len(bad) - 1
    # bytes after the end byte are not part of the frame
    decoder = Decoder()
    decoder.feed(good + h("16 16 68"))
    assert decoder.next_frame() == BY_ID["hand_frequency"].frame
    assert decoder.buffered == 3
    with pytest.raises(FrameError, match="3 unexpected bytes after the frame"):
        decode_frame(good + h("16 16 68"))


# --------------------------------------------------------------------------------------
# 3. High-level API against the published frames


def test_builders_match_published_frames() -> None:
    assert build_get("000000000322", "voltage", preamble=0) == BY_ID["split_get_voltage"].wire
    assert build_get("000000000322", "voltage").startswith(b"\xfe" * 4)
    assert (
        build_set_clock("000000000322", dt.datetime(2023, 8, 15, 8, 39, 23), piid=3, preamble=0)
        == BY_ID["split_set_clock"].wire
    )
    assert (
        build_broadcast_time(dt.datetime(2017, 6, 5, 10, 24, 12), preamble=0)
        == BY_ID["term_broadcast_time"].wire
    )
    assert (
        build_get_record(
            "000000000000",
            "daily_freeze",
            dt.datetime(2026, 10, 3),
            dt.datetime(2026, 10, 6),
            ["energy_fwd_total", "voltage_a", "current_a"],
            piid=0,
            preamble=0,
        )
        == BY_ID["doc_get_record"].wire
    )
    assert (
        build_get(
            "431120000002",
            "energy_fwd",
            "voltage",
            "power",
            piid=0,
            client=0x10,
            preamble=0,
            rn=h("087406efe4e8900cda5d3ec56df93d3a"),
        )
        == BY_ID["split_security_rn"].wire
    )
    minute = build_get_record(
        "000000000004",
        "minute_freeze",
        dt.datetime(2019, 1, 11, 0, 30),
        dt.datetime(2019, 1, 11, 0, 44, 59),
        [OAD(0x0000, 2, 0), OAD(0x0010, 2, 0), OAD(0x0020, 2, 0), OAD(0x0030, 2, 0), "freeze_time"],
        interval=TI(TIUnit.MINUTE, 15),
        piid=0,
        preamble=0,
        rn=h("DBE874E868E2818062D57A7809720F39"),
    )
    assert minute == BY_ID["sim_minute_freeze"].wire


def test_parse_record_response() -> None:
    table = parse_record_response(decode_frame(BY_ID["doc_record_reply"].wire), address=M000)
    assert table.record == OAD(0x5004, 2, 0)
    assert table.columns == ("energy_fwd_total", "voltage_a", "current_a")
    assert table.rows == (
        {
            "energy_fwd_total": Decimal("1230.00"),
            "voltage_a": Decimal("240.5"),
            "current_a": Decimal("4.980"),
        },
        {
            "energy_fwd_total": Decimal("1234.56"),
            "voltage_a": Decimal("241.3"),
            "current_a": Decimal("5.000"),
        },
    )
    empty = parse_record_response(decode_frame(BY_ID["doc_record_empty"].wire))
    assert empty.rows == () and empty.columns == ("energy_fwd_total",)
    # unknown columns stay as Data; a refused record raises MeterError
    refused = ServerApdu(GetResponseRecord(1, ResultRecord(OAD(0x5004, 2, 0), (), 3)))
    with pytest.raises(MeterError, match="read/write denied") as info:
        parse_record_response(reply(M322, refused.encode()))
    assert info.value.code == 3
    odd = ServerApdu(
        GetResponseRecord(
            1,
            ResultRecord(
                OAD(0x5004, 2, 0),
                (ROAD(OAD(0x5004, 2, 0), (OAD(0x10, 2, 0),)), OAD(0x3000, 2, 0)),
                ((NULL, dlu(1)),),
            ),
        )
    )
    table = parse_record_response(reply(M322, odd.encode()))
    assert table.columns == ("50040200:00100200", "30000200")
    assert table.rows == ({"50040200:00100200": NULL, "30000200": dlu(1)},)


def test_parse_list_set_action_and_dar() -> None:
    listed = parse_get_list_response(
        decode_frame(BY_ID["hand_list_reply"].wire),
        ["energy_fwd_total", "voltage_a", "frequency"],
        address="000000000322",
        piid=12,
    )
    assert listed == {
        "energy_fwd_total": Decimal("12345.67"),
        "voltage_a": Decimal("220.0"),
        "frequency": DAR.OBJECT_UNDEFINED,
    }
    parse_set_response(decode_frame(BY_ID["split_set_reply"].wire), OAD(0x4000, 2, 0))
    with pytest.raises(MeterError, match="object undefined") as info:
        parse_action_response(decode_frame(BY_ID["split_action_reply"].wire), OMD(0x4500, 1))
    assert info.value.code == 4
    assert info.value.raw == BY_ID["split_action_reply"].wire
    with pytest.raises(MeterError, match="object does not exist") as info:
        parse_get_response(decode_frame(BY_ID["hand_dar"].wire), "frequency")
    assert info.value.meter == "000000000322" and info.value.code == 6
    assert parse_get_response(decode_frame(BY_ID["hand_frequency"].wire), "frequency") == Decimal(
        "50.02"
    )


def test_reply_checks() -> None:
    energy = decode_frame(TYPICAL_GET_RESPONSE)
    with pytest.raises(FrameError, match="reply from meter 000000000322, expected 000000000323"):
        parse_get_response(energy, "energy_fwd", address="000000000323")
    with pytest.raises(FrameError, match="reply carries OAD 00100200, expected 20000200"):
        parse_get_response(energy, "voltage")
    with pytest.raises(FrameError, match="PIID serial 1, expected 2"):
        parse_get_response(energy, "energy_fwd", piid=2)
    request = decode_frame(BY_ID["split_get_voltage"].wire)
    with pytest.raises(FrameError, match="is a request"):
        parse_get_response(request, "voltage")
    with pytest.raises(FrameError, match="expected GetResponseNormalList"):
        parse_get_list_response(energy, ["energy_fwd"])
    with pytest.raises(FrameError, match="expected SetResponseNormal"):
        parse_set_response(energy, OAD(0x4000, 2, 0))
    with pytest.raises(FrameError, match="reassemble it first"):
        server_apdu(decode_frame(BY_ID["rs_fragment"].wire))
    # refused at the security layer: the meter's own answer, so MeterError
    refused = reply(M322, SecurityResponse(DAR.ESAM_FAILURE).encode())
    with pytest.raises(MeterError, match="security: ESAM verification failed") as info:
        parse_get_response(refused, "voltage")
    assert info.value.code == 22
    # the [TS] meter answer unwraps from its SECURITY-Response
    inner = server_apdu(decode_frame(BY_ID["ts_security_response"].wire), "902038161632")
    assert isinstance(inner.service, GetResponseNormal)
    assert inner.service.result.oad == OAD(0x3007, 0x0A, 0)


def test_remote_control_requests() -> None:
    until = TimeTag(DateTimeS(2026, 11, 25, 9, 35, 0), TI(TIUnit.MINUTE, 5))
    wire = build_remote_control(
        "000000000322", RemoteControl.TRIP, relay=1, time_tag=until, preamble=0
    )
    apdu = decode_apdu(decode_frame(wire).user_data)
    # 8000 method 129: array of structure {relay OAD F2050201, unsigned, long-unsigned, bool}
    assert apdu == ClientApdu(
        ActionRequestNormal(
            1,
            OMD(0x8000, 129),
            array(
                structure(
                    Data(DataType.OAD, OAD(0xF205, 2, 1)),
                    Data(DataType.UNSIGNED, 0),
                    lu(0),
                    Data(DataType.BOOL, False),
                )
            ),
        ),
        until,
    )
    close = decode_apdu(
        decode_frame(
            build_remote_control("000000000322", RemoteControl.CLOSE, close_command=1)
        ).user_data
    )
    assert isinstance(close, ClientApdu) and isinstance(close.service, ActionRequestNormal)
    assert close.service.omd == OMD(0x8000, 130)
    assert close.service.data == array(
        structure(Data(DataType.OAD, OAD(0xF205, 2, 1)), Data(DataType.ENUM, 1))
    )
    keep = decode_apdu(
        decode_frame(build_remote_control("000000000322", RemoteControl.KEEP_POWER)).user_data
    )
    assert isinstance(keep, ClientApdu) and isinstance(keep.service, ActionRequestNormal)
    assert keep.service.omd == OMD(0x8001, 127) and keep.service.data == NULL
    assert remote_control_omd(RemoteControl.ALARM_RELEASE) == OMD(0x8000, 128)
    for kwargs in ({"relay": 0}, {"alarm_delay": 256}, {"duration": 65536}):
        with pytest.raises(EncodeError):
            build_remote_control("000000000322", RemoteControl.TRIP, **kwargs)  # type: ignore[arg-type]


def test_benchmark_target() -> None:
    assert decode_get_response() == (
        Decimal("12345.67"),
        Decimal("1234.56"),
        Decimal("3399.95"),
        Decimal("4790.15"),
        Decimal("2921.01"),
    )
    b = TYPICAL_GET_RESPONSE
    assert b[12] | b[13] << 8 == ref_crc(b[1:12])
    assert b[-3] | b[-2] << 8 == ref_crc(b[1:-3])


# --------------------------------------------------------------------------------------
# 4. Fragments


def test_fragment_confirm_matches_published_frame() -> None:
    received = decode_frame(BY_ID["rs_fragment"].wire)
    confirm = Reassembler.confirm(received)
    assert encode_frame(confirm, preamble=0) == BY_ID["rs_fragment_confirm"].wire


@FAST
@given(st.binary(min_size=2, max_size=600), st.integers(1, 97), st.integers(0, 0xFFF))
def test_fragments_reassemble(apdu: bytes, piece: int, first: int) -> None:
    if len(apdu) <= piece:
        with pytest.raises(EncodeError, match="not fragmented"):
            split_apdu(apdu, piece)
        return
    pieces = split_apdu(apdu, piece, first_number=first)
    assert pieces[0].kind is FragmentKind.FIRST and pieces[-1].kind is FragmentKind.LAST
    wires = b"".join(
        encode_frame(Frame(M322, p.encode(), 0, True, True, True), preamble=0) for p in pieces
    )
    collector = Reassembler()
    out = None
    for frame in stream(split(wires, [7, 13])).frames:
        assert out is None
        out = collector.add(frame)
        confirm = Reassembler.confirm(frame)
        assert confirm.control == 0x63
        assert decode_fragment(confirm.user_data) == Fragment(
            decode_fragment(frame.user_data).number, FragmentKind.CONFIRM
        )
    assert out == apdu
    assert not collector.collecting


def test_fragment_errors() -> None:
    pieces = split_apdu(bytes(range(30)), 10)
    frames = [Frame(M322, p.encode(), 0, True, True, True) for p in pieces]
    collector = Reassembler()
    with pytest.raises(FrameError, match="without a first"):
        collector.add(frames[1])
    collector.add(frames[0])
    with pytest.raises(FrameError, match="fragment 2, expected 1"):
        collector.add(frames[2])
    assert not collector.collecting
    with pytest.raises(FrameError, match="not a fragment"):
        collector.add(Frame(M322, b"\x05\x01"))
    with pytest.raises(FrameError, match="confirm of fragment"):
        collector.add(Frame(M322, Fragment(3, FragmentKind.CONFIRM).encode(), fragment=True))
    with pytest.raises(FrameError, match="lacks its 2-byte header"):
        decode_fragment(b"\x00")
    with pytest.raises(FrameError, match="reserved bits 12-13"):
        decode_fragment(h("00 10"))
    small = Reassembler(max_apdu=15)
    small.add(frames[0])
    with pytest.raises(FrameError, match="exceeds 15 bytes"):
        small.add(frames[1])
    with pytest.raises(EncodeError):
        Fragment(0x1000, FragmentKind.FIRST).encode()


# --------------------------------------------------------------------------------------
# 5. Round trips: frames, every data type, APDUs

addresses = st.builds(
    ServerAddress,
    address=st.binary(min_size=1, max_size=15).map(lambda b: b.hex().upper()),
    type=st.sampled_from(list(AddressType)),
    logical=st.one_of(st.sampled_from([0, 1]), st.integers(2, 255)),
)
frames = st.builds(
    Frame,
    server=addresses,
    user_data=st.binary(max_size=300),
    client=st.integers(0, 255),
    from_server=st.booleans(),
    client_initiated=st.booleans(),
    fragment=st.booleans(),
    scrambled=st.booleans(),
    function=st.integers(0, 7),
)


@FAST
@given(
    st.lists(st.tuples(frames, st.integers(0, 4)), min_size=1, max_size=4),
    st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_frames_round_trip_through_the_stream(
    items: list[tuple[Frame, int]], sizes: list[int]
) -> None:
    wire = b"".join(encode_frame(f, preamble=p) for f, p in items)
    assert stream(split(wire, sizes)) == Run([f for f, _ in items], [])


@FAST
@given(frames, st.integers(0, 8))
def test_decode_frame_inverts_encode_frame(frame: Frame, preamble: int) -> None:
    wire = encode_frame(frame, preamble=preamble)
    body = wire[preamble:]
    assert body[1] | body[2] << 8 == len(body) - 2
    assert body[-3] | body[-2] << 8 == ref_crc(body[1:-3])
    assert decode_frame(wire) == frame


def _ints(t: DataType) -> st.SearchStrategy[Data]:
    from drivers.dlt698.axdr import integer_range

    low, high = integer_range(t)
    return st.integers(low, high).map(lambda v: Data(t, v))


byte = st.integers(0, 255)
word = st.integers(0, 0xFFFF)
date_time_s = st.builds(DateTimeS, word, byte, byte, byte, byte, byte)
oads = st.builds(OAD, word, byte, byte)
omds = st.builds(OMD, word, byte, byte)
roads = st.builds(ROAD, oads, st.lists(oads, max_size=4).map(tuple))
csds: st.SearchStrategy[CSD] = st.one_of(oads, roads)
tis = st.builds(TI, st.sampled_from(list(TIUnit)), word)
sids = st.builds(SID, st.integers(0, 0xFFFFFFFF), st.binary(max_size=8))


def scalar_data() -> st.SearchStrategy[Data]:
    def of(t: DataType, values: st.SearchStrategy[object]) -> st.SearchStrategy[Data]:
        return values.map(lambda v: Data(t, v))  # type: ignore[arg-type]

    bit_strings = st.integers(0, 40).flatmap(
        lambda n: st.binary(min_size=(n + 7) // 8, max_size=(n + 7) // 8).map(
            lambda b: BitString(n, b)
        )
    )
    return st.one_of(
        st.just(NULL),
        *(
            _ints(t)
            for t in (
                DataType.DOUBLE_LONG,
                DataType.DOUBLE_LONG_UNSIGNED,
                DataType.INTEGER,
                DataType.LONG,
                DataType.UNSIGNED,
                DataType.LONG_UNSIGNED,
                DataType.LONG64,
                DataType.LONG64_UNSIGNED,
                DataType.ENUM,
                DataType.OI,
            )
        ),
        of(DataType.BOOL, st.booleans()),
        of(DataType.BIT_STRING, bit_strings),
        *(
            of(t, st.binary(max_size=200))
            for t in (DataType.OCTET_STRING, DataType.TSA, DataType.MAC, DataType.RN)
        ),
        of(DataType.VISIBLE_STRING, st.text(st.characters(max_codepoint=255), max_size=40)),
        of(DataType.UTF8_STRING, st.text(max_size=40)),
        of(DataType.FLOAT32, st.floats(width=32, allow_nan=False)),
        of(DataType.FLOAT64, st.floats(allow_nan=False)),
        of(DataType.DATE_TIME, st.builds(DateTime, word, byte, byte, byte, byte, byte, byte, word)),
        of(DataType.DATE, st.builds(Date, word, byte, byte, byte)),
        of(DataType.TIME, st.builds(Time, byte, byte, byte)),
        of(DataType.DATE_TIME_S, date_time_s),
        of(DataType.OAD, oads),
        of(DataType.ROAD, roads),
        of(DataType.OMD, omds),
        of(DataType.TI, tis),
        of(DataType.SCALER_UNIT, st.builds(ScalerUnit, st.integers(-128, 127), byte)),
        of(DataType.CSD, csds),
        of(DataType.SID, sids),
        of(DataType.SID_MAC, st.builds(SIDMAC, sids, st.binary(max_size=8))),
        of(DataType.COMDCB, st.builds(COMDCB, byte, byte, byte, byte, byte)),
        of(DataType.RCSD, st.lists(csds, max_size=4).map(tuple)),
    )


def _ms(inner: st.SearchStrategy[Data]) -> st.SearchStrategy[MS]:
    regions = st.builds(Region, st.sampled_from(list(RegionKind)), inner, inner)
    return st.one_of(
        st.sampled_from([MS(0), MS(1)]),
        st.lists(byte, max_size=4).map(lambda x: MS(2, tuple(x))),
        st.lists(st.binary(max_size=8), max_size=3).map(lambda x: MS(3, tuple(x))),
        st.lists(word, max_size=4).map(lambda x: MS(4, tuple(x))),
        st.tuples(st.integers(5, 7), st.lists(regions, max_size=2)).map(
            lambda x: MS(x[0], tuple(x[1]))
        ),
    )


def _rsds(inner: st.SearchStrategy[Data]) -> st.SearchStrategy[RSD]:
    selector2 = st.builds(Selector2, oads, inner, inner, inner)
    return st.one_of(
        st.just(SelectNone()),
        st.builds(Selector1, oads, inner),
        selector2,
        st.lists(selector2, max_size=2).map(lambda s: Selector3(tuple(s))),
        st.builds(SelectorTimeMS, st.sampled_from([4, 5]), date_time_s, _ms(inner)),
        st.builds(
            SelectorRangeMS, st.sampled_from([6, 7, 8]), date_time_s, date_time_s, tis, _ms(inner)
        ),
        st.builds(Selector9, byte),
        st.builds(Selector10, byte, _ms(inner)),
    )


def _extend(inner: st.SearchStrategy[Data]) -> st.SearchStrategy[Data]:
    items = st.lists(inner, max_size=4).map(tuple)
    return st.one_of(
        items.map(lambda x: Data(DataType.ARRAY, x)),
        items.map(lambda x: Data(DataType.STRUCTURE, x)),
        st.builds(Region, st.sampled_from(list(RegionKind)), inner, inner).map(
            lambda r: Data(DataType.REGION, r)
        ),
        _ms(inner).map(lambda m: Data(DataType.MS, m)),
        _rsds(inner).map(lambda r: Data(DataType.RSD, r)),
    )


data_values = st.recursive(scalar_data(), _extend, max_leaves=12)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data_values)
def test_every_data_type_round_trips(data: Data) -> None:
    raw = encode_data(data)
    assert raw[0] == data.type
    assert decode_data(raw) == data


def test_data_type_layouts() -> None:
    """A few by hand: tags, sizes, signs, A-XDR lengths short and long."""
    assert encode_data(Data(DataType.LONG, 0x1234)) == h("10 12 34")  # [RS] data.rs
    assert encode_data(Data(DataType.TSA, h("05 00 00 00 00 00 01"))) == h(
        "55 07 05 00 00 00 00 00 01"
    )
    assert encode_data(dts(2023, 3, 4, 0, 0, 0)) == h("1C 07 E7 03 04 00 00 00")  # [RS]
    assert encode_data(Data(DataType.INTEGER, -1)) == h("0F FF")
    assert encode_data(Data(DataType.SCALER_UNIT, ScalerUnit(-2, 33))) == h("59 FE 21")
    assert encode_data(Data(DataType.OCTET_STRING, bytes(200)))[:3] == h("09 81 C8")
    assert encode_data(Data(DataType.OCTET_STRING, bytes(300)))[:4] == h("09 82 01 2C")
    # a non-minimal long form from a device is read all the same
    assert decode_data(h("09 81 02 AB CD")) == Data(DataType.OCTET_STRING, h("AB CD"))
    assert decode_data(h("03 02")) == Data(DataType.BOOL, True)
    assert encode_data(Data(DataType.BIT_STRING, BitString(12, h("AB C0")))) == h("04 0C AB C0")
    # [RS] record rows of 60120300 with TSA, energies, voltages and currents
    row = decode_data(
        h(
            "01 05 55 07 05 00 00 00 00 00 01 1C 07 E7 03 04 00 00 00 1C 07 E7 03 04 15 02 03"
            " 1C 07 E7 03 03 17 3B 00 01 03 1C 07 E7 03 04 00 00 00 01 05 06 00 00 07 D0 06 00"
            " 00 01 F4 06 00 00 01 90 06 00 00 01 F4 06 00 00 02 58 01 05 06 00 00 07 D0 06 00"
            " 00 01 F4 06 00 00 01 90 06 00 00 01 F4 06 00 00 02 58"
        )
    )
    assert isinstance(row.value, tuple) and len(row.value) == 5
    assert row.value[3] == dts(2023, 3, 3, 23, 59, 0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (h("07"), "unknown Data type tag 7"),
        (h("06 00 00"), "double_long_unsigned: needs 4 bytes, only 2 left"),
        (h("01 05 12 00 01"), "array: count 5 but only 3 bytes left"),
        (h("09 85 00 00 00 00 01"), "length-of-length byte 0x85"),
        (h("0C 02 C3 28"), "UTF8-string is not UTF-8"),
        (h("54 06 00 01"), "TI unit 6"),
        (h("5B 02 00 00 00 00"), "CSD choice 2"),
        (h("5A 0B"), "RSD selector 11"),
        (h("5C 08"), "MS choice 8"),
        (h("58 04 00 00"), "Region kind 4"),
        (h("12 00 01 00"), "1 bytes after the end"),
        (h("01 01" * 20 + "00"), "nested deeper than 16"),
    ],
)
def test_bad_data(raw: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        decode_data(raw)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (Data(DataType.LONG, 40000), "40000 out of range"),
        (Data(DataType.UNSIGNED, -1), "out of range"),
        (Data(DataType.LONG, True), "expected an int"),
        (Data(DataType.OCTET_STRING, "AB"), "expected bytes"),
        (Data(DataType.VISIBLE_STRING, "電"), "visible_string"),
        (Data(DataType.NULL, 0), "NULL carries no value"),
        (Data(DataType.ARRAY, (1, 2)), "expected a tuple of Data"),
        (Data(DataType.DATE_TIME_S, dt.datetime(2026, 1, 1)), "wrong kind"),
        (Data(DataType.FLOAT32, 1e300), "out of range"),
        (Data(DataType.MS, MS(2, (b"x",))), "wrong kind"),
    ],
)
def test_encode_data_refuses(data: Data, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason):
        encode_data(data)


small_data = st.recursive(
    scalar_data(), lambda inner: st.lists(inner, max_size=3).map(lambda x: array(*x)), max_leaves=5
)
dars = st.one_of(st.sampled_from(list(DAR)), st.integers(36, 254))
results = st.builds(ResultNormal, oads, st.one_of(small_data, dars))
time_tags = st.one_of(st.none(), st.builds(TimeTag, date_time_s, tis))


@st.composite
def records(draw: st.DrawFn) -> ResultRecord:
    columns = tuple(draw(st.lists(csds, min_size=1, max_size=3)))
    if draw(st.booleans()):
        return ResultRecord(draw(oads), columns, draw(dars))
    rows = draw(
        st.lists(
            st.lists(small_data, min_size=len(columns), max_size=len(columns)).map(tuple),
            max_size=3,
        )
    )
    return ResultRecord(draw(oads), columns, tuple(rows))


follow_reports = st.one_of(
    st.none(),
    st.lists(results, max_size=2).map(lambda r: FollowReport(tuple(r))),
    st.lists(records(), max_size=2).map(lambda r: FollowReport(tuple(r), records=True)),
)
requests = st.one_of(
    st.builds(GetRequestNormal, byte, oads),
    st.builds(GetRequestNormalList, byte, st.lists(oads, max_size=5).map(tuple)),
    st.builds(
        GetRequestRecord, byte, oads, _rsds(small_data), st.lists(csds, max_size=3).map(tuple)
    ),
    st.builds(GetRequestNext, byte, word),
    st.builds(SetRequestNormal, byte, oads, small_data),
    st.builds(ActionRequestNormal, byte, omds, small_data),
)
responses = st.one_of(
    st.builds(GetResponseNormal, byte, results),
    st.builds(GetResponseNormalList, byte, st.lists(results, max_size=4).map(tuple)),
    st.builds(GetResponseRecord, byte, records()),
    st.builds(GetResponseNext, byte, st.booleans(), word, dars),
    st.builds(GetResponseNext, byte, st.booleans(), word, st.lists(results, max_size=2).map(tuple)),
    st.lists(records(), max_size=2).flatmap(
        lambda r: st.builds(
            GetResponseNext, byte, st.booleans(), word, st.just(tuple(r)), st.just(True)
        )
    ),
    st.builds(SetResponseNormal, byte, oads, dars),
    st.builds(ActionResponseNormal, byte, omds, dars, st.one_of(st.none(), small_data)),
)
date_times = st.builds(DateTime, word, byte, byte, byte, byte, byte, byte, word)
verifications = st.one_of(
    st.builds(VerifyRN, st.binary(max_size=16)),
    st.builds(VerifyRNMAC, st.binary(max_size=16), st.binary(max_size=4)),
    st.builds(VerifySID, sids),
    st.builds(VerifySIDMAC, st.builds(SIDMAC, sids, st.binary(max_size=4))),
)
apdus: st.SearchStrategy[Apdu] = st.one_of(
    st.builds(ClientApdu, requests, time_tags),
    st.builds(ServerApdu, responses, follow_reports, time_tags),
    st.builds(LinkRequest, byte, st.sampled_from(list(LinkRequestKind)), word, date_times),
    st.builds(LinkResponse, byte, byte, date_times, date_times, date_times),
    st.builds(SecurityRequest, st.binary(max_size=40), verifications, st.booleans()),
    st.builds(
        SecurityResponse,
        st.binary(max_size=40),
        st.one_of(st.none(), st.binary(max_size=4)),
        st.booleans(),
    ),
    st.builds(SecurityResponse, dars),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(apdus)
def test_apdus_round_trip(apdu: Apdu) -> None:
    raw = encode_apdu(apdu)
    assert decode_apdu(raw) == apdu
    # and inside a frame, through the stream
    frame = Frame(M322, raw, from_server=isinstance(apdu, ServerApdu | SecurityResponse))
    assert stream([encode_frame(frame)]).frames == [frame]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(ServerApdu, responses, follow_reports, time_tags))
def test_security_wrapped_answers_unwrap(apdu: ServerApdu) -> None:
    wrapped = SecurityResponse(apdu.encode(), mac=b"\x01\x02\x03\x04")
    assert unwrap(decode_apdu(wrapped.encode())) == apdu


def test_unwrap_refuses_what_it_cannot_read() -> None:
    with pytest.raises(FrameError, match="ciphertext"):
        unwrap(SecurityResponse(b"\x85", ciphered=True))
    with pytest.raises(FrameError, match="carries DAR 22"):
        unwrap(SecurityResponse(DAR.ESAM_FAILURE))


# --------------------------------------------------------------------------------------
# 6. Quantities: table, values both ways


def test_quantity_table() -> None:
    expected = {
        "energy_fwd": ("00100200", DataType.DOUBLE_LONG_UNSIGNED, -2, "kWh"),
        "energy_fwd_t4": ("00100205", DataType.DOUBLE_LONG_UNSIGNED, -2, "kWh"),
        "energy_rev_total": ("00200201", DataType.DOUBLE_LONG_UNSIGNED, -2, "kWh"),
        "energy_combined_total": ("00000201", DataType.DOUBLE_LONG, -2, "kWh"),
        "voltage": ("20000200", DataType.LONG_UNSIGNED, -1, "V"),
        "voltage_c": ("20000203", DataType.LONG_UNSIGNED, -1, "V"),
        "current_b": ("20010202", DataType.DOUBLE_LONG, -3, "A"),
        "power": ("20040200", DataType.DOUBLE_LONG, -1, "W"),
        "power_total": ("20040201", DataType.DOUBLE_LONG, -1, "W"),
        "power_factor_a": ("200A0202", DataType.LONG, -3, ""),
        "frequency": ("200F0200", DataType.LONG_UNSIGNED, -2, "Hz"),
    }
    for name, (oad, data_type, scaler, symbol) in expected.items():
        q = lookup(name)
        assert (str(q.oad), q.type, q.scaler, q.symbol) == (oad, data_type, scaler, symbol), name
        assert lookup(oad) is q and lookup(q.oad) is q and lookup(q.oad.value) is q
    assert lookup("clock").type is DataType.DATE_TIME_S
    assert lookup("comm_address").oad == OAD(0x4001, 2, 0)
    assert lookup("freeze_time").oad == OAD(0x2021, 2, 0)
    for bad in ("no_such", "2000020", 0x20000209, -1):
        with pytest.raises(KeyError):
            lookup(bad)
    assert describe_dar(3) == "read/write denied" and describe_dar(100) == "reserved DAR 100"


def _values_for(q: Quantity) -> st.SearchStrategy[object]:
    if q.type is DataType.DATE_TIME_S:
        return st.datetimes(dt.datetime(2000, 1, 1), dt.datetime(2099, 12, 31)).map(
            lambda t: t.replace(microsecond=0)
        )
    if q.type is DataType.OCTET_STRING:
        return st.binary(min_size=1, max_size=8).map(lambda b: b.hex().upper())
    from drivers.dlt698.axdr import integer_range

    low, high = integer_range(q.type)
    numbers = st.integers(low, high)
    one = numbers if q.scaler is None else numbers.map(lambda n: Decimal(n).scaleb(q.scaler or 0))
    return st.lists(one, max_size=5).map(tuple) if q.array else one


@FAST
@given(st.sampled_from(QUANTITIES).flatmap(lambda q: st.tuples(st.just(q), _values_for(q))))
def test_quantity_values_round_trip(item: tuple[Quantity, object]) -> None:
    q, value = item
    data = from_value(q, value)  # type: ignore[arg-type]
    assert to_value(q, data) == value
    # and as a whole reply frame
    wire = encode_frame(
        reply(M322, ServerApdu(GetResponseNormal(1, ResultNormal(q.oad, data))).encode())
    )
    assert parse_get_response(decode_frame(wire), q) == value


@pytest.mark.parametrize(
    ("name", "value", "reason"),
    [
        ("voltage_a", Decimal("220.15"), "more than 1 decimals"),
        ("voltage_a", Decimal("-1"), "out of range"),
        ("current_a", Decimal("3000000.000"), "out of range"),
        ("voltage_a", "220", "expected a Decimal"),
        ("voltage", Decimal("1"), "expected a tuple"),
        ("clock", dt.date(2026, 1, 1), "expected a datetime"),
        ("comm_address", "XYZ", "not hex"),
        ("freeze_number", Decimal("1"), "expected an int"),
    ],
)
def test_from_value_refuses(name: str, value: object, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason):
        from_value(lookup(name), value)  # type: ignore[arg-type]


def test_to_value_refuses_other_types() -> None:
    with pytest.raises(
        FrameError, match=r"voltage_a \(20000201\): expected LONG_UNSIGNED, got DOUBLE_LONG"
    ):
        to_value(lookup("voltage_a"), dls(2200))
    assert to_value(lookup("voltage_a"), NULL) is None
    assert to_value(lookup("voltage"), array(lu(2200), NULL)) == (Decimal("220.0"), None)
    assert to_value(lookup("freeze_number"), dlu(7)) == 7


# --------------------------------------------------------------------------------------
# 7. Fuzzing: FrameError only, progress, no frame with a bad CRC, bounded buffer


def check_yield(run: Run, data: bytes) -> None:
    for frame in run.frames:
        wire = encode_frame(frame, preamble=0)
        assert wire[-3] | wire[-2] << 8 == ref_crc(wire[1:-3])
        assert wire in data  # the very bytes were on the line, not pieced together


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 50), min_size=1, max_size=8))
def test_fuzz_random_bytes(data: bytes, sizes: list[int]) -> None:
    check_yield(stream(split(data, sizes)), data)


def _mutate(draw: st.DrawFn, wire: bytes) -> bytes:
    out = bytearray(wire)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "replace"]))
        i = draw(st.integers(0, len(out) - 1))
        if op == "flip":
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out.insert(i, draw(st.sampled_from([0x68, 0x16, 0xFE, 0x00, 0xFF, 0xAA])))
        elif op == "delete":
            del out[i]
        elif op == "truncate":
            del out[i:]
        else:
            out[i] = draw(st.integers(0, 255))
    return bytes(out)


@st.composite
def mutated_streams(draw: st.DrawFn) -> bytes:
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        wire = (
            draw(st.sampled_from(VECTORS)).wire
            if draw(st.booleans())
            else encode_frame(draw(frames))
        )
        parts.append(_mutate(draw, wire) if draw(st.booleans()) else wire)
    return b"".join(parts)


@FUZZ
@given(mutated_streams(), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_fuzz_mutated_frames(data: bytes, sizes: list[int]) -> None:
    run = stream(split(data, sizes))
    check_yield(run, data)
    for frame in run.frames:  # and their user data: an APDU or FrameError, nothing else
        with contextlib.suppress(FrameError):
            decode_apdu(frame.user_data)
    try:
        frame = decode_frame(data)
    except FrameError:
        return
    assert encode_frame(frame, preamble=0) == data.lstrip(b"\xfe")


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_apdu_and_data_parsers(raw: bytes) -> None:
    for parse in (decode_apdu, decode_data, decode_fragment):
        with contextlib.suppress(FrameError):
            parse(raw)


@FUZZ
@given(st.sampled_from([v for v in VECTORS if not v.frame.fragment]), st.data())
def test_fuzz_mutated_apdus(v: Vector, data: st.DataObject) -> None:
    raw = _mutate(data.draw, v.frame.user_data)
    try:
        apdu = decode_apdu(raw)
    except FrameError:
        return
    once = encode_apdu(apdu)  # what was parsed can be written, and reads back the same
    assert encode_apdu(decode_apdu(once)) == once
    with contextlib.suppress(FrameError):
        unwrap(apdu)


def test_single_bit_flips_never_pass() -> None:
    for v in VECTORS:
        b = v.wire.lstrip(b"\xfe")
        for i in range(len(b)):
            for bit in range(8):
                bad = bytearray(b)
                bad[i] ^= 1 << bit
                run = stream([bytes(bad)])
                assert all(f != v.frame for f in run.frames), (v.id, i, bit)
                check_yield(run, bytes(bad))


def test_buffer_cap_under_megabytes_of_noise() -> None:
    rng = random.Random(698)
    decoder = Decoder(max_buffer=4096)
    cap = MAX_FRAME_LEN
    run = Run([], [])
    for _ in range(128):  # 1 MiB in 8 KiB chunks
        decoder.feed(rng.randbytes(8192))
        assert decoder.buffered <= cap
        drain(decoder, run)
    quiet = Decoder()
    for _ in range(32):
        quiet.feed(rng.randbytes(65536))
        assert quiet.buffered <= 2 * MAX_FRAME_LEN
    assert quiet.discarded + quiet.buffered == 32 * 65536
    decoder.feed(b"\x00" * MAX_FRAME_LEN + TYPICAL_GET_RESPONSE)
    drain(decoder, run)
    assert run.frames[-1] == decode_frame(TYPICAL_GET_RESPONSE)


def test_decoder_need_and_discarded() -> None:
    wire = BY_ID["split_get_voltage"].wire  # 25 bytes
    decoder = Decoder()
    assert decoder.need() == 0
    decoder.feed(b"\xfe\xfe\x00")
    assert decoder.next_frame() is None and decoder.discarded == 3
    decoder.feed(wire[:2])
    assert decoder.need() == 1
    decoder.feed(wire[2:10])
    assert decoder.need() == 15 and decoder.next_frame() is None
    decoder.feed(wire[10:])
    assert decoder.next_frame() == BY_ID["split_get_voltage"].frame
    decoder.feed(b"\x68\x17")
    decoder.reset()
    assert decoder.buffered == 0 and decoder.discarded == 5
    bad_fcs = wire[:-3] + bytes([wire[-3] ^ 1]) + wire[-2:]
    decoder.feed(bad_fcs + wire)
    assert decoder.frames() == [BY_ID["split_get_voltage"].frame]


@pytest.mark.parametrize(
    ("wire", "reason", "offset"),
    [
        (h("68 17 00 43 05 22 03 00 00 00 00 00 37 22 05"), "HCS 0x2237, expected 0x2137", 12),
        (
            h("68170043052203000000000037210501012000020000cebb16"),
            "FCS 0xBBCE, expected 0xBACE",
            22,
        ),
        (h("68 09 00"), "length 9 below the minimum 10", 1),
        (h("68 0C 00 43 0F"), "length 12 cannot hold a header with 16 address bytes", 1),
    ],
)
def test_broken_frames(wire: bytes, reason: str, offset: int) -> None:
    decoder = Decoder()
    decoder.feed(wire)
    with pytest.raises(FrameError, match=reason) as info:
        decoder.next_frame()
    assert info.value.offset == offset
    assert decoder.buffered == len(wire) - 1


def test_wrong_end_byte_and_reserved_control_bit() -> None:
    def frame_with(control: int, end: int) -> bytes:
        body = bytes([0x17, 0x00, control]) + h("05 22 03 00 00 00 00 00")
        body += ref_crc(body).to_bytes(2, "little") + h("05 01 01 20 00 02 00 00")
        body += ref_crc(body).to_bytes(2, "little")
        return b"\x68" + body + bytes([end])

    with pytest.raises(FrameError, match="end byte 0x17, expected 0x16"):
        decode_frame(frame_with(0x43, 0x17))
    with pytest.raises(FrameError, match="reserved bit 4 of the control byte"):
        decode_frame(frame_with(0x53, 0x16))
    with pytest.raises(FrameError, match="incomplete frame"):
        decode_frame(frame_with(0x43, 0x16)[:-1])
    with pytest.raises(FrameError, match="1 unexpected bytes before the frame"):
        decode_frame(b"\x00" + frame_with(0x43, 0x16))


def test_address_rules() -> None:
    assert ServerAddress("12345678901").address == "12345678901F"
    assert ServerAddress(" 000000000322 ").encode() == h("05 22 03 00 00 00 00")
    assert ServerAddress("000000000322", logical=1).encode()[0] == 0x15
    assert ServerAddress("000000000322", logical=3).encode() == h("26 03 22 03 00 00 00 00")
    assert ServerAddress.broadcast().encode() == h("C0 AA")
    for bad, reason in (
        ("12345G", "expected hex digits"),
        ("", "0 bytes"),
        ("00" * 17, "17 bytes"),
        ("00" * 16, None),
    ):
        if reason is None:
            ServerAddress(bad)
            continue
        with pytest.raises(EncodeError, match=reason):
            ServerAddress(bad)
    with pytest.raises(EncodeError, match="17 bytes"):
        ServerAddress("00" * 16, logical=2)  # the extended byte counts
    with pytest.raises(EncodeError, match="logical address 256"):
        ServerAddress("00", logical=256)
    with pytest.raises(EncodeError, match="client address 256"):
        encode_frame(Frame(M322, client=256))
    with pytest.raises(EncodeError, match="at most"):
        encode_frame(Frame(M322, bytes(MAX_FRAME_LEN)))
    assert len(encode_frame(Frame(ServerAddress("00")), preamble=0)) == MIN_FRAME_LEN
