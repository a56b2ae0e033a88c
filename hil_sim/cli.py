"""``hil-sim``: run simulated meters on virtual serial ports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from hil_sim.bus import SimBus
from hil_sim.clock import SimClock
from hil_sim.dlt645_meter import Dlt645Meter
from hil_sim.faults import (
    FaultPlan,
    parse_cover_open_option,
    parse_fault_option,
    parse_offline_option,
)
from hil_sim.fleet import FleetOptions, build_bus, build_meters, write_config, write_plc_config
from hil_sim.plc_module import PROTOCOL as PLC_PROTOCOL
from hil_sim.plc_module import Link, PlcModule
from hil_sim.truth import TruthLog


def _turnaround(text: str) -> tuple[float, float]:
    lo, _, hi = text.partition("-")
    try:
        a, b = float(lo), float(hi or lo)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected MIN-MAX in milliseconds, e.g. 20-80"
        ) from None
    if a < 0 or b < a:
        raise click.BadParameter(f"{text!r}: expected 0 <= MIN <= MAX")
    return a / 1000, b / 1000


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log every request and fault.")
def main(verbose: bool) -> None:
    """Hardware-in-the-loop simulator: meters, buses and faults on PTYs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _common_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Options shared by ``bus`` and ``fleet``: what the meters are and what goes wrong."""
    options = [
        click.option(
            "--protocol",
            type=click.Choice(["dlt645", "modbus"]),
            default="dlt645",
            show_default=True,
        ),
        click.option(
            "--baud",
            type=click.IntRange(0),
            default=2400,
            show_default=True,
            help="Line speed; 0 removes every wire and turnaround delay.",
        ),
        click.option(
            "--turnaround",
            default="20-80",
            show_default=True,
            help="Meter reply delay range in ms (DL/T 645 allows 20-500).",
        ),
        click.option(
            "--address-base",
            default="000000000001",
            show_default=True,
            help="First DL/T 645 address; the others follow consecutively.",
        ),
        click.option("--random-addresses", is_flag=True, help="Random DL/T 645 addresses instead."),
        click.option(
            "--first-slave",
            type=click.IntRange(1, 247),
            default=1,
            show_default=True,
            help="First Modbus slave id.",
        ),
        click.option(
            "--model",
            "modbus_model",
            type=click.Choice(["sdm630", "sdm120"]),
            default="sdm630",
            show_default=True,
            help="Modbus meter family.",
        ),
        click.option(
            "--profile",
            type=click.Choice(["household", "commercial"]),
            default="household",
            show_default=True,
        ),
        click.option(
            "--peak-kw",
            type=click.FloatRange(min=0.001, max=79.0),
            default=None,
            help="Every meter's peak load in kW, up to 79 (a DL/T 645 power register shows "
            "at most 79.9999 kW) [default: drawn per meter, 2-6 household, 15-60 commercial].",
        ),
        click.option("--phases", type=click.Choice(["1", "3"]), default="3", show_default=True),
        click.option(
            "--preamble",
            type=click.IntRange(0, 4),
            default=0,
            show_default=True,
            help="FE wake-up bytes before each DL/T 645 reply.",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option(
            "--time-scale",
            type=click.FloatRange(min=0.001),
            default=1.0,
            show_default=True,
            help="Simulated seconds per real second for meter clocks and energy.",
        ),
        click.option(
            "--time-origin",
            type=float,
            default=None,
            help="With --time-scale: the real unix time at which simulated time equals "
            "real time (as `concentrator run --time-origin`), so that a test can start "
            "the simulated day where it needs it.",
        ),
        click.option(
            "--fault-rate",
            type=click.FloatRange(0, 1),
            default=0.0,
            show_default=True,
            help="Total probability that a reply suffers a fault (spread over the "
            "kinds no_reply, late_reply, bad_checksum, truncated, noise).",
        ),
        click.option(
            "--fault",
            "fault_opts",
            multiple=True,
            metavar="KIND=P[@METER]",
            help="Probability of one fault kind: no_reply, late_reply, bad_checksum, "
            "truncated, noise, error_reply; optionally for one meter only.",
        ),
        click.option(
            "--offline",
            "offline_opts",
            multiple=True,
            metavar="METER@START-END",
            help="Meter (or * for every meter) silent between START and END seconds.",
        ),
        click.option(
            "--cover-open",
            "cover_opts",
            multiple=True,
            metavar="METER@SECONDS",
            help="Open the meter's cover (or * for every meter) SECONDS after start: its "
            "cover-open counter goes up by one (DL/T 645 meters).",
        ),
        click.option(
            "--write-config",
            "config_path",
            type=click.Path(path_type=Path),
            default=None,
            help="Also write a concentrator config (TOML).",
        ),
        click.option(
            "--cadence",
            default="15m",
            show_default=True,
            help="Interval-reading cadence written into --write-config.",
        ),
        click.option(
            "--store",
            "store_path",
            type=click.Path(path_type=Path),
            default=None,
            help="Store path written into --write-config (default: beside it).",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _plan(
    seed: int,
    fault_rate: float,
    fault_opts: tuple[str, ...],
    offline_opts: tuple[str, ...],
    cover_opts: tuple[str, ...] = (),
) -> FaultPlan:
    try:
        plan = FaultPlan.uniform(fault_rate, seed=seed) if fault_rate else FaultPlan(seed=seed)
        for text in fault_opts:
            meter, kind, p = parse_fault_option(text)
            if meter is None:
                plan.rates[kind] = p
            else:
                plan.per_meter.setdefault(meter, dict(plan.rates))[kind] = p
        plan.offline.extend(parse_offline_option(t) for t in offline_opts)
        plan.cover_opens.extend(parse_cover_open_option(t) for t in cover_opts)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return plan


def _options(
    kw: dict[str, Any], n_meters: int, address_base: str, first_slave: int, seed: int
) -> FleetOptions:
    return FleetOptions(
        protocol=kw["protocol"],
        meters=n_meters,
        baud=kw["baud"],
        address_base=address_base,
        random_addresses=kw["random_addresses"],
        seed=seed,
        profile=kw["profile"],
        peak_kw=kw["peak_kw"],
        phases=int(kw["phases"]),
        turnaround=_turnaround(kw["turnaround"]),
        preamble=kw["preamble"],
        modbus_model=kw["modbus_model"],
        first_slave=first_slave,
        faults=_plan(
            seed, kw["fault_rate"], kw["fault_opts"], kw["offline_opts"], kw["cover_opts"]
        ),
    )


@main.command()
@click.option("--meters", "n_meters", type=click.IntRange(1, 2048), default=1, show_default=True)
@click.option(
    "--link",
    type=click.Path(path_type=Path),
    required=True,
    help="Stable symlink to the PTY that the concentrator opens as its serial port.",
)
@click.option(
    "--truth",
    type=click.Path(path_type=Path),
    default=None,
    help="Ground-truth log (JSON lines); default LINK.truth.jsonl.",
)
@_common_options
def bus(n_meters: int, link: Path, truth: Path | None, **kw: Any) -> None:
    """Host N meters on one simulated RS-485 bus until stopped (Ctrl-C or SIGTERM).

    Prints one JSON line {"event": "ready", ...} on stdout once the port can be opened.
    """
    opts = _options(kw, n_meters, kw["address_base"], kw["first_slave"], kw["seed"])
    truth_path = truth or link.with_name(link.name + ".truth.jsonl")
    clock = SimClock.from_origin(kw["time_scale"], kw["time_origin"])
    try:
        sim = build_bus(opts, link=link, truth=TruthLog(truth_path), clock=clock)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if kw["config_path"] is not None:
        write_config(
            kw["config_path"],
            [("bus1", link, opts, sim.meters)],
            store_path=kw["store_path"],
            cadence=kw["cadence"],
        )
    asyncio.run(_serve([sim], truth_path))


@main.command()
@click.option("--buses", "n_buses", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--meters-per-bus", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option(
    "--link-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Directory for the bus links bus1, bus2, ... and the shared truth log.",
)
@_common_options
def fleet(n_buses: int, meters_per_bus: int, link_dir: Path, **kw: Any) -> None:
    """Host several buses of meters in one process (one PTY per bus, one truth log).

    Addresses continue from bus to bus, so every meter of the fleet is unique.
    """
    link_dir.mkdir(parents=True, exist_ok=True)
    truth_path = link_dir / "truth.jsonl"
    truth = TruthLog(truth_path)
    clock = SimClock.from_origin(kw["time_scale"], kw["time_origin"])
    buses: list[SimBus] = []
    described = []
    base = int(kw["address_base"])
    for i in range(n_buses):
        first_slave = kw["first_slave"]
        opts = _options(
            kw, meters_per_bus, f"{base + i * meters_per_bus:012d}", first_slave, kw["seed"] + i
        )
        link = link_dir / f"bus{i + 1}"
        try:
            sim = build_bus(opts, link=link, truth=truth, clock=clock)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        buses.append(sim)
        described.append((f"bus{i + 1}", link, opts, sim.meters))
    if kw["config_path"] is not None:
        write_config(
            kw["config_path"], described, store_path=kw["store_path"], cadence=kw["cadence"]
        )
    asyncio.run(_serve(buses, truth_path))


async def _serve(buses: list[SimBus], truth_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    for b in buses:
        await b.start()
    ready = {
        "event": "ready",
        "buses": [
            {
                "link": str(b.link),
                "pty": b.pty_name,
                "protocol": b.adapter.name,
                "baud": b.baud,
                "meters": [m.address for m in b.meters],
            }
            for b in buses
        ],
        "truth": str(truth_path),
    }
    sys.stdout.write(json.dumps(ready) + "\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        for b in buses:
            with contextlib.suppress(Exception):
                await b.stop()
        summary = {
            "event": "stopped",
            "requests": sum(b.counters.requests for b in buses),
            "replies": sum(b.counters.replies for b in buses),
            "collisions": sum(b.counters.collisions for b in buses),
            "faults": [b.counters.faults for b in buses],
        }
        sys.stdout.write(json.dumps(summary) + "\n")
        sys.stdout.flush()


@main.command()
@click.option("--meters", "n_meters", type=click.IntRange(1, 1024), default=4, show_default=True)
@click.option(
    "--link",
    type=click.Path(path_type=Path),
    required=True,
    help="Stable symlink to the PTY that the concentrator opens as the module's UART.",
)
@click.option(
    "--truth",
    type=click.Path(path_type=Path),
    default=None,
    help="Ground-truth log (JSON lines); default LINK.truth.jsonl.",
)
@click.option("--address-base", default="000000000001", show_default=True)
@click.option("--random-addresses", is_flag=True, help="Random meter addresses instead.")
@click.option(
    "--routed",
    type=click.IntRange(0),
    default=None,
    help="How many meters (the first N) start in the module's node table; default all.",
)
@click.option(
    "--baud",
    type=click.IntRange(0),
    default=9600,
    show_default=True,
    help="UART speed between module and concentrator; 0 removes the wire time.",
)
@click.option(
    "--success",
    type=click.FloatRange(0, 1),
    default=0.98,
    show_default=True,
    help="Probability that one carrier attempt reaches a meter and back.",
)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Median simulated seconds per carrier hop (one hop more per relay).",
)
@click.option(
    "--max-relays",
    type=click.IntRange(0, 15),
    default=0,
    show_default=True,
    help="Each meter's relay depth is drawn from 0..N.",
)
@click.option(
    "--attempts",
    type=click.IntRange(1, 10),
    default=2,
    show_default=True,
    help="Carrier attempts the module makes per read before it denies (node no reply).",
)
@click.option(
    "--fail-after",
    type=click.FloatRange(min=0),
    default=None,
    help="Simulated seconds a failed attempt costs [default: as long as a success].",
)
@click.option(
    "--max-concurrent",
    type=click.IntRange(1, 255),
    default=1,
    show_default=True,
    help="Meter reads the module runs at once; more are denied (reason 109).",
)
@click.option(
    "--profile",
    type=click.Choice(["household", "commercial"]),
    default="household",
    show_default=True,
)
@click.option("--phases", type=click.Choice(["1", "3"]), default="3", show_default=True)
@click.option(
    "--preamble",
    type=click.IntRange(0, 4),
    default=0,
    show_default=True,
    help="FE wake-up bytes before each meter reply.",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second: meter clocks, energy and carrier latency.",
)
@click.option(
    "--write-config",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write a concentrator config (TOML) reading these meters through the module.",
)
@click.option(
    "--store",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Store path written into --write-config (default: beside it).",
)
@click.option(
    "--cadence",
    default="15m",
    show_default=True,
    help="Interval-reading cadence written into --write-config.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 16),
    default=None,
    help="max_in_flight written into --write-config [default: --max-concurrent].",
)
def plc(n_meters: int, link: Path, truth: Path | None, **kw: Any) -> None:
    """Host N DL/T 645 meters behind one simulated Q/GDW 1376.2 carrier module.

    Runs until stopped (Ctrl-C or SIGTERM). Prints one JSON line {"event": "ready", ...}
    on stdout once the port can be opened.
    """
    truth_path = truth or link.with_name(link.name + ".truth.jsonl")
    clock = SimClock(scale=kw["time_scale"])
    opts = FleetOptions(
        meters=n_meters,
        address_base=kw["address_base"],
        random_addresses=kw["random_addresses"],
        seed=kw["seed"],
        profile=kw["profile"],
        phases=int(kw["phases"]),
        preamble=kw["preamble"],
    )
    try:
        meters = [m for m in build_meters(opts, clock) if isinstance(m, Dlt645Meter)]
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    rng = random.Random(kw["seed"])
    links = {
        m.address: Link(
            success=kw["success"],
            latency=kw["latency"],
            relays=rng.randint(0, kw["max_relays"]),
            phase=rng.randint(1, 3),
            quality=rng.randint(4, 15),
        )
        for m in meters
    }
    routed = kw["routed"]
    module = PlcModule(
        meters,
        links=links,
        routed=None if routed is None else [m.address for m in meters[:routed]],
        max_concurrent=kw["max_concurrent"],
        attempts=kw["attempts"],
        fail_after=kw["fail_after"],
        baud=kw["baud"],
        clock=clock,
        truth=TruthLog(truth_path),
        link=link,
        seed=kw["seed"],
    )
    if kw["write_config"] is not None:
        write_plc_config(
            kw["write_config"],
            link,
            [m.address for m in meters],
            store_path=kw["store"],
            cadence=kw["cadence"],
            max_in_flight=kw["max_in_flight"] or kw["max_concurrent"],
        )
    asyncio.run(_serve_plc(module, truth_path))


async def _serve_plc(module: PlcModule, truth_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await module.start()
    # The same shape as ``bus``'s ready line, so hil_sim.process.SimProcess reads both.
    bus = {
        "link": str(module.link),
        "pty": module.pty_name,
        "protocol": PLC_PROTOCOL,
        "baud": module.baud,
        "meters": [m.address for m in module.meters],
        "routed": list(module.route),
    }
    sys.stdout.write(json.dumps({"event": "ready", "buses": [bus], "truth": str(truth_path)}))
    sys.stdout.write("\n")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await module.stop()
        module.truth.close()
        summary = {"event": "stopped", **dataclasses.asdict(module.counters)}
        sys.stdout.write(json.dumps(summary) + "\n")
        sys.stdout.flush()


@main.command()
@click.option(
    "--link",
    type=click.Path(path_type=Path),
    required=True,
    help="Stable symlink to the PTY that the concentrator opens as the modem's AT port.",
)
@click.option(
    "--baud",
    type=click.IntRange(0),
    default=115200,
    show_default=True,
    help="Port speed for the wire time; 0 removes it.",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Simulated seconds per real second for boot, cell search, attach.",
)
@click.option("--operator", default="CHINA MOBILE", show_default=True)
@click.option(
    "--rssi",
    type=click.IntRange(0, 31),
    default=22,
    show_default=True,
    help="CSQ rssi (22 = -69 dBm).",
)
@click.option("--gsm-only", is_flag=True, help="A 2G module: GSM/EGPRS, no AT+CEREG.")
@click.option("--roaming", is_flag=True, help="Register as roaming (stat 5) instead of home.")
@click.option(
    "--fault",
    "fault_opts",
    multiple=True,
    metavar="KIND@START[-END][:RSSI]",
    help="Scripted fault, simulated seconds after start: outage@60-120, weak@0-300:4, "
    "hang@90 (a blind AT+CFUN=1,1 cures it), hang_hard@90 (only a power cycle: SIGUSR1).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def modem(
    link: Path,
    baud: int,
    time_scale: float,
    operator: str,
    rssi: int,
    gsm_only: bool,
    roaming: bool,
    fault_opts: tuple[str, ...],
    seed: int,
) -> None:
    """Emulate a GPRS/LTE module's AT port until stopped; SIGUSR1 power-cycles it.

    Prints one JSON line {"event": "ready", "modem": {...}} once the port can be opened.
    """
    from hil_sim.modem import ModemIdentity, SimModem, make_imei, parse_modem_fault, serve

    try:
        script = [parse_modem_fault(t) for t in fault_opts]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault") from None
    sim = SimModem(
        link=link,
        baud=baud,
        clock=SimClock(scale=time_scale),
        identity=ModemIdentity(imei=make_imei(seed)),
        operator=operator,
        rssi=rssi,
        lte=not gsm_only,
        roaming=roaming,
        script=script,
        seed=seed,
    )
    asyncio.run(serve(sim))


@main.command()
@click.option(
    "--out-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Where archive.csv, truth.jsonl (and without --db readings.csv, events.csv) go.",
)
@click.option("--db", "db_url", default=None, help="Ingest into this receiver database URL.")
@click.option("--areas", "n_areas", type=click.IntRange(1, 999), default=3, show_default=True)
@click.option("--customers", type=click.IntRange(1, 5000), default=20, show_default=True)
@click.option(
    "--commercial",
    type=click.IntRange(0),
    default=2,
    show_default=True,
    help="How many customers per area are three-phase commercial ones.",
)
@click.option("--from", "first", default="2026-01-05", show_default=True, help="First day.")
@click.option("--days", type=click.IntRange(1, 3660), default=56, show_default=True)
@click.option(
    "--loss",
    default="3-6",
    show_default=True,
    help="Technical loss in percent, MIN-MAX: from light to full load.",
)
@click.option(
    "--theft",
    "thefts",
    multiple=True,
    metavar="AREA:CUSTOMER@DAY[:SHARE[:METHOD[:EVENT]]]",
    help="Inject a theft (repeatable): METHOD bypass|reverse|phase, EVENT a tamper event"
    " kind, e.g. 1:3@40:0.5:bypass:meter_cover_open.",
)
@click.option(
    "--vacation",
    "vacations",
    multiple=True,
    metavar="AREA:CUSTOMER@DAY+DAYS[:LEVEL]",
    help="A customer away (load x LEVEL, default 0.15) with no theft (repeatable).",
)
@click.option("--seed", type=int, default=0, show_default=True)
def areas(
    out_dir: Path,
    db_url: str | None,
    n_areas: int,
    customers: int,
    commercial: int,
    first: str,
    days: int,
    loss: str,
    thefts: tuple[str, ...],
    vacations: tuple[str, ...],
    seed: int,
) -> None:
    """Simulate transformer areas (total meter, customers, loss, theft) for analytics."""
    import csv
    import datetime as dt

    from cloud_receiver.public import format_archive_csv
    from hil_sim import areas as sim_areas
    from hil_sim.areas import EVENT_COLUMNS, READING_COLUMNS

    try:
        start = dt.date.fromisoformat(first)
    except ValueError:
        raise click.BadParameter(f"{first!r}: expected YYYY-MM-DD", param_hint="--from") from None
    lo, _, hi = loss.partition("-")
    try:
        loss_min, loss_max = float(lo) / 100, float(hi or lo) / 100
    except ValueError:
        raise click.BadParameter(
            f"{loss!r}: expected MIN-MAX percent", param_hint="--loss"
        ) from None
    try:
        theft_specs = [sim_areas.parse_theft(t) for t in thefts]
        vacation_specs = [sim_areas.parse_vacation(v) for v in vacations]
        for number in [a for a, _ in theft_specs] + [a for a, _ in vacation_specs]:
            if not 1 <= number <= n_areas:
                raise ValueError(f"area {number}: there are {n_areas} areas")
        options = sim_areas.Options(
            tuple(
                sim_areas.AreaSpec(
                    customers=customers,
                    commercial=min(commercial, customers),
                    loss_min=loss_min,
                    loss_max=loss_max,
                    thefts=tuple(t for a, t in theft_specs if a == i),
                    vacations=tuple(v for a, v in vacation_specs if a == i),
                )
                for i in range(1, n_areas + 1)
            ),
            start,
            days,
            seed,
        )
        sim = sim_areas.AreaSim(options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "archive.csv").write_text(format_archive_csv(sim.archive()), encoding="utf-8")
    if db_url is not None:
        from cloud_receiver.public import open_storage

        try:
            storage = open_storage(db_url)
        except Exception as exc:  # a wrong URL or an unreachable server: say which
            click.echo(f"error: cannot open database {db_url}: {exc}", err=True)
            sys.exit(1)
        try:
            stored = sim_areas.ingest(storage, sim)
        finally:
            storage.close()
        where = f"{stored} readings stored in {db_url}"
    else:
        n = 0
        with (
            (out_dir / "readings.csv").open("w", newline="", encoding="utf-8") as rf,
            (out_dir / "events.csv").open("w", newline="", encoding="utf-8") as ef,
        ):
            readings, events = csv.writer(rf), csv.writer(ef)
            readings.writerow(READING_COLUMNS)
            events.writerow(EVENT_COLUMNS)
            for b in sim.batches():
                for r in b.readings:
                    row = (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source)
                    readings.writerow((*row, b.concentrator, b.seq))
                for e in b.events:
                    detail = json.dumps(e.detail)
                    events.writerow(
                        (b.concentrator, b.seq, e.kind, e.severity, e.meter, detail, e.at)
                    )
                n += len(b.readings)
        where = f"{n} readings written to {out_dir / 'readings.csv'}"
    sim_areas.write_truth(out_dir / "truth.jsonl", sim.truth)
    click.echo(
        f"{n_areas} areas x {customers} customers, {days} days from {start}: {where};"
        f" archive {out_dir / 'archive.csv'}, ground truth {out_dir / 'truth.jsonl'}"
    )
