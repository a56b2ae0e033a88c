"""The receiver's Prometheus endpoint: collection completeness from the archive and the
readings on both backends, and a real ``cloud-receiver run --metrics`` behind a real
Mosquitto whose figures move as batches (and a bad payload) arrive."""

from __future__ import annotations

import datetime as dt
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import receiver_cli, wait_for
from mqtt_harness import Broker, Peer
from scrape import example_metric_names, listening_ports, scrape, try_scrape

from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet.broker import free_port
from cloud_receiver.ingest.ingestor import REASONS, Counters
from cloud_receiver.ingest.metrics import (
    CachedFigures,
    Collection,
    CollectionRule,
    MetricsServer,
    collection,
)
from cloud_receiver.storage import MeterRecord, SqliteStorage, Storage
from contract import wire
from contract.records import Reading

NS = "meterflow_receiver"
CST = dt.timezone(dt.timedelta(hours=8))
RULE = CollectionRule(CST, "energy_fwd_total", 900)
MIDNIGHT = int(dt.datetime(2025, 3, 10, tzinfo=CST).timestamp())
NOW = MIDNIGHT + 10 * 3600 + 7 * 60  # 10:07 local: 40 slots completed
A, B, C, STRAY = "000000000001", "000000000002", "000000000003", "000000009999"


def energy(
    meter: str, slots: range, quantity: str = "energy_fwd_total", source: str = "poll"
) -> list[Reading]:
    return [Reading(meter, quantity, s, f"{s % 1000}.00", "kWh", s + 5.0, source) for s in slots]


def slots(first: int, last: int, day: int = MIDNIGHT) -> range:
    """The slots numbered first..last (0 = 00:00) of the local day starting at ``day``."""
    return range(day + first * 900, day + (last + 1) * 900, 900)


def fill(storage: Storage) -> None:
    storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in (A, B, C, "000000000004")])
    yesterday = MIDNIGHT - 86_400
    batches = [
        # dc-1: A complete so far (the slot in progress too, not yet due), B half, 5 of
        # its slots recovered from its memory.
        (
            "dc-1",
            energy(A, slots(0, 40))
            + energy(B, slots(0, 14))
            + energy(B, slots(15, 19), source="backfill"),
        ),
        # Other quantities and meters outside the archive do not count.
        ("dc-1", energy(A, slots(0, 39), "voltage_a") + energy(STRAY, slots(0, 39))),
        # dc-2: C only yesterday (silent today, still dc-2's meter); A yesterday too.
        ("dc-2", energy(C, slots(80, 95, yesterday)) + energy(A, slots(90, 95, yesterday))),
    ]
    for seq, (concentrator, readings) in enumerate(batches, start=1):
        storage.ingest(concentrator, seq, 1, readings, [], NOW)


def test_collection_completeness_from_the_archive(receiver_storage: Storage) -> None:
    fill(receiver_storage)
    per_concentrator, archive, silent = collection(receiver_storage, RULE, NOW)
    assert per_concentrator == {
        "dc-1": Collection(meters=2, expected=2 * 40, received=40 + 20, recovered=5, complete=1),
        "dc-2": Collection(meters=1, expected=40, received=0),  # A is dc-1's now
    }
    assert per_concentrator["dc-1"].ratio == 60 / 80
    assert (archive, silent) == (4, 1)  # 000000000004 was never heard
    # In the first slot of the day nothing is due yet: no ratio rather than a false one.
    first, _, _ = collection(receiver_storage, RULE, MIDNIGHT + 600)
    assert all(c.expected == 0 and c.ratio is None for c in first.values())


