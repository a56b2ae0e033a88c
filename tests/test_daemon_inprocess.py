"""The daemon in the test's own event loop, against in-process simulated buses: priority
of on-demand reads, wall-clock steps, reload, a full disk and backfill."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from concentrator.clock import ScaledClock
from concentrator.config import load_config
from concentrator.daemon import Daemon
from concentrator.polling.health import Health
from concentrator.storage import Store, StoredReading
from contract.records import Reading
from hil_sim.bus import SimBus
from hil_sim.clock import SimClock
from hil_sim.faults import FaultPlan, OfflineWindow
from hil_sim.fleet import FleetOptions, build_bus, write_config
from hil_sim.truth import TruthLog, read_truth

SCALE = 60.0  # one wall-clock minute per real second


@dataclass
class Rig:
    sim: SimBus
    daemon: Daemon
    config: Path
    task: asyncio.Task[None]


async def until(predicate: Callable[[], object], within: float = 60.0) -> None:
    """Poll a condition on the daemon's state (store rows, counters) with a deadline."""
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the state lives in SQLite, not an Event
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    meters: int = 4,
    cadence: str = "1m",
    faults: FaultPlan | None = None,
    baud: int = 0,
    prepare: Callable[[Path, Path], None] | None = None,
) -> AsyncIterator[Rig]:
    opts = FleetOptions(meters=meters, baud=baud, faults=faults or FaultPlan())
    link = tmp_path / "bus1"
    sim = build_bus(
        opts, link=link, clock=SimClock(scale=SCALE), truth=TruthLog(tmp_path / "truth.jsonl")
    )
    await sim.start()
    cfg = tmp_path / "c.toml"
    write_config(
        cfg, [("bus1", link, opts, sim.meters)], store_path=tmp_path / "s.db", cadence=cadence
    )
    if prepare is not None:
        prepare(cfg, tmp_path / "s.db")  # the state a previous run left behind
    daemon = Daemon(cfg, clock=ScaledClock(scale=SCALE))
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        await until(lambda: daemon.store is not None or task.done())
        yield Rig(sim, daemon, cfg, task)
    finally:
        daemon.stop()
        async with asyncio.timeout(60):
            await task
        await sim.stop()


def stored(daemon: Daemon, quantity: str = "energy_fwd_total") -> list[tuple[str, int]]:
    if daemon.store is None:
        return []
    return [(r.reading.meter, r.reading.slot) for r in daemon.store.get_readings(quantity=quantity)]


async def call(daemon: Daemon, fn: Callable[..., object], *args: object) -> object:
    assert daemon.writer is not None
    return await daemon.writer.call(fn, *args)


async def test_on_demand_read_jumps_the_queue(tmp_path: Path) -> None:
    async with rig(tmp_path, meters=4, baud=9600) as r:
        await until(lambda: r.daemon.slots_started >= 1)
        worker = r.daemon.polling.workers["bus1"]
        # Fill the queue well beyond what the bus can do at once.
        for _ in range(10):
            for m in r.daemon.config.meters:
                r.daemon.polling.submit_read(
                    r.daemon.config.tasks[0], m, ["voltage_a"], 0, r.daemon.clock.monotonic() + 600
                )
        values = await r.daemon.polling.read_now(r.sim.meters[3].address, ["frequency"])
        assert [v.quantity for v in values] == ["frequency"]
        assert worker.queued > 20  # answered while the scheduled polls still wait


async def test_interval_reads_go_before_daily_freezes_due_sooner(tmp_path: Path) -> None:
    # Near midnight yesterday's unread freezes are due at 00:05, before the 00:00 slot's
    # interval reads (due 00:15); the interval reads must still go first: a freeze can be
    # backfilled from the meter, an interval reading cannot.
    async with rig(tmp_path, meters=4) as r:
        await until(lambda: r.daemon.slots_started >= 1)
        interval, freeze = r.daemon.config.tasks[0], r.daemon.config.tasks[1]
        assert freeze.name == "daily-freeze"
        worker = r.daemon.polling.workers["bus1"]
        now = r.daemon.clock.monotonic()
        for m in r.daemon.config.meters:
            r.daemon.polling.submit_read(freeze, m, freeze.quantities, 0, now + 300)
            r.daemon.polling.submit_read(interval, m, interval.quantities, 0, now + 900)
        order = [j.freeze_day is not None for j in sorted(worker._ready)]
        assert order.count(True) >= 4
        assert order == sorted(order)  # every interval read ahead of every freeze


