"""The daemon on a power-line carrier channel: a simulated Q/GDW 1376.2 module with
lossy, slow links in front of 256 meters, and a module that resets, goes silent and
denies everything."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, read_status, wait_for
from test_daemon_e2e import _assert_values_are_true

from concentrator.clock import ScaledClock
from concentrator.control.client import ControlClient
from concentrator.daemon import Daemon
from concentrator.storage import Store
from drivers import gdw1376_2 as gdw
from hil_sim.clock import SimClock
from hil_sim.dlt645_meter import Dlt645Meter
from hil_sim.fleet import FleetOptions, build_meters, write_plc_config
from hil_sim.plc_module import Link, PlcModule
from hil_sim.process import SimProcess
from hil_sim.truth import TruthLog

PERIOD = 900


@pytest.mark.slow
def test_256_meters_on_a_lossy_carrier_channel_are_read_within_their_slots(
    tmp_path: Path,
) -> None:
    # Links: one carrier attempt per read succeeds 90 % of the time after a 2 s median;
    # a failed one costs 8 s (the module waits for an answer that does not come).
    scale = 60.0  # a 15-minute slot lasts 15 s; 2 s carrier latency is 33 ms
    cfg, db = tmp_path / "plc.toml", tmp_path / "store.db"
    sim = SimProcess(
        ["plc", "--meters", "256", "--link", str(tmp_path / "plc"), "--success", "0.9",
         "--attempts", "1", "--latency", "2", "--fail-after", "8", "--max-concurrent", "4",
         "--baud", "0", "--time-scale", str(scale), "--seed", "3",
         "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    daemon = DaemonProcess(cfg, "--time-scale", str(scale))
    status_path = db.with_suffix(".status.json")
    try:
        first = wait_for(lambda: read_status(status_path), 120, "the daemon's status file")
        first_full = math.ceil(first["started"] / PERIOD) * PERIOD
        end = first_full + 2 * PERIOD
        wait_for(
            lambda: (read_status(status_path) or {}).get("wall", 0) > end + 10,
            300,
            "two full 15-minute slots",
        )
    finally:
        assert daemon.stop() == 0
        sim.stop()
    with Store.open(db) as store:
        got = store.get_readings(quantity="energy_fwd_total", since=first_full, until=end)
        missing = store.missing(quantity="energy_fwd_total", since=first_full, until=end)
        events = store.events()
    scheduled = 256 * 2
    assert len(got) + len(missing) == scheduled
    assert len(got) / scheduled >= 0.995, [m.reason for m in missing]
    assert all(r.reading.slot <= r.reading.read_at < r.reading.slot + PERIOD for r in got)
    assert _assert_values_are_true(db, sim.truth) >= len(got)
    assert any(e.event.kind == "plc_routes_synced" for e in events)


# --------------------------------------------------------------------------- in-process

SCALE = 60.0


@dataclass
class Rig:
    module: PlcModule
    daemon: Daemon
    meters: list[Dlt645Meter]


async def until(predicate: Callable[[], object], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the state lives in SQLite, not an Event
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def rig(
    tmp_path: Path,
    *,
    meters: int = 6,
    routed: int = 3,
    module_kw: dict[str, Any] | None = None,
    config_kw: dict[str, Any] | None = None,
) -> AsyncIterator[Rig]:
    module_kw = {"max_concurrent": 2, **(module_kw or {})}
    config_kw = {"max_in_flight": 2, **(config_kw or {})}
    clock = SimClock(scale=SCALE)
    sim_meters = [
        m
        for m in build_meters(FleetOptions(meters=meters + 1), clock)
        if isinstance(m, Dlt645Meter)
    ]
    link = tmp_path / "plc"
    module = PlcModule(
        sim_meters,
        default_link=Link(success=1.0, latency=1.0),
        routed=[m.address for m in sim_meters[:routed]],
        clock=clock,
        truth=TruthLog(tmp_path / "truth.jsonl"),
        link=link,
        baud=0,
        **module_kw,
    )
    await module.start()
    known = sim_meters[:meters]  # the last meter is on the line but not in the config
    cfg = tmp_path / "c.toml"
    write_plc_config(
        cfg, link, [m.address for m in known], store_path=tmp_path / "s.db", cadence="1m",
        **config_kw,
    )  # fmt: skip
    sock_dir = Path(tempfile.mkdtemp(prefix="mfp", dir="/tmp"))  # short: sun_path limit
    daemon = Daemon(cfg, clock=ScaledClock(scale=SCALE), control_socket=sock_dir / "ctl.sock")
    task = asyncio.create_task(daemon.run(install_signals=False))
    try:
        await until(lambda: daemon.store is not None or task.done())
        yield Rig(module, daemon, known)
    finally:
        daemon.stop()
        async with asyncio.timeout(60):
            await task
        await module.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def kinds(daemon: Daemon) -> list[str]:
    assert daemon.store is not None
    return [e.event.kind for e in daemon.store.events()]


def readings_after(daemon: Daemon, wall: float) -> set[str]:
    assert daemon.store is not None
    return {
        r.reading.meter
        for r in daemon.store.get_readings(quantity="energy_fwd_total")
        if r.reading.read_at > wall
    }


async def test_module_failures_are_events_and_reading_resumes(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        addresses = {m.address for m in r.meters}
        # Start-up: the node table follows the config (3 nodes added, none unknown kept).
        await until(lambda: "plc_routes_synced" in kinds(r.daemon))
        assert set(r.module.route) == addresses
        await until(lambda: readings_after(r.daemon, 0) == addresses)

        # The module discovers a meter the config does not know: an event names it.
        r.module.search(again=True)
        stranger = (set(r.module._nodes) - addresses).pop()
        await until(lambda: "plc_unknown_meter" in kinds(r.daemon), 90)
        assert r.daemon.store is not None
        unknown = [e for e in r.daemon.store.events(kind="plc_unknown_meter")]
        assert [e.event.detail["address"] for e in unknown] == [stranger]

        # Silent module: one event, no meter blamed, reading resumes when it answers.
        r.module.answering = False
        await until(lambda: "plc_module_down" in kinds(r.daemon), 90)
        assert all(r.daemon.polling.health.get(a).state.name != "OFFLINE" for a in addresses)
        r.module.answering = True
        await until(lambda: "plc_module_back" in kinds(r.daemon), 90)
        back = r.daemon.clock.wall()
        await until(lambda: readings_after(r.daemon, back) == addresses, 90)

        # A module that denies everything is a channel failure too.
        r.module.deny_with = gdw.DenyReason.UNSUPPORTED
        await until(lambda: kinds(r.daemon).count("plc_module_down") == 2, 90)
        r.module.deny_with = None
        await until(lambda: kinds(r.daemon).count("plc_module_back") == 2, 90)

        # A reset: the module says so, its table is synced again, reading goes on.
        synced = kinds(r.daemon).count("plc_routes_synced")
        r.module.reset()
        await until(lambda: "plc_module_reset" in kinds(r.daemon), 90)
        await until(lambda: kinds(r.daemon).count("plc_routes_synced") > synced, 90)
        after = r.daemon.clock.wall()
        await until(lambda: readings_after(r.daemon, after) == addresses, 90)
    assert _assert_values_are_true(tmp_path / "s.db", tmp_path / "truth.jsonl") > 0


async def test_relay_and_time_sync_travel_through_the_carrier_module(tmp_path: Path) -> None:
    async with rig(tmp_path, meters=2, routed=2) as r:
        await until(lambda: "plc_routes_synced" in kinds(r.daemon))
        sock = r.daemon.control.path

        def call(cmd: str, args: dict[str, object] | None = None) -> dict[str, object]:
            return ControlClient(sock, timeout=60).call(cmd, args)

        meter = r.meters[0]
        opened = await asyncio.to_thread(call, "relay", {"meter": meter.address, "action": "open"})
        assert meter.model.relay_open and opened["relay_state"] == "open"
        closed = await asyncio.to_thread(call, "relay", {"meter": meter.address, "action": "close"})
        assert not meter.model.relay_open and closed["relay_state"] == "closed"
        synced = await asyncio.to_thread(call, "time-sync")
        assert [b["result"] for b in synced["buses"]] == ["ok"]  # type: ignore[index, union-attr]