def test_endpoint_serves_the_database_figures_cached(receiver_storage: Storage) -> None:
    fill(receiver_storage)
    counters = Counters(messages=5, stored=3, duplicates=1, quarantined=1, readings=170,
                        rate_limited=2, evicted=3)  # fmt: skip
    counters.by_reason["auth_failed"] = 1
    figures = CachedFigures(receiver_storage, RULE, refresh_s=3600, clock=lambda: NOW)
    server = MetricsServer(counters, figures, connected=lambda: True)
    port = free_port()
    server.start("127.0.0.1", port)
    try:
        server.observe_latency(0.02)
        got = scrape(f"http://127.0.0.1:{port}/metrics")
        assert got.get(f"{NS}_messages_total") == 5
        assert got.labels(f"{NS}_batches_total", "outcome") == {
            "stored": 3, "duplicate": 1, "quarantined": 1,
        }  # fmt: skip
        assert got.get(f"{NS}_readings_stored_total") == 170
        refusals = got.labels(f"{NS}_refusals_total", "reason")
        assert set(refusals) == set(REASONS) and refusals["auth_failed"] == 1
        assert sum(refusals.values()) == 1
        assert got.get(f"{NS}_broker_connected") == 1
        assert got.get(f"{NS}_ingest_latency_seconds_count") == 1
        assert got.get(f"{NS}_ingest_latency_seconds_bucket", le="0.025") == 1
        assert got.get(f"{NS}_quarantine_messages") == 0
        assert got.get(f"{NS}_quarantine_rate_limited_total") == 2
        assert got.get(f"{NS}_quarantine_evicted_total") == 3
        assert got.get(f"{NS}_reading_conflicts") == 0
        assert got.get(f"{NS}_archive_meters") == 4
        assert got.get(f"{NS}_archive_meters_silent") == 1
        assert got.labels(f"{NS}_collection_expected_readings", "concentrator") == {
            "dc-1": 80, "dc-2": 40,
        }  # fmt: skip
        assert got.labels(f"{NS}_collection_received_readings", "concentrator") == {
            "dc-1": 60, "dc-2": 0,
        }  # fmt: skip
        assert got.get(f"{NS}_collection_completeness_ratio", concentrator="dc-1") == 0.75
        assert got.get(f"{NS}_collection_meters", concentrator="dc-2") == 1
        assert got.get(f"{NS}_collection_recovered_readings", concentrator="dc-1") == 5
        assert got.labels(f"{NS}_collection_complete_meters", "concentrator") == {
            "dc-1": 1, "dc-2": 0,
        }  # fmt: skip
        # Within refresh_s the database is not asked again: a quarantined message shows
        # at the next refresh only.
        receiver_storage.quarantine(
            topic="mf/v1/dc-1/up", concentrator="dc-1", seq=None, reason="bad_magic",
            detail="x", payload=b"x", received_at=NOW,
        )  # fmt: skip
        for seq, value in ((901, "1.00"), (902, "2.00")):  # a conflict
            receiver_storage.ingest("dc-9", seq, 1, [Reading("m-x", "energy_fwd_total", 900,
                                    value, "kWh", 901.0)], [], NOW)  # fmt: skip
        assert scrape(f"http://127.0.0.1:{port}/metrics").get(f"{NS}_quarantine_messages") == 0
        figures.refresh_s = 0
        again = scrape(f"http://127.0.0.1:{port}/metrics")
        assert again.get(f"{NS}_quarantine_messages") == 1
        assert again.get(f"{NS}_reading_conflicts") == 1
        assert figures.errors == 0
    finally:
        server.stop()


# ---------------------------------------------------------------------- end to end
CID = "dc-metrics"


def _midday_offset() -> tuple[str, dt.timezone]:
    """A UTC offset at which it is about noon now: the day has slots behind it and
    none of this test's slots cross a midnight, whenever the test runs."""
    hours = 12 - dt.datetime.now(dt.UTC).hour
    return f"{'+' if hours >= 0 else '-'}{abs(hours):02d}:00", dt.timezone(
        dt.timedelta(hours=hours)
    )


class MetricsReceiver:
    """``cloud-receiver run`` as its own process, with or without ``--metrics``."""

    def __init__(self, broker: Broker, db: Path, log: Path, *extra: str) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "cloud_receiver", "run",
                "--broker", f"127.0.0.1:{broker.port}", "--pki-dir", str(broker.pki_dir),
                "--db", f"sqlite:///{db}", "--receiver", "receiver", "-v", *extra,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
        finally:
            self.log.close()


def _count(db: Path) -> tuple[int, int]:
    s = SqliteStorage(db)
    try:
        return len(s.readings()), len(s.quarantined())
    finally:
        s.close()


