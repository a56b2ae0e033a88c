"""Load-profile recovery benchmarks (issue 20, item 3).

Prints ``BENCH <name> <value> <unit>``:
- collection_completeness_after_outage: the daemon (``concentrator run``) and 256
  simulated meters (``hil-sim fleet``: 7 RS-485 buses of 32; ``hil-sim plc``: 32 behind
  a carrier module; DL/T 645-2007 and 698.45 alternating) over 2 simulated days, time
  x720 (no wire delay: the figure is about what is recovered, not how fast); the daemon
  is down for 6 simulated hours on day 1, every RS-485 bus is cut for 2 hours and the
  carrier network is down for 3 hours on day 2. Readings of energy_fwd_total stored for the
  15-minute slots of the two days (from the first whole slot after the daemon's first
  start), live or recovered, ÷ meters x slots. Target ≥ 0.999.
  collection_recovered_share: the share of them that was recovered from the meters'
  memories (what the outages took).
- backfill_intervals_per_s_2400: intervals recovered per second from DL/T 645-2007
  meters' load records on one 2400-baud bus with 20-80 ms turnaround, by the daemon's
  own recovery read (`concentrator.polling.load_read.recover`, 8 slots a job).
- backfill_wire_limit_intervals_per_s_2400: the bound the wire sets, in the same run:
  intervals ÷ the wire time (8E1, 11 bits a byte) of the very bytes those reads sent
  and received, with no turnaround at all; backfill_wire_ratio_2400 is the share of it
  achieved.

``--quick`` (the smoke test): 12 meters on 2 buses and 4 on a carrier module over 8
simulated hours with the outages shortened, and 2 meters at 2400 baud.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from concentrator.config import MeterConfig
from concentrator.polling.load_read import recover
from concentrator.public import Store
from drivers.serial_bus import SerialBus, SerialSettings
from hil_sim.model import CHINA_TZ
from hil_sim.process import SimProcess

QUICK = "--quick" in sys.argv
SLOT = 900
HOUR = 3600


def _status_ok(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("started"))
    except (OSError, ValueError):
        return False


def _wait(pred: object, timeout: float, what: str) -> None:
    assert callable(pred)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def _merge(cfg: Path, plc_cfg: Path) -> None:
    """Put the carrier bus and its meters into the RS-485 config; its tasks read them."""
    plc = plc_cfg.read_text(encoding="utf-8")
    blocks = plc[plc.index("[[bus]]") : plc.index("[[task]]")]
    text = cfg.read_text(encoding="utf-8")
    at = text.index("[[task]]")
    text = text[:at] + blocks + text[at:]
    text = text.replace('groups = ["dlt645"]', 'groups = ["dlt645", "plc"]')
    text = text.replace('groups = ["dlt698"]', 'groups = ["dlt698", "plc-dlt698"]')
    cfg.write_text(text, encoding="utf-8")


def completeness() -> float:
    """Stored energy readings for every slot of the run ÷ meters x slots."""
    scale = 720.0
    buses, per_bus, on_plc, hours = (2, 6, 4, 8) if QUICK else (7, 32, 32, 48)
    daemon_down = (1 * HOUR, 3 * HOUR) if QUICK else (6 * HOUR, 12 * HOUR)
    bus_down = (4 * HOUR, 5 * HOUR) if QUICK else (30 * HOUR, 32 * HOUR)
    carrier_down = (5.5 * HOUR, 7 * HOUR) if QUICK else (36 * HOUR, 39 * HOUR)
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cfg, db = tmp / "c.toml", tmp / "s.db"
        (tmp / "links").mkdir()
        origin = time.time()

        def sim_now() -> float:
            return origin + (time.time() - origin) * scale

        sim = SimProcess(
            ["fleet", "--buses", str(buses), "--meters-per-bus", str(per_bus),
             "--protocols", "dlt645,dlt698", "--baud", "0", "--time-scale", str(scale),
             "--time-origin", repr(origin), "--cadence", "15m",
             "--offline", f"*@{bus_down[0]}-{bus_down[1]}", "--link-dir", str(tmp / "links"),
             "--write-config", str(cfg), "--store", str(db)],
            ready_timeout=300,
        )  # fmt: skip
        plc = SimProcess(
            ["plc", "--meters", str(on_plc), "--protocols", "dlt645,dlt698",
             "--address-base", "000000100001", "--link", str(tmp / "plc"), "--baud", "0",
             "--time-scale", str(scale), "--time-origin", repr(origin),
             "--network-down", f"{carrier_down[0]:.0f}-{carrier_down[1]:.0f}",
             "--write-config", str(tmp / "plc.toml"), "--store", str(db)],
            ready_timeout=300,
        )  # fmt: skip
        sim.start()
        plc.start()
        start = float(sim.ready["clock_start"])
        _merge(cfg, tmp / "plc.toml")
        text = cfg.read_text()
        sock = tmp / "ctl.sock"
        cfg.write_text(
            text.replace("[concentrator]\n", f'[concentrator]\ncontrol_socket = "{sock}"\n', 1)
        )
        args = [sys.executable, "-m", "concentrator", "run", "--config", str(cfg),
                "--time-scale", str(scale), "--time-origin", repr(origin)]  # fmt: skip
        log = (tmp / "daemon.log").open("ab")
        daemon = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        status = db.with_suffix(".status.json")
        try:
            _wait(lambda: _status_ok(status), 120, "the daemon to start")
            started = float(json.loads(status.read_text())["started"])
            _wait(lambda: sim_now() >= start + daemon_down[0], 3600, "the first outage")
            daemon.terminate()
            daemon.wait(120)
            _wait(lambda: sim_now() >= start + daemon_down[1], 3600, "the daemon's return")
            daemon = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
            end = start + hours * HOUR
            _wait(lambda: sim_now() >= end, 7200, "the end of the run")
            first = (int(started) // SLOT + 1) * SLOT  # the first whole slot polled
            last = (int(end) // SLOT - 1) * SLOT
            meters = sim.meters + plc.meters
            expected = len(meters) * ((last - first) // SLOT + 1)

            recovered: list[int] = [0]

            def stored() -> int:
                with Store.open_read_only(db) as store:
                    rows = store.get_readings(
                        quantity="energy_fwd_total", since=first, until=last + 1
                    )
                recovered[0] = sum(r.reading.source == "backfill" for r in rows)
                return len({(r.reading.meter, r.reading.slot) for r in rows})

            # Recovery goes on after the run; give it until it stops gaining.
            best, still = 0, time.monotonic()
            while time.monotonic() - still < 30 and best < expected:
                time.sleep(2)
                got = stored()
                if got > best:
                    best, still = got, time.monotonic()
            print(f"BENCH collection_recovered_share {recovered[0] / expected:.4f} fraction")
            return best / expected
        finally:
            daemon.terminate()
            daemon.wait(120)
            log.close()
            sim.stop()
            plc.stop()


def backfill_2400() -> tuple[float, float]:
    """(intervals recovered per second, the wire's bound) on a 2400-baud bus."""
    meters, jobs = (2, 2) if QUICK else (4, 4)
    scale = 3600.0  # an hour of load curve a second: the meters' memories fill quickly
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        origin = time.time()
        sim = SimProcess(
            ["fleet", "--buses", "1", "--meters-per-bus", str(meters), "--baud", "2400",
             "--turnaround", "20-80", "--time-scale", str(scale), "--time-origin", repr(origin),
             "--link-dir", str(tmp)]
        )  # fmt: skip
        sim.start()
        start = origin + (time.time() - origin) * scale
        # Wait until each meter holds the records asked for (8 slots a job).
        need = (jobs * 8 + 2) * SLOT
        _wait(lambda: origin + (time.time() - origin) * scale > start + need, 120, "memory")
        try:
            return asyncio.run(_recover(sim.links[0], sim.meters, start, jobs))
        finally:
            sim.stop()


async def _recover(
    link: Path, addresses: list[str], start: float, jobs: int
) -> tuple[float, float]:
    settings = SerialSettings(port=str(link), baud=2400)
    bus = SerialBus(settings)
    await bus.open()
    recovered = 0
    first = (int(start) // SLOT + 1) * SLOT  # the meters' first record
    try:
        t0 = time.perf_counter()
        for address in addresses:
            meter = MeterConfig(address, "dlt645", "b")
            for job in range(jobs):
                lo = first + job * 8 * SLOT
                wanted = {
                    s: frozenset({"energy_fwd_total"}) for s in range(lo, lo + 8 * SLOT, SLOT)
                }
                got = await recover(bus, meter, wanted, CHINA_TZ)
                recovered += len(got.values)
        elapsed = time.perf_counter() - t0
    finally:
        await bus.close()
    expected = len(addresses) * jobs * 8
    if recovered != expected:
        raise RuntimeError(f"recovered {recovered} intervals of {expected}")
    wire_s = settings.wire_time(bus.stats.bytes_out + bus.stats.bytes_in)
    return recovered / elapsed, recovered / wire_s


def main() -> None:
    rate, bound = backfill_2400()
    print(f"BENCH backfill_intervals_per_s_2400 {rate:.3f} intervals/s")
    print(f"BENCH backfill_wire_limit_intervals_per_s_2400 {bound:.3f} intervals/s")
    print(f"BENCH backfill_wire_ratio_2400 {rate / bound:.3f} ratio")
    fraction = completeness()
    print(f"BENCH collection_completeness_after_outage {fraction:.5f} fraction")


if __name__ == "__main__":
    main()
