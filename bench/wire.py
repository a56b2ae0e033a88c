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
from contract.wire import BatchContent, ReferenceBook, RefKey, open_batch, seal_batch
from contract.wire.decimals import parse_decimal
from contract.wire.references import latest

METERS = 1_000
BUSES = 4
SLOTS = 96
SLOT_S = 900
DAY0 = 1_750_032_000  # a UTC midnight
BACKLOG_BATCH = UplinkConfig.batch_readings  # what the uplink sends
WINDOW = UplinkConfig.window  # batches in flight: a batch's references are acked ones
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


def values_entropy(day: list[list[Reading]]) -> float:
    """Order-0 entropy, in bits, of the values as per-series deltas: each exact mantissa
    (at the series' decimals) minus the series' value one slot before, one distribution
    per quantity. A series' first value of the day costs nothing here: this is the
    floor for what changes, which is what a coder of a running uplink must carry."""
    last: dict[tuple[str, str], int] = {}
    counts: dict[str, Counter[int]] = {}
    for readings in day:
        for r in readings:
            parsed = parse_decimal(r.value)
            assert parsed is not None
            key = (r.meter, r.quantity)
            if key in last:
                counts.setdefault(r.quantity, Counter())[parsed[0] - last[key]] += 1
            last[key] = parsed[0]
    bits = 0.0
    for counter in counts.values():
        total = sum(counter.values())
        bits -= sum(c * math.log2(c / total) for c in counter.values())
    return bits


class Receiver:
    """What the receiver committed, keyed as its readings table: resolves references."""

    def __init__(self) -> None:
        self.rows: dict[RefKey, tuple[str, float]] = {}

    def commit(self, readings: tuple[Reading, ...]) -> None:
        for r in readings:
            self.rows.setdefault((r.meter, r.quantity, r.slot), (r.value, r.read_at))

    def resolve(self, keys: list[RefKey]) -> dict[RefKey, tuple[str, float]]:
        return {k: self.rows[k] for k in keys if k in self.rows}


def main() -> None:
    quick = "--quick" in sys.argv
    day = simulate()
    if quick:
        day = day[:8]
    n = sum(len(s) for s in day)

    def lookup(cid: str, key_id: int) -> bytes | None:
        return KEY

    # Live: one batch per slot, acked before the next slot, so each is coded against
    # the slot before (the first of the day goes as a key batch).
    seq = 0
    live = 0
    book = ReferenceBook()
    receiver = Receiver()
    for readings in day:
        seq += 1
        message = seal_batch(
            BatchContent(readings=tuple(readings)),
            concentrator_id=CID,
            key_id=1,
            key=KEY,
            seq=seq,
            references=book.usable(0),
        )
        live += len(message)
        got = open_batch(message, lookup, receiver.resolve)[1]
        assert Counter(got.readings) == Counter(readings)
        receiver.commit(got.readings)
        book.learn(latest(got.readings))

    # Backlog: the day after an outage, in the uplink's batches, ``WINDOW`` in flight:
    # batch k is coded against what the acks of batches up to k - WINDOW told.
    flat = [r for s in day for r in s]
    chunks = [tuple(flat[i : i + BACKLOG_BATCH]) for i in range(0, n, BACKLOG_BATCH)]
    book = ReferenceBook()
    receiver = Receiver()
    t_seal = t_open = 0.0
    opened: list[BatchContent] = []
    backlog = 0
    for k, chunk in enumerate(chunks):
        if k >= WINDOW:
            acked = opened[k - WINDOW].readings
            receiver.commit(acked)
            book.learn(latest(acked))
        seq += 1
        t0 = time.perf_counter()
        message = seal_batch(
            BatchContent(readings=chunk),
            concentrator_id=CID,
            key_id=1,
            key=KEY,
            seq=seq,
            references=book.usable(0),
        )
        t_seal += time.perf_counter() - t0
        backlog += len(message)
        t0 = time.perf_counter()
        opened.append(open_batch(message, lookup, receiver.resolve)[1])
        t_open += time.perf_counter() - t0
    assert Counter(r for c in opened for r in c.readings) == Counter(flat)
    json_bytes = json_baseline(day)

    live_bpr = live / n
    print(f"BENCH uplink_bytes_per_reading_live {live_bpr:.3f} B")
    print(f"BENCH uplink_bytes_per_reading_backlog {backlog / n:.3f} B")
    print(f"BENCH values_entropy_bytes_per_reading {values_entropy(day) / 8 / n:.3f} B")
    print(f"BENCH json_bytes_per_reading {json_bytes / n:.2f} B")
    print(f"BENCH json_to_live_ratio {json_bytes / n / live_bpr:.1f} x")
    print(f"BENCH json_to_backlog_ratio {json_bytes / backlog:.1f} x")
    print(f"BENCH wire_seal_readings_per_s {n / t_seal:.0f} readings/s")
    print(f"BENCH wire_open_readings_per_s {n / t_open:.0f} readings/s")


if __name__ == "__main__":
    main()