@pytest.mark.slow
def test_receiver_run_metrics_move_as_batches_arrive(tmp_path: Path) -> None:
    tz_text, tz = _midday_offset()
    now = time.time()
    midnight = int(
        dt.datetime.fromtimestamp(now, tz).replace(hour=0, minute=0, second=0).timestamp()
    )
    completed = int(now - midnight) // 900
    db = tmp_path / "r.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    with Broker(tmp_path / "broker") as broker:
        frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
        key = bytes.fromhex((frag / "payload.key").read_text().strip())
        storage = SqliteStorage(db)  # the archive, as `archive import` leaves it
        storage.replace_archive(
            [MeterRecord(A, "TA-1", "total"), MeterRecord(B, "TA-1", "customer")]
        )
        storage.close()
        receiver = MetricsReceiver(
            broker, db, tmp_path / "receiver.log",
            "--metrics", f"127.0.0.1:{port}", "--metrics-refresh", "1", "--tz", tz_text,
        )  # fmt: skip
        concentrator = Peer.connect(broker, CID, client_id=f"{CID}-test")
        try:
            first = wait_for(lambda: try_scrape(url), 120, "the receiver's metrics endpoint")
            assert first.get(f"{NS}_readings_stored_total") == 0
            assert listening_ports(receiver.proc.pid) == {port}
            wait_for(
                lambda: (
                    (got := try_scrape(url)) is not None and got.get(f"{NS}_broker_connected") == 1
                ),
                120,
                "the receiver to connect",
            )

            # A: every completed slot of today; B: the first half of them.
            readings = energy(A, range(midnight, midnight + completed * 900, 900))
            readings += energy(B, range(midnight, midnight + (completed // 2) * 900, 900))
            sealed = [
                wire.seal_batch(
                    wire.BatchContent(tuple(readings[i : i + 20])),
                    concentrator_id=CID,
                    key_id=1,
                    key=key,
                    seq=seq,
                )
                for seq, i in enumerate(range(0, len(readings), 20), start=1)
            ]
            # "Connected" comes before the broker has the receiver's subscription: until
            # it has, a publish finds no subscriber (PUBACK reason 16) and is not
            # delivered at all, so the first batch is offered until one is.
            wait_for(
                lambda: concentrator.publish(f"mf/v1/{CID}/up", sealed[0]).value == 0,
                120,
                "the receiver's subscription",
            )
            for payload in [*sealed[1:], sealed[0]]:  # the first one again: a duplicate
                assert concentrator.publish(f"mf/v1/{CID}/up", payload).value == 0

            def settled() -> object:
                got = try_scrape(url)
                return got if got and got.get(f"{NS}_messages_total") == len(sealed) + 1 else None

            got = wait_for(settled, 120, "every batch ingested")
            assert got.get(f"{NS}_readings_stored_total") == len(readings) == _count(db)[0]
            assert got.get(f"{NS}_batches_total", outcome="stored") == len(sealed)
            assert got.get(f"{NS}_batches_total", outcome="duplicate") == 1
            assert got.get(f"{NS}_ingest_latency_seconds_count") == len(sealed) + 1
            assert sum(got.labels(f"{NS}_refusals_total", "reason").values()) == 0

            def complete() -> object:
                got = try_scrape(url)
                return (
                    got
                    if got
                    and got.value(f"{NS}_collection_received_readings", concentrator=CID)
                    == len(readings)
                    else None
                )

            got = wait_for(complete, 60, "the database figures to refresh")
            expected = got.get(f"{NS}_collection_expected_readings", concentrator=CID)
            assert expected in (2 * completed, 2 * (completed + 1))  # a slot may end meanwhile
            ratio = got.get(f"{NS}_collection_completeness_ratio", concentrator=CID)
            assert ratio == pytest.approx(len(readings) / expected)
            assert got.get(f"{NS}_archive_meters") == 2
            assert got.get(f"{NS}_archive_meters_silent") == 0

            # A payload that is not a batch: refused by reason, held in quarantine.
            assert concentrator.publish(f"mf/v1/{CID}/up", b"XX not a batch").value == 0
            sealed_wrong = wire.seal_batch(
                wire.BatchContent(tuple(energy(A, range(midnight, midnight + 900, 900)))),
                concentrator_id=CID,
                key_id=1,
                key=bytes(32),
                seq=99,
            )
            assert concentrator.publish(f"mf/v1/{CID}/up", sealed_wrong).value == 0

            def refused() -> object:
                got = try_scrape(url)
                return got if got and got.get(f"{NS}_quarantine_messages") == 2 else None

            got = wait_for(refused, 60, "the refusals to show")
            assert got.get(f"{NS}_refusals_total", reason="bad_magic") == 1
            assert got.get(f"{NS}_refusals_total", reason="auth_failed") == 1
            assert got.get(f"{NS}_batches_total", outcome="quarantined") == 2
            assert _count(db)[1] == 2
            # The example alerting rules name metrics that exist.
            assert example_metric_names(NS) <= set(got.names())
        finally:
            concentrator.close()
            assert receiver.stop() == 0


def test_bad_metrics_option_is_refused_with_the_reason(tmp_path: Path) -> None:
    result = receiver_cli(
        "run", "--broker", "127.0.0.1:1", "--pki-dir", str(tmp_path), "--db",
        f"sqlite:///{tmp_path / 'r.db'}", "--metrics", "localhost:9470",
    )  # fmt: skip
    assert result.returncode == 2
    assert "'localhost:9470': expected IP:PORT, e.g. 127.0.0.1:9470" in result.stderr
    result = receiver_cli(
        "run", "--broker", "127.0.0.1:1", "--pki-dir", str(tmp_path), "--db",
        f"sqlite:///{tmp_path / 'r.db'}", "--metrics", "127.0.0.1:0",
    )  # fmt: skip
    assert result.returncode == 2
    assert "the port must be 1..65535" in result.stderr


def test_a_metrics_port_in_use_stops_the_start_with_the_reason(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker")  # its PKI; Mosquitto itself is not needed
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = receiver_cli(
            "run", "--broker", "127.0.0.1:1", "--pki-dir", str(broker.pki_dir), "--db",
            f"sqlite:///{tmp_path / 'r.db'}", "--metrics", f"127.0.0.1:{port}",
        )  # fmt: skip
    assert result.returncode == 1
    assert f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use" in (
        result.stderr
    )
