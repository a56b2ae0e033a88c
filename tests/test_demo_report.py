"""``make demo``'s last words: every figure it prints is explained (issue 18: it ended with
"gaps 1" and "2 events" that nothing explained)."""

from __future__ import annotations

from pathlib import Path

from cloud_receiver.public import SqliteStorage
from concentrator.storage import Store
from contract.records import Event, Reading
from hil_sim.demo_report import explain_concentrator, explain_receiver

CID = "dc-demo-0001"


def _reading(meter: str, slot: int) -> Reading:
    return Reading(meter, "energy_fwd_total", slot, "12.34", "kWh", slot + 5.0, "poll")


def test_a_batch_in_flight_and_the_stop_record_are_explained(tmp_path: Path) -> None:
    # What the demo's first run left: a batch sent but not acknowledged when the
    # concentrator stopped (a gap at the receiver), and the daemon's own stop record.
    db, rdb = tmp_path / "c.db", tmp_path / "r.db"
    receiver = SqliteStorage(rdb)
    with Store.open(db) as store:
        for seq, meter in ((1, "000000000001"), (2, "000000000002"), (3, "000000000003")):
            if seq == 2:
                store.add_event(Event("meter_state", "warning", meter, {"to": "degraded"}, 9.0))
            store.add_readings([_reading(meter, 900 * seq)])
            batch = store.take_batch(100, 100)
            assert batch is not None and batch.batch_id == seq
            if seq != 2:  # batch 2 never arrived
                receiver.ingest(CID, seq, 1, [r.reading for r in batch.readings], [], 10.0)
                store.mark_delivered(seq)
        store.record_missing("000000000004", "energy_fwd_total", 900, "no reply within 0.6 s")
        store.add_event(Event("daemon_stop", "info", None, {}, 11.0))
    receiver.close()

    said = "\n".join(explain_concentrator(db))
    assert "3 scheduled readings stored and 1 recorded missing" in said
    assert "1 missing because: no reply within 0.6 s" in said
    assert "backlog: 1 readings and 2 events not acknowledged by the receiver yet" in said
    assert "1 daemon_stop event(s): the record of the concentrator's own stop" in said
    assert "batch 2 (1 readings, 1 events: meter_state) was sent but not acknowledged" in said

    said = "\n".join(explain_receiver(db, rdb, CID))
    assert "batches 2: the sealed batches the receiver stored" in said
    assert "max seq 3: the highest batch number received from dc-demo-0001" in said
    assert "gaps 1: batch 2 left the concentrator but had not arrived" in said
    assert "resends it (same number, same bytes) at its next start" in said


def test_nothing_waiting_says_so(tmp_path: Path) -> None:
    db, rdb = tmp_path / "c.db", tmp_path / "r.db"
    receiver = SqliteStorage(rdb)
    with Store.open(db) as store:
        store.add_readings([_reading("000000000001", 900)])
        batch = store.take_batch(100, 100)
        assert batch is not None
        receiver.ingest(CID, batch.batch_id, 1, [r.reading for r in batch.readings], [], 1.0)
        store.mark_delivered(batch.batch_id)
    receiver.close()
    assert explain_concentrator(db)[-1].startswith("backlog: nothing waits for the uplink")
    assert explain_receiver(db, rdb, CID)[-1] == "gaps 0: every batch number up to it arrived"
