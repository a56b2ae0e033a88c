"""``hil-sim modem``: a GPRS/LTE module's AT port with scripted faults."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clitools.options import baud_option, link_option, seed_option, time_scale_option
from clitools.output import json_errors_option
from hil_sim.cli.edge import SimCommand
from hil_sim.cli.serving import serve_until_signalled
from hil_sim.clock import SimClock

if TYPE_CHECKING:
    from hil_sim.modem import SimModem


@click.command(cls=SimCommand)
@json_errors_option()
@link_option("Stable symlink to the PTY that the concentrator opens as the modem's AT port.")
@baud_option(default=115200, help="Port speed for the wire time; 0 removes it.", bus=False)
@time_scale_option("Simulated seconds per real second for boot, cell search, attach.")
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
@seed_option()
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
    from hil_sim.modem import ModemIdentity, SimModem, make_imei, parse_modem_fault

    sim = SimModem(
        link=link,
        baud=baud,
        clock=SimClock(scale=time_scale),
        identity=ModemIdentity(imei=make_imei(seed)),
        operator=operator,
        rssi=rssi,
        lte=not gsm_only,
        roaming=roaming,
        script=[parse_modem_fault(t) for t in fault_opts],
        seed=seed,
    )
    asyncio.run(serve(sim))


async def serve(sim: SimModem) -> None:
    """Run ``sim`` until SIGTERM/SIGINT; SIGUSR1 power-cycles the module.

    The ready line names the port and the module's IMEI; the stopped line carries the
    counters."""

    def ready() -> dict[str, Any]:
        port = {
            "link": str(sim.link),
            "pty": sim.pty_name,
            "baud": sim.baud,
            "imei": sim.identity.imei,
        }
        return {"event": "ready", "modem": port}

    def stopped() -> dict[str, Any]:
        return {"event": "stopped", **dataclasses.asdict(sim.counters)}

    await serve_until_signalled([sim], ready, stopped, on_usr1=sim.power_cycle)
