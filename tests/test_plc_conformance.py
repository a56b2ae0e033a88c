"""Carrier conformance (issue 20, item 7): master node address, communication mode,
one read at a time on a 1376.2-2013 module, and denies without an address field.

The transport and the daemon talk to ``hil_sim.plc_module.PlcModule`` over a real PTY;
the module is strict where the standard is (docs/protocols.md §3.1-§3.6), so a frame
with the wrong A1 or mode, or a read overlapping another on a serial module, is denied
and shows in its counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path

import pytest
from test_plc import ENERGY, Start, rig, until  # noqa: F401 - rig is a fixture
from test_plc_daemon import kinds, readings_after
from test_plc_daemon import rig as daemon_rig
from test_plc_daemon import until as daemon_until

from drivers import dlt645
from drivers import gdw1376_2 as gdw
from drivers.errors import CarrierBusy, CarrierDenied
from drivers.plc_bus import PlcBus, PlcSettings, plc_reader
from hil_sim.plc_module import Link
from hil_sim.process import SimProcess
from hil_sim.truth import read_truth

OWN = "A1B2C3D4E5F6"  # a master node address need not be BCD (docs/protocols.md §3.2)
SLOW = Link(success=1.0, latency=30.0)  # 0.3 s a read at the rig's scale
NARROWBAND = gdw.CommMode.CENTRAL_NARROWBAND


async def test_identify_learns_the_address_and_the_mode(rig: Start) -> None:  # noqa: F811
    r = await rig(2, identify=False, master_address=OWN, mode=NARROWBAND)
    identity = await r.plc.identify()
    assert (identity.master_address, identity.reported_address) == (OWN, OWN)
    assert (identity.mode, identity.reported_mode) == (NARROWBAND, NARROWBAND)
    assert (identity.concurrent, identity.window) == (False, 1)
    assert identity.run_mode is not None and identity.run_mode.master_address == OWN
    reader = plc_reader(r.plc)
    values = [await reader.read(m.address, ENERGY) for m in r.meters]
    assert await r.plc.node_count() == gdw.NodeCount(2, r.module.capacity)
    c = r.module.counters
    assert (c.wrong_address, c.wrong_mode, c.denies, c.reads) == (0, 0, 0, 2)
    assert {t.meter: t.value for t in read_truth(r.truth)} == {v.meter: v.value for v in values}


async def test_a_2009_module_is_asked_only_its_address(rig: Start) -> None:  # noqa: F811
    """No 03 F10 in the 2009 edition: the mode is the configured one, one read at a time."""
    q2009 = gdw.Edition.Q2009
    r = await rig(
        1,
        identify=False,
        edition=q2009,
        mode=NARROWBAND,
        settings={"edition": q2009, "mode": NARROWBAND, "max_in_flight": 4},
    )
    identity = await r.plc.identify()
    assert (identity.run_mode, identity.reported_mode, identity.mode) == (None, None, NARROWBAND)
    assert (identity.reported_address, identity.window, r.plc.stats.requests) == (
        r.module.master_address,
        1,
        1,
    )
    await plc_reader(r.plc).read(r.meters[0].address, ENERGY)


async def test_the_module_denies_another_master_address(rig: Start) -> None:  # noqa: F811
    r = await rig(1, identify=False, master_address=OWN, settings={"master_address": "1234"})
    identity = await r.plc.identify()  # the configured address wins over the report
    assert (identity.master_address, identity.reported_address) == ("000000001234", OWN)
    with pytest.raises(CarrierDenied, match="format error") as info:
        await plc_reader(r.plc).read(r.meters[0].address, ENERGY)
    assert info.value.code == gdw.DenyReason.FORMAT_ERROR
    assert (r.module.counters.wrong_address, r.module.counters.reads) == (1, 0)
    assert list(read_truth(r.truth)) == []  # the meter was never asked
    await r.plc.node_count()  # no address field, nothing to check: answered


@pytest.mark.parametrize(("module_mode", "sent"), [(NARROWBAND, 3), (gdw.CommMode.HPLC, 1)])
async def test_the_module_denies_another_mode(
    rig: Start,  # noqa: F811
    module_mode: int,
    sent: int,
) -> None:
    r = await rig(1, identify=False, mode=module_mode, settings={"mode": sent})
    identity = await r.plc.identify()  # identity queries are answered in any mode
    assert (identity.mode, identity.reported_mode) == (sent, module_mode)
    with pytest.raises(CarrierDenied) as info:
        await r.plc.node_count()
    assert info.value.code == gdw.DenyReason.FORMAT_ERROR
    with pytest.raises(CarrierDenied):
        await plc_reader(r.plc).read(r.meters[0].address, ENERGY)
    assert (r.module.counters.wrong_mode, r.module.counters.reads) == (2, 0)


async def test_a_serial_module_gets_one_read_at_a_time(rig: Start) -> None:  # noqa: F811
    r = await rig(4, max_concurrent=1, default_link=SLOW, settings={"max_in_flight": 4})
    assert r.plc.window == 1  # max_in_flight 4 configured, the module is 1376.2-2013
    reader = plc_reader(r.plc)
    values = await asyncio.gather(*(reader.read(m.address, ENERGY) for m in r.meters))
    assert [v.meter for v in values] == [m.address for m in r.meters]
    assert (r.module.counters.max_parallel, r.module.counters.denies) == (1, 0)


async def test_master_busy_shrinks_the_window(rig: Start) -> None:  # noqa: F811
    r = await rig(4, max_concurrent=4, default_link=SLOW, settings={"max_in_flight": 4})
    assert r.plc.window == 4  # the module reported the 2019 edition
    r.module.max_concurrent = 1  # ... but now takes one read at a time: "master busy"
    reader = plc_reader(r.plc)
    first = await asyncio.gather(
        *(reader.read(m.address, ENERGY) for m in r.meters), return_exceptions=True
    )
    busy = [e for e in first if isinstance(e, CarrierBusy)]
    assert len(busy) == 3 and {e.code for e in busy} == {gdw.DenyReason.MASTER_BUSY}
    assert r.plc.window == 1
    again = await asyncio.gather(*(reader.read(m.address, ENERGY) for m in r.meters))
    assert len(again) == 4 and r.module.counters.denies == 3


async def test_an_overlapping_read_is_denied_without_an_address_field(
    rig: Start,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The simulator against raw frames: two 13 F1 back to back to a serial module."""
    r = await rig(2, identify=False, max_concurrent=1, default_link=SLOW)
    await r.plc.close()
    a, b = (m.address for m in r.meters)
    requests = [
        gdw.command(
            gdw.MonitorRequest(dlt645.build_read(meter, ENERGY.di)),
            seq=seq,
            destination=meter,
            source=r.module.master_address,
            mode=r.module.mode,
        )
        for seq, meter in ((1, a), (2, b))
    ]
    fd = os.open(tmp_path / "plc", os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    seen = gdw.Decoder()
    frames: list[gdw.Frame] = []

    def two_answers() -> bool:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 4096):
                seen.feed(chunk)
        frames.extend(seen.frames())
        return len(frames) >= 2

    try:
        os.write(fd, b"".join(gdw.encode_frame(f) for f in requests))
        await until(two_answers, "the deny and the reply")
    finally:
        os.close(fd)
    deny, reply = sorted(frames, key=lambda f: f.seq, reverse=True)
    assert gdw.parse_unit(deny) == gdw.Deny(gdw.DenyReason.MASTER_BUSY)
    assert (deny.seq, deny.info.slave_node, deny.source, deny.destination) == (2, False, None, None)
    assert isinstance(gdw.parse_unit(reply), gdw.MonitorReply)
    assert (reply.seq, reply.source, reply.destination) == (1, a, r.module.master_address)


