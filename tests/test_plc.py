"""The carrier-module transport against the simulated module on a real PTY.

Every test runs ``hil_sim.plc_module.PlcModule`` in-process (so it can flip the module's
faults at run time) and talks to it through pyserial on the PTY, as the daemon would to
a real module. Simulated time runs ``SCALE`` times faster, so a carrier hop of one
simulated second takes 10 ms; nothing waits a fixed time, only for conditions.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import tty
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from drivers import dlt645
from drivers import gdw1376_2 as gdw
from drivers.errors import (
    BusTimeout,
    CarrierBusy,
    CarrierDenied,
    CarrierReset,
    CarrierTimeout,
    EncodeError,
    NodeNoReply,
    NodeNotInRoute,
)
from drivers.plc_bus import ModuleRestarted, PlcBus, PlcSettings, Report, plc_reader
from hil_sim.clock import SimClock
from hil_sim.dlt645_meter import Dlt645Meter
from hil_sim.fleet import FleetOptions, build_meters
from hil_sim.model import MeterModel
from hil_sim.plc_module import VENDOR, Link, PlcModule
from hil_sim.process import SimProcess
from hil_sim.truth import TruthLog, read_truth

SCALE = 100.0
FAST = Link(success=1.0, latency=1.0)  # 10 ms a read at SCALE
ENERGY = dlt645.lookup("energy_fwd_total")


@dataclass
class Rig:
    module: PlcModule
    plc: PlcBus
    meters: list[Dlt645Meter]
    clock: SimClock
    truth: Path


Start = Callable[..., Awaitable[Rig]]


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Start]:
    """Start a module with N meters and a PlcBus on its PTY; both stopped afterwards."""
    started: list[Rig] = []

    async def start(
        n_meters: int = 3,
        *,
        routed: int | None = None,
        settings: dict[str, Any] | None = None,
        identify: bool = True,
        **module_kw: Any,
    ) -> Rig:
        clock = SimClock(scale=SCALE)
        meters = [
            m
            for m in build_meters(FleetOptions(meters=n_meters), clock)
            if isinstance(m, Dlt645Meter)
        ]
        module_kw.setdefault("default_link", FAST)
        module_kw.setdefault("baud", 0)
        truth = tmp_path / "truth.jsonl"
        module = PlcModule(
            meters,
            routed=None if routed is None else [m.address for m in meters[:routed]],
            clock=clock,
            truth=TruthLog(truth),
            link=tmp_path / "plc",
            **module_kw,
        )
        await module.start()
        plc = PlcBus(PlcSettings(port=str(tmp_path / "plc"), **(settings or {})))
        r = Rig(module, plc, meters, clock, truth)
        started.append(r)
        await plc.open()
        if identify:  # as the daemon does: master address, mode, edition (03 F10, 03 F4)
            await plc.identify()
        return r

    yield start
    for r in started:
        await r.plc.close()
        await r.module.stop()
        r.module.truth.close()


async def until(predicate: Callable[[], bool], what: str, within: float = 10.0) -> None:
    """Poll a condition on the simulator's counters, failing after a generous deadline."""
    try:
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 - counters of the simulator, no Event
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out after {within} s waiting for {what}") from None


async def next_report(reports: AsyncIterator[Report], within: float = 10.0) -> Report:
    async with asyncio.timeout(within):
        return await anext(reports)


# --------------------------------------------------------------------------------------


async def test_read_through_the_module_equals_ground_truth(rig: Start) -> None:
    r = await rig(3, baud=9600)  # the module's UART at its real pace
    assert await r.plc.vendor_info() == VENDOR
    mode = await r.plc.run_mode()
    assert (mode.node_count, mode.monitor_timeout_s, mode.comm_type) == (3, 60, 2)
    assert [n.address for n in await r.plc.route_table()] == [m.address for m in r.meters]
    reader = plc_reader(r.plc)
    read = {}
    for meter in r.meters:
        for name in ("energy_fwd_total", "voltage_a", "meter_time"):
            value = await reader.read(meter.address, dlt645.lookup(name))
            read[meter.address, name] = value.value
    told = {(t.meter, t.quantity): t.value for t in read_truth(r.truth)}
    assert told == read
    assert r.plc.stats.replies == r.plc.stats.requests == 2 + 3 + 9  # identify: 2
    assert r.module.counters.reads == 9


