"""``hil-sim``: run simulated meters on virtual serial ports.

One module per command: ``bus`` (``bus`` and ``fleet``: RS-485 meters), ``plc`` (meters
behind a carrier module), ``modem`` (a GPRS/LTE module's AT port), ``areas``
(transformer areas for the analytics). What they share: the options (``options``, and
``clitools.options`` for the concepts every command line shares), running until a
signal (``serving``) and the one place where errors become messages and exit codes
(``edge``).
"""

from __future__ import annotations

import logging

import click

from clitools.output import JsonGroup
from hil_sim.cli import areas, bus, modem, plc

__all__ = ["main"]


@click.group(cls=JsonGroup)
@click.version_option(package_name="meterflow", prog_name="hil-sim")
@click.option("-v", "--verbose", is_flag=True, help="Log every request and fault.")
def main(verbose: bool) -> None:
    """Hardware-in-the-loop simulator: meters, buses and faults on PTYs."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


for _command in (bus.bus, bus.fleet, plc.plc, modem.modem, areas.areas):
    main.add_command(_command)
