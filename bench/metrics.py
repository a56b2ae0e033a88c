"""Metrics benchmarks: what a scrape costs each end.

Prints ``BENCH <name> <value> <unit>`` lines:
- receiver_metrics_refresh_ms_sqlite / _postgres: one refresh of the receiver's database
  figures (quarantine size, collection completeness) at noon of a day whose readings
  are stored — bench/wire.py's simulated day, 1,000 meters x 4 quantities, yesterday
  complete and today's morning (48 slots) — with an archive of 1,100 meters. The
  steady refresh (yesterday's deliveries cached), median of 5. A scrape costs at most
  this once per ``--metrics-refresh`` (default 30 s). Target <= 500 ms on SQLite.
- receiver_metrics_first_refresh_ms_sqlite / _postgres: the first refresh of a day,
  which also reads yesterday's deliveries.
- concentrator_metrics_rss_mb: the RSS that importing the Prometheus endpoint (and
  prometheus_client) adds to a daemon process: paid only with ``[metrics]``.
- concentrator_metrics_scrape_ms: rendering one scrape of a daemon with 8 buses,
  uplink and modem figures, median of 50; concentrator_metrics_scrape_bytes and
  _gzip_bytes: that page, as text and as the gzip the endpoint sends Prometheus.

``--quick`` (the CI smoke test) stores 8 slots a day.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import gzip
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from receiver import pg_schema
from wire import DAY0, SLOT_S, simulate

from cloud_receiver.public import (
    CachedFigures,
    CollectionRule,
    MeterRecord,
    SqliteStorage,
    Storage,
    open_storage,
)

RULE = CollectionRule(dt.UTC, "energy_fwd_total", SLOT_S)  # DAY0 is a UTC midnight


def fill(storage: Storage, slots: int) -> float:
    """Yesterday's ``slots`` and today's first half of them; returns "now" (noon)."""
    day = simulate()
    meters = sorted({r.meter for r in day[0]})
    extra = [f"{900000000000 + i:012d}" for i in range(len(meters) // 10)]  # never heard
    storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in meters + extra])
    seq = 0
    for shift, count in ((-86_400, slots), (0, slots // 2)):
        for readings in day[:count]:
            seq += 1
            moved = [
                dataclasses.replace(r, slot=r.slot + shift, read_at=r.read_at + shift)
                for r in readings
            ]
            storage.ingest("cn-0001", seq, 1, moved, [], time.time())
    return DAY0 + (slots // 2) * SLOT_S + 1


def refresh_ms(storage: Storage, now: float) -> tuple[float, float]:
    """(first refresh, median steady refresh) in milliseconds."""
    figures = CachedFigures(storage, RULE, refresh_s=0, clock=lambda: now)
    t0 = time.perf_counter()
    first = figures.get()
    first_ms = (time.perf_counter() - t0) * 1000
    assert first is not None and first.collection["cn-0001"].meters == 1000, first
    steady = []
    for _ in range(5):
        t0 = time.perf_counter()
        figures.get()
        steady.append((time.perf_counter() - t0) * 1000)
    assert figures.errors == 0
    return first_ms, statistics.median(steady)


_RSS = """
import sys
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) / 1024
import concentrator.daemon, concentrator.cli
before = rss()
import concentrator.control.prometheus
print(rss() - before)
"""


def concentrator_rss_mb() -> float:
    out = subprocess.run(
        [sys.executable, "-c", _RSS], capture_output=True, text=True, check=True
    ).stdout
    return float(out)


def concentrator_scrape_ms() -> tuple[float, bytes]:
    # Not in concentrator.public: the endpoint is imported only with [metrics] (RSS).
    from prometheus_client import CollectorRegistry, generate_latest

    from concentrator.control.prometheus import ConcentratorCollector
    from concentrator.storage import Backlog

    class Clock:
        scale = 1.0

        def wall(self) -> float:
            return time.time()

        def monotonic(self) -> float:
            return time.monotonic()

        async def sleep_wall(self, seconds: float) -> None:
            raise NotImplementedError

    bus = {
        "transactions": 123456, "timeouts": 12, "frame_errors": 3, "utilisation": 0.4213,
        "queued": 5, "reads_ok": 120000, "reads_failed": 15, "readings": 180000,
        "missing": 4,
    }  # fmt: skip
    uplink = {
        "connected": True, "in_flight": 1, "batches_sent": 900, "batches_resent": 3,
        "batches_acked": 899, "readings_acked": 179000, "bytes_sent": 400000,
        "last_ack_at": time.time(), "rejected": 0,
    }  # fmt: skip
    modem = {
        "link_up": True, "outage": False, "rssi_dbm": -71, "weak_signal": False, "polls": 900,
        "poll_failures": 2, "outages": 1, "resets": 1, "power_cycles": 0, "hangs": 0,
    }  # fmt: skip

    class Figures:
        clock = Clock()
        slots_started = 1234
        pending = committed = 0
        disk_full = closed = False

        class health:  # stands in for the polling side's HealthTracker
            @staticmethod
            def counts() -> dict[str, int]:
                return {"online": 250, "degraded": 4, "offline": 2}

        def bus_status(self) -> dict[str, dict[str, object]]:
            return {f"bus{i}": dict(bus) for i in range(1, 9)}

        def status(self) -> dict[str, object]:
            return dict(uplink)

    class Modem:
        def status(self) -> dict[str, object]:
            return dict(modem)

    figures = Figures()
    collector = ConcentratorCollector(
        "dc-0001",
        figures,  # type: ignore[arg-type]
        figures,  # type: ignore[arg-type]
        lambda: figures,
        lambda: Modem(),
    )
    collector.backlog = Backlog(1000, 3, DAY0, DAY0 + 2.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    times = []
    for _ in range(50):
        t0 = time.perf_counter()
        body = generate_latest(registry)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), body


def main() -> int:
    quick = "--quick" in sys.argv
    slots = 8 if quick else 96
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        backends: list[tuple[str, Callable[[], Storage]]] = [
            ("sqlite", lambda: SqliteStorage(Path(tmp) / "r.db")),
        ]
        urls = pg_schema()
        backends.append(("postgres", lambda: open_storage(next(urls))))
        for name, make in backends:
            storage = make()
            try:
                now = fill(storage, slots)
                first, steady = refresh_ms(storage, now)
            finally:
                storage.close()
            print(f"BENCH receiver_metrics_first_refresh_ms_{name} {first:.1f} ms")
            print(f"BENCH receiver_metrics_refresh_ms_{name} {steady:.1f} ms")
            results[name] = steady
        urls.close()
    print(f"BENCH concentrator_metrics_rss_mb {concentrator_rss_mb():.2f} MB")
    ms, body = concentrator_scrape_ms()
    print(f"BENCH concentrator_metrics_scrape_ms {ms:.2f} ms")
    print(f"BENCH concentrator_metrics_scrape_bytes {len(body)} B")
    # What goes over GPRS: the endpoint answers gzip at the level it uses.
    print(f"BENCH concentrator_metrics_scrape_gzip_bytes {len(gzip.compress(body, 6))} B")
    ok = results["sqlite"] <= 500
    print(f"receiver_metrics_refresh_ms_sqlite {results['sqlite']:.1f} <= 500: {ok}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