async def test_node_not_in_route_is_its_own_error(rig: Start) -> None:
    r = await rig(2, routed=1)
    first, second = (m.address for m in r.meters)
    reader = plc_reader(r.plc)
    with pytest.raises(NodeNotInRoute, match="not in the node table") as info:
        await reader.read(second, ENERGY)
    assert info.value.code == gdw.DenyReason.NO_SUCH_METER and info.value.node == second
    deny = gdw.decode_frame(info.value.raw)
    # the module's own answer: no address field (docs/protocols.md §3.2)
    assert (deny.afn, deny.fn, deny.info.slave_node, deny.source) == (
        gdw.AFN.CONFIRM,
        2,
        False,
        None,
    )
    await r.plc.add_nodes([second])
    assert (await reader.read(second, ENERGY)).meter == second
    with pytest.raises(CarrierDenied, match="already in the node table") as dup:
        await r.plc.add_nodes([first])
    assert type(dup.value) is CarrierDenied and dup.value.code == 6
    await r.plc.delete_nodes([second])
    assert (await r.plc.node_count()).count == 1
    with pytest.raises(NodeNotInRoute):
        await reader.read(second, ENERGY)
    with pytest.raises(NodeNotInRoute):
        await r.plc.delete_nodes(["999999999999"])
    await r.plc.parameter_init()
    assert await r.plc.route_table() == []


async def test_a_silent_module_times_out(rig: Start) -> None:
    r = await rig(1, settings={"response_timeout": 0.3})
    address = r.meters[0].address
    r.module.answering = False
    with pytest.raises(CarrierTimeout, match=r"did not answer AFN 03 F1 within 0\.300 s"):
        await r.plc.vendor_info()
    with pytest.raises(BusTimeout, match=f"AFN 13 F1 for node {address}"):
        await r.plc.exchange_645(
            address, dlt645.build_read(address, ENERGY.di), response_timeout=0.3
        )
    assert r.module.counters.ignored == 2 and r.plc.stats.timeouts == 2
    r.module.answering = True
    assert await r.plc.vendor_info() == VENDOR


async def test_a_module_silenced_mid_read_marks_the_truth(rig: Start) -> None:
    r = await rig(1, default_link=Link(success=1.0, latency=10.0))  # 0.1 s a read
    address = r.meters[0].address
    request = dlt645.build_read(address, ENERGY.di)
    reading = asyncio.create_task(r.plc.exchange_645(address, request, response_timeout=1.0))
    await until(lambda: r.module.counters.reads == 1, "the read to reach the module")
    r.module.answering = False
    with pytest.raises(CarrierTimeout):
        await reading
    # the meter did answer; the module swallowed it, and the truth log says so
    assert [(t.meter, t.fault) for t in read_truth(r.truth)] == [(address, "no_reply")]


async def test_a_reset_module_fails_the_read_in_flight_and_says_so(rig: Start) -> None:
    r = await rig(1, default_link=Link(success=1.0, latency=300.0))  # 3 s a read
    address = r.meters[0].address
    reports = r.plc.reports()
    reading = asyncio.create_task(plc_reader(r.plc).read(address, ENERGY))
    await until(lambda: r.module.counters.reads == 1, "the read to reach the module")
    r.module.reset()
    with pytest.raises(CarrierReset, match="restarted"):
        await reading
    restarted = await next_report(reports)
    assert isinstance(restarted, ModuleRestarted) and restarted.run_mode is not None
    assert restarted.run_mode.node_count == 1  # the node table survives a reset
    await until(lambda: r.module.counters.report_acks == 1, "the 03 F10 to be confirmed")
    assert r.plc.stats.restarts == 1
    r.module.set_link(address, FAST)
    assert (await plc_reader(r.plc).read(address, ENERGY)).meter == address


