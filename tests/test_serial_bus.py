"""The RS-485 transport against an in-process simulated bus: timing, resync, collisions."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from drivers import dlt645
from drivers.errors import BusError, BusTimeout, FrameError
from drivers.readers import Dlt645Reader
from drivers.serial_bus import SerialBus, SerialSettings
from hil_sim.bus import SimBus
from hil_sim.clock import SimClock
from hil_sim.faults import FaultPlan
from hil_sim.fleet import FleetOptions, build_bus
from hil_sim.truth import TruthLog, read_truth


async def _bus(tmp_path: Path, **kw: object) -> SimBus:
    opts = FleetOptions(**kw)  # type: ignore[arg-type]
    sim = build_bus(opts, link=tmp_path / "bus", truth=TruthLog(tmp_path / "truth.jsonl"))
    await sim.start()
    return sim


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[SimBus, SerialBus]]:
    sim = await _bus(tmp_path, meters=3, baud=2400, turnaround=(0.02, 0.03))
    bus = SerialBus(SerialSettings(port=str(tmp_path / "bus"), baud=2400, response_timeout=0.5))
    await bus.open()
    yield sim, bus
    await bus.close()
    await sim.stop()


async def test_a_read_takes_at_least_its_wire_time(pair: tuple[SimBus, SerialBus]) -> None:
    sim, bus = pair
    reader = Dlt645Reader(bus)
    address = sim.meters[0].address
    request = dlt645.build_read(address, 0x00010000)
    ex = await bus.transact(request, dlt645.Decoder(), lambda f: f.is_reply)
    reply_len = 12 + 8  # 4-byte DI + 4-byte value
    floor = dlt645.wire_time(len(request) + reply_len, 2400) + 0.02
    assert ex.elapsed >= floor  # 40 bytes at 2400 8E1 = 183 ms, plus the turnaround
    value = await reader.read(address, dlt645.lookup("energy_fwd_total"))
    assert value.unit == "kWh"
    assert bus.stats.transactions == 2 and bus.stats.busy_s >= 2 * floor


async def test_wildcard_read_with_several_meters_collides(pair: tuple[SimBus, SerialBus]) -> None:
    sim, bus = pair
    with pytest.raises(FrameError, match="garbled reply"):
        await Dlt645Reader(bus).read_address()
    assert sim.counters.collisions == 1


async def test_absent_meter_times_out(pair: tuple[SimBus, SerialBus]) -> None:
    _, bus = pair
    with pytest.raises(BusTimeout, match=r"no reply within 0\.500 s"):
        await Dlt645Reader(bus).read("999999999998", dlt645.lookup("voltage_a"))
    assert bus.stats.timeouts == 1


async def test_broadcast_time_sets_every_meter_clock(pair: tuple[SimBus, SerialBus]) -> None:
    sim, bus = pair
    reader = Dlt645Reader(bus)
    when = dt.datetime(2031, 5, 17, 8, 30, 0)
    await reader.broadcast_time(when)
    for meter in sim.meters:
        date = await reader.read(meter.address, dlt645.lookup("meter_date"))
        assert date.value == "2031-05-17"
        clock = await reader.read(meter.address, dlt645.lookup("meter_time"))
        assert clock.value.startswith("08:3")


async def test_relay_trip_stops_the_load_and_shows_in_status_word(
    pair: tuple[SimBus, SerialBus],
) -> None:
    sim, bus = pair
    reader = Dlt645Reader(bus)
    meter = sim.meters[1]
    now = meter.model.meter_time(sim.clock.now())
    await reader.relay(
        meter.address,
        dlt645.RelayAction.TRIP,
        password_level=2,
        password="123456",
        operator="00000001",
        now=now,
    )
    status = await reader.read(meter.address, dlt645.lookup("status_word_3"))
    assert int(status.value, 16) & dlt645.STATUS3_RELAY_OPEN
    power = await reader.read(meter.address, dlt645.lookup("power_total"))
    assert power.value == "0.0000"
    with pytest.raises(Exception, match="password wrong"):
        await reader.relay(
            meter.address,
            dlt645.RelayAction.CLOSE_ALLOW,
            password_level=2,
            password="000000",
            operator="00000001",
            now=now,
        )
    await reader.relay(
        meter.address,
        dlt645.RelayAction.CLOSE_ALLOW,
        password_level=2,
        password="123456",
        operator="00000001",
        now=now,
    )
    status = await reader.read(meter.address, dlt645.lookup("status_word_3"))
    assert int(status.value, 16) & dlt645.STATUS3_RELAY_OPEN == 0


async def test_late_reply_does_not_confuse_the_next_transaction(tmp_path: Path) -> None:
    address = "000000000001"
    plan = FaultPlan(per_meter={address: {"late_reply": 1.0}}, late_by=0.3)
    sim = await _bus(tmp_path, meters=2, baud=0, faults=plan)
    try:
        async with SerialBus(
            SerialSettings(port=str(tmp_path / "bus"), baud=0, response_timeout=0.15)
        ) as bus:
            reader = Dlt645Reader(bus)
            with pytest.raises(BusTimeout):
                await reader.read(address, dlt645.lookup("voltage_a"))
            # Meter 1's late voltage reply lands while we ask meter 2 for energy: skipped.
            value = await reader.read("000000000002", dlt645.lookup("energy_fwd_total"))
            assert value.meter == "000000000002" and value.quantity == "energy_fwd_total"
    finally:
        await sim.stop()


async def test_offline_window_silences_a_meter(tmp_path: Path) -> None:
    from hil_sim.faults import OfflineWindow

    plan = FaultPlan(offline=[OfflineWindow("000000000001", 0.0, 3600.0)])
    sim = await _bus(tmp_path, meters=2, baud=0, faults=plan)
    try:
        async with SerialBus(
            SerialSettings(port=str(tmp_path / "bus"), baud=0, response_timeout=0.15)
        ) as bus:
            reader = Dlt645Reader(bus)
            with pytest.raises(BusTimeout):
                await reader.read("000000000001", dlt645.lookup("voltage_a"))
            await reader.read("000000000002", dlt645.lookup("voltage_a"))
    finally:
        await sim.stop()


async def test_ground_truth_marks_faulty_replies(tmp_path: Path) -> None:
    plan = FaultPlan(rates={"bad_checksum": 1.0})
    sim = await _bus(tmp_path, meters=1, baud=0, faults=plan, seed=3)
    try:
        async with SerialBus(
            SerialSettings(port=str(tmp_path / "bus"), baud=0, response_timeout=0.15)
        ) as bus:
            with pytest.raises(FrameError, match="checksum"):
                await Dlt645Reader(bus).read("000000000001", dlt645.lookup("voltage_a"))
    finally:
        await sim.stop()
    records = list(read_truth(tmp_path / "truth.jsonl"))
    assert [r.fault for r in records] == ["bad_checksum"]


async def test_missing_port_is_a_bus_error(tmp_path: Path) -> None:
    with pytest.raises(BusError, match="cannot open serial port"):
        await SerialBus(SerialSettings(port=str(tmp_path / "nothing"))).open()


def test_sim_clock_scales() -> None:
    clock = SimClock(scale=60.0, start=1000.0)
    assert clock.now() >= 1000.0


async def test_a_shorter_timeout_after_a_longer_one_is_kept(
    pair: tuple[SimBus, SerialBus],
) -> None:
    """The bus keeps one deadline timer for its transactions (issue 22): a request with
    a short timeout after one with a long timeout must still time out on its own."""
    sim, bus = pair
    reader = Dlt645Reader(bus, response_timeout=5.0)
    await reader.read(sim.meters[0].address, dlt645.lookup("energy_fwd_total"))
    started = time.monotonic()
    with pytest.raises(BusTimeout, match=r"no reply within 0\.300 s"):
        await Dlt645Reader(bus, response_timeout=0.3).read(
            "999999999998", dlt645.lookup("voltage_a")
        )
    assert time.monotonic() - started < 3.0  # not the 5 s of the transaction before
    # and a long wait after short ones still gets its whole time: a meter that answers
    value = await reader.read(sim.meters[1].address, dlt645.lookup("energy_fwd_total"))
    assert value.unit == "kWh"
    assert bus.stats.timeouts == 1
