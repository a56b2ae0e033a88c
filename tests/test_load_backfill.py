"""Load-profile recovery in the daemon (issue 20, item 3): interval slots missed while a
meter was silent or the daemon was down are read back from the meter's own curve, at
backfill priority, stored once with source "backfill", and equal what the meter
recorded (the simulator's ground truth). The daemon runs in the test's event loop
against in-process simulated buses, on a clock 600 times real time."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

from concentrator.clock import ScaledClock
from concentrator.config import load_config
from concentrator.daemon import Daemon
from concentrator.polling.loadprofile import recoverable_names
from concentrator.storage import Store, StoredReading
from hil_sim.bus import SimBus
from hil_sim.clock import SimClock
from hil_sim.faults import FaultPlan, OfflineWindow
from hil_sim.fleet import FleetOptions, build_bus, write_config
from hil_sim.truth import TruthLog, read_truth

SCALE = 600.0  # a 15-minute slot lasts 1.5 real seconds
SLOT = 900


async def until(predicate: Callable[[], object], within: float = 90.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the state lives in SQLite
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path,
    faults: FaultPlan,
    prepare: Callable[[Path, Path], None] | None = None,
    sim: SimBus | None = None,
) -> AsyncIterator[tuple[SimBus, Daemon]]:
    opts = FleetOptions(meters=3, baud=9600, faults=faults, protocols=("dlt645", "dlt698"))
    link = tmp_path / "bus1"
    own = sim is None
    if sim is None:
        sim = build_bus(
            opts, link=link, clock=SimClock(scale=SCALE), truth=TruthLog(tmp_path / "truth.jsonl")
        )
        await sim.start()
    cfg = tmp_path / "c.toml"
    write_config(cfg, [("bus1", link, opts, sim.meters)], store_path=tmp_path / "s.db")
    if prepare is not None:
        prepare(cfg, tmp_path / "s.db")
    sock = Path(tempfile.mkdtemp(prefix="mflp", dir="/tmp")) / "ctl.sock"  # sun_path limit
    daemon = Daemon(cfg, clock=ScaledClock(scale=SCALE), control_socket=sock)
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        await until(lambda: daemon.store is not None or task.done())
        yield sim, daemon
    finally:
        daemon.stop()
        async with asyncio.timeout(60):
            await task
        if own:
            await sim.stop()


def energy(store: Store, meter: str) -> list[StoredReading]:
    return store.get_readings(meter=meter, quantity="energy_fwd_total")


def check_against_truth(rows: list[StoredReading], truth: Path) -> None:
    """Every recovered value is what the meter recorded for that slot."""
    told = {
        (t.meter, t.quantity, int(t.t)): t.value
        for t in read_truth(truth)
        if t.t % SLOT == 0 and t.fault is None  # records are taken on slot boundaries
    }
    for r in rows:
        x = r.reading
        if x.source == "backfill":
            assert told.get((x.meter, x.quantity, x.slot)) == x.value, x


async def test_slots_missed_while_meters_were_silent_are_recovered(tmp_path: Path) -> None:
    # Meters 1 (645-2007) and 2 (698.45) are silent for an hour from the
    # first whole slot on; meter 3 answers all along.
    plan = FaultPlan(
        offline=[
            OfflineWindow("000000000001", 900.0, 900.0 + 3600),
            OfflineWindow("000000000002", 900.0, 900.0 + 3600),
        ]
    )
    async with running(tmp_path, plan) as (sim, daemon):
        assert daemon.store is not None
        store = daemon.store
        start = sim.clock.start
        first = (int(start) // SLOT + 2) * SLOT  # surely inside the silence
        last = (int(start + 900 + 3600) // SLOT - 1) * SLOT

        def have_all(meter: str) -> bool:
            slots = {r.reading.slot for r in energy(store, meter)}
            return all(s in slots for s in range(first, last + SLOT, SLOT))

        await until(lambda: have_all("000000000001") and have_all("000000000002"), 120)
        for meter in ("000000000001", "000000000002"):
            rows = energy(store, meter)
            by_slot = {r.reading.slot: r.reading for r in rows}
            assert len(by_slot) == len(rows)  # once each
            assert {by_slot[s].source for s in range(first, last + SLOT, SLOT)} == {"backfill"}
            assert not store.missing(
                meter=meter, quantity="energy_fwd_total", since=first, until=last + SLOT
            )
            check_against_truth(rows, tmp_path / "truth.jsonl")
        # The meter that answered all along was read live (a slot the bus had no time
        # for while its neighbours timed out is recovered too, and true).
        third = energy(store, "000000000003")
        assert sum(r.reading.source == "poll" for r in third) > len(third) / 2
        check_against_truth(third, tmp_path / "truth.jsonl")
        assert daemon.polling is not None and daemon.polling.load.recovered > 0


async def test_slots_skipped_while_the_daemon_was_down_are_recovered(tmp_path: Path) -> None:
    # The previous run stopped two simulated hours ago: the slots since are recorded
    # missing at start and recovered from the meters' memories.
    down: list[int] = []

    def stopped_two_hours_ago(cfg: Path, db: Path) -> None:
        config = load_config(cfg)
        task = next(t for t in config.tasks if t.name == "interval-energy")
        slot = task.every.slot_start(
            ScaledClock(scale=SCALE).wall() - 7200, config.concentrator.tzinfo
        )
        down.append(slot)
        with Store.open(db) as store:
            for t in config.tasks:
                store.set_state(f"task:{t.name}:last_slot", str(slot))

    # The meters were installed three simulated hours ago: their memories reach back.
    sim_clock = SimClock(scale=SCALE)
    sim_clock.start -= 3 * 3600
    opts = FleetOptions(meters=3, baud=9600, protocols=("dlt645", "dlt698"))
    sim = build_bus(opts, link=tmp_path / "bus1", clock=sim_clock,
                    truth=TruthLog(tmp_path / "truth.jsonl"))  # fmt: skip
    sim.clock.start += 3 * 3600  # now again, the models having started 3 h back
    await sim.start()
    try:
        async with running(tmp_path, FaultPlan(), stopped_two_hours_ago, sim) as (_, daemon):
            assert daemon.store is not None
            store = daemon.store
            first = down[0] + SLOT
            now_slot = int(daemon.clock.wall()) // SLOT * SLOT
            meters = [m.address for m in sim.meters]

            def recovered() -> bool:
                return all(
                    {r.reading.slot for r in energy(store, m)} >= set(range(first, now_slot, SLOT))
                    for m in meters
                )

            await until(recovered, 120)
            for m in meters:
                rows = [r for r in energy(store, m) if first <= r.reading.slot < now_slot]
                assert {r.reading.source for r in rows} == {"backfill"}, m
                check_against_truth(rows, tmp_path / "truth.jsonl")
    finally:
        await sim.stop()


def test_protocols_without_a_load_curve_are_not_backfilled(tmp_path: Path) -> None:
    opts = FleetOptions(meters=3, protocols=("dlt645", "dlt698", "dlt645-1997"))
    sim = build_bus(opts, link=tmp_path / "b", clock=SimClock(), truth=TruthLog(None))
    cfg = tmp_path / "c.toml"
    write_config(cfg, [("b", tmp_path / "b", opts, sim.meters)])
    config = load_config(cfg)
    got = {m.protocol: recoverable_names(config, m) for m in config.meters}
    assert got == {
        "dlt645": {"energy_fwd_total"},
        "dlt698": {"energy_fwd_total"},
        "dlt645-1997": frozenset(),
    }


async def test_slots_missed_while_the_carrier_network_was_down_are_recovered(
    tmp_path: Path,
) -> None:
    # A carrier module with a 645-2007 and a 698.45 meter behind it; the carrier network
    # carries nothing for an hour (the module itself answers): those slots are recovered
    # through the module once the network is back.
    from hil_sim.fleet import build_meters, write_plc_config
    from hil_sim.plc_module import Link, PlcModule

    clock = SimClock(scale=SCALE)
    meters = build_meters(FleetOptions(meters=2, protocols=("dlt645", "dlt698")), clock)
    link = tmp_path / "plc"
    module = PlcModule(
        meters,
        default_link=Link(success=1.0, latency=1.0),
        clock=clock,
        truth=TruthLog(tmp_path / "truth.jsonl"),
        link=link,
        baud=0,
    )
    module.network_down = [(900.0, 900.0 + 3600)]
    await module.start()
    cfg = tmp_path / "c.toml"
    write_plc_config(
        cfg, link, [m.address for m in meters], protocols=["dlt645", "dlt698"],
        store_path=tmp_path / "s.db",
    )  # fmt: skip
    sock = Path(tempfile.mkdtemp(prefix="mflp", dir="/tmp")) / "ctl.sock"
    daemon = Daemon(cfg, clock=ScaledClock(scale=SCALE), control_socket=sock)
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        await until(lambda: daemon.store is not None or task.done())
        assert daemon.store is not None
        store = daemon.store
        first = (int(clock.start) // SLOT + 2) * SLOT
        last = (int(clock.start + 900 + 3600) // SLOT - 1) * SLOT

        def recovered(meter: str) -> bool:
            rows = {r.reading.slot: r.reading.source for r in energy(store, meter)}
            return all(rows.get(s) == "backfill" for s in range(first, last + SLOT, SLOT))

        await until(lambda: all(recovered(m.address) for m in meters), 120)
        for m in meters:
            rows = energy(store, m.address)
            assert len({r.reading.slot for r in rows}) == len(rows)
            check_against_truth(rows, tmp_path / "truth.jsonl")
    finally:
        daemon.stop()
        async with asyncio.timeout(60):
            await task
        await module.stop()


def test_a_live_read_and_a_recovery_of_one_slot_are_stored_once(tmp_path: Path) -> None:
    """The race the recovery can lose: whichever lands first is kept, the other ignored
    (the store's unique slot key), so the outbox carries the slot once."""
    from contract.records import Reading

    with Store.open(tmp_path / "s.db") as store:
        live = Reading("000000000001", "energy_fwd_total", 900 * 4, "1.00", "kWh", 3601.0)
        late = Reading("000000000001", "energy_fwd_total", 900 * 4, "1.00", "kWh", 9000.0,
                       source="backfill")  # fmt: skip
        store.record_missing("000000000001", "energy_fwd_total", 900 * 5, "meter silent")
        assert store.add_readings([live]) == 1
        assert store.add_readings([late]) == 0
        recovered = replace(late, slot=900 * 5)
        assert store.add_readings([recovered, recovered]) == 1
        rows = store.get_readings(quantity="energy_fwd_total")
        assert [(r.reading.slot, r.reading.source) for r in rows] == [
            (3600, "poll"),
            (4500, "backfill"),
        ]
        assert not store.missing()  # the recovered slot is no longer missing
        assert store.backlog().readings == 2


async def test_daily_freezes_missed_while_the_daemon_was_down_are_recovered_from_698_meters(
    tmp_path: Path,
) -> None:
    """The daily freeze of a DL/T 698.45 meter takes the same backfill path as a DL/T
    645 meter's: the daemon was down three days, so the freeze slots of those days are
    noted missing at start and read back from record 5004 by day, at backfill priority,
    stored once with source "backfill" under the DL/T 645 names, and equal to what the
    meter froze (its ground truth)."""
    down: list[int] = []

    def freeze_task_for_698_down_three_days(cfg: Path, db: Path) -> None:
        with cfg.open("a") as f:
            f.write(
                '\n[[task]]\nname = "daily-freeze-698"\n'
                'quantities = ["frozen_daily_energy_fwd", "frozen_daily_time"]\n'
                'every = "daily@00:05"\ngroups = ["dlt698"]\n'
            )
        config = load_config(cfg)
        task = next(t for t in config.tasks if t.name == "daily-freeze-698")
        slot = task.every.slot_start(
            ScaledClock(scale=SCALE).wall() - 3 * 86400, config.concentrator.tzinfo
        )
        down.append(slot)
        with Store.open(db) as store:
            store.set_state(f"task:{task.name}:last_slot", str(slot))

    async with running(tmp_path, FaultPlan(), freeze_task_for_698_down_three_days) as (_, daemon):
        assert daemon.store is not None and daemon.polling is not None
        store = daemon.store
        config = daemon.polling.config
        meters = [m.address for m in config.meters if m.protocol == "dlt698"]
        assert meters
        tz = config.concentrator.tzinfo
        missed = [down[0] + d * 86400 for d in range(3)]  # three 00:05 slots

        def stored(meter: str, quantity: str) -> list[StoredReading]:
            return store.get_readings(meter=meter, quantity=quantity)

        def recovered() -> bool:
            return all(
                {r.reading.slot for r in stored(m, "frozen_daily_energy_fwd_total")} >= set(missed)
                for m in meters
            )

        await until(recovered, 120)
        told = {
            (t.meter, t.quantity, dt.datetime.fromtimestamp(t.t, tz).date()): t.value
            for t in read_truth(tmp_path / "truth.jsonl")
            if t.quantity.startswith("frozen_daily_")
        }
        for m in meters:
            for q in ("frozen_daily_energy_fwd_total", "frozen_daily_energy_fwd_t1",
                      "frozen_daily_time"):  # fmt: skip
                rows = [r.reading for r in stored(m, q) if r.reading.slot in missed]
                assert sorted(r.slot for r in rows) == missed, (m, q)  # once each
                assert {r.source for r in rows} == {"backfill"}
                for r in rows:
                    day = dt.datetime.fromtimestamp(r.slot, tz).date()
                    if q == "frozen_daily_time":
                        assert r.value == f"{day:%Y%m%d}0000"
                    else:
                        assert told[(m, q, day)] == r.value, r
                assert not store.missing(meter=m, quantity=q, since=missed[0], until=missed[-1] + 1)
