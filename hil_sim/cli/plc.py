"""``hil-sim plc``: DL/T 645 meters behind a simulated Q/GDW 1376.2 carrier module."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from pathlib import Path
from typing import Any

import click

from clitools.options import (
    Decorator,
    baud_option,
    link_option,
    seed_option,
    time_origin_option,
    time_scale_option,
)
from clitools.output import json_errors_option
from drivers.errors import EncodeError
from drivers.gdw1376_2 import encode_node_address
from hil_sim.cli import options as simopt
from hil_sim.cli.edge import SimCommand
from hil_sim.cli.serving import serve_until_signalled
from hil_sim.clock import SimClock
from hil_sim.fleet import FleetOptions, build_meters, write_plc_config
from hil_sim.plc_module import PROTOCOL as PLC_PROTOCOL
from hil_sim.plc_module import Link, PlcModule
from hil_sim.truth import TruthLog


def _master_address(text: str) -> str:
    try:
        encode_node_address(text)
    except EncodeError as exc:
        raise click.BadParameter(str(exc)) from None
    return text.upper()


def _window(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in text.split("-", 1))
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected START-END in seconds") from None
    if hi <= lo:
        raise click.BadParameter(f"{text!r}: END must be after START")
    return lo, hi


def _carrier_option(
    flag: str, kind: click.IntRange | click.FloatRange, default: float, help: str
) -> Decorator[Any]:
    """One of the carrier network's knobs, shown with its default."""
    return click.option(flag, type=kind, default=default, show_default=True, help=help)


@click.command(cls=SimCommand)
@json_errors_option()
@simopt.meters_option(default=4, most=1024)
@link_option("Stable symlink to the PTY that the concentrator opens as the module's UART.")
@simopt.truth_option()
@simopt.address_base_option()
@simopt.random_addresses_option("Random meter addresses instead.")
@click.option(
    "--routed",
    type=click.IntRange(0),
    default=None,
    help="How many meters (the first N) start in the module's node table; default all.",
)
@baud_option(
    default=9600, help="UART speed between module and concentrator; 0 removes the wire time."
)
@_carrier_option(
    "--success",
    click.FloatRange(0, 1),
    0.98,
    "Probability that one carrier attempt reaches a meter and back.",
)
@_carrier_option(
    "--latency",
    click.FloatRange(min=0),
    1.0,
    "Median simulated seconds per carrier hop (one hop more per relay).",
)
@_carrier_option(
    "--max-relays", click.IntRange(0, 15), 0, "Each meter's relay depth is drawn from 0..N."
)
@_carrier_option(
    "--attempts",
    click.IntRange(1, 10),
    2,
    "Carrier attempts the module makes per read before it denies (node no reply).",
)
@click.option(
    "--fail-after",
    type=click.FloatRange(min=0),
    default=None,
    help="Simulated seconds a failed attempt costs [default: as long as a success].",
)
@_carrier_option(
    "--max-concurrent",
    click.IntRange(1, 255),
    1,
    "Meter reads the module runs at once. 1: a serial 1376.2-2013 module, an overlapping "
    "read is denied master busy (9); more: it reports the 2019 edition, and denies "
    "beyond that (109).",
)
@click.option(
    "--comm-mode",
    type=click.Choice(["1", "3"]),
    default="3",
    show_default=True,
    help="The module's communication mode: 1 narrowband (centralised routing), 3 HPLC. "
    "Frames in another mode are denied.",
)
@click.option(
    "--master-address",
    default="100000000000",
    show_default=True,
    callback=lambda _ctx, _param, value: _master_address(value),
    help="The module's master node address (12 hex digits), reported by AFN 03 F4; "
    "a downlink frame with another A1 is denied.",
)
@simopt.protocols_option(
    "Meters of several protocols behind the module: meter i speaks the (i mod n)-th of "
    "these (dlt645, dlt645-1997, dlt698), e.g. dlt645,dlt698 [default: all dlt645]."
)
@simopt.profile_option()
@simopt.phases_option()
@simopt.preamble_option("FE wake-up bytes before each meter reply.")
@seed_option()
@time_scale_option("Simulated seconds per real second: meter clocks, energy and carrier latency.")
@time_origin_option(
    "With --time-scale: the real unix time at which simulated time equals real time (as "
    "`concentrator run --time-origin`), so the meters keep the daemon's time line."
)
@simopt.write_config_option(
    files_only=True,
    help="Also write a concentrator config (TOML) reading these meters through the module.",
)
@simopt.store_option(files_only=True)
@simopt.cadence_option()
@click.option(
    "--network-down",
    "network_down",
    multiple=True,
    metavar="START-END",
    callback=lambda _ctx, _param, value: tuple(_window(v) for v in value),
    help="The carrier network carries nothing between START and END simulated seconds "
    'after start (every meter read denied "slave node did not answer"; the module '
    "itself answers); repeatable.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(1, 16),
    default=None,
    help="max_in_flight written into --write-config [default: --max-concurrent].",
)
def plc(n_meters: int, link: Path, truth: Path | None, **kw: Any) -> None:
    """Host N DL/T meters (645-2007 unless --protocols says otherwise) behind one
    simulated Q/GDW 1376.2 carrier module.

    Runs until stopped (Ctrl-C or SIGTERM). Prints one JSON line {"event": "ready", ...}
    on stdout once the port can be opened.
    """
    truth_path = truth or link.with_name(link.name + ".truth.jsonl")
    clock = SimClock.from_origin(kw["time_scale"], kw["time_origin"])
    opts = FleetOptions(
        meters=n_meters,
        address_base=kw["address_base"],
        random_addresses=kw["random_addresses"],
        seed=kw["seed"],
        profile=kw["profile"],
        phases=int(kw["phases"]),
        preamble=kw["preamble"],
        protocols=kw["protocols"],
    )
    meters = build_meters(opts, clock)
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
        master_address=kw["master_address"],
        mode=int(kw["comm_mode"]),
    )
    module.network_down = list(kw["network_down"])
    if kw["config_path"] is not None:
        write_plc_config(
            kw["config_path"],
            link,
            [m.address for m in meters],
            protocols=[opts.protocol_of(i) for i in range(len(meters))],
            store_path=kw["store_path"],
            cadence=kw["cadence"],
            max_in_flight=kw["max_in_flight"] or kw["max_concurrent"],
        )
    asyncio.run(_serve(module, truth_path))


async def _serve(module: PlcModule, truth_path: Path) -> None:
    def ready() -> dict[str, Any]:
        # The same shape as ``bus``'s ready line, so hil_sim.process.SimProcess reads both.
        bus = {
            "link": str(module.link),
            "pty": module.pty_name,
            "protocol": PLC_PROTOCOL,
            "baud": module.baud,
            "meters": [m.address for m in module.meters],
            "routed": list(module.route),
        }
        # clock_start: the simulated time --network-down windows count from.
        return {
            "event": "ready",
            "buses": [bus],
            "truth": str(truth_path),
            "clock_start": module.clock.start,
        }

    def stopped() -> dict[str, Any]:
        module.truth.close()
        return {"event": "stopped", **dataclasses.asdict(module.counters)}

    await serve_until_signalled([module], ready, stopped)