async def test_discovered_meters_are_reported(rig: Start) -> None:
    r = await rig(4, routed=2, report_retry=5.0)  # confirmed long before a repeat is due
    reports = r.plc.reports()
    await r.plc.restart_route()
    found = await next_report(reports)
    assert isinstance(found, gdw.NodeReport)
    assert [(n.address, n.index) for n in found.nodes] == [
        (r.meters[2].address, 3),
        (r.meters[3].address, 4),
    ]
    assert await next_report(reports) == gdw.RouteChange(gdw.RouteTask.SEARCH_DONE)
    await until(lambda: r.module.counters.report_acks == 2, "both reports to be confirmed")
    assert r.module.counters.reports == 2  # confirmed at once: never repeated
    await r.plc.add_nodes([gdw.SlaveNode(n.address, n.protocol) for n in found.nodes])
    reader = plc_reader(r.plc)
    assert (await reader.read(r.meters[3].address, ENERGY)).meter == r.meters[3].address
    # a new meter appears on the line; one leaves
    newcomer = Dlt645Meter(MeterModel("000000000099", seed=99, start=r.clock.now()))
    r.module.node_joins(newcomer.address, newcomer, FAST)
    joined = await next_report(reports)
    assert isinstance(joined, gdw.NodeReport)
    assert [n.address for n in joined.nodes] == ["000000000099"]
    assert await next_report(reports) == gdw.RouteChange(gdw.RouteTask.SEARCH_DONE)
    r.module.node_leaves(r.meters[0].address)
    with pytest.raises(NodeNoReply, match="not in the network") as info:
        await reader.read(r.meters[0].address, ENERGY)
    assert info.value.code == gdw.DenyReason.NODE_NOT_IN_NETWORK


async def test_a_bad_link_is_a_node_that_does_not_answer(rig: Start) -> None:
    r = await rig(1, default_link=Link(success=0.0, latency=1.0), attempts=3)
    with pytest.raises(NodeNoReply, match="slave node did not answer") as info:
        await plc_reader(r.plc).read(r.meters[0].address, ENERGY)
    assert info.value.code == gdw.DenyReason.NODE_NO_REPLY
    assert r.module.counters.failed_attempts == 3
    assert list(read_truth(r.truth)) == []  # the meter never heard the request


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        (gdw.DenyReason.MASTER_BUSY, CarrierBusy),
        (gdw.DenyReason.UNSUPPORTED, CarrierDenied),
        (gdw.DenyReason.METER_NO_REPLY, NodeNoReply),
    ],
)
async def test_denies_map_to_what_the_caller_should_do(
    rig: Start, reason: gdw.DenyReason, kind: type[CarrierDenied]
) -> None:
    r = await rig(1)
    r.module.deny_with = reason
    with pytest.raises(CarrierDenied) as info:
        await r.plc.vendor_info()
    assert type(info.value) is kind and info.value.code == reason
    r.module.deny_with = None
    assert await r.plc.vendor_info() == VENDOR


@pytest.mark.parametrize("window", [1, 4])
async def test_several_reads_in_flight_when_the_module_allows_it(rig: Start, window: int) -> None:
    slow = Link(success=1.0, latency=30.0)  # 0.3 s a read
    r = await rig(4, max_concurrent=4, default_link=slow, settings={"max_in_flight": window})
    reader = plc_reader(r.plc)
    values = await asyncio.gather(*(reader.read(m.address, ENERGY) for m in r.meters))
    assert [v.meter for v in values] == [m.address for m in r.meters]
    assert r.module.counters.max_parallel == window
    told = {t.meter: t.value for t in read_truth(r.truth)}
    assert told == {v.meter: v.value for v in values}


