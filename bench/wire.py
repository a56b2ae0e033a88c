"""Uplink wire-format benchmark: bytes on the air and seal/open speed.

Prints ``BENCH <name> <value> <unit>`` lines:
- uplink_bytes_per_reading_live: sealed batch bytes / readings, one batch per slot
  (4,000 readings). Target <= 4.
- uplink_bytes_per_reading_backlog: the whole day in the uplink's default batches
  (``UplinkConfig.batch_readings``).
  Target <= 2.
- json_bytes_per_reading: one JSON object per meter and slot, as IoT gateways send
  (``{"ts": ..., "meter": ..., "values": {...}}``), divided by readings.
- json_to_live_ratio, json_to_backlog_ratio: how many times smaller than that JSON our
  batches are, sent live and as a backlog (target >= 20). A live batch carries one slot
  (4,000 readings), so each meter's series holds a single reading whose value goes
  whole rather than as a delta from the slot before: the 20x holds for the backlog,
  the live figure is reported beside it.
- wire_seal_readings_per_s / wire_open_readings_per_s on the backlog batches.

The simulated day: 1,000 meters with consecutive 12-digit DL/T 645 addresses on four
RS-485 buses of 250 meters each, 96 fifteen-minute slots, four quantities at DL/T 645
resolutions. Each meter has its own base load (0.2-1.8 kW), following one daily
profile with 10 % noise. Energy grows by the slot's power x 0.25 h (0-0.5 kWh). The
voltage follows the feeder (220 V +- 3 V over the day), plus a per-meter offset and
0.5 V noise. Current is P / (V x pf) with a per-meter power factor. The read times come
from polling each bus in order at 2400 baud: request and reply wire time, a per-meter
turnaround of 20-60 ms, +-3 ms of jitter per exchange, and a cycle start 0.5-2 s
after the slot boundary.
"""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections import Counter
from datetime import UTC, datetime

from concentrator.public import UplinkConfig
from contract.records import Reading
from contract.wire import BatchContent, open_batch, seal_batch

METERS = 1_000
BUSES = 4
SLOTS = 96
SLOT_S = 900
DAY0 = 1_750_032_000  # a UTC midnight
BACKLOG_BATCH = UplinkConfig.batch_readings  # what the uplink sends
KEY = bytes(range(32))
CID = "cn-0001"

# quantity -> (unit, decimals, reply wire time in ms at 2400 baud, 11 bits a byte)
QUANTITIES = {
    "energy_fwd_total": ("kWh", 2, 26 * 4.583),
    "voltage_a": ("V", 1, 24 * 4.583),
    "current_a": ("A", 3, 25 * 4.583),
    "power_total": ("kW", 4, 25 * 4.583),
}
REQUEST_MS = 20 * 4.583


def simulate(seed: int = 645) -> list[list[Reading]]:
    """Readings of one day, one list per slot."""
    rng = random.Random(seed)
    meters = [f"{202400100001 + i:012d}" for i in range(METERS)]
    base = [rng.uniform(0.2, 1.8) for _ in meters]
    pf = [rng.uniform(0.85, 0.99) for _ in meters]
    turnaround = [rng.uniform(20, 60) for _ in meters]
    v_offset = [rng.gauss(0, 2) for _ in meters]
    energy = [rng.uniform(1_000, 99_999) for _ in meters]
    per_bus = METERS // BUSES
    day: list[list[Reading]] = []
    for s in range(SLOTS):
        slot = DAY0 + s * SLOT_S
        hour = s / 4
        profile = 0.55 + 0.45 * math.sin((hour - 9) / 24 * 2 * math.pi)
        feeder = 220 + 3 * math.sin((hour - 15) / 24 * 2 * math.pi)
        readings: list[Reading] = []
        for bus in range(BUSES):
            clock_ms = rng.uniform(500, 2_000)
            for k in range(bus * per_bus, (bus + 1) * per_bus):
                power = min(max(base[k] * profile * rng.gauss(1, 0.1), 0.0), 1.9999)
                voltage = feeder + v_offset[k] + rng.gauss(0, 0.5)
                energy[k] += power * 0.25
                values = {
                    "energy_fwd_total": energy[k],
                    "voltage_a": voltage,
                    "current_a": power * 1000 / (voltage * pf[k]),
                    "power_total": power,
                }
                for quantity, (unit, decimals, reply_ms) in QUANTITIES.items():
                    clock_ms += REQUEST_MS + turnaround[k] + reply_ms + rng.uniform(-3, 3)
                    readings.append(
                        Reading(
                            meter=meters[k],
                            quantity=quantity,
                            slot=slot,
                            value=f"{values[quantity]:.{decimals}f}",
                            unit=unit,
                            read_at=(slot * 1000 + round(clock_ms)) / 1000,
                        )
                    )
        day.append(readings)
    return day


def json_baseline(day: list[list[Reading]]) -> int:
    total = 0
    for readings in day:
        per_meter: dict[str, dict[str, object]] = {}
        for r in readings:
            message = per_meter.setdefault(
                r.meter,
                {
                    "ts": datetime.fromtimestamp(r.slot, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "meter": r.meter,
                    "values": {},
                },
            )
            cast_values = message["values"]
            assert isinstance(cast_values, dict)
            cast_values[r.quantity] = float(r.value)
        total += sum(len(json.dumps(m).encode()) for m in per_meter.values())
    return total


def main() -> None:
    quick = "--quick" in sys.argv
    day = simulate()
    if quick:
        day = day[:8]
    n = sum(len(s) for s in day)

    def lookup(cid: str, key_id: int) -> bytes | None:
        return KEY

    seq = 0
    live = 0
    for readings in day:
        seq += 1
        live += len(
            seal_batch(
                BatchContent(readings=tuple(readings)),
                concentrator_id=CID,
                key_id=1,
                key=KEY,
                seq=seq,
            )
        )
    flat = [r for s in day for r in s]
    chunks = [tuple(flat[i : i + BACKLOG_BATCH]) for i in range(0, n, BACKLOG_BATCH)]
    t0 = time.perf_counter()
    sealed = []
    for chunk in chunks:
        seq += 1
        sealed.append(
            seal_batch(
                BatchContent(readings=chunk), concentrator_id=CID, key_id=1, key=KEY, seq=seq
            )
        )
    t_seal = time.perf_counter() - t0
    t0 = time.perf_counter()
    opened = [open_batch(m, lookup)[1] for m in sealed]
    t_open = time.perf_counter() - t0
    assert Counter(r for c in opened for r in c.readings) == Counter(flat)
    backlog = sum(len(m) for m in sealed)
    json_bytes = json_baseline(day)

    live_bpr = live / n
    print(f"BENCH uplink_bytes_per_reading_live {live_bpr:.3f} B")
    print(f"BENCH uplink_bytes_per_reading_backlog {backlog / n:.3f} B")
    print(f"BENCH json_bytes_per_reading {json_bytes / n:.2f} B")
    print(f"BENCH json_to_live_ratio {json_bytes / n / live_bpr:.1f} x")
    print(f"BENCH json_to_backlog_ratio {json_bytes / backlog:.1f} x")
    print(f"BENCH wire_seal_readings_per_s {n / t_seal:.0f} readings/s")
    print(f"BENCH wire_open_readings_per_s {n / t_open:.0f} readings/s")


if __name__ == "__main__":
    main()
