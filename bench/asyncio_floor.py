"""The floor under `daemon_reads_per_s_core`: what any asyncio client of the benchmark's
simulated buses spends a read, with nothing of the daemon in it.

    python bench/asyncio_floor.py [READS]

The same hil-sim fleet as `bench/daemon.py`'s CPU figure (4 buses of 64 DL/T 645 meters,
``--baud 0``), read four buses at a time by a bare event loop: the requests built
beforehand, each written by one timer at the end of the 5 ms inter-frame gap, the reply
read with ``add_reader`` and taken as complete at its length; nothing decoded, checked,
scheduled or stored. Prints ``BENCH asyncio_floor_reads_per_cpu_s``, per CPU-second of
this process, to set beside `pymodbus_client_reads_per_cpu_s` and the daemon's figure
(issue 22: the daemon's target of 3x pymodbus was above this floor when measured).
Not part of ``make bench``: it says what the target can be, not how the daemon does.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import serial
from daemon import _fleet  # beside this script (bench/ is no package)

from drivers import dlt645

GAP_S = 0.005  # the daemon's inter-frame gap on these buses
REPLY_BYTES = 20  # an energy register's reply: 12 bytes of frame, 4 of DI, 4 of value


async def _bus(port: str, meters: list[str], reads: int) -> None:
    loop = asyncio.get_running_loop()
    line = serial.Serial(port, 115200, exclusive=True)
    fd = line.fileno()
    os.set_blocking(fd, False)
    di = dlt645.lookup("energy_fwd_total").di
    requests = [dlt645.build_read(m, di) for m in meters]
    got = bytearray()
    answer: asyncio.Future[None] = loop.create_future()

    def readable() -> None:
        got.extend(os.read(fd, 4096))
        if len(got) >= REPLY_BYTES and not answer.done():
            answer.set_result(None)

    loop.add_reader(fd, readable)
    try:
        for i in range(reads):
            got.clear()
            answer = loop.create_future()
            loop.call_later(GAP_S, os.write, fd, requests[i % len(requests)])
            await answer
    finally:
        loop.remove_reader(fd)
        line.close()


async def _read_all(config: dict[str, list[dict[str, str]]], base: Path, reads: int) -> float:
    meters: dict[str, list[str]] = {}
    for m in config["meter"]:
        meters.setdefault(m["bus"], []).append(m["address"])
    buses = {b["name"]: str(base / b["port"]) for b in config["bus"]}
    c0 = time.process_time()
    await asyncio.gather(
        *(_bus(port, meters[name], reads // len(buses)) for name, port in buses.items())
    )
    return reads / (time.process_time() - c0)


def main() -> int:
    reads = int(sys.argv[1]) if len(sys.argv) > 1 else 6000
    with tempfile.TemporaryDirectory() as t:
        sim, cfg, _ = _fleet(Path(t), "--buses", "4", "--meters-per-bus", "64", "--baud", "0")
        try:
            config = tomllib.loads(cfg.read_text())
            rate = asyncio.run(_read_all(config, cfg.parent, reads))
        finally:
            sim.stop()
    print(f"BENCH asyncio_floor_reads_per_cpu_s {rate:.0f} reads/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
