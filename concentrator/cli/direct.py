"""Direct mode: the commands that open the serial port themselves (``read --port``,
``scan``), to commission a bus before any daemon runs. ``read METER`` without a port
asks the running daemon instead (`concentrator.cli.control`)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from clitools.options import baud_option, json_option, parity_option
from clitools.table import READING_COLUMNS, print_table
from concentrator.cli.common import err_console, escape, report_not_supported, socket_option
from concentrator.cli.control import read_via_daemon
from concentrator.cli.exitcodes import Exit, exit_for
from concentrator.polling.direct import not_supported, read_direct
from concentrator.polling.scan import ScanResult, scan
from drivers.errors import DriverError, PortBusy
from drivers.meter_ids import address_problem
from drivers.port_lock import Holder
from drivers.readers import PROTOCOL_NAMES
from drivers.serial_bus import Parity, SerialBus, SerialSettings

# Each protocol's usual line: 645-2007 2400 8E1, 645-1997 1200 8E1, 698.45 9600 8E1 (docs/
# protocols-dlt698-645-1997.md, "Default line settings"), Modbus 9600 8N1. A mixed bus
# runs at one speed: "auto" assumes 2400 unless --baud says otherwise.
PROTOCOL_DEFAULTS: dict[str, tuple[int, Parity]] = {
    "auto": (2400, "E"),
    "dlt645": (2400, "E"),
    "dlt645-1997": (1200, "E"),
    "dlt698": (9600, "E"),
    "modbus": (9600, "N"),
}
DLT_PROTOCOLS = ["auto", "dlt645", "dlt645-1997", "dlt698"]
SCAN_ORDER = ("dlt645", "dlt698", "dlt645-1997")  # what `scan --protocol auto` searches

_port_option = click.option("--port", required=True, help="Serial device, e.g. /dev/ttyS1.")
# Unset, each protocol's usual line settings.
_baud_option = baud_option(
    default=None,
    help="Line speed (default: auto and DL/T 645 2400, DL/T 645-1997 1200, "
    "DL/T 698.45 and Modbus 9600).",
)
_parity_option = parity_option("Parity (default: DL/T E, i.e. 8E1; Modbus N, i.e. 8N1).")
_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=0.6,
    show_default=True,
    help="Seconds to wait for the first reply byte (DL/T 645 meters may take 0.5 s).",
)


def describe(exc: DriverError) -> str:
    """An error of a direct-mode command in words; a port the running daemon holds
    says how to reach the meter instead (the daemon reads between two of its polls)."""
    text = str(exc)
    if isinstance(exc, PortBusy) and isinstance(exc.holder, Holder) and _is_daemon(exc.holder):
        text += (
            "; the concentrator daemon polls this bus: use `concentrator read METER` "
            "through the daemon, or stop it first"
        )
    return text


def _is_daemon(holder: Holder) -> bool:
    """Whether a command line is `concentrator run` (as a script or `python -m`)."""
    argv = list(holder.argv)
    for i, part in enumerate(argv):
        if Path(part).name == "concentrator":
            return argv[i + 1 : i + 2] == ["run"]
        if part == "-m" and argv[i + 1 : i + 2] == ["concentrator"]:
            return argv[i + 2 : i + 3] == ["run"]
    return False


def _settings(
    port: str, protocol: str, baud: int | None, parity: str | None, timeout: float
) -> SerialSettings:
    default_baud, default_parity = PROTOCOL_DEFAULTS[protocol]
    return SerialSettings(
        port=port,
        baud=default_baud if baud is None else baud,
        parity=(parity or default_parity),  # type: ignore[arg-type]
        response_timeout=timeout,
    )


@click.command()
@click.option(
    "--port",
    default=None,
    help="Serial device, e.g. /dev/ttyS1: direct mode. Without it the running daemon reads.",
)
@click.option(
    "--protocol",
    type=click.Choice([*DLT_PROTOCOLS, "modbus"]),
    default="auto",
    show_default=True,
    help="auto: find which of DL/T 645-2007, 698.45 and 645-1997 the meter answers, "
    "and say so; or read in the one named.",
)
@click.option(
    "--address",
    default=None,
    help="DL/T 645: 12-digit address (AA wildcards allowed); Modbus: slave id. "
    "Required with --port; through the daemon the meter may be named as METER instead.",
)
@_baud_option
@_parity_option
@click.option(
    "--model",
    type=click.Choice(["sdm630", "sdm120"]),
    default="sdm630",
    show_default=True,
    help="Modbus meter family (register map).",
)
@_timeout_option
@click.option(
    "--retries",
    type=click.IntRange(0, 10),
    default=1,
    show_default=True,
    help="Extra tries of a request that got no reply or a garbled one.",
)
@json_option()
@socket_option
@click.argument("quantities", nargs=-1, metavar="[METER] [QUANTITY]...")
@click.pass_context
def read(
    ctx: click.Context,
    port: str | None,
    protocol: str,
    address: str | None,
    baud: int | None,
    parity: str | None,
    model: str,
    timeout: float,
    retries: int,
    as_json: bool,
    socket_path: Path,
    quantities: tuple[str, ...],
) -> None:
    """Read quantities (names such as voltage_a, or DI codes) from one meter.

    \b
    concentrator read METER [QUANTITY]...                  through the running daemon
    concentrator read --port P --address A [QUANTITY]...   direct mode, no daemon

    With no quantity named, every quantity the meter type supports is read. What the
    meter reports as not supported is listed as such, named or not; the read fails
    (exit 5) only when nothing asked for could be read.
    """
    if port is None:
        direct_only = ("protocol", "baud", "parity", "model", "timeout", "retries")
        given = [
            name
            for name in direct_only
            if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        ]
        if given:
            raise click.UsageError(
                f"--{given[0]} is for direct mode (with --port); the daemon reads with its "
                "configured bus settings"
            )
        if address is None:
            if not quantities:
                raise click.UsageError(
                    "name the meter: concentrator read METER [QUANTITY]... "
                    "(or --port P --address A for direct mode)"
                )
            address, quantities = quantities[0], quantities[1:]
        read_via_daemon(socket_path, address, quantities, as_json)
        return
    if address is None:
        raise click.UsageError("Missing option '--address' (needed with --port).")
    # A usage error, found before any traffic on the bus.
    problem = address_problem("dlt645" if protocol == "auto" else protocol, address, wildcards=True)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--address")
    settings = _settings(port, protocol, baud, parity, timeout)
    used: list[str] = []
    try:
        readings, failures = asyncio.run(
            read_direct(
                settings, protocol, address, model, quantities, retries, on_protocol=used.append
            )
        )
    except DriverError as exc:
        # One line, never wrapped: field scripts grep for it.
        err_console.print(
            f"[red]error:[/red] meter {address}: {escape(describe(exc))}", soft_wrap=True
        )
        sys.exit(exit_for(exc))
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="QUANTITIES") from None
    found = used[0] if used else protocol
    unsupported = [name for name, exc in failures if not_supported(exc, found)]
    errors = [(name, exc) for name, exc in failures if not not_supported(exc, found)]
    how = "detected" if protocol == "auto" else "as asked"
    if as_json:
        doc: dict[str, Any] = {
            "meter": address,
            "protocol": found,
            "protocol_detected": protocol == "auto",
            "readings": [
                {
                    "di": r.key,
                    "name": r.quantity,
                    "value": r.value,
                    "unit": r.unit,
                    "read_at": r.read_at,
                }
                for r in readings
            ],
        }
        if unsupported:
            doc["not_supported"] = unsupported
        if errors:
            doc["errors"] = [{"name": name, "error": str(exc)} for name, exc in errors]
        click.echo(json.dumps(doc))
    else:
        print_table(
            READING_COLUMNS,
            [(r.quantity, r.key, r.value, r.unit) for r in readings],
            title=f"meter {address} on {port}: {PROTOCOL_NAMES[found]} ({how})",
        )
    for name, failure in errors:
        err_console.print(
            f"[red]error:[/red] meter {address}, {name}: {escape(str(failure))}", soft_wrap=True
        )
    code = report_not_supported(address, unsupported, read_any=bool(readings), as_json=as_json)
    if errors:
        sys.exit(exit_for(errors[0][1]))
    if code:
        sys.exit(code)


@click.command("scan")
@_port_option
@click.option(
    "--protocol",
    type=click.Choice(DLT_PROTOCOLS),
    default="auto",
    show_default=True,
    help="auto: search for DL/T 645-2007, then 698.45, then 645-1997 meters, and say "
    "which each one answered; or search in the one named.",
)
@_baud_option
@_parity_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=0.6,
    show_default=True,
    help="Seconds each probe listens for answers: silence this long means no meter there.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 5),
    default=1,
    show_default=True,
    help="Extra probes that must agree before a branch counts as empty or as one meter.",
)
@json_option()
def scan_command(
    port: str,
    protocol: str,
    baud: int | None,
    parity: str | None,
    timeout: float,
    retries: int,
    as_json: bool,
) -> None:
    """Find every DL/T 645-2007, 698.45 and 645-1997 meter on a bus by wildcard-address
    search, and say which protocol each answered.

    Exits 0 only with a list it is sure of; branches it could not resolve are listed
    and the exit code is 4.
    """
    settings = _settings(port, protocol, baud, parity, timeout)
    try:
        protocols = SCAN_ORDER if protocol == "auto" else (protocol,)
        result = asyncio.run(_scan(settings, retries, protocols, show_progress=not as_json))
    except DriverError as exc:
        err_console.print(
            f"[red]error:[/red] scan of {port}: {escape(describe(exc))}", soft_wrap=True
        )
        sys.exit(exit_for(exc))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "port": port,
                    "meters": result.addresses,
                    "protocols": result.protocols,
                    "complete": result.complete,
                    "probes": result.probes,
                    "collisions": result.collisions,
                    "unresolved": result.unresolved,
                }
            )
        )
    else:
        for address in result.addresses:
            click.echo(f"{address} {result.protocols.get(address, protocol)}")
        err_console.print(
            f"{len(result.addresses)} meter(s) found with {result.probes} probes "
            f"({result.collisions} collisions)"
        )
    if result.unresolved:
        listed = "; ".join(f"{p}: {result.reasons[p]}" for p in result.unresolved)
        err_console.print(
            "[red]error:[/red]",
            escape(
                f"scan of {port} incomplete, the list above may miss meters: unresolved {listed}"
            ),
            soft_wrap=True,
        )
        sys.exit(Exit.GARBLED)


async def _scan(
    settings: SerialSettings, retries: int, protocols: tuple[str, ...], *, show_progress: bool
) -> ScanResult:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    async with SerialBus(settings) as bus:
        with Progress(
            TextColumn("scanning"),
            BarColumn(),
            TextColumn(
                "{task.completed} probes, {task.fields[pending]} branches to go, "
                "{task.fields[found]} found"
            ),
            TimeElapsedColumn(),
            console=err_console.rich(),
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("scan", total=None, found=0, pending=1)

            def update(result: ScanResult, pending: int) -> None:
                progress.update(
                    task, completed=result.probes, pending=pending, found=len(result.addresses)
                )

            return await scan(bus, retries=retries, progress=update, protocols=protocols)
