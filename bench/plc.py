"""Carrier-channel benchmark: share of scheduled 15-minute readings collected in their slot.

Prints ``BENCH <name> <value> <unit>`` lines:
- plc_in_slot_rate: the concentrator daemon (``concentrator run``) on one carrier
  channel of 256 simulated DL/T 645 meters whose links succeed 90 % of the time with a
  2 s median latency (``hil-sim plc``, a module that runs 4 reads at once), over two
  full 15-minute slots: readings stored for those slots ÷ readings scheduled.
- plc_naive_in_slot_rate: the baseline, in the same run, on an identical channel: one
  read at a time in meter order, a failed read retried at once (the same retry budget,
  no reordering), until the slot ends.
- plc_in_slot_vs_naive: the ratio.
- the same three with suffix ``_512``: the channel with 512 meters, where one read at a
  time no longer fits a slot.

A link's carrier attempt succeeds 90 % of the time after a 2 s median (lognormal); a
failed one costs 8 s, the module waiting for an answer that does not come, and is
denied ("node did not reply"), one attempt per read.

Time runs 60 times faster for both (the carrier latency and the slots scale alike; the
UART's wire time is removed with ``--baud 0``). ``--quick``: 32 meters, one slot, time
x180.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from concentrator.public import ScaledClock, Store
from drivers import dlt645
from drivers.errors import DriverError
from drivers.plc_bus import PlcBus, PlcSettings, plc_reader
from hil_sim.process import SimProcess

SCALE = 60.0
PERIOD = 900
RETRIES = 6  # the daemon's default for a carrier bus
MONITOR_TIMEOUT_S = 90.0  # simulated seconds, as the daemon's default


def sim_args(link: Path, meters: int, *extra: str) -> list[str]:
    return ["plc", "--meters", str(meters), "--link", str(link), "--success", "0.9",
            "--attempts", "1", "--latency", "2", "--fail-after", "8", "--max-concurrent", "4",
            "--baud", "0", "--time-scale", str(SCALE), "--seed", "3", *extra]  # fmt: skip


def daemon_rate(root: Path, meters: int, slots: int) -> float:
    cfg, db = root / "plc.toml", root / "store.db"
    sim = SimProcess(sim_args(root / "plc", meters, "--write-config", str(cfg), "--store", str(db)))
    sim.start()
    log = (root / "daemon.log").open("wb")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "concentrator", "run", "--config", str(cfg),
         "--time-scale", str(SCALE)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    status = db.with_suffix(".status.json")
    try:
        first = _wait(lambda: _status(status), 120)
        first_full = math.ceil(float(first["started"]) / PERIOD) * PERIOD
        end = first_full + slots * PERIOD
        _wait(lambda: float((_status(status) or {}).get("wall", 0)) > end + 10, 120 + slots * 30)
    finally:
        daemon.terminate()
        daemon.wait(120)
        log.close()
        sim.stop()
    with Store.open(db) as store:
        got = store.get_readings(quantity="energy_fwd_total", since=first_full, until=end)
    return len(got) / (meters * slots)


def naive_rate(root: Path, meters: int, slots: int) -> float:
    sim = SimProcess(sim_args(root / "plc-naive", meters))
    ready = sim.start()
    addresses: list[str] = ready["buses"][0]["meters"]
    try:
        return asyncio.run(_naive(root / "plc-naive", addresses, slots))
    finally:
        sim.stop()


async def _naive(link: Path, addresses: list[str], slots: int) -> float:
    clock = ScaledClock(scale=SCALE)
    entry = dlt645.lookup("energy_fwd_total")
    settings = PlcSettings(port=str(link), monitor_timeout=MONITOR_TIMEOUT_S / SCALE)
    got = 0
    async with PlcBus(settings) as plc:
        await plc.identify()  # the module's master node address and mode
        reader = plc_reader(plc)
        first = math.ceil(clock.wall() / PERIOD) * PERIOD
        for k in range(slots):
            start, end = first + k * PERIOD, first + (k + 1) * PERIOD
            await clock.sleep_wall(start - clock.wall())
            for address in addresses:
                for _ in range(1 + RETRIES):
                    if clock.wall() >= end:
                        break
                    try:
                        await reader.read(address, entry)
                    except DriverError:
                        continue
                    if clock.wall() < end:
                        got += 1
                    break
    return got / (len(addresses) * slots)


def _status(path: Path) -> dict[str, object] | None:
    import json

    try:
        doc: dict[str, object] = json.loads(path.read_text())
        return doc
    except (OSError, ValueError):
        return None


def _wait(predicate: object, timeout: float) -> dict[str, object]:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value if isinstance(value, dict) else {}
        time.sleep(0.1)  # polling a file another process writes
    raise TimeoutError(f"timed out after {timeout} s")


def main() -> None:
    global SCALE
    quick = "--quick" in sys.argv
    if quick:
        SCALE = 180.0  # a 15-minute slot in 5 s: the smoke test only checks the figures print
    runs = [("", 32, 1)] if quick else [("", 256, 2), ("_512", 512, 2)]
    for suffix, meters, slots in runs:
        with tempfile.TemporaryDirectory(prefix="mf-bench-plc-") as tmp:
            ours = daemon_rate(Path(tmp), meters, slots)
            naive = naive_rate(Path(tmp), meters, slots)
        print(f"BENCH plc_in_slot_rate{suffix} {ours:.4f} fraction")
        print(f"BENCH plc_naive_in_slot_rate{suffix} {naive:.4f} fraction")
        ratio = ours / naive if naive else math.inf
        print(f"BENCH plc_in_slot_vs_naive{suffix} {ratio:.2f} x")


if __name__ == "__main__":
    main()
