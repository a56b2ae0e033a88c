"""Bus-scan benchmark: does `concentrator scan` find every meter on a faulty line, and
does it never present a wrong list as complete?

Each run: N simulated DL/T 645 meters (consecutive addresses from a base that differs
per run, so some runs cross a hundreds boundary) on one simulated RS-485 bus at B baud
with 2 % line faults (``hil_sim`` fault injection, seeded: no_reply, late_reply,
bad_checksum, truncated, noise, 0.4 % each per reply), meter turnaround 20-80 ms, and
the scan of the field CLI (``concentrator.public.scan``, the default ``--retries 1``,
a 0.3 s answer window) over real pyserial I/O on the simulator's PTY. The runs of a
sitting go concurrently (each on its own bus; the time is spent waiting on the line).

Prints ``BENCH <name> <value> <unit>`` lines:
- scan_found_fraction_9600_2pct, scan_found_fraction_2400_2pct: meters found ÷ meters
  on the buses, over every run at that speed (target 1.0);
- scan_all_found_runs_9600_2pct, ..._2400_2pct: share of runs that found every meter
  (target ≥ 0.95, i.e. 19 of 20);
- scan_wrong_success: runs that reported a list as complete (exit 0) that is not
  exactly the bus's meters (target 0);
- scan_probes_per_meter_N_B: probes (listening probes and point-to-point
  confirmations) per meter, mean over the runs of N meters at B baud;
- scan_seconds_N_B: wall time of one scan, mean.

20 seeded runs per meter count (4, 16, 64) and speed (2400, 9600); ``--quick`` (the test
suite's): one run of 4 and of 16 meters per speed, with meters that answer within
5-40 ms and a 0.15 s window, so that it takes half a minute, not three.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from concentrator.public import scan
from drivers.serial_bus import SerialBus, SerialSettings
from hil_sim.clock import SimClock
from hil_sim.faults import FaultPlan
from hil_sim.fleet import FleetOptions, build_bus

FAULT_RATE = 0.02
BAUDS = (2400, 9600)


@dataclass(frozen=True)
class Line:
    turnaround: tuple[float, float]  # the meters' reply delay range, seconds
    window: float  # the scan's --timeout: the longest turnaround + a reply's wire time


FULL = Line((0.020, 0.080), 0.3)
QUICK = Line((0.005, 0.040), 0.15)


@dataclass
class Run:
    meters: int
    baud: int
    seed: int
    truth: list[str]
    found: list[str]
    complete: bool
    probes: int
    seconds: float

    @property
    def wrong_success(self) -> bool:
        return self.complete and self.found != self.truth


async def one_run(tmp: Path, line: Line, meters: int, baud: int, seed: int) -> Run:
    base = f"{210_000_000_000 + seed * 1_237 + meters * 10_007:012d}"
    opts = FleetOptions(
        meters=meters,
        baud=baud,
        address_base=base,
        seed=seed,
        turnaround=line.turnaround,
        faults=FaultPlan.uniform(FAULT_RATE, seed=seed),
    )
    link = tmp / f"bus-{meters}-{baud}-{seed}"
    sim = build_bus(opts, link=link, clock=SimClock())
    await sim.start()
    try:
        settings = SerialSettings(port=str(link), baud=baud, response_timeout=line.window)
        started = time.monotonic()
        async with SerialBus(settings) as bus:
            result = await scan(bus, retries=1)
        seconds = time.monotonic() - started
    finally:
        await sim.stop()
    return Run(
        meters,
        baud,
        seed,
        sorted(m.address for m in sim.meters),
        result.addresses,
        result.complete,
        result.probes,
        seconds,
    )


async def sitting(line: Line, counts: tuple[int, ...], seeds: range) -> list[Run]:
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        jobs = [
            one_run(Path(tmp), line, n, baud, seed)
            for n in counts
            for baud in BAUDS
            for seed in seeds
        ]
        return list(await asyncio.gather(*jobs))


def main() -> int:
    quick = "--quick" in sys.argv
    counts = (4, 16) if quick else (4, 16, 64)
    seeds = range(1, 2) if quick else range(1, 21)
    runs = asyncio.run(sitting(QUICK if quick else FULL, counts, seeds))
    for baud in BAUDS:
        at = [r for r in runs if r.baud == baud]
        found = sum(len(set(r.found) & set(r.truth)) for r in at)
        total = sum(len(r.truth) for r in at)
        all_found = sum(set(r.truth) <= set(r.found) for r in at)
        print(f"BENCH scan_found_fraction_{baud}_2pct {found / total:.4f} ratio")
        print(f"BENCH scan_all_found_runs_{baud}_2pct {all_found / len(at):.4f} ratio")
    print(f"BENCH scan_wrong_success {sum(r.wrong_success for r in runs)} runs")
    for n in counts:
        for baud in BAUDS:
            at = [r for r in runs if r.meters == n and r.baud == baud]
            probes = statistics.mean(r.probes / n for r in at)
            print(f"BENCH scan_probes_per_meter_{n}_{baud} {probes:.2f} probes")
            print(f"BENCH scan_seconds_{n}_{baud} {statistics.mean(r.seconds for r in at):.1f} s")
    for r in runs:
        if set(r.found) != set(r.truth) or not r.complete:
            missed = sorted(set(r.truth) - set(r.found))
            extra = sorted(set(r.found) - set(r.truth))
            print(
                f"# {r.meters} meters at {r.baud} baud, seed {r.seed}: complete={r.complete}, "
                f"missed {missed}, extra {extra}",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
