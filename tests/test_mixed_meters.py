"""DL/T 698.45 and DL/T 645-1997 readers against simulated meters on one mixed RS-485 line
(real pyserial on a PTY), protocol detection, and the readers' handling of broken
answers (hypothesis)."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from concentrator.polling.scan import scan
from drivers import dlt645, dlt645_1997, dlt698
from drivers.errors import BusTimeout, MeterError
from drivers.readers import Dlt645Reader, Dlt698Reader, Dlt6451997Reader, identify
from drivers.serial_bus import SerialBus, SerialSettings
from hil_sim.bus import SimBus
from hil_sim.fleet import FleetOptions, build_bus
from hil_sim.truth import TruthLog, read_truth

MIX = ("dlt645", "dlt698", "dlt645-1997")


@pytest.fixture
async def mixed(tmp_path: Path) -> AsyncIterator[tuple[SimBus, SerialBus, Path]]:
    opts = FleetOptions(protocol="dlt645", protocols=MIX, meters=6, baud=9600)
    truth = tmp_path / "truth.jsonl"
    sim = build_bus(opts, link=tmp_path / "bus", truth=TruthLog(truth), clock=None)
    await sim.start()
    bus = SerialBus(SerialSettings(port=str(tmp_path / "bus"), baud=9600, response_timeout=0.3))
    await bus.open()
    yield sim, bus, truth
    await bus.close()
    await sim.stop()


def _told(truth: Path, meter: str, quantity: str) -> str:
    values = [r.value for r in read_truth(truth) if r.meter == meter and r.quantity == quantity]
    assert values, f"{meter} never told {quantity}"
    return values[-1]


async def test_each_protocol_is_read_and_equals_the_ground_truth(
    mixed: tuple[SimBus, SerialBus, Path],
) -> None:
    sim, bus, truth = mixed
    m2007, m698, m1997 = (m.address for m in sim.meters[:3])
    got = await Dlt645Reader(bus).read(m2007, dlt645.lookup("voltage_a"))
    sim.truth.flush()
    assert got.value == _told(truth, m2007, "voltage_a")

    values, refused = await Dlt698Reader(bus).read_many(
        m698,
        Dlt698Reader.quantities(["energy_fwd", "voltage", "current_a", "power", "clock"]),
        numeric=False,  # the clock as ISO text, as the truth log shows it
    )
    sim.truth.flush()
    assert refused == []
    names = [v.quantity for v in values]
    assert names[:5] == [f"energy_fwd_{p}" for p in ("total", "t1", "t2", "t3", "t4")]
    assert {"voltage_a", "voltage_b", "voltage_c", "current_a", "power_total", "clock"} <= set(
        names
    )
    for v in values:
        assert v.value == _told(truth, m698, v.quantity), v
    power = next(v for v in values if v.quantity == "power_total")
    assert power.unit == "kW" and power.key == "20040201"
    energy = next(v for v in values if v.quantity == "energy_fwd_total")
    tariffs = [v for v in values if v.quantity[-2:] in ("t1", "t2", "t3", "t4")]
    assert sum(float(v.value) for v in tariffs) == (pytest.approx(float(energy.value), abs=0.05))

    reader97 = Dlt6451997Reader(bus)
    for name in ("energy_fwd_total", "voltage_a", "current_a", "power_total", "meter_date"):
        [value] = await reader97.read(m1997, dlt645_1997.lookup(name), numeric=False)
        sim.truth.flush()
        assert value.value == _told(truth, m1997, name), value
        assert value.key == f"{dlt645_1997.lookup(name).di:04X}"
    block = await reader97.read(m1997, dlt645_1997.lookup("energy_fwd_block"))
    assert [v.quantity for v in block][:2] == ["energy_fwd_total", "energy_fwd_t1"]


async def test_refusals_say_what_the_meter_lacks(mixed: tuple[SimBus, SerialBus, Path]) -> None:
    sim, bus, _ = mixed
    m698, m1997 = sim.meters[1].address, sim.meters[2].address
    values, refused = await Dlt698Reader(bus).read_many(
        m698, [dlt698.lookup("voltage_a"), dlt698.lookup("freeze_number")]
    )
    assert [v.quantity for v in values] == ["voltage_a"]
    [(name, exc)] = refused
    assert name == "freeze_number" and exc.code == dlt698.DAR.OBJECT_NOT_EXIST
    with pytest.raises(MeterError, match="data identifier wrong"):
        await Dlt6451997Reader(bus).read(m1997, dlt645_1997.lookup("reactive_power_total"))


async def test_identify_names_each_meters_protocol(mixed: tuple[SimBus, SerialBus, Path]) -> None:
    sim, bus, _ = mixed
    found = [await identify(bus, m.address) for m in sim.meters]
    assert found == [*MIX, *MIX]
    assert await identify(bus, sim.meters[1].address, ["dlt698"]) == "dlt698"
    with pytest.raises(BusTimeout, match="answered no protocol tried cleanly"):
        await identify(bus, "999999999998")
    # A 698.45 meter does not answer 645 frames: asked only in 645-1997, it is silent.
    with pytest.raises(BusTimeout, match="DL/T 645-1997"):
        await identify(bus, sim.meters[1].address, ["dlt645-1997"])


async def test_698_broadcast_time_sets_the_clock(mixed: tuple[SimBus, SerialBus, Path]) -> None:
    sim, bus, _ = mixed
    when = dt.datetime(2031, 5, 17, 8, 30, 0)
    await bus.send(dlt698.build_broadcast_time(when))
    values, _ = await Dlt698Reader(bus).read_many(
        sim.meters[1].address, [dlt698.lookup("clock")], numeric=False
    )
    shown = dt.datetime.fromisoformat(values[0].value)
    assert abs((shown - when).total_seconds()) < 5


@pytest.fixture
async def fast_mixed(tmp_path: Path) -> AsyncIterator[tuple[SimBus, SerialBus]]:
    """No wire time (baud 0) and a short answer window: a whole-address-space search."""
    opts = FleetOptions(protocol="dlt645", protocols=MIX, meters=6, baud=0)
    sim = build_bus(opts, link=tmp_path / "bus", truth=TruthLog(None))
    await sim.start()
    bus = SerialBus(SerialSettings(port=str(tmp_path / "bus"), baud=0, response_timeout=0.05))
    await bus.open()
    yield sim, bus
    await bus.close()
    await sim.stop()


async def test_scan_finds_every_meter_of_a_mixed_bus_and_its_protocol(
    fast_mixed: tuple[SimBus, SerialBus],
) -> None:
    sim, bus = fast_mixed
    result = await scan(bus, retries=0, protocols=("dlt645", "dlt698", "dlt645-1997"))
    assert result.complete
    assert result.addresses == sorted(m.address for m in sim.meters)
    assert result.protocols == {m.address: MIX[i % 3] for i, m in enumerate(sim.meters)}
    assert result.collisions >= 3  # two meters of each protocol answer the first probe
    only698 = await scan(bus, retries=0, protocols=("dlt698",))
    assert only698.addresses == [sim.meters[1].address, sim.meters[4].address]


async def test_698_read_address_finds_the_one_meter_on_the_line(tmp_path: Path) -> None:
    opts = FleetOptions(protocol="dlt698", meters=1, baud=0, address_base="000000000322")
    sim = build_bus(opts, link=tmp_path / "one", truth=TruthLog(None))
    await sim.start()
    try:
        async with SerialBus(
            SerialSettings(port=str(tmp_path / "one"), baud=0, response_timeout=0.3)
        ) as bus:
            assert await Dlt698Reader(bus).read_address() == "000000000322"
    finally:
        await sim.stop()
