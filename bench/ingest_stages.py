"""The two stages of `receiver_ingest_*_rps`, each alone: what bounds the ingest.

    python bench/ingest_stages.py [--quick]

The receiver's ingest opens a group of batches (verify, decrypt, decode) on one thread
while the previous group is stored on another (`Ingestor.handle_many`); the two share
Python's lock, so the ingest can at best run at the slower stage's pace. This times
each stage alone, on bench/receiver.py's simulated day, single-threaded:

- ingest_open_readings_per_s: `contract.wire.open_batch` of each sealed batch.
- ingest_store_sqlite_readings_per_s / ingest_store_postgres_readings_per_s: the
  opened batches stored `INGEST_GROUP` per transaction (`Storage.ingest_many`: exactly
  once, durable commit), as the storing thread does; nothing decoded meanwhile.

Prints ``BENCH <name> <value> readings/s``. Not part of ``make bench``: it says where
the issue 22 target of 200,000 readings/s stands against each stage (on 2 shared cores
in December 2026 the store stage alone of SQLite ran below it), not how the receiver
does.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from receiver import CID, on_each_backend, sealed_day
from wire import KEY, simulate

from cloud_receiver.public import INGEST_GROUP, Batch, Storage
from contract import wire


def open_all(messages: list[bytes]) -> tuple[list[Batch], float]:
    """Each message opened as the ingest opens it, and the readings per second."""
    t0 = time.perf_counter()
    opened = []
    for m in messages:
        header, content = wire.open_batch(m, lambda cid, key_id: KEY)
        opened.append(Batch(CID, header.seq, header.key_id, content.readings, content.events, t0))
    elapsed = time.perf_counter() - t0
    return opened, sum(len(b.readings) for b in opened) / elapsed


def store_rps(storage: Storage, opened: list[Batch]) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(opened), INGEST_GROUP):
        storage.ingest_many(opened[i : i + INGEST_GROUP])
    elapsed = time.perf_counter() - t0
    stored = len(storage.readings())
    n = sum(len(b.readings) for b in opened)
    if stored != n:
        raise RuntimeError(f"stored {stored} readings, expected {n}")
    return n / elapsed


def main() -> int:
    day = simulate()
    if "--quick" in sys.argv:
        day = day[:8]
    opened, open_rps = open_all(sealed_day(day))
    print(f"BENCH ingest_open_readings_per_s {open_rps:.0f} readings/s")
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        for backend, rps in on_each_backend(Path(tmp), lambda s: store_rps(s, opened)):
            print(f"BENCH ingest_store_{backend}_readings_per_s {rps:.0f} readings/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
