"""``hil-sim bus`` and ``hil-sim fleet``: DL/T 645 or Modbus meters on simulated RS-485
buses, with line faults and a ground-truth log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import click

from clitools.options import (
    baud_option,
    existing_dir,
    link_option,
    seed_option,
    time_origin_option,
    time_scale_option,
)
from clitools.output import json_errors_option
from hil_sim.bus import SimBus
from hil_sim.cli import options as simopt
from hil_sim.cli.edge import SimCommand
from hil_sim.cli.serving import serve_until_signalled
from hil_sim.clock import SimClock
from hil_sim.faults import (
    FaultPlan,
    parse_cover_open_option,
    parse_fault_option,
    parse_offline_option,
)
from hil_sim.fleet import FleetOptions, ProtocolName, build_bus, write_config
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


def _meter_options(fn: Callable[..., None]) -> Callable[..., None]:
    """Options shared by ``bus`` and ``fleet``: what the meters are and what goes wrong."""
    options = [
        click.option(
            "--protocol",
            type=click.Choice(["dlt645", "dlt645-1997", "dlt698", "modbus"]),
            default="dlt645",
            show_default=True,
            help="What every meter speaks: DL/T 645-2007, DL/T 645-1997, DL/T 698.45 or Modbus.",
        ),
        simopt.protocols_option(
            "A mixed bus: meter i speaks the (i mod n)-th of these "
            "(dlt645, dlt645-1997, dlt698), e.g. dlt645,dlt698,dlt645-1997. "
            "Overrides --protocol."
        ),
        baud_option(default=2400, help="Line speed; 0 removes every wire and turnaround delay."),
        click.option(
            "--turnaround",
            default="20-80",
            show_default=True,
            help="Meter reply delay range in ms (DL/T 645 allows 20-500).",
        ),
        simopt.address_base_option("First DL/T 645 address; the others follow consecutively."),
        simopt.random_addresses_option("Random DL/T 645 addresses instead."),
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
        simopt.profile_option(),
        click.option(
            "--peak-kw",
            type=click.FloatRange(min=0.001, max=79.0),
            default=None,
            help="Every meter's peak load in kW, up to 79 (a DL/T 645 power register shows "
            "at most 79.9999 kW) [default: drawn per meter, 2-6 household, 15-60 commercial].",
        ),
        simopt.phases_option(),
        simopt.preamble_option("FE wake-up bytes before each DL/T 645 reply."),
        seed_option(),
        time_scale_option("Simulated seconds per real second for meter clocks and energy."),
        time_origin_option(
            "With --time-scale: the real unix time at which simulated time equals "
            "real time (as `concentrator run --time-origin`), so that a test can start "
            "the simulated day where it needs it."
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
        simopt.write_config_option(
            files_only=False, help="Also write a concentrator config (TOML)."
        ),
        simopt.cadence_option(),
        simopt.store_option(files_only=False),
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
    plan = FaultPlan.uniform(fault_rate, seed=seed) if fault_rate else FaultPlan(seed=seed)
    for text in fault_opts:
        meter, kind, p = parse_fault_option(text)
        if meter is None:
            plan.rates[kind] = p
        else:
            plan.per_meter.setdefault(meter, dict(plan.rates))[kind] = p
    plan.offline.extend(parse_offline_option(t) for t in offline_opts)
    plan.cover_opens.extend(parse_cover_open_option(t) for t in cover_opts)
    return plan


def _options(
    kw: dict[str, Any], n_meters: int, address_base: str, first_slave: int, seed: int
) -> FleetOptions:
    protocols: tuple[str, ...] = kw["protocols"]
    return FleetOptions(
        protocol=cast(ProtocolName, protocols[0] if protocols else kw["protocol"]),
        protocols=protocols,
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


@click.command(cls=SimCommand)
@json_errors_option()
@simopt.meters_option(default=1, most=2048)
@link_option("Stable symlink to the PTY that the concentrator opens as its serial port.")
@simopt.truth_option()
@_meter_options
def bus(n_meters: int, link: Path, truth: Path | None, **kw: Any) -> None:
    """Host N meters on one simulated RS-485 bus until stopped (Ctrl-C or SIGTERM).

    Prints one JSON line {"event": "ready", ...} on stdout once the port can be opened.
    """
    opts = _options(kw, n_meters, kw["address_base"], kw["first_slave"], kw["seed"])
    truth_path = truth or link.with_name(link.name + ".truth.jsonl")
    clock = SimClock.from_origin(kw["time_scale"], kw["time_origin"])
    sim = build_bus(opts, link=link, truth=TruthLog(truth_path), clock=clock)
    if kw["config_path"] is not None:
        write_config(
            kw["config_path"],
            [("bus1", link, opts, sim.meters)],
            store_path=kw["store_path"],
            cadence=kw["cadence"],
        )
    asyncio.run(_serve([sim], truth_path))


@click.command(cls=SimCommand)
@json_errors_option()
@click.option("--buses", "n_buses", type=click.IntRange(1, 32), default=4, show_default=True)
@click.option("--meters-per-bus", type=click.IntRange(1, 1024), default=64, show_default=True)
@click.option(
    "--link-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    callback=existing_dir,
    help="Folder (it must exist) for the bus links bus1, bus2, ... and the shared truth log.",
)
@_meter_options
def fleet(n_buses: int, meters_per_bus: int, link_dir: Path, **kw: Any) -> None:
    """Host several buses of meters in one process (one PTY per bus, one truth log).

    Addresses continue from bus to bus, so every meter of the fleet is unique.
    """
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
        sim = build_bus(opts, link=link, truth=truth, clock=clock)
        buses.append(sim)
        described.append((f"bus{i + 1}", link, opts, sim.meters))
    if kw["config_path"] is not None:
        write_config(
            kw["config_path"], described, store_path=kw["store_path"], cadence=kw["cadence"]
        )
    asyncio.run(_serve(buses, truth_path))


async def _serve(buses: list[SimBus], truth_path: Path) -> None:
    def ready() -> dict[str, Any]:
        return {
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
            # The simulated time the simulator started at: --offline windows count from it.
            "clock_start": buses[0].clock.start if buses else None,
        }

    def stopped() -> dict[str, Any]:
        return {
            "event": "stopped",
            "requests": sum(b.counters.requests for b in buses),
            "replies": sum(b.counters.replies for b in buses),
            "collisions": sum(b.counters.collisions for b in buses),
            "faults": [b.counters.faults for b in buses],
        }

    await serve_until_signalled(buses, ready, stopped)
