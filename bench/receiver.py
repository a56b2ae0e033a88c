"""Receiver benchmarks: ingest speed per backend, and a backlog drained end to end.

Prints ``BENCH <name> <value> <unit>`` lines:
- receiver_ingest_sqlite_rps: readings/s one receiver's ``Ingestor`` (verify, decrypt,
  decode, check ownership, store exactly once, seal the ack) puts into SQLite
  (synchronous=FULL: an ack means the rows survive a power cut), taking the batches as
  ``cloud-receiver run`` takes them from its queue when they arrive faster than it
  stores them: up to ``INGEST_TAKE`` at once, a group per durable transaction, the next
  group decoded while the last one is stored. Target >= 200,000 (issue 22).
- receiver_ingest_postgres_rps: the same into PostgreSQL (binary COPY straight into
  ``readings``), with the per-meter index the scale-out deployment queries by.
  Target >= 200,000.
- backlog_drain_rps: readings/s from a concentrator store holding a 1,000,000-reading
  backlog to the receiver's database, through a private Mosquitto with TLS on
  loopback: the concentrator's own ``Uplink`` (default window and batch size) against a
  ``cloud-receiver run`` process, timed from the uplink's start until the store's
  outbox is empty (every batch acknowledged by the receiver after its commit).

The data is bench/wire.py's simulated day: 1,000 meters x 4 quantities x 96 slots,
sent as one batch per slot (4,000 readings), as concentrators send them live.
``--quick`` (the CI smoke test) uses 8 slots and a 40,000-reading backlog.
PostgreSQL: MF_BENCH_POSTGRES_URL, else the machine's own (``local_postgres_url``); the
benchmark works in a schema of its own and drops it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import rigs  # beside this script (bench/ is no package)
from wire import KEY, simulate

from cloud_receiver.public import (
    INGEST_TAKE,
    LocalBroker,
    PostgresStorage,
    SqliteStorage,
    Storage,
    local_postgres_url,
    pki,
    receiver_ingestor,
)
from concentrator.public import Store, StoreWriter, Uplink, UplinkConfig
from contract.records import Reading
from contract.wire import BatchContent, seal_batch

CID = "cn-0001"
TOPIC = f"mf/v1/{CID}/up"
DRAIN_READINGS = 1_000_000
DRAIN_TIMEOUT_S = 1800.0


def sealed_day(day: list[list[Reading]]) -> list[bytes]:
    return [
        seal_batch(
            BatchContent(readings=tuple(readings)), concentrator_id=CID, key_id=1, key=KEY, seq=i
        )
        for i, readings in enumerate(day, start=1)
    ]


def ingest_rps(storage: Storage, messages: list[bytes], n: int) -> float:
    ingestor = receiver_ingestor(storage, lambda cid, key_id: KEY)
    t0 = time.perf_counter()
    for i in range(0, len(messages), INGEST_TAKE):
        taken = [(TOPIC, m, None) for m in messages[i : i + INGEST_TAKE]]
        for outcome in ingestor.handle_many(taken):
            if outcome.status != "stored":
                raise RuntimeError(f"batch not stored: {outcome}")
    elapsed = time.perf_counter() - t0
    if ingestor.counters.readings != n:
        raise RuntimeError(f"stored {ingestor.counters.readings} readings, expected {n}")
    return n / elapsed


def pg_schema() -> Iterator[str]:
    import psycopg

    server = local_postgres_url("MF_BENCH_POSTGRES_URL")
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in server else "?"
    try:
        yield f"{server}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def on_each_backend(root: Path, measure: Callable[[Storage], float]) -> Iterator[tuple[str, float]]:
    """("sqlite", ``measure`` on a new file in ``root``), then ("postgres", ``measure`` in
    a schema of its own); each storage is closed after its measure."""
    sqlite = SqliteStorage(root / "ingest.db")
    try:
        yield "sqlite", measure(sqlite)
    finally:
        sqlite.close()
    for url in pg_schema():
        pg = PostgresStorage(url)
        try:
            yield "postgres", measure(pg)
        finally:
            pg.close()


def backlog(n: int) -> Iterator[list[Reading]]:
    """``n`` readings of consecutive simulated days, one list per slot."""
    left, day_index = n, 0
    while left > 0:
        shift = day_index * 86_400
        for slot in simulate(seed=645 + day_index):
            if left <= 0:
                return
            chunk = slot[:left]
            left -= len(chunk)
            yield [
                dataclasses.replace(r, slot=r.slot + shift, read_at=r.read_at + shift)
                for r in chunk
            ]
        day_index += 1


def drain_rps(root: Path, n: int) -> tuple[float, float]:
    """(readings/s, payload bytes per reading) for an ``n``-reading backlog."""
    root.mkdir(parents=True, exist_ok=True)
    store_path = root / "concentrator.db"
    with Store.open(store_path) as store:
        for readings in backlog(n):
            store.add_readings(readings)
        assert store.backlog().readings == n
    with LocalBroker(root / "broker") as broker:
        frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
        receiver_db = root / "receiver.db"
        receiver = rigs.receiver(broker, receiver_db, root / "receiver.log")
        try:
            _wait(lambda: b"subscribed to" in (root / "receiver.log").read_bytes(), "receiver")
            cfg = UplinkConfig(
                broker_host="127.0.0.1",
                broker_port=broker.port,
                ca_file=frag / "ca.crt",
                cert_file=frag / f"{CID}.crt",
                key_file=frag / f"{CID}.key",
                payload_key_file=frag / "payload.key",
            )
            elapsed, sent = asyncio.run(_run_uplink(cfg, store_path, n))
        finally:
            rigs.stop(receiver)
    storage = SqliteStorage(receiver_db)
    try:
        stored = sum(c.readings for c in storage.concentrators())
    finally:
        storage.close()
    if stored != n:
        raise RuntimeError(f"receiver stored {stored} readings, expected {n}")
    return n / elapsed, sent / n


async def _run_uplink(cfg: UplinkConfig, store_path: Path, n: int) -> tuple[float, int]:
    store = Store.open(store_path)
    writer = StoreWriter(store, now=time.time)
    writer_task = asyncio.create_task(writer.run())
    uplink = Uplink(cfg, CID, store, writer)
    t0 = time.perf_counter()
    task = asyncio.create_task(uplink.run())
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    try:
        while uplink.stats.readings_acked < n:
            if task.done():
                task.result()
                raise RuntimeError("the uplink stopped")
            if time.monotonic() > deadline:
                raise TimeoutError(f"backlog not drained in {DRAIN_TIMEOUT_S} s")
            await asyncio.sleep(0.05)  # polling the uplink's own counter
        elapsed = time.perf_counter() - t0
    finally:
        task.cancel()
        writer_task.cancel()
        await asyncio.gather(task, writer_task, return_exceptions=True)
    remaining = store.backlog().readings
    store.close()
    if remaining:
        raise RuntimeError(f"{remaining} readings still in the outbox")
    return elapsed, uplink.stats.bytes_sent


def _wait(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def main() -> None:
    quick = "--quick" in sys.argv
    day = simulate()
    if quick:
        day = day[:8]
    n = sum(len(s) for s in day)
    messages = sealed_day(day)
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        root = Path(tmp)
        for backend, rps in on_each_backend(root, lambda s: ingest_rps(s, messages, n)):
            print(f"BENCH receiver_ingest_{backend}_rps {rps:.0f} readings/s")
        drain, bpr = drain_rps(root / "drain", 40_000 if quick else DRAIN_READINGS)
        print(f"BENCH backlog_drain_rps {drain:.0f} readings/s")
        print(f"BENCH backlog_drain_bytes_per_reading {bpr:.2f} B")


if __name__ == "__main__":
    main()
