"""Codec and bus benchmarks (issue: foundation).

Prints ``BENCH <name> <value> <unit>`` lines:
- dlt645_decode_us / modbus_decode_us: streaming decode cost per frame.
- dlt698_decode_us: a DL/T 698.45 GET-Response Normal (forward energy, total and four
  tariffs) through the streaming decoder, its APDU parsed and scaled to values: the
  whole receive path of a 698.45 read, per frame.
- bus_efficiency_2400: reads/s that the field CLI's read path achieves on a 2400-baud
  simulated bus, divided by the limit computed from the frame lengths in the same run:
  1 / (request wire time + reply wire time + the simulator's fixed 40 ms turnaround).
  bus_efficiency_2400_wire_only divides by the wire-only limit (no turnaround), the
  stricter figure.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from concentrator.public import read_direct
from drivers import dlt645, dlt698, modbus_rtu
from drivers.dlt698.replies import (
    TYPICAL_GET_RESPONSE,
    parse_get_response,
)
from drivers.serial_bus import SerialSettings
from hil_sim.process import SimProcess

TURNAROUND_S = 0.040


def bench_decode(frame: bytes, make_decoder: object, n: int) -> float:
    decoder = make_decoder()  # type: ignore[operator]
    count = 0
    t0 = time.perf_counter()
    for _ in range(n):
        decoder.feed(frame)
        while decoder.next_frame() is not None:
            count += 1
    elapsed = time.perf_counter() - t0
    assert count == n, (count, n)
    return elapsed / n * 1e6


def bench_dlt698(n: int) -> float:
    """Per frame: stream-decode a 698.45 reply, parse its APDU, scale its values."""
    decoder = dlt698.Decoder()
    count = 0
    t0 = time.perf_counter()
    for _ in range(n):
        decoder.feed(TYPICAL_GET_RESPONSE)
        while (frame := decoder.next_frame()) is not None:
            parse_get_response(frame, "energy_fwd")
            count += 1
    elapsed = time.perf_counter() - t0
    assert count == n, (count, n)
    return elapsed / n * 1e6


def bench_bus(reads: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "bus"
        ms = f"{TURNAROUND_S * 1000:.0f}"
        with SimProcess(
            [
                "bus",
                "--meters",
                "1",
                "--baud",
                "2400",
                "--link",
                str(link),
                "--turnaround",
                f"{ms}-{ms}",
            ]
        ) as sim:
            address = sim.meters[0]
            settings = SerialSettings(port=str(link), baud=2400)
            names = ["energy_fwd_total"] * reads
            t0 = time.perf_counter()
            values, failures = asyncio.run(read_direct(settings, "dlt645", address, "", names, 0))
            elapsed = time.perf_counter() - t0
            assert len(values) == reads and not failures
    request = len(dlt645.build_read(address, 0x00010000))  # 20 bytes with 4 FE
    reply = len(dlt645.build_reply(address, 0x11, b"\0" * 8))  # 20 bytes
    wire = dlt645.wire_time(request + reply, 2400)
    achieved = reads / elapsed
    return achieved, 1 / (wire + TURNAROUND_S), 1 / wire


def main() -> int:
    quick = "--quick" in sys.argv
    n = 2_000 if quick else 20_000
    reply = dlt645.build_reply(
        "123456789012", 0x11, bytes.fromhex("00000100") + bytes(4), preamble=4
    )
    print(f"BENCH dlt645_decode_us {bench_decode(reply, dlt645.Decoder, n):.2f} us")
    sdm = modbus_rtu.read_response(
        1, modbus_rtu.FunctionCode.READ_INPUT_REGISTERS, [0x4366, 0x0000]
    )
    print(
        f"BENCH modbus_decode_us "
        f"{bench_decode(sdm, lambda: modbus_rtu.Decoder('client'), n):.2f} us"
    )
    print(f"BENCH dlt698_decode_us {bench_dlt698(n):.2f} us")
    achieved, limit, wire_limit = bench_bus(10 if quick else 40)
    print(f"BENCH bus_reads_per_s_2400 {achieved:.3f} reads/s")
    print(f"BENCH bus_limit_2400 {limit:.3f} reads/s")
    print(f"BENCH bus_efficiency_2400 {achieved / limit:.3f} ratio")
    print(f"BENCH bus_efficiency_2400_wire_only {achieved / wire_limit:.3f} ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