async def test_sigterm_commits_every_reading_handed_to_the_store(tmp_path: Path) -> None:
    # Readings the bus workers handed over but the writer has not committed yet when
    # SIGTERM comes (the daemon's stop path) are committed before the process exits.
    async with rig(tmp_path, meters=2) as r:
        await until(lambda: r.daemon.slots_started >= 1)
        assert r.daemon.writer is not None
        now = time.time()
        held = [
            Reading(f"{m:012d}", "voltage_a", 1_600_000_000 + 60 * i, "220.1", "V", now, "poll")
            for i in range(300)
            for m in (1, 2)
        ]
        r.daemon.writer.add(held)
        r.daemon.stop()  # what SIGTERM does
        async with asyncio.timeout(60):
            await r.task
        assert r.daemon.failure is None
    with Store.open(tmp_path / "s.db") as store:
        stored = store.get_readings(quantity="voltage_a", until=1_600_000_000 + 60 * 300)
        assert len(stored) == len(held)
        assert store.integrity_check() == []


async def test_wall_clock_step_forward_records_skipped_slots_and_keeps_polling(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        clock = r.daemon.clock
        assert isinstance(clock, ScaledClock)
        await until(lambda: len({s for _, s in stored(r.daemon)}) >= 1)
        clock.offset += 3600  # NTP steps the clock one hour ahead
        before = r.daemon.slots_started
        await until(lambda: r.daemon.slots_started >= before + 2)
        store = r.daemon.store
        assert store is not None
        # The skipped hour, recorded, not silent (committed by the writer in its order).
        await until(lambda: len({m.slot for m in store.missing(quantity="energy_fwd_total")}) >= 55)
        missing = store.missing(quantity="energy_fwd_total")
        assert all("stepped" in m.reason for m in missing)
        now_slot = r.daemon.config.tasks[0].every.slot_start(
            clock.wall(), r.daemon.config.concentrator.tzinfo
        )
        await until(lambda: any(s >= now_slot for _, s in stored(r.daemon)))


async def test_wall_clock_step_backward_neither_stalls_nor_doubles(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        clock = r.daemon.clock
        assert isinstance(clock, ScaledClock)
        await until(lambda: len({s for _, s in stored(r.daemon)}) >= 3)
        done_slots = {s for _, s in stored(r.daemon)}
        transactions = r.daemon.polling.workers["bus1"].bus.stats.transactions
        clock.offset -= 180  # the RTC goes back three minutes: slots already read
        before = r.daemon.slots_started
        await until(lambda: r.daemon.slots_started >= before + 2)
        # Slots already stored were not polled again...
        rows = stored(r.daemon)
        assert len(rows) == len(set(rows))
        assert r.daemon.polling.workers["bus1"].bus.stats.transactions - transactions <= 8
        # ...and polling goes on as soon as the clock reaches a slot not yet read.
        await until(lambda: {s for _, s in stored(r.daemon)} - done_slots, within=30)


async def test_sighup_reload_adds_meters_and_refuses_a_broken_config(tmp_path: Path) -> None:
    async with rig(tmp_path, meters=4) as r:
        text = r.config.read_text()
        # Drop the last meter from the config: it must no longer be polled.
        cut = text.rindex("[[meter]]")
        tail = text[cut:]
        without_last = text[:cut] + tail[tail.index("[[task]]") :]
        r.config.write_text(without_last)
        r.daemon.request_reload()
        await until(lambda: len(r.daemon.config.meters) == 3)
        r.config.write_text(text + "\nbogus = 1\n")
        r.daemon.request_reload()
        assert r.daemon.store is not None
        await until(
            lambda: (
                r.daemon.store is not None and r.daemon.store.events(kind="config_reload_failed")
            )
        )
        assert len(r.daemon.config.meters) == 3  # still running the last good config
        event = r.daemon.store.events(kind="config_reload_failed")[0].event
        assert "bogus" in str(event.detail["issues"])


async def test_full_disk_keeps_polling_memory_bounded_until_space_returns(tmp_path: Path) -> None:
    async with rig(tmp_path, meters=24) as r:
        await until(lambda: len(stored(r.daemon)) >= 24)
        writer = r.daemon.writer
        assert writer is not None and r.daemon.store is not None
        writer.max_pending = 6
        conn = r.daemon.store._conn
        assert conn is not None
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        await call(r.daemon, conn.execute, f"PRAGMA max_page_count = {pages}")
        await until(lambda: writer.disk_full, within=60)
        tx = r.daemon.polling.workers["bus1"].bus.stats.transactions
        await until(lambda: r.daemon.polling.workers["bus1"].bus.stats.transactions > tx + 8)
        assert writer.pending <= 6  # memory stays bounded while the disk is full
        assert r.daemon.status()["disk_full"] is True
        await call(r.daemon, conn.execute, "PRAGMA max_page_count = 1073741823")
        await until(lambda: not writer.disk_full and writer.pending == 0, within=60)
        losses = r.daemon.store.events(kind="loss")
        assert losses and losses[0].event.detail["reason"].startswith("disk full")


async def test_missed_daily_freeze_is_backfilled_from_the_meter(tmp_path: Path) -> None:
    # Meter 1 is silent for its first 20 simulated minutes: the daily slot's retries
    # fail, so the slot is recorded missing and then recovered from the meter's freezes.
    plan = FaultPlan(offline=[OfflineWindow("000000000001", 0.0, 1200.0)])
    async with rig(tmp_path, meters=2, faults=plan) as r:
        assert r.daemon.store is not None
        store = r.daemon.store

        def backfilled() -> bool:
            rows = store.get_readings(
                meter="000000000001", quantity="frozen_daily_energy_fwd_total"
            )
            return bool(rows) and rows[0].reading.source == "backfill"

        await until(
            lambda: store.missing(meter="000000000001", quantity="frozen_daily_energy_fwd_total"),
            60,
        )
        await until(backfilled, 90)
        assert r.daemon.polling.health.get("000000000001").state == Health.ONLINE
        # The recovered slot no longer counts as missing.
        assert not store.missing(meter="000000000001", quantity="frozen_daily_energy_fwd_total")
        events = [
            e.event.detail["to"]
            for e in store.events(kind="meter_state")
            if e.event.meter == "000000000001"
        ]
        assert events[:3] == ["degraded", "offline", "online"]


async def test_freeze_missed_while_down_is_backfilled_from_meters_that_answer(
    tmp_path: Path,
) -> None:
    # The last run stopped inside yesterday's daily-freeze slot and this one starts after
    # it: that slot's freezes are recorded missing, and since the meters answer (no
    # health change will ever trigger it) the backfill starts on its own.
    yesterday: list[int] = []

    def down_over_0005(cfg: Path, db: Path) -> None:
        config = load_config(cfg)
        task = next(t for t in config.tasks if t.name == "daily-freeze")
        slot = task.every.slot_start(time.time() - 86400, config.concentrator.tzinfo)
        yesterday.append(slot)
        with Store.open(db) as store:
            store.set_state("task:daily-freeze:last_slot", str(slot))

    async with rig(tmp_path, meters=2, prepare=down_over_0005) as r:
        assert r.daemon.store is not None
        store = r.daemon.store
        slot = yesterday[0]

        def freezes() -> list[StoredReading]:
            return store.get_readings(
                quantity="frozen_daily_energy_fwd_total", since=slot, until=slot + 1
            )

        await until(lambda: len(freezes()) == 2, 90)
        assert {f.reading.source for f in freezes()} == {"backfill"}
        assert not store.missing(
            quantity="frozen_daily_energy_fwd_total", since=slot, until=slot + 1
        )
        rows = freezes()
    # Yesterday's freeze is the meter's second most recent (DI 05060102); a block reply's
    # truth holds "total / t1 / t2 / t3 / t4".
    told = {
        (t.meter, t.value.split(" / ")[0])
        for t in read_truth(tmp_path / "truth.jsonl")
        if t.key == "05060102" and t.fault is None
    }
    bad = [x.reading for x in rows if (x.reading.meter, x.reading.value) not in told]
    assert not bad, bad


@pytest.mark.parametrize("back", [1, 3])
async def test_restart_accounts_for_earlier_slots_left_half_read(tmp_path: Path, back: int) -> None:
    # Killed just after committing the new slot's state, before an earlier slot's late
    # reads gave up (the slot before; or further back after a wall-clock step): that
    # slot has meter 1 stored and meter 2 neither stored nor missing. The restart
    # records meter 2 missing with its reason.
    slots: list[int] = []

    def killed_at_slot_change(cfg: Path, db: Path) -> None:
        config = load_config(cfg)
        task = next(t for t in config.tasks if t.name == "interval-energy")
        now = time.time()
        last = task.every.slot_start(now, config.concentrator.tzinfo)
        prev = last - back * task.every.period_s
        slots.append(prev)
        with Store.open(db) as store:
            store.add_readings(
                [Reading("000000000001", "energy_fwd_total", prev, "1.00", "kWh", now, "poll")]
            )
            store.set_state("task:interval-energy:last_slot", str(last))

    async with rig(tmp_path, meters=2, prepare=killed_at_slot_change) as r:
        assert r.daemon.store is not None
        store = r.daemon.store
        prev = slots[0]
        await until(lambda: store.missing(quantity="energy_fwd_total", since=prev, until=prev + 1))
        gone = store.missing(quantity="energy_fwd_total", since=prev, until=prev + 1)
        assert [(m.meter, m.reason) for m in gone] == [
            ("000000000002", "daemon stopped during this slot")
        ]
        # A slot never polled at all (before the first start) is left alone.
        earlier = prev - 60
        assert not store.missing(since=earlier, until=earlier + 1)


@pytest.mark.parametrize("name", ["bad_checksum", "truncated", "noise", "late_reply"])
async def test_faulty_replies_are_retried_and_values_stay_true(tmp_path: Path, name: str) -> None:
    plan = FaultPlan(rates={name: 0.3}, seed=2, late_by=0.7)
    async with rig(tmp_path, meters=3, faults=plan) as r:
        await until(lambda: len({s for _, s in stored(r.daemon)}) >= 3, 90)
        assert r.sim.counters.faults.get(name, 0) > 0  # the faults really happened
        if name != "noise":  # noise before a frame is skipped without a retry
            stats = r.daemon.polling.workers["bus1"].bus.stats
            assert stats.frame_errors + stats.timeouts > 0
        assert r.daemon.store is not None
        rows = r.daemon.store.get_readings(quantity="energy_fwd_total")
    told = {
        (t.meter, t.value)
        for t in read_truth(tmp_path / "truth.jsonl")
        if t.fault in (None, "late_reply", "noise") and t.quantity == "energy_fwd_total"
    }
    bad = [x.reading for x in rows if (x.reading.meter, x.reading.value) not in told]
    assert rows and not bad, bad


# ---------------------------------------------------------------------- issue 18


def _events(daemon: Daemon, kind: str) -> list[dict[str, object]]:
    store = daemon.store
    return [e.event.detail for e in store.events(kind=kind)] if store is not None else []


async def test_sighup_applies_uplink_and_modem_live_and_refuses_what_needs_a_restart(
    tmp_path: Path,
) -> None:
    # Issue 18: adding [uplink] and sending SIGHUP logged "config reloaded" and changed
    # nothing until a restart.
    from cloud_receiver.public import LocalBroker, pki
    from hil_sim.fleet import add_uplink

    async with rig(tmp_path, meters=2) as r:
        assert r.daemon.uplink is None
        with LocalBroker(tmp_path / "broker") as broker:
            fragment = await asyncio.to_thread(
                pki.provision,
                broker.pki_dir,
                "dc-sim-0001",  # the id hil-sim wrote: the identity does not change
                broker_host="127.0.0.1",
                broker_port=broker.port,
            )
            add_uplink(r.config, fragment, concentrator_id="dc-sim-0001")
            with_uplink = r.config.read_text()
            r.config.write_text(with_uplink + '\n[modem]\nport = "modem-not-plugged-in"\n')
            r.daemon.request_reload()
            await until(lambda: r.daemon.uplink is not None and r.daemon.uplink.stats.connected)
            await until(lambda: r.daemon.uplink is not None and r.daemon.uplink.stats.batches_sent)
            assert r.daemon.modem is not None
            assert r.daemon.modem.cfg.port == str(tmp_path / "modem-not-plugged-in")
            # The event is committed with the writer's next group, not with the reload.
            await until(lambda: _events(r.daemon, "config_reloaded"))
            [applied] = _events(r.daemon, "config_reloaded")
            assert applied["applied"] == ["uplink", "modem"]

            # The store (and the id) change only at a restart: refused, with the reason;
            # what else changed is applied all the same.
            moved = with_uplink.replace('path = "s.db"', 'path = "elsewhere.db"')
            moved = moved.replace('id = "dc-sim-0001"', 'id = "dc-other"')
            assert moved != with_uplink
            r.config.write_text(moved)  # [modem] removed
            r.daemon.request_reload()
            await until(lambda: _events(r.daemon, "config_reload_refused"))
            [refused] = _events(r.daemon, "config_reload_refused")
            reasons = refused["refused"]
            assert isinstance(reasons, dict) and set(reasons) == {"storage", "concentrator.id"}
            assert "next restart" in reasons["storage"]
            assert r.daemon.config.storage.path == tmp_path / "s.db"
            assert r.daemon.config.concentrator.id == "dc-sim-0001"
            assert r.daemon.modem is None
            assert r.daemon.uplink is not None  # untouched: its table did not change
        assert r.daemon.failure is None


async def test_missing_serial_ports_are_retried_quietly_with_the_true_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 18: two missing serial ports gave 48 warnings in 10 s, and their meters went
    # offline for what was the port's fault. Now: one warning per port and state change,
    # retries with a capped backoff, slots recorded missing with the port's error.
    from concentrator.polling import bus_worker

    monkeypatch.setattr(bus_worker, "PORT_RETRY_MAX_S", 2.0)  # a short cap: a short test
    absent = [tmp_path / "ttyUSB0", tmp_path / "ttyUSB1"]

    def two_more_buses(cfg: Path, db: Path) -> None:
        text = cfg.read_text()
        extra = ""
        for i, port in enumerate(absent):
            extra += (
                f'[[bus]]\nname = "usb{i}"\ntype = "rs485"\nport = "{port.name}"\n'
                f'baud = 2400\nparity = "E"\n\n[[meter]]\naddress = "00000000009{i}"\n'
                f'protocol = "dlt645"\nbus = "usb{i}"\ngroup = "dlt645"\n\n'
            )
        cfg.write_text(text.replace("[[meter]]", extra + "[[meter]]", 1))

    caplog.set_level(logging.WARNING, logger="concentrator")
    async with rig(tmp_path, meters=1, prepare=two_more_buses) as r:
        started = time.monotonic()
        await asyncio.sleep(10.0)  # the ten seconds, real time
        assert time.monotonic() - started >= 10.0
        said = [rec for rec in caplog.records if rec.name == "concentrator.polling.bus_worker"]
        assert len(said) == 2, [rec.getMessage() for rec in said]
        assert {rec.bus for rec in said} == {"usb0", "usb1"}  # type: ignore[attr-defined]
        assert all("cannot open serial port" in rec.getMessage() for rec in said)
        assert r.daemon.store is not None
        missing = r.daemon.store.missing(meter="000000000090")
        assert missing and all(
            m.reason.startswith(f"serial port {absent[0]} unavailable: cannot open serial port")
            for m in missing
        )
        assert r.daemon.polling is not None
        assert r.daemon.polling.health.get("000000000090").state != Health.OFFLINE
        assert r.daemon.status()["buses"]["usb0"]["port_error"]
        assert len(_events(r.daemon, "bus_port_down")) == 2

        # The adapter is plugged in: the next try opens it, once said, and reads go on.
        opts = FleetOptions(meters=1, baud=0, address_base="000000000090")
        late = build_bus(opts, link=absent[0], clock=SimClock(scale=SCALE))
        await late.start()
        try:
            await until(lambda: ("000000000090", "energy_fwd_total") in {
                (m, "energy_fwd_total") for m, _ in stored(r.daemon)
            }, within=60)  # fmt: skip
            [back] = _events(r.daemon, "bus_port_back")
            assert back["bus"] == "usb0" and back["port"] == str(absent[0])
            assert r.daemon.status()["buses"]["usb0"]["port_error"] is None
        finally:
            await late.stop()
        assert r.daemon.failure is None
