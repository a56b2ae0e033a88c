"""Tests for drivers.gdw1376_2: vectors, round trips, fuzzing.

None of the byte strings below is produced by the encoder under test. Sources:
  [CAP]  Frames captured by liucun0505/SPLCKQ-11 (a 1376.2 conformance-test tool) talking
         to a real module, from its logs CSG_Debug/日志/DataFile-2017年08月24日.txt and
         DataFile-2017年08月25日.txt, copied byte for byte.
  [P31]  docs/protocols.md §3.7: the real AFN 03 F16 request (the F8/F16 DT pitfall).
  [P32]  docs/protocols.md §3.7: the worked AFN 13 F1 request (47 bytes, CS 08), its
         16-byte DL/T 645 frame being docs/protocols.md §1.7's read of 00010000 without
         FE bytes.
  [HAND] Laid out here from the field lists in gdw1376_2's docstrings; L and CS of each
         were worked out with plain arithmetic (L = all bytes 68..16; CS = sum of C up
         to the last data byte, mod 256), and ``test_vectors_are_sound`` rechecks both
         without the codec. The 645 frames inside are docs/protocols.md §1.7's.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.errors import EncodeError, FrameError
from drivers.gdw1376_2 import (
    AFN,
    HARDWARE_INIT,
    MAX_FN,
    MAX_FRAME_LEN,
    MIN_FRAME_LEN,
    QUERY_MASTER_ADDRESS,
    QUERY_NODE_COUNT,
    QUERY_RUN_MODE,
    ROUTE_PAUSE,
    AddNodes,
    BroadcastRequest,
    Command,
    CommMode,
    Confirm,
    Decoder,
    DeleteNodes,
    Deny,
    DenyReason,
    Direction,
    DiscoveredNode,
    DownInfo,
    Edition,
    Frame,
    MasterAddress,
    MonitorReply,
    MonitorRequest,
    NodeCount,
    NodeInfo,
    NodePage,
    NodePageRequest,
    NodeReport,
    ProtocolType,
    RawUnit,
    ReadReport,
    RouteChange,
    RouteTask,
    RunMode,
    SlaveNode,
    Unit,
    UpInfo,
    VendorInfo,
    checksum,
    command,
    confirm_report,
    decode_frame,
    decode_node_address,
    describe_deny,
    dt_to_fn,
    encode_frame,
    encode_node_address,
    fn_to_dt,
    parse_unit,
    reply_to,
    report,
)

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

METER = "123456789012"  # wire order 12 90 78 56 34 12
READ_ENERGY = "68 12 90 78 56 34 12 68 11 04 33 33 34 33 68 16"  # docs/protocols.md §1.7
ENERGY_REPLY = "68 12 90 78 56 34 12 68 91 08 33 33 34 33 9A 78 56 34 88 16"  # 12345.67 kWh
BROADCAST_TIME = "68 99 99 99 99 99 99 68 08 06 33 68 3C 58 44 59 40 16"  # 2026-11-25 09:35


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --------------------------------------------------------------------------------------
# Streaming helpers (as in test_dlt645)


@dataclass
class Run:
    frames: list[Frame]
    errors: list[FrameError]


def drain(decoder: Decoder, run: Run) -> None:
    """next_frame() until None; every frame or FrameError must consume bytes."""
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
        n = max(1, sizes[k % len(sizes)]) if sizes else len(data)
        out.append(data[i : i + n])
        i += n
        k += 1
    return out


def garbage(rng: random.Random, n: int) -> bytes:
    """Line noise without 0x68: a 0x68 opens a candidate (tested separately)."""
    return rng.randbytes(n).replace(b"\x68", b"\x00")


# --------------------------------------------------------------------------------------
# 1. Vectors


@dataclass(frozen=True)
class Vector:
    id: str
    wire: bytes
    frame: Frame
    unit: Unit
    edition: Edition = Edition.Q2013


Q1200 = DownInfo(rate=1200)  # SPLCKQ-11 sends R = 00 00 00 B0 04 SEQ: rate 0x04B0 = 1200

VECTORS = [
    # [P31] AFN 03 F16 (query broadband parameters): DT1 80 DT2 01, where a fn & 7
    # encoder writes 00 02; R asks for 40 reply bytes at rate 50, SEQ 0x67.
    Vector(
        "p31_afn03_f16",
        h("68 0F 00 43 00 00 28 32 00 67 03 80 01 88 16"),
        Frame(AFN.QUERY, 16, info=DownInfo(seq=0x67, reply_bytes=40, rate=50)),
        RawUnit(AFN.QUERY, 16, b""),
    ),
    # [CAP] 10 F1 query node count, and its reply: 1 node, capacity 2040 (F8 07)
    Vector(
        "cap_query_node_count",
        h("68 0F 00 43 00 00 00 B0 04 00 10 01 00 08 16"),
        Frame(AFN.ROUTE_QUERY, 1, info=Q1200),
        QUERY_NODE_COUNT,
    ),
    Vector(
        "cap_node_count",
        h("68 13 00 83 00 00 00 00 00 00 10 01 00 01 00 F8 07 94 16"),
        Frame(AFN.ROUTE_QUERY, 1, h("01 00 F8 07"), UpInfo(), prm=False),
        NodeCount(1, 2040),
    ),
    # [CAP] 10 F2 from node 1, ten of them; the reply: node 000000000006, info word
    # 00 10 = relay 0, quality 0, no phase, protocol 2 (D11-D13). R5 = FC: spare bits set.
    Vector(
        "cap_node_page_request",
        h("68 12 00 43 00 00 00 B0 04 00 10 02 00 01 00 0A 14 16"),
        Frame(AFN.ROUTE_QUERY, 2, h("01 00 0A"), Q1200),
        NodePageRequest(1, 10),
    ),
    Vector(
        "cap_node_page",
        h("68 1A 00 83 00 00 00 00 FC 00 10 02 00 01 00 01 06 00 00 00 00 00 00 10 A9 16"),
        Frame(
            AFN.ROUTE_QUERY,
            2,
            h("01 00 01 06 00 00 00 00 00 00 10"),
            UpInfo(spare=h("00 00 00 00 FC 00")),
            prm=False,
        ),
        NodePage(1, (NodeInfo("000000000006", ProtocolType.DLT645_2007),)),
    ),
    # [CAP] the reply to the same query sent through the address field (from
    # 111111111111 to node 6): the addresses come back swapped
    Vector(
        "cap_node_page_reply_addressed",
        h(
            "68 26 00 83 04 00 00 00 04 00 06 00 00 00 00 00 11 11 11 11 11 11"
            " 10 02 00 01 00 01 06 00 00 00 00 00 00 10 21 16"
        ),
        Frame(
            AFN.ROUTE_QUERY,
            2,
            h("01 00 01 06 00 00 00 00 00 00 10"),
            UpInfo(slave_node=True, spare=h("00 00 00 00 04 00")),
            prm=False,
            source="000000000006",
            destination="111111111111",
        ),
        NodePage(1, (NodeInfo("000000000006"),)),
    ),
    # [CAP] AFN 02 F1 data forwarding with an address field: a layout we do not parse
    Vector(
        "cap_forward_addressed",
        h(
            "68 2E 00 43 04 00 00 B0 04 00 11 11 11 11 11 11 06 00 00 00 00 00 02 01 00"
            " 02 11 FE 68 06 00 00 00 00 00 68 11 04 33 32 34 35 B9 16 03 16"
        ),
        Frame(
            AFN.FORWARD,
            1,
            h("02 11 FE 68 06 00 00 00 00 00 68 11 04 33 32 34 35 B9 16"),
            DownInfo(slave_node=True, rate=1200),
            source="111111111111",
            destination="000000000006",
        ),
        RawUnit(AFN.FORWARD, 1, h("02 11 FE 68 06 00 00 00 00 00 68 11 04 33 32 34 35 B9 16")),
    ),
    # [CAP] 03 F10 query (DT 02 01) and a real module's reply: broadband, own routing,
    # router-led reading (B2); monitor timeout 20 s, broadcast 10 s, frames up to 2048,
    # master BBBBBBBBBBBB, 2040 nodes max, 1 present, dates 2016-06-28 / 2016-06-27,
    # vendor "ZW" chip "10" of 2016-10-20, version 20 10, one rate 80 00 (kbps, default).
    # Uplink R = F8 F0 00 00 FC 00: relay level 15 and spare bits, no address field.
    Vector(
        "cap_query_run_mode",
        h("68 0F 00 43 00 00 00 B0 04 00 03 02 01 FD 16"),
        Frame(AFN.QUERY, 10, info=Q1200),
        QUERY_RUN_MODE,
    ),
    Vector(
        "cap_run_mode",
        h(
            "68 38 00 83 F8 F0 00 00 FC 00 03 02 01 B2 2F 01 01 00 00 14 0A 00 00 08 00 08"
            " 1E BB BB BB BB BB BB F8 07 01 00 28 06 16 27 06 16 5A 57 31 30 20 10 16 10"
            " 20 00 80 8D 16"
        ),
        Frame(
            AFN.QUERY,
            10,
            h(
                "B2 2F 01 01 00 00 14 0A 00 00 08 00 08 1E BB BB BB BB BB BB F8 07 01 00"
                " 28 06 16 27 06 16 5A 57 31 30 20 10 16 10 20 00 80"
            ),
            UpInfo(relay_level=15, spare=h("08 F0 00 00 FC 00")),
            prm=False,
        ),
        RunMode(
            mode_word=h("B2 2F 01 01 00 00"),
            monitor_timeout_s=20,
            broadcast_timeout_s=10,
            max_frame_len=2048,
            max_file_packet=2048,
            upgrade_wait_s=30,
            master_address="BBBBBBBBBBBB",
            max_nodes=2040,
            node_count=1,
            protocol_date=dt.date(2016, 6, 28),
            protocol_filed_date=dt.date(2016, 6, 27),
            vendor=VendorInfo("ZW", "10", dt.date(2016, 10, 20), 0x2010),
            rates=(0x8000,),
        ),
    ),
    # [CAP] deny, reason 02 (length error), R1 = 20: relay level 2, no address field
    Vector(
        "cap_deny_length",
        h("68 10 00 83 20 70 00 00 20 00 00 02 00 02 37 16"),
        Frame(
            AFN.CONFIRM,
            2,
            h("02"),
            UpInfo(relay_level=2, spare=h("00 70 00 00 20 00")),
            prm=False,
        ),
        Deny(DenyReason.LENGTH_ERROR),
    ),
    # [CAP] confirm of 05 F1 from an addressed module: R1 = 34 says relay level 3, yet
    # the address field holds source and destination only (the uplink carries no relays)
    Vector(
        "cap_confirm_uplink_relay_level",
        h(
            "68 21 00 83 34 30 00 00 30 00 CC CC CC CC CC CC 01 01 01 01 01 01"
            " 00 01 00 00 00 00 00 00 00 E6 16"
        ),
        Frame(
            AFN.CONFIRM,
            1,
            h("00 00 00 00 00 00"),
            UpInfo(slave_node=True, relay_level=3, spare=h("00 30 00 00 30 00")),
            prm=False,
            source="CCCCCCCCCCCC",
            destination="010101010101",
        ),
        Confirm(processed=False),
    ),
    # [P32] 13 F1 monitor request, narrowband (C 41), SEQ 1, to meter 123456789012
    Vector(
        "p32_monitor_request",
        h(
            "68 2F 00 41 04 00 00 00 00 01 00 00 00 00 00 00 12 90 78 56 34 12 13 01 00"
            f" 02 00 00 10 {READ_ENERGY} 08 16"
        ),
        Frame(
            AFN.ROUTE_FORWARD,
            1,
            h(f"02 00 00 10 {READ_ENERGY}"),
            DownInfo(seq=1, slave_node=True),
            mode=CommMode.CENTRAL_NARROWBAND,
            source="000000000000",
            destination=METER,
        ),
        MonitorRequest(h(READ_ENERGY)),
    ),
    # [HAND] its reply: uplink 1 s, protocol 02, the 645 energy reply (20 bytes). R =
    # 04 00 21 CC 00 01: phase 1, meter channel 2, qualities 12/12, SEQ 1
    Vector(
        "hand_monitor_reply",
        h(
            "68 33 00 83 04 00 21 CC 00 01 12 90 78 56 34 12 00 00 00 00 00 00 13 01 00"
            f" 01 00 02 14 {ENERGY_REPLY} 7C 16"
        ),
        Frame(
            AFN.ROUTE_FORWARD,
            1,
            h(f"01 00 02 14 {ENERGY_REPLY}"),
            UpInfo(
                seq=1,
                slave_node=True,
                phase=1,
                meter_channel=2,
                command_quality=12,
                reply_quality=12,
            ),
            prm=False,
            source=METER,
            destination="000000000000",
        ),
        MonitorReply(h(ENERGY_REPLY), uplink_s=1),
    ),
    # [HAND] 13 F1 over one relay (R1 = 14): source, relay 000000000099, destination
    Vector(
        "hand_monitor_request_relay",
        h(
            "68 35 00 43 14 00 00 00 00 02 00 00 00 00 00 00 99 00 00 00 00 00"
            f" 12 90 78 56 34 12 13 01 00 02 00 00 10 {READ_ENERGY} B4 16"
        ),
        Frame(
            AFN.ROUTE_FORWARD,
            1,
            h(f"02 00 00 10 {READ_ENERGY}"),
            DownInfo(seq=2, slave_node=True, relay_level=1),
            source="000000000000",
            relays=("000000000099",),
            destination=METER,
        ),
        MonitorRequest(h(READ_ENERGY)),
    ),
    # [HAND] the 2009 layouts: no delay-related flag down, no uplink duration up
    Vector(
        "hand_monitor_request_2009",
        h(
            "68 2E 00 41 04 00 00 00 00 03 00 00 00 00 00 00 12 90 78 56 34 12 13 01 00"
            f" 02 00 10 {READ_ENERGY} 0A 16"
        ),
        Frame(
            AFN.ROUTE_FORWARD,
            1,
            h(f"02 00 10 {READ_ENERGY}"),
            DownInfo(seq=3, slave_node=True),
            mode=CommMode.CENTRAL_NARROWBAND,
            source="000000000000",
            destination=METER,
        ),
        MonitorRequest(h(READ_ENERGY)),
        Edition.Q2009,
    ),
    Vector(
        "hand_monitor_reply_2009",
        h(
            "68 31 00 81 04 00 00 00 00 03 12 90 78 56 34 12 00 00 00 00 00 00 13 01 00"
            f" 02 14 {ENERGY_REPLY} 8E 16"
        ),
        Frame(
            AFN.ROUTE_FORWARD,
            1,
            h(f"02 14 {ENERGY_REPLY}"),
            UpInfo(seq=3, slave_node=True),
            prm=False,
            mode=CommMode.CENTRAL_NARROWBAND,
            source=METER,
            destination="000000000000",
        ),
        MonitorReply(h(ENERGY_REPLY)),
        Edition.Q2009,
    ),
    # [HAND] 01 F1 hardware init, SEQ 05; with SEQ D1 the checksum is 0x16, with 23 0x68
    Vector(
        "hand_hardware_init",
        h("68 0F 00 43 00 00 00 00 00 05 01 01 00 4A 16"),
        Frame(AFN.INIT, 1, info=DownInfo(seq=5)),
        HARDWARE_INIT,
    ),
    Vector(
        "hand_checksum_16",
        h("68 0F 00 43 00 00 00 00 00 D1 01 01 00 16 16"),
        Frame(AFN.INIT, 1, info=DownInfo(seq=0xD1)),
        HARDWARE_INIT,
    ),
    Vector(
        "hand_checksum_68",
        h("68 0F 00 43 00 00 00 00 00 23 01 01 00 68 16"),
        Frame(AFN.INIT, 1, info=DownInfo(seq=0x23)),
        HARDWARE_INIT,
    ),
    # [HAND] 12 F2 route pause
    Vector(
        "hand_route_pause",
        h("68 0F 00 43 00 00 00 00 00 06 12 02 00 5D 16"),
        Frame(AFN.ROUTE_CONTROL, 2, info=DownInfo(seq=6)),
        ROUTE_PAUSE,
    ),
    # [HAND] 03 F1 reply: "MF" "SM", 2026-11-25 (25 11 26), version 00 01
    Vector(
        "hand_vendor",
        h("68 18 00 83 00 00 00 00 00 08 03 01 00 4D 46 53 4D 25 11 26 00 01 1F 16"),
        Frame(AFN.QUERY, 1, h("4D 46 53 4D 25 11 26 00 01"), UpInfo(seq=8), prm=False),
        VendorInfo("MF", "SM", dt.date(2026, 11, 25), 0x0100),
    ),
    # [HAND] 11 F1 add 000000000001 and 000000000002 (protocol 02 each); 11 F2 delete 2
    Vector(
        "hand_add_nodes",
        h(
            "68 1E 00 43 00 00 00 00 00 09 11 01 00 02 01 00 00 00 00 00 02"
            " 02 00 00 00 00 00 02 67 16"
        ),
        Frame(
            AFN.ROUTE_SET,
            1,
            h("02 01 00 00 00 00 00 02 02 00 00 00 00 00 02"),
            DownInfo(seq=9),
        ),
        AddNodes((SlaveNode("000000000001"), SlaveNode("000000000002"))),
    ),
    Vector(
        "hand_delete_nodes",
        h("68 16 00 43 00 00 00 00 00 0A 11 02 00 01 02 00 00 00 00 00 63 16"),
        Frame(AFN.ROUTE_SET, 2, h("01 02 00 00 00 00 00"), DownInfo(seq=10)),
        DeleteNodes(("000000000002",)),
    ),
    # [HAND] spontaneous 06 F1 (C3: DIR 1, PRM 1): found 000000000003, protocol 2, index 3;
    # 06 F3 search finished; the concentrator's confirm of SEQ 07 (C 03: DIR 0, PRM 0)
    Vector(
        "hand_node_report",
        h("68 19 00 C3 00 00 00 00 00 07 06 01 00 01 03 00 00 00 00 00 02 03 00 DA 16"),
        Frame(AFN.REPORT, 1, h("01 03 00 00 00 00 00 02 03 00"), UpInfo(seq=7)),
        NodeReport((DiscoveredNode("000000000003", ProtocolType.DLT645_2007, 3),)),
    ),
    Vector(
        "hand_route_change",
        h("68 10 00 C3 00 00 00 00 00 08 06 04 00 02 D7 16"),
        Frame(AFN.REPORT, 3, h("02"), UpInfo(seq=8)),
        RouteChange(RouteTask.SEARCH_DONE),
    ),
    Vector(
        "hand_report_confirm",
        h("68 15 00 03 00 00 00 00 00 07 00 01 00 01 00 00 00 00 00 0C 16"),
        Frame(AFN.CONFIRM, 1, h("01 00 00 00 00 00"), DownInfo(seq=7), prm=False),
        Confirm(),
    ),
    # [HAND] 06 F2 read-data report: node 3, protocol 2, uplink 2 s, the energy reply
    Vector(
        "hand_read_report",
        h(f"68 29 00 C3 00 00 00 00 00 0C 06 02 00 03 00 02 02 00 14 {ENERGY_REPLY} 18 16"),
        Frame(AFN.REPORT, 2, h(f"03 00 02 02 00 14 {ENERGY_REPLY}"), UpInfo(seq=12)),
        ReadReport(3, h(ENERGY_REPLY), uplink_s=2),
    ),
    # [HAND] deny 109 (6D, too many concurrent requests) of a 13 F1 to meter 123456789012:
    # no address field, R1 D2 = 0, as in the captured deny above (docs/protocols.md §3.2)
    Vector(
        "hand_deny_concurrent",
        h("68 10 00 83 00 00 00 00 00 0B 00 02 00 6D FD 16"),
        Frame(AFN.CONFIRM, 2, h("6D"), UpInfo(seq=11), prm=False),
        Deny(DenyReason.TOO_MANY_CONCURRENT),
    ),
    # [HAND] 03 F4 query of the master node address (DT1 08 DT2 00), SEQ 15, and the
    # module's answer: 100000000000, low byte first (docs/protocols.md §3.4)
    Vector(
        "hand_query_master_address",
        h("68 0F 00 43 00 00 00 00 00 0F 03 08 00 5D 16"),
        Frame(AFN.QUERY, 4, info=DownInfo(seq=15)),
        QUERY_MASTER_ADDRESS,
    ),
    Vector(
        "hand_master_address",
        h("68 15 00 83 00 00 00 00 00 0F 03 08 00 00 00 00 00 00 10 AD 16"),
        Frame(AFN.QUERY, 4, h("00 00 00 00 00 10"), UpInfo(seq=15), prm=False),
        MasterAddress("100000000000"),
    ),
    # [HAND] 05 F3 broadcast of docs/protocols.md §1.7's 645 time sync (18 bytes)
    Vector(
        "hand_broadcast",
        h(f"68 23 00 43 00 00 00 00 00 0D 05 04 00 02 12 {BROADCAST_TIME} 03 16"),
        Frame(AFN.CONTROL, 3, h(f"02 12 {BROADCAST_TIME}"), DownInfo(seq=13)),
        BroadcastRequest(h(BROADCAST_TIME)),
    ),
    # [HAND] 10 F1 to meter 000000006816: 0x16 and 0x68 inside the address field
    Vector(
        "hand_address_16_68",
        h("68 1B 00 43 04 00 00 00 00 0E 00 00 00 00 00 00 16 68 00 00 00 00 10 01 00 E4 16"),
        Frame(
            AFN.ROUTE_QUERY,
            1,
            info=DownInfo(seq=14, slave_node=True),
            source="000000000000",
            destination="000000006816",
        ),
        QUERY_NODE_COUNT,
    ),
]
IDS = [v.id for v in VECTORS]
BY_ID = {v.id: v for v in VECTORS}


def test_vectors_are_sound() -> None:
    """The vectors themselves, without the codec: L, CS by the sum rule, end byte."""
    for v in VECTORS:
        w = v.wire
        assert w[0] == 0x68 and w[-1] == 0x16, v.id
        assert w[1] | w[2] << 8 == len(w), v.id
        assert sum(w[3:-2]) % 256 == w[-2], v.id


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_decodes_and_encodes(v: Vector) -> None:
    assert decode_frame(v.wire) == v.frame
    assert encode_frame(v.frame) == v.wire


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_data_unit_both_ways(v: Vector) -> None:
    assert parse_unit(v.frame, v.edition) == v.unit
    assert v.unit.encode(v.edition) == v.frame.data


@pytest.mark.parametrize("v", VECTORS, ids=IDS)
def test_vector_streams(v: Vector) -> None:
    wire = v.wire
    expected = [v.frame]
    assert stream([wire]) == Run(expected, [])
    assert stream(wire[i : i + 1] for i in range(len(wire))) == Run(expected, [])
    for cut in range(1, len(wire)):
        assert stream([wire[:cut], wire[cut:]]) == Run(expected, []), cut
    rng = random.Random(v.id)
    for _ in range(20):
        data = garbage(rng, rng.randrange(0, 40)) + wire
        assert stream(split(data, [rng.randrange(1, 8) for _ in range(5)])) == Run(expected, [])
    for _ in range(20):  # trailing noise: the frame first, then at most FrameErrors
        data = wire + rng.randbytes(rng.randrange(1, 40))
        assert stream(split(data, [rng.randrange(1, 8)])).frames[:1] == expected
    assert stream([wire + wire]) == Run(expected * 2, [])


def test_builders_match_the_vectors() -> None:
    """command / reply_to / report / confirm_report lay frames out as the vectors do."""
    by_id = BY_ID
    request = by_id["p32_monitor_request"]
    built = command(
        MonitorRequest(h(READ_ENERGY)),
        seq=1,
        destination=METER,
        mode=CommMode.CENTRAL_NARROWBAND,
    )
    assert encode_frame(built) == request.wire
    reply = reply_to(
        replace(built, mode=CommMode.HPLC),
        MonitorReply(h(ENERGY_REPLY), uplink_s=1),
        info=UpInfo(phase=1, meter_channel=2, command_quality=12, reply_quality=12),
    )
    assert encode_frame(reply) == by_id["hand_monitor_reply"].wire
    relay = command(MonitorRequest(h(READ_ENERGY)), seq=2, destination=METER, relays=("99",))
    assert encode_frame(relay) == by_id["hand_monitor_request_relay"].wire
    assert encode_frame(command(HARDWARE_INIT, seq=5)) == by_id["hand_hardware_init"].wire
    found = report(NodeReport((DiscoveredNode("3", index=3),)), seq=7)
    assert encode_frame(found) == by_id["hand_node_report"].wire
    assert encode_frame(confirm_report(found)) == by_id["hand_report_confirm"].wire
    deny = reply_to(
        command(MonitorRequest(b"x"), seq=11, destination=METER),
        Deny(DenyReason.TOO_MANY_CONCURRENT),
    )
    assert encode_frame(deny) == by_id["hand_deny_concurrent"].wire


# --------------------------------------------------------------------------------------
# 2. Fn <-> DT (the F8 pitfall of hellowangyu3/python's gw13762.py)


@pytest.mark.parametrize(
    ("fn", "dt"),
    [(1, "01 00"), (2, "02 00"), (8, "80 00"), (9, "01 01"), (10, "02 01"), (16, "80 01")],
)
def test_fn_dt_table(fn: int, dt: str) -> None:
    assert fn_to_dt(fn) == h(dt)
    assert dt_to_fn(*h(dt)) == fn


def test_every_fn_round_trips() -> None:
    for fn in range(1, MAX_FN + 1):
        dt1, dt2 = fn_to_dt(fn)
        assert bin(dt1).count("1") == 1
        assert dt_to_fn(dt1, dt2) == fn
        # the buggy mapping differs exactly for the multiples of 8
        buggy = (1 << ((fn & 7) - 1) if fn & 7 else 0, fn >> 3)
        assert (buggy == (dt1, dt2)) == (fn % 8 != 0)


@pytest.mark.parametrize("fn", [0, MAX_FN + 1, -1])
def test_fn_out_of_range(fn: int) -> None:
    with pytest.raises(EncodeError, match="Fn"):
        fn_to_dt(fn)


@pytest.mark.parametrize("dt1", [0x00, 0x03, 0xFF, 0x81])
def test_dt1_must_have_one_bit(dt1: int) -> None:
    with pytest.raises(FrameError, match="exactly one bit"):
        dt_to_fn(dt1, 0)


# --------------------------------------------------------------------------------------
# 3. Broken frames: what was wrong, and where


def _frame_with(body: str) -> bytes:
    """A frame around body (C .. data) with L and CS filled in (test scaffolding)."""
    b = h(body)
    n = len(b) + 5
    return bytes([0x68, n & 0xFF, n >> 8]) + b + bytes([sum(b) & 0xFF, 0x16])


GOOD = h("68 0F 00 43 00 00 00 00 00 05 01 01 00 4A 16")


@pytest.mark.parametrize(
    ("wire", "reason", "offset"),
    [
        (GOOD[:-2] + b"\x4b\x16", "checksum 0x4B, expected 0x4A", 13),
        (GOOD[:-1] + b"\x17", "end byte 0x17, expected 0x16", 14),
        (h("68 0E 00 43 00 00 00 00 00 05 01 01 49 16"), "length 14 below the minimum 15", 1),
        (h("68 01 08") + bytes(2100), "length 2049 exceeds the maximum 2048", 1),
        # R1 = 04 asks for a 12-byte address field that a 15-byte frame cannot hold
        (h("68 0F 00 43 04 00 00 00 00 05 01 01 00 4E 16"), "cannot hold the header", 1),
        # downlink R1 = 14: one relay too, 33 bytes at least; 25 given
        (_frame_with("43 14" + " 00" * 15 + " 10 01 00"), "at least 33 bytes", 1),
        (_frame_with("43 00 00 00 00 00 05 01 00 00"), "DT1 0x00 must have exactly one bit", 11),
        (_frame_with("43 00 00 00 00 00 05 01 03 00"), "DT1 0x03", 11),
    ],
)
def test_broken_frames(wire: bytes, reason: str, offset: int) -> None:
    decoder = Decoder()
    decoder.feed(wire)
    with pytest.raises(FrameError, match=reason) as info:
        decoder.next_frame()
    assert info.value.offset == offset
    assert decoder.buffered == len(wire) - 1  # one byte dropped, then resync
    with pytest.raises(FrameError, match=reason):
        decode_frame(wire)


def test_a_false_start_costs_errors_not_the_frame() -> None:
    for noise in (b"\x68", b"\x00\x68\x68", b"\x68\x11\x22", b"\x68\x0e\x00\x68"):
        run = stream([noise + GOOD])
        assert run.frames == [BY_ID["hand_hardware_init"].frame] and run.errors, noise
    # A false 68 whose next bytes read as a plausible length (here 32) is waited for,
    # not guessed at; once that many bytes are in, it fails its checksum and the real
    # frame behind it comes out.
    decoder = Decoder()
    run = stream([b"\x68\x20\x00" + GOOD], decoder)
    assert run.frames == [] and decoder.need() == 32 - 3 - len(GOOD)
    decoder.feed(bytes(decoder.need()))
    drain(decoder, run)
    assert run.frames == [BY_ID["hand_hardware_init"].frame] and "checksum" in run.errors[0].reason


def test_decoder_need_discarded_reset() -> None:
    decoder = Decoder()
    assert decoder.need() == 0
    decoder.feed(b"\x00\x01")
    assert decoder.next_frame() is None and decoder.discarded == 2
    decoder.feed(GOOD[:2])
    assert decoder.need() == 1
    decoder.feed(GOOD[2:10])
    assert decoder.need() == 5 and decoder.next_frame() is None
    decoder.feed(GOOD[10:])
    assert decoder.next_frame() == BY_ID["hand_hardware_init"].frame
    decoder.feed(b"\x68\x0f")
    decoder.reset()
    assert decoder.buffered == 0 and decoder.discarded == 4


def test_frames_skips_broken_ones() -> None:
    decoder = Decoder()
    decoder.feed(GOOD[:-2] + b"\x00\x16" + GOOD + BY_ID["cap_query_node_count"].wire)
    assert decoder.frames() == [
        BY_ID["hand_hardware_init"].frame,
        BY_ID["cap_query_node_count"].frame,
    ]


def test_decode_frame_wants_exactly_one_frame() -> None:
    with pytest.raises(FrameError, match="incomplete frame: 14 bytes, 1 more expected"):
        decode_frame(GOOD[:-1])
    with pytest.raises(FrameError, match="2 unexpected bytes after the frame"):
        decode_frame(GOOD + b"\x00\x00")
    with pytest.raises(FrameError, match="1 unexpected bytes before the frame"):
        decode_frame(b"\x00" + GOOD)
    with pytest.raises(FrameError, match="incomplete frame"):
        decode_frame(b"")


def test_buffer_cap_under_noise() -> None:
    rng = random.Random(13762)
    decoder = Decoder(max_buffer=10)  # raised to one largest frame
    run = Run([], [])
    for _ in range(128):
        decoder.feed(rng.randbytes(8192))
        assert decoder.buffered <= MAX_FRAME_LEN
        drain(decoder, run)
    quiet = Decoder()
    for _ in range(32):
        quiet.feed(rng.randbytes(65536))
        assert quiet.buffered <= 4096
    assert quiet.discarded + quiet.buffered == 32 * 65536
    # still alive: padding that closes any false candidate, then a real frame
    decoder.feed(bytes(MAX_FRAME_LEN) + GOOD)
    drain(decoder, run)
    assert run.frames[-1] == BY_ID["hand_hardware_init"].frame


# --------------------------------------------------------------------------------------
# 4. Data units: bad layouts, encode refusals


@pytest.mark.parametrize(
    ("frame", "reason", "offset"),
    [
        (Frame(AFN.CONFIRM, 1, h("01 00 00"), UpInfo()), "status word needs 4 bytes", 0),
        (Frame(AFN.CONFIRM, 2, b"", UpInfo()), "error status needs 1 bytes", 0),
        (Frame(AFN.CONFIRM, 2, h("01 02"), UpInfo()), "1 bytes after the last field", 1),
        (
            Frame(AFN.QUERY, 1, h("4D 46 53 4D 25 13 26 00 01"), UpInfo()),
            "month must be in 1..12",
            4,
        ),
        (Frame(AFN.QUERY, 1, h("4D 46 53 4D 2A 11 26 00 01"), UpInfo()), "not BCD", 4),
        (
            Frame(AFN.QUERY, 4, h("00 00 00 00 10"), UpInfo()),
            "master node address needs 6 bytes, the data unit ends after 5",
            0,
        ),
        (Frame(AFN.QUERY, 4, bytes(7), UpInfo()), "1 bytes after the last field", 6),
        (Frame(AFN.ROUTE_QUERY, 2, h("01 00 02") + bytes(8), UpInfo()), "node 2 address", 11),
        (
            Frame(AFN.ROUTE_FORWARD, 1, h("02 02 00 00"), DownInfo()),
            "delay-related flag 2",
            1,
        ),
        (Frame(AFN.ROUTE_FORWARD, 1, h("00 00 02 05 01 02"), UpInfo()), "meter frame", 4),
        (Frame(AFN.REPORT, 1, h("02") + bytes(9), UpInfo()), "node 2 address", 10),
        (Frame(AFN.INIT, 2, h("00"), DownInfo()), "has no data unit", None),
    ],
)
def test_bad_data_units(frame: Frame, reason: str, offset: int | None) -> None:
    with pytest.raises(FrameError, match=reason) as info:
        parse_unit(frame)
    assert info.value.offset == offset


def test_unknown_units_stay_raw() -> None:
    up = Frame(AFN.ROUTE_READ, 1, h("01 02 03"), UpInfo())
    assert parse_unit(up) == RawUnit(AFN.ROUTE_READ, 1, h("01 02 03"))
    # 03 F1 downlink is an empty query, its uplink the vendor information
    assert parse_unit(Frame(AFN.QUERY, 1)) == Command(AFN.QUERY, 1)


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda: encode_frame(Frame(1, 1, info=DownInfo(seq=256))), "SEQ 256"),
        (lambda: encode_frame(Frame(1, 1, info=DownInfo(slave_node=True))), "R1.D2"),
        (lambda: encode_frame(Frame(1, 1, source="1", destination="2")), "R1.D2"),
        (
            lambda: encode_frame(
                Frame(
                    1, 1, info=UpInfo(slave_node=True), source="1", relays=("3",), destination="2"
                )
            ),
            "uplink frames carry no relay",
        ),
        (
            lambda: encode_frame(
                Frame(
                    1, 1, info=DownInfo(slave_node=True), source="1", relays=("3",), destination="2"
                )
            ),
            "1 relay addresses for relay level 0",
        ),
        (lambda: encode_frame(Frame(1, 1, relays=("3",))), "need an address field"),
        (lambda: encode_frame(Frame(1, 1, mode=64)), "communication mode 64"),
        (lambda: encode_frame(Frame(256, 1)), "AFN 256"),
        (lambda: encode_frame(Frame(1, 1, bytes(MAX_FRAME_LEN))), "at most 2048"),
        (lambda: encode_frame(Frame(1, 1, info=UpInfo(spare=h("01 00 00 00 00 00")))), "spare"),
        (lambda: encode_node_address("12345678901G"), "12 hex digits"),
        (lambda: encode_node_address("1234567890123"), "12 hex digits"),
        (lambda: MonitorRequest(bytes(256)).encode(), "meter frame length 256"),
        (lambda: MonitorRequest(b"", delay_related=True).encode(Edition.Q2009), "2009"),
        (lambda: MonitorReply(b"", uplink_s=1).encode(Edition.Q2009), "2009"),
        (lambda: VendorInfo("MFX", "SM", dt.date(2026, 1, 1), 1).encode(), "vendor code"),
        (lambda: VendorInfo("中国", "SM", dt.date(2026, 1, 1), 1).encode(), "single-byte"),
        (lambda: VendorInfo("MF", "SM", dt.date(1999, 1, 1), 1).encode(), "2000..2099"),
        (lambda: Confirm(idle_channels=1).encode(), "bits 1..31"),
        (lambda: NodeInfo("1", relay_level=16).encode(), "relay level 16"),
        (lambda: AddNodes(tuple(SlaveNode(str(i)) for i in range(256))).encode(), "255"),
        (
            lambda: replace(BY_ID["cap_run_mode"].unit, rates=()).encode(),
            "announces 1 rates, 0 given",
        ),
    ],
)
def test_encode_refuses(make: object, reason: str) -> None:
    assert callable(make)
    with pytest.raises(EncodeError, match=reason):
        make()


def test_addresses() -> None:
    assert encode_node_address(METER) == h("12 90 78 56 34 12")
    assert encode_node_address("6") == h("06 00 00 00 00 00")
    assert encode_node_address("bbbbbbbbbbbb") == b"\xbb" * 6
    assert decode_node_address(h("16 68 00 00 00 00")) == "000000006816"


# The deny the simulator used to send: the 13 F1's addresses swapped into a deny frame.
ADDRESSED_DENY = h(
    "68 1C 00 83 04 00 00 00 00 0B 12 90 78 56 34 12 00 00 00 00 00 00 00 02 00 6D B7 16"
)


def test_a_deny_with_an_address_field_is_refused() -> None:
    """docs/protocols.md §3.2: a deny has no address field; a confirm may have one."""
    with pytest.raises(FrameError, match=r"AFN 00 F2 \(deny\) carries no address field") as info:
        decode_frame(ADDRESSED_DENY)
    assert info.value.offset == 4 and info.value.raw == ADDRESSED_DENY
    run = stream([ADDRESSED_DENY + BY_ID["hand_deny_concurrent"].wire])
    assert run.frames == [BY_ID["hand_deny_concurrent"].frame] and len(run.errors) == 1
    addressed = Frame(
        AFN.CONFIRM, 2, h("6D"), UpInfo(slave_node=True), prm=False, source=METER, destination="1"
    )
    with pytest.raises(EncodeError, match="carries no address field"):
        encode_frame(addressed)
    # the captured addressed confirm stays valid
    assert decode_frame(BY_ID["cap_confirm_uplink_relay_level"].wire).source == "CCCCCCCCCCCC"


@FAST
@given(st.binary(min_size=1, max_size=20), st.integers(0, 255), st.booleans())
def test_no_deny_frame_with_r1_d2_decodes(data: bytes, r1: int, up: bool) -> None:
    """Any deny with the comm-module flag set, whatever follows, is a FrameError at R1."""
    control = 0x80 if up else 0x40
    relays = 0 if up else r1 >> 4
    body = bytes([control, r1 | 0x04, 0, 0, 0, 0, 1]) + bytes(6 * (2 + relays))
    wire = _frame_with((body + h("00 02 00") + data).hex())
    with pytest.raises(FrameError) as info:
        decode_frame(wire)
    assert info.value.offset == 4 and "deny" in info.value.reason


def test_run_mode_tells_the_control_mode_and_concurrency() -> None:
    """docs/protocols.md §3.1 and §3.6: the mode word's type and routing bit give C's
    mode; the protocol date gives the edition, and with it concurrency."""
    mode = BY_ID["cap_run_mode"].unit
    assert isinstance(mode, RunMode)
    assert (mode.control_mode, mode.concurrent) == (CommMode.HPLC, False)
    cases = {
        0x12: CommMode.HPLC,
        0x11: CommMode.CENTRAL_NARROWBAND,
        0x01: CommMode.DISTRIBUTED_NARROWBAND,
        0x13: CommMode.MICRO_POWER_WIRELESS,
        0x14: None,
    }
    for byte, expected in cases.items():
        word = bytes([byte]) + mode.mode_word[1:]
        assert replace(mode, mode_word=word).control_mode == expected, hex(byte)
    assert replace(mode, protocol_date=dt.date(2019, 1, 1)).concurrent
    assert not replace(mode, protocol_date=dt.date(2018, 12, 31)).concurrent


def test_deny_descriptions_and_info() -> None:
    assert describe_deny(12) == "slave node not in the network"
    assert describe_deny(13) == "reserved reason code 13"
    assert Deny(7).description == "meter address not in the node table"
    assert parse_unit(Frame(AFN.CONFIRM, 2, h("0D"), UpInfo())) == Deny(13)
    mode = BY_ID["cap_run_mode"].unit
    assert isinstance(mode, RunMode)
    assert (mode.comm_type, mode.routing, mode.needs_node_table) == (2, True, True)
    assert (mode.read_modes, mode.channel_count) == (2, 1)
    frame = BY_ID["cap_node_count"].frame
    assert frame.direction == Direction.UP and frame.control == 0x83 and frame.seq == 0
    assert checksum(b"\xff\x02") == 1


# --------------------------------------------------------------------------------------
# 5. Round trips


def _address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


addresses = st.binary(min_size=6, max_size=6).map(_address)
down_infos = st.builds(
    DownInfo,
    seq=st.integers(0, 255),
    slave_node=st.booleans(),
    relay_level=st.integers(0, 15),
    route_bypass=st.booleans(),
    attached_node=st.booleans(),
    conflict_detection=st.booleans(),
    channel=st.integers(0, 15),
    ecc=st.integers(0, 15),
    reply_bytes=st.integers(0, 255),
    rate=st.integers(0, 0x7FFF),
    rate_kbps=st.booleans(),
)
_SPARE = (0x0A, 0xF0, 0x00, 0x00, 0xFE, 0x00)
up_infos = st.builds(
    UpInfo,
    seq=st.integers(0, 255),
    slave_node=st.booleans(),
    relay_level=st.integers(0, 15),
    route_bypass=st.booleans(),
    channel=st.integers(0, 15),
    phase=st.integers(0, 15),
    meter_channel=st.integers(0, 15),
    command_quality=st.integers(0, 15),
    reply_quality=st.integers(0, 15),
    event=st.booleans(),
    spare=st.binary(min_size=6, max_size=6).map(
        lambda b: bytes(x & m for x, m in zip(b, _SPARE, strict=True))
    ),
)


@st.composite
def frames(draw: st.DrawFn) -> Frame:
    info = draw(st.one_of(down_infos, up_infos))
    source = destination = None
    relays: tuple[str, ...] = ()
    if info.slave_node:
        source, destination = draw(addresses), draw(addresses)
        if isinstance(info, DownInfo):
            relays = tuple(draw(addresses) for _ in range(info.relay_level))
    afn, fn = draw(st.integers(0, 255)), draw(st.integers(1, MAX_FN))
    if info.slave_node and (afn, fn) == (AFN.CONFIRM, 2):
        fn = 1  # a deny never has an address field (test_a_deny_with_...)
    return Frame(
        afn=afn,
        fn=fn,
        data=draw(st.binary(max_size=300)),
        info=info,
        prm=draw(st.booleans()),
        mode=draw(st.integers(0, 63)),
        source=source,
        relays=relays,
        destination=destination,
    )


@FAST
@given(frames())
def test_frame_round_trip(frame: Frame) -> None:
    wire = encode_frame(frame)
    assert decode_frame(wire) == frame
    assert stream(wire[i : i + 1] for i in range(len(wire))) == Run([frame], [])


protocols = st.integers(0, 255)
dates = st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31))
vendors = st.builds(
    VendorInfo,
    st.binary(min_size=2, max_size=2).map(lambda b: b.decode("latin-1")),
    st.binary(min_size=2, max_size=2).map(lambda b: b.decode("latin-1")),
    dates,
    st.integers(0, 0xFFFF),
)


@st.composite
def run_modes(draw: st.DrawFn) -> RunMode:
    rates = tuple(draw(st.lists(st.integers(0, 0xFFFF), max_size=15)))
    word = bytearray(draw(st.binary(min_size=6, max_size=6)))
    word[3] = word[3] & 0xF0 | len(rates)
    return RunMode(
        bytes(word),
        draw(st.integers(0, 255)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 255)),
        draw(addresses),
        draw(st.integers(0, 0xFFFF)),
        draw(st.integers(0, 0xFFFF)),
        draw(dates),
        draw(dates),
        draw(vendors),
        rates,
    )


node_infos = st.builds(
    NodeInfo,
    addresses,
    st.integers(0, 7),
    st.integers(0, 15),
    st.integers(0, 15),
    st.integers(0, 7),
    st.integers(0, 3),
)
payloads = st.binary(max_size=255)
UP_UNITS = st.one_of(
    st.builds(
        Confirm,
        st.booleans(),
        st.integers(0, 2**31 - 1).map(lambda x: x << 1),
        st.integers(0, 0xFFFF),
    ),
    st.builds(Deny, st.integers(0, 255)),
    vendors,
    st.builds(MasterAddress, addresses),
    run_modes(),
    st.builds(NodeCount, st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)),
    st.builds(NodePage, st.integers(0, 0xFFFF), st.lists(node_infos, max_size=20).map(tuple)),
    st.builds(MonitorReply, payloads, protocols, st.integers(0, 0xFFFF)),
    st.builds(
        NodeReport,
        st.lists(
            st.builds(DiscoveredNode, addresses, protocols, st.integers(0, 0xFFFF)), max_size=20
        ).map(tuple),
    ),
    st.builds(ReadReport, st.integers(0, 0xFFFF), payloads, protocols, st.integers(0, 0xFFFF)),
    st.builds(RouteChange, st.integers(0, 255)),
)
DOWN_UNITS = st.one_of(
    st.builds(NodePageRequest, st.integers(0, 0xFFFF), st.integers(0, 255)),
    st.builds(
        AddNodes, st.lists(st.builds(SlaveNode, addresses, protocols), max_size=40).map(tuple)
    ),
    st.builds(DeleteNodes, st.lists(addresses, max_size=40).map(tuple)),
    st.builds(
        MonitorRequest,
        payloads,
        protocols,
        st.booleans(),
        st.lists(addresses, max_size=5).map(tuple),
    ),
    st.builds(BroadcastRequest, payloads, protocols),
    st.sampled_from(
        [HARDWARE_INIT, QUERY_MASTER_ADDRESS, QUERY_RUN_MODE, QUERY_NODE_COUNT, ROUTE_PAUSE]
    ),
)


@FAST
@given(DOWN_UNITS, UP_UNITS, st.integers(0, 255), st.one_of(st.none(), addresses))
def test_unit_round_trip(down: Unit, up: Unit, seq: int, node: str | None) -> None:
    request = command(down, seq=seq, destination=node)
    assert parse_unit(decode_frame(encode_frame(request))) == down
    answer = reply_to(request, up)
    got = decode_frame(encode_frame(answer))
    addressed = node if not isinstance(up, Deny) else None  # a deny never is
    assert got.seq == seq and got.source == addressed and got.direction == Direction.UP
    assert parse_unit(got) == up


@FAST
@given(payloads, protocols, st.lists(addresses, max_size=3).map(tuple), st.integers(0, 0xFFFF))
def test_monitor_units_in_both_editions(
    payload: bytes, protocol: int, attached: tuple[str, ...], uplink_s: int
) -> None:
    old = MonitorRequest(payload, protocol, attached=attached)
    assert MonitorRequest.parse(old.encode(Edition.Q2009), Edition.Q2009) == old
    new = replace(old, delay_related=True)
    assert MonitorRequest.parse(new.encode(), Edition.Q2013) == new
    assert len(new.encode()) == len(old.encode(Edition.Q2009)) + 1
    reply = MonitorReply(payload, protocol, uplink_s)
    assert MonitorReply.parse(reply.encode()) == reply
    assert MonitorReply.parse(replace(reply, uplink_s=0).encode(Edition.Q2009), Edition.Q2009) == (
        replace(reply, uplink_s=0)
    )


# --------------------------------------------------------------------------------------
# 6. Fuzzing: arbitrary bytes parse or raise FrameError, nothing else, never a hang


def check_yield(run: Run, data: bytes) -> None:
    for frame in run.frames:
        wire = encode_frame(frame)
        assert wire in data  # the very bytes were on the line, not pieced together
        for edition in Edition:
            with contextlib.suppress(FrameError):
                parse_unit(frame, edition)


@FUZZ
@given(st.binary(max_size=600), st.lists(st.integers(1, 50), min_size=1, max_size=8))
def test_fuzz_random_bytes(data: bytes, sizes: list[int]) -> None:
    check_yield(stream(split(data, sizes)), data)
    with contextlib.suppress(FrameError):
        decode_frame(data)


@st.composite
def headed_noise(draw: st.DrawFn) -> bytes:
    """Random bodies behind a plausible header, so the later checks get exercised too."""
    body = draw(st.binary(min_size=11, max_size=80))
    if draw(st.booleans()):
        return _frame_with(body.hex())
    n = len(body) + 5
    return bytes([0x68, n & 0xFF, n >> 8]) + body + draw(st.binary(min_size=2, max_size=2))


def _mutate(draw: st.DrawFn, wire: bytes) -> bytes:
    out = bytearray(wire)
    for _ in range(draw(st.integers(1, 4))):
        if not out:
            break
        i = draw(st.integers(0, len(out) - 1))
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate", "replace"]))
        if op == "flip":
            out[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            out.insert(i, draw(st.sampled_from([0x68, 0x16, 0x00, 0xFF, 0x04])))
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
        choice = draw(st.integers(0, 2))
        if choice == 0:
            wire = draw(st.sampled_from(VECTORS)).wire
        elif choice == 1:
            wire = encode_frame(draw(frames()))
        else:
            wire = draw(headed_noise())
        parts.append(_mutate(draw, wire) if draw(st.booleans()) else wire)
    return b"".join(parts)


@FUZZ
@given(mutated_streams(), st.lists(st.integers(1, 40), min_size=1, max_size=8))
def test_fuzz_mutated_frames(data: bytes, sizes: list[int]) -> None:
    check_yield(stream(split(data, sizes)), data)
    try:
        frame = decode_frame(data)
    except FrameError:
        return
    assert encode_frame(frame) == data


def test_single_bit_flips_never_pass_as_the_frame() -> None:
    for v in VECTORS:
        for i in range(len(v.wire)):
            for bit in range(8):
                bad = bytearray(v.wire)
                bad[i] ^= 1 << bit
                run = stream([bytes(bad)])
                assert all(f != v.frame for f in run.frames), (v.id, i, bit)
                check_yield(run, bytes(bad))


def test_min_frame_len_is_the_empty_unit() -> None:
    assert len(encode_frame(Frame(AFN.INIT, 1))) == MIN_FRAME_LEN
