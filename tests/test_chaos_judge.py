"""The chaos verdict (`hil_sim.chaos._judge`) on a quota eviction of a batch in flight:
its readings leave the store but still travel in the batch's sealed bytes, so one that
arrives is delivered, not invented; one that was never committed nor lost is invented."""

from __future__ import annotations

import json
from pathlib import Path

from cloud_receiver.storage import Batch, SqliteStorage
from concentrator.storage import Store
from contract.records import Reading
from hil_sim.chaos import Report, _judge

SLOT = 1_795_000_200
METER = "000000000042"


def _reading(k: int) -> Reading:
    return Reading(METER, "energy_fwd_total", SLOT + 300 * k, f"{k}.00", "kWh", SLOT + 300 * k)


def test_a_reading_evicted_in_flight_that_arrives_is_delivered(tmp_path: Path) -> None:
    truth = tmp_path / "truth.jsonl"
    truth.write_text(
        "".join(
            json.dumps(
                {
                    "t": r.read_at,
                    "meter": METER,
                    "protocol": "dlt645",
                    "quantity": r.quantity,
                    "key": "00010000",
                    "value": r.value,
                    "unit": "kWh",
                }
            )
            + "\n"
            for r in map(_reading, range(3))
        )
    )
    store_path = tmp_path / "store.db"
    with Store.open(store_path) as store:
        store.add_readings([_reading(0), _reading(1)])
        assert store.take_batch(10, 0) is not None  # in flight
        store.quota_bytes = 1
        store.enforce_quota(SLOT + 900.0)
        assert store.get_readings() == []  # evicted, with a loss event for them
    receiver = SqliteStorage(tmp_path / "receiver.db")
    try:
        # Both arrived in the sealed batch; the third was never committed, nor lost.
        receiver.ingest_many([Batch("dc-1", 1, 1, [_reading(k) for k in range(3)], [], 1.0)])
    finally:
        receiver.close()
    report = Report()
    _judge(report, store_path, f"sqlite:///{tmp_path / 'receiver.db'}", truth, 0.0, 0.0)
    assert (report.delivered, report.invented, report.unexplained) == (2, 1, 0)
    assert report.examples == [
        f"invented {(METER, 'energy_fwd_total', SLOT + 600)}: 2.00 (committed None)"
    ]
