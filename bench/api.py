"""HTTP API benchmark: paged readings through ``cloud-receiver web``.

Prints ``BENCH <name> <value> <unit>`` lines:
- api_readings_rps: readings/s a client gets paging through meters' months of
  15-minute readings (``GET /api/v1/meters/{meter}/readings``, 500 a page, a system
  token) from a ``cloud-receiver web`` process over loopback: routing, the token and
  role check, the query, the audit entry each call writes, JSON out and in.
- api_page_p95_ms: the 95th percentile of one such page's round trip.
- api_direct_rps: the same readings read straight from the database in this process
  (`Storage.readings`), and api_readings_share: api_readings_rps / api_direct_rps —
  the ratio holds on a busy machine where the absolute figures do not.

The database (SQLite) holds 200 meters x 31 days x 96 slots (595,200 readings);
``--quick`` (the CI smoke test) 20 meters x 2 days.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from cloud_receiver.public import MeterRecord, open_storage, system_token
from contract.records import Reading

DAY0 = 1767542400  # 2026-01-05 00:00 +08:00
SLOT_S = 900
PAGE = 500


def fill(db: str, meters: list[str], days: int) -> None:
    storage = open_storage(db)
    try:
        storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in meters])
        for day in range(days):
            batch = [
                Reading(m, "energy_fwd_total", DAY0 + day * 86400 + SLOT_S * s,
                        f"{day * 96 + s}.{i % 100:02d}", "kWh", DAY0 + day * 86400 + SLOT_S * s + 3)
                for i, m in enumerate(meters)
                for s in range(96)
            ]  # fmt: skip
            storage.ingest("dc-bench", day + 1, 1, batch, [], time.time())
    finally:
        storage.close()


def serve(db: str, tmp: Path) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cloud_receiver", "web", "--db", db, "--port", str(port),
         "--secret-key", str(tmp / "web.key"), "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    url = json.loads(proc.stdout.readline())["url"]
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(url + "api/openapi.json", timeout=5)
            return proc, url
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("cloud-receiver web did not start") from None
            time.sleep(0.1)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def through_api(
    url: str, token: str, meters: list[str], until: int
) -> tuple[int, float, list[float]]:
    pages: list[float] = []
    total = 0
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
        start = time.perf_counter()
        for meter in meters:
            after = None
            while True:
                params: dict[str, str | int] = {"since": DAY0, "until": until, "limit": PAGE}
                if after is not None:
                    params["after"] = after
                t0 = time.perf_counter()
                done = client.get(f"/api/v1/meters/{meter}/readings", params=params)
                pages.append(time.perf_counter() - t0)
                done.raise_for_status()
                doc = done.json()
                total += len(doc["items"])
                after = doc["next"]
                if after is None:
                    break
        return total, time.perf_counter() - start, pages


def direct(db: str, meters: list[str], until: int) -> tuple[int, float]:
    storage = open_storage(db, create=False)
    try:
        start = time.perf_counter()
        total = sum(len(storage.readings(meter=m, since=DAY0, until=until)) for m in meters)
        return total, time.perf_counter() - start
    finally:
        storage.close()


def main() -> None:
    quick = "--quick" in sys.argv
    n_meters, days = (20, 2) if quick else (200, 31)
    meters = [f"{100000000000 + i:012d}" for i in range(n_meters)]
    sample = meters[:: max(1, n_meters // 20)]
    until = DAY0 + days * 86400
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        db = f"sqlite:///{tmp / 'r.db'}"
        fill(db, meters, days)
        storage = open_storage(db, create=False)
        try:
            token = system_token(storage, "bench", "viewer")
        finally:
            storage.close()
        proc, url = serve(db, tmp)
        try:
            through_api(url, token, sample[:1], until)  # warm up
            got, elapsed, pages = through_api(url, token, sample, until)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        want, direct_s = direct(db, sample, until)
    assert got == want == len(sample) * days * 96, (got, want)
    api_rps = got / elapsed
    direct_rps = want / direct_s
    p95 = statistics.quantiles(pages, n=20)[-1] * 1000 if len(pages) > 1 else pages[0] * 1000
    print(f"BENCH api_readings_rps {api_rps:.0f} readings/s")
    print(f"BENCH api_page_p95_ms {p95:.1f} ms")
    print(f"BENCH api_direct_rps {direct_rps:.0f} readings/s")
    print(f"BENCH api_readings_share {api_rps / direct_rps:.3f} ratio")


if __name__ == "__main__":
    main()