async def test_the_window_shrinks_to_what_the_module_runs(rig: Start) -> None:
    slow = Link(success=1.0, latency=30.0)
    r = await rig(4, max_concurrent=2, default_link=slow, settings={"max_in_flight": 4})
    reader = plc_reader(r.plc)
    first = await asyncio.gather(
        *(reader.read(m.address, ENERGY) for m in r.meters), return_exceptions=True
    )
    busy = [e for e in first if isinstance(e, CarrierBusy)]
    assert len(busy) == 2 and {e.code for e in busy} == {gdw.DenyReason.TOO_MANY_CONCURRENT}
    assert r.plc.window == 2
    again = await asyncio.gather(*(reader.read(m.address, ENERGY) for m in r.meters))
    assert len(again) == 4 and r.module.counters.max_parallel == 2


async def test_broadcast_time_reaches_every_meter(rig: Start) -> None:
    r = await rig(2)
    reader = plc_reader(r.plc)
    await reader.broadcast_time(dt.datetime(2031, 5, 17, 8, 30, 0))
    await until(
        lambda: all(m.model.meter_time(r.clock.now()).year == 2031 for m in r.meters),
        "the broadcast to reach the meters",
    )
    date = await reader.read(r.meters[1].address, dlt645.lookup("meter_date"))
    assert date.value == "2031-05-17"


async def test_wildcards_cannot_be_routed(rig: Start) -> None:
    r = await rig(1, identify=False)
    r.plc.master_address = r.module.master_address
    with pytest.raises(EncodeError, match="one full address"):
        await plc_reader(r.plc).read_address()
    assert r.plc.stats.requests == 0


async def test_hil_sim_plc_command(tmp_path: Path) -> None:
    link = tmp_path / "plc"
    args = ["plc", "--link", str(link), "--meters", "2", "--routed", "1", "--success", "1"]
    proc = SimProcess([*args, "--time-scale", "100", "--baud", "0", "--latency", "0.5"])
    try:
        ready = proc.start()
        first, second = proc.meters
        assert ready["buses"][0]["protocol"] == "gdw1376.2"
        assert ready["buses"][0]["routed"] == [first]
        async with PlcBus(PlcSettings(port=str(link))) as plc:
            await plc.identify()
            assert [n.address for n in await plc.route_table()] == [first]
            value = await plc_reader(plc).read(first, ENERGY)
            with pytest.raises(NodeNotInRoute):
                await plc_reader(plc).read(second, ENERGY)
    finally:
        proc.stop()
    assert proc.summary["reads"] == 1 and proc.summary["denies"] == 1
    assert [(t.meter, t.value) for t in read_truth(proc.truth)] == [(first, value.value)]


# --------------------------------------------------------------------------------------
# The transport against a scripted module, and the module against a scripted concentrator


class RawPty:
    """The other end of a PTY, driven by the test: frames in, frames out."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.master)
        tty.setraw(self.slave)
        os.set_blocking(self.master, False)
        self.port = os.ttyname(self.slave)
        self.decoder = gdw.Decoder()
        self.frames: list[gdw.Frame] = []

    def send(self, *frames: gdw.Frame) -> None:
        os.write(self.master, b"".join(gdw.encode_frame(f) for f in frames))

    async def received(self, n: int) -> list[gdw.Frame]:
        def enough() -> bool:
            with contextlib.suppress(BlockingIOError):
                self.decoder.feed(os.read(self.master, 4096))
            self.frames.extend(self.decoder.frames())
            return len(self.frames) >= n

        await until(enough, f"{n} frames on the PTY")
        return self.frames

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def raw_pty() -> Iterator[RawPty]:
    pty = RawPty()
    yield pty
    pty.close()


def answer_identity(raw_pty: RawPty, run_mode: gdw.RunMode) -> Callable[[], Awaitable[None]]:
    """Play a module's part in ``identify``: its 03 F10 and 03 F4 answers."""

    async def play() -> None:
        query = (await raw_pty.received(1))[-1]
        raw_pty.send(gdw.reply_to(query, run_mode))
        query = (await raw_pty.received(2))[-1]
        raw_pty.send(gdw.reply_to(query, gdw.MasterAddress(run_mode.master_address)))
        raw_pty.frames.clear()

    return play