async def test_hil_sim_plc_is_the_module_it_is_told_to_be(tmp_path: Path) -> None:
    link = tmp_path / "plc"
    args = ["plc", "--link", str(link), "--meters", "1", "--success", "1", "--baud", "0"]
    proc = SimProcess([*args, "--comm-mode", "1", "--master-address", "a1b2c3d4e5f6"])
    try:
        proc.start()
        async with PlcBus(PlcSettings(port=str(link), max_in_flight=2)) as plc:
            identity = await plc.identify()
            assert (identity.master_address, identity.mode, identity.window) == (OWN, 1, 1)
            await plc_reader(plc).read(proc.meters[0], ENERGY)
    finally:
        proc.stop()
    assert (proc.summary["reads"], proc.summary["denies"]) == (1, 0)
    assert (proc.summary["wrong_address"], proc.summary["wrong_mode"]) == (0, 0)


# --------------------------------------------------------------------------- the daemon


async def test_the_daemon_reads_a_narrowband_serial_module_as_it_reports(tmp_path: Path) -> None:
    module_kw = {"master_address": OWN, "mode": NARROWBAND, "max_concurrent": 1}
    async with daemon_rig(
        tmp_path, meters=4, routed=0, module_kw=module_kw, config_kw={"max_in_flight": 4}
    ) as r:
        addresses = {m.address for m in r.meters}
        await daemon_until(lambda: readings_after(r.daemon, 0) == addresses, 90)
        worker = r.daemon.polling.workers["plc1"]
        status = worker.status()
        assert status["window"] == 1
        assert status["module"] == {
            **status["module"],  # type: ignore[dict-item]
            "master_address": OWN,
            "comm_mode": NARROWBAND,
            "concurrent": False,
            "window": 1,
        }
        c = r.module.counters
        assert (c.wrong_address, c.wrong_mode, c.max_parallel) == (0, 0, 1)
        assert "plc_config_mismatch" not in kinds(r.daemon)
        assert set(r.module.route) == addresses


async def test_a_configured_address_the_module_contradicts_is_an_event(tmp_path: Path) -> None:
    async with daemon_rig(
        tmp_path,
        meters=2,
        routed=2,
        module_kw={"master_address": OWN},
        config_kw={"master_address": "000000000001"},
    ) as r:
        await daemon_until(lambda: "plc_config_mismatch" in kinds(r.daemon), 90)
        assert r.daemon.store is not None
        (mismatch,) = r.daemon.store.events(kind="plc_config_mismatch")
        assert mismatch.event.detail == {
            "bus": "plc1",
            "key": "master_address",
            "configured": "000000000001",
            "module": OWN,
        }
        # The configured address is used, and the strict module denies the reads.
        await daemon_until(lambda: r.module.counters.wrong_address > 0, 90)
        assert r.module.counters.reads == 0 and readings_after(r.daemon, 0) == set()