async def identified(plc: PlcBus, raw_pty: RawPty, run_mode: gdw.RunMode) -> None:
    await asyncio.gather(plc.identify(), answer_identity(raw_pty, run_mode)())


def module_run_mode(**module_kw: Any) -> gdw.RunMode:
    """The 03 F10 answer of a simulated module configured so."""
    return PlcModule([], **module_kw).run_mode()


async def test_replies_are_matched_by_seq_then_by_meter(raw_pty: RawPty) -> None:
    a, b = "000000000001", "000000000002"
    async with PlcBus(PlcSettings(port=raw_pty.port, max_in_flight=2)) as plc:
        await identified(plc, raw_pty, module_run_mode(max_concurrent=2))
        assert plc.window == 2
        reads = [
            asyncio.create_task(plc.exchange_645(m, dlt645.build_read(m, ENERGY.di)))
            for m in (a, b)
        ]
        to_a, to_b = await raw_pty.received(2)
        assert (to_a.destination, to_b.destination) == (a, b) and to_a.seq != to_b.seq
        assert to_a.source == to_b.source == "100000000000"  # A1: the reported address
        late = gdw.reply_to(replace(to_a, info=replace(to_a.info, seq=0x77)), gdw.Confirm())
        raw_pty.send(
            late,  # a confirm nobody waits for (unknown SEQ, not a meter reply): dropped
            gdw.reply_to(to_b, gdw.MonitorReply(b"reply-b")),
            # this module renumbered: SEQ unknown, but the frame names meter a
            gdw.reply_to(
                replace(to_a, info=replace(to_a.info, seq=0x99)), gdw.MonitorReply(b"reply-a")
            ),
        )
        assert await asyncio.gather(*reads) == [b"reply-a", b"reply-b"]
        assert (plc.stats.unmatched, plc.stats.replies) == (1, 2 + 2)  # identify: 2


async def test_repeated_reports_are_confirmed_but_handed_out_once(raw_pty: RawPty) -> None:
    async with PlcBus(PlcSettings(port=raw_pty.port)) as plc:
        done = gdw.report(gdw.RouteChange(gdw.RouteTask.READING_DONE), seq=5)
        raw_pty.send(done, done)  # our confirm of the first one "got lost"
        reports = plc.reports()
        assert await next_report(reports) == gdw.RouteChange(gdw.RouteTask.READING_DONE)
        assert await raw_pty.received(2) == [gdw.confirm_report(done)] * 2
        assert plc.stats.reports == 1


async def test_the_module_repeats_unconfirmed_reports(tmp_path: Path) -> None:
    clock = SimClock(scale=SCALE)
    meters = [Dlt645Meter(MeterModel(f"{i:012d}", seed=i, start=clock.now())) for i in (1, 2)]
    link = tmp_path / "plc"
    module = PlcModule(meters, routed=[], clock=clock, link=link, baud=0, report_retry=0.02)
    await module.start()
    fd = os.open(link, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    seen = gdw.Decoder()
    frames: list[gdw.Frame] = []

    def six_frames() -> bool:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(fd, 4096):  # a PTY read may stop at a write boundary
                seen.feed(chunk)
        frames.extend(seen.frames())
        return len(frames) >= 6

    try:
        module.search()  # nobody confirms: every report goes out report_tries = 3 times
        await until(six_frames, "three copies of both reports")
        await until(lambda: module.counters.reports_unconfirmed == 2, "both to be given up")
        # a 06 F1 (both meters) and a 06 F3, each with its own SEQ in every copy
        assert sorted((f.afn, f.fn, f.seq) for f in frames) == [(6, 1, 1)] * 3 + [(6, 3, 2)] * 3
        assert module.counters.reports == 6 and module.counters.report_acks == 0
    finally:
        os.close(fd)
        await module.stop()
