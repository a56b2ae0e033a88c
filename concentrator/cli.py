"""``concentrator``: the field engineer's command line.

Direct mode (``read --port``, ``scan``) opens the serial port itself, for commissioning a
bus before any daemon runs. ``status``, ``meters``, ``read METER``, ``relay``,
``time-sync``, ``events``, ``buffer``, ``flush``, ``backfill`` and ``logs`` ask the
running daemon over its control socket (``concentrator.control``). Exit codes are
listed in ``concentrator.exitcodes``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from click.core import ParameterSource
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from concentrator.config import DEFAULT_CONTROL_SOCKET, ConfigError, load_config
from concentrator.control.client import ControlClient, DaemonUnreachable, result_of
from concentrator.control.logring import LOG_RING_LINES
from concentrator.control.protocol import ControlError, ErrorCode
from concentrator.exitcodes import Exit, exit_for, exit_for_control
from concentrator.polling.direct import not_supported, read_direct
from concentrator.polling.scan import ScanResult, scan
from drivers.errors import DriverError
from drivers.readers import Dlt645Reader
from drivers.serial_bus import Parity, SerialBus, SerialSettings

PROTOCOL_DEFAULTS: dict[str, tuple[int, Parity]] = {"dlt645": (2400, "E"), "modbus": (9600, "N")}

T = TypeVar("T")

err_console = Console(stderr=True)


@click.group()
@click.version_option(package_name="meterflow")
def main() -> None:
    """meterflow concentrator: read meters, run the daemon, talk to it."""


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


_port_option = click.option("--port", required=True, help="Serial device, e.g. /dev/ttyS1.")
_baud_option = click.option(
    "--baud",
    type=click.IntRange(0),
    default=None,
    help="Line speed (default: DL/T 645 2400, Modbus 9600).",
)
_parity_option = click.option(
    "--parity",
    type=click.Choice(["E", "N", "O"]),
    default=None,
    help="Parity (default: DL/T 645 E, i.e. 8E1; Modbus N, i.e. 8N1).",
)
_timeout_option = click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=0.6,
    show_default=True,
    help="Seconds to wait for the first reply byte (DL/T 645 meters may take 0.5 s).",
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
_socket_option = click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROL_SOCKET,
    show_default=True,
    envvar="MF_CONTROL_SOCKET",
    show_envvar=True,
    help="The running daemon's control socket.",
)


@main.command()
@click.option(
    "--port",
    default=None,
    help="Serial device, e.g. /dev/ttyS1: direct mode. Without it the running daemon reads.",
)
@click.option(
    "--protocol", type=click.Choice(["dlt645", "modbus"]), default="dlt645", show_default=True
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
@_json_option
@_socket_option
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

    With no quantity named, every quantity the meter type supports is read; values the
    meter reports as not supported are then listed as such instead of failing.
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
        _read_via_daemon(socket_path, address, quantities, as_json)
        return
    if address is None:
        raise click.UsageError("Missing option '--address' (needed with --port).")
    settings = _settings(port, protocol, baud, parity, timeout)
    try:
        readings, failures = asyncio.run(
            read_direct(settings, protocol, address, model, quantities, retries)
        )
    except DriverError as exc:
        err_console.print(f"[red]error:[/red] meter {address}: {exc}")
        sys.exit(exit_for(exc))
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="QUANTITIES") from None
    if as_json:
        doc: dict[str, Any] = {
            "meter": address,
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
        if failures:
            doc["errors"] = [{"name": name, "error": str(exc)} for name, exc in failures]
        click.echo(json.dumps(doc))
    else:
        table = Table(title=f"meter {address} on {port}")
        table.add_column("quantity")
        table.add_column("id")
        table.add_column("value", justify="right")
        table.add_column("unit")
        for r in readings:
            table.add_row(r.quantity, r.key, r.value, r.unit)
        Console().print(table)
    hard = [(n, e) for n, e in failures if quantities or not not_supported(e)]
    for name, failure in failures:
        if (name, failure) in hard:
            err_console.print(f"[red]error:[/red] meter {address}, {name}: {failure}")
        elif not as_json:
            err_console.print(f"[yellow]not supported by meter {address}:[/yellow] {name}")
    if hard:
        sys.exit(exit_for(hard[0][1]))


@main.command("scan")
@_port_option
@click.option("--protocol", type=click.Choice(["dlt645"]), default="dlt645", show_default=True)
@_baud_option
@_parity_option
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.01),
    default=0.6,
    show_default=True,
    help="Seconds of silence that mean no meter matches a probe.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 5),
    default=1,
    show_default=True,
    help="Extra tries for a garbled probe of one full address and for confirmations.",
)
@_json_option
def scan_command(
    port: str,
    protocol: str,
    baud: int | None,
    parity: str | None,
    timeout: float,
    retries: int,
    as_json: bool,
) -> None:
    """Find every DL/T 645 meter on a bus by wildcard-address search."""
    settings = _settings(port, protocol, baud, parity, timeout)
    try:
        result = asyncio.run(_scan(settings, retries, show_progress=not as_json))
    except DriverError as exc:
        err_console.print(f"[red]error:[/red] scan of {port}: {exc}")
        sys.exit(exit_for(exc))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "port": port,
                    "meters": result.addresses,
                    "probes": result.probes,
                    "collisions": result.collisions,
                    "unresolved": result.unresolved,
                }
            )
        )
    else:
        for address in result.addresses:
            click.echo(address)
        err_console.print(
            f"{len(result.addresses)} meter(s) found with {result.probes} probes "
            f"({result.collisions} collisions)"
        )
    if result.unresolved:
        err_console.print(
            f"[red]error:[/red] addresses still garbled when fully specified "
            f"(duplicate address or noisy line): {', '.join(result.unresolved)}"
        )
        sys.exit(Exit.GARBLED)


async def _scan(settings: SerialSettings, retries: int, *, show_progress: bool) -> ScanResult:
    async with SerialBus(settings) as bus:
        reader = Dlt645Reader(bus)
        with Progress(
            TextColumn("scanning"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total} probes, {task.fields[found]} found"),
            TimeElapsedColumn(),
            console=err_console,
            disable=not show_progress,
        ) as progress:
            task = progress.add_task("scan", total=1, found=0)

            def update(result: ScanResult, pending: int) -> None:
                done = result.probes
                progress.update(
                    task, completed=done, total=done + pending, found=len(result.addresses)
                )

            return await scan(reader, retries=retries, progress=update)


@main.group("config")
def config_group() -> None:
    """Check the concentrator's configuration file."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@_json_option
def config_check(file: Path, as_json: bool) -> None:
    """Check FILE and list every problem in it as FILE:LINE: FIELD: message."""
    try:
        config = load_config(file)
    except ConfigError as exc:
        issues = exc.issues
    else:
        issues = []
    if as_json:
        click.echo(json.dumps({"ok": not issues, "issues": [i.as_dict() for i in issues]}))
    elif not issues:
        click.echo(
            f"{file}: OK ({len(config.buses)} buses, {len(config.meters)} meters, "
            f"{len(config.tasks)} tasks)"
        )
    else:
        # Plain echo, not rich: "[meter]" in a message is text, not console markup.
        for issue in issues:
            click.echo(str(issue), err=True)
    if issues:
        sys.exit(Exit.CONFIG)


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Concentrator configuration (TOML).",
)
@click.option(
    "--time-scale",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    help="Wall-clock seconds per real second (tests and demos only).",
)
@click.option(
    "--control-socket",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Control socket for the field CLI (default: [concentrator] control_socket, "
    f"else {DEFAULT_CONTROL_SOCKET}).",
)
@click.option(
    "--time-origin",
    type=float,
    default=None,
    help="With --time-scale: the real unix time at which scaled time equals real time, "
    "so that restarts continue the same scaled clock (tests only).",
)
@click.option(
    "--clock-step-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="With --time-scale: a file holding seconds added to the wall clock, re-read every "
    "second, so a test can step the running daemon's clock (tests only).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="json: one object per line with meter/bus fields, for journald and log shippers.",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def run(
    config_path: Path,
    time_scale: float,
    control_socket: Path | None,
    time_origin: float | None,
    clock_step_file: Path | None,
    log_format: str,
    verbose: int,
) -> None:
    """Run the concentrator daemon until SIGTERM; SIGHUP reloads the config."""
    import logging

    if clock_step_file is not None and time_scale == 1.0:
        raise click.UsageError("--clock-step-file needs --time-scale (a test clock)")

    from concentrator.config import ConfigError
    from concentrator.daemon import run_daemon
    from concentrator.logfmt import formatter

    # stderr shows what -v asks for; `concentrator logs` keeps INFO and up regardless.
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    stderr = logging.StreamHandler()
    stderr.setLevel(level)
    stderr.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.addHandler(stderr)
    root.setLevel(min(level, logging.INFO))
    try:
        code = run_daemon(
            config_path,
            time_scale=time_scale,
            control_socket=control_socket,
            time_origin=time_origin,
            clock_step_file=clock_step_file,
        )
    except ConfigError as exc:
        err_console.print("[red]invalid configuration, not starting:[/red]")
        click.echo(str(exc), err=True)  # plain: "[meter]" in an issue is text, not markup
        sys.exit(Exit.CONFIG)
    if code:
        sys.exit(code)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Concentrator configuration (TOML), passed on to `concentrator run`.",
)
@click.option(
    "--releases",
    "releases_dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Release directory (default: [update] releases_dir, else 'releases' beside the store).",
)
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED)
def supervise(config_path: Path, releases_dir: Path | None, run_args: tuple[str, ...]) -> None:
    """Run the daemon from the current release, as its guard: switch to a release the
    updater installed, judge it for its health window, and roll it back when it does not
    poll, store and get an uplink batch acknowledged. RUN_ARGS go to `concentrator run`."""
    import logging

    from concentrator.config import ConfigError, load_config
    from concentrator.update.releases import Releases
    from concentrator.update.supervisor import Supervisor

    try:
        config = load_config(config_path)
    except ConfigError as exc:
        err_console.print("[red]invalid configuration, not starting:[/red]")
        click.echo(str(exc), err=True)
        sys.exit(Exit.CONFIG)
    if releases_dir is None:
        releases_dir = config.releases_dir
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s supervise %(levelname)s %(message)s"
    )
    guard = Supervisor(
        Releases(releases_dir),
        ["--config", str(config_path.resolve()), *run_args],
        config.storage.path.with_suffix(".status.json"),
    )
    sys.exit(guard.run())


@main.command()
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(path_type=Path),
    help="Concentrator configuration (TOML); its store is opened read-only.",
)
@click.option(
    "--days",
    type=click.IntRange(1, 62),
    default=1,
    show_default=True,
    help="How many days back (the current day included).",
)
@_json_option
def stats(config_path: Path, days: int, as_json: bool) -> None:
    """Read-success rate per day, bus and meter, and the backlog, from the store."""
    from concentrator.config import ConfigError, load_config
    from concentrator.control.metrics import collect_metrics

    try:
        cfg = load_config(config_path)
    except ConfigError as exc:
        err_console.print("[red]invalid configuration:[/red]")
        click.echo(str(exc), err=True)
        sys.exit(Exit.CONFIG)
    report = collect_metrics(cfg, days=days)
    if as_json:
        click.echo(json.dumps(report))
        return
    console = Console()
    table = Table(title=f"read success, {cfg.concentrator.id}")
    for col in ("scope", "read", "missing", "rate"):
        table.add_column(col, justify="right" if col != "scope" else "left")
    for scope, label in (("days", "day"), ("buses", "bus"), ("meters", "meter")):
        for key, row in report[scope].items():
            rate = "-" if row["rate"] is None else f"{row['rate'] * 100:.2f} %"
            table.add_row(f"{label} {key}", str(row["read"]), str(row["missing"]), rate)
    console.print(table)
    b = report["backlog"]
    console.print(
        f"backlog: {b['readings']} readings, {b['events']} events; "
        f"oldest undelivered slot {b['oldest_slot_iso'] or '-'}"
    )


# ---------------------------------------------------------------------- the running daemon
# These commands talk to `concentrator run` over its control socket (concentrator/control.py).


def _fail(message: str, code: int) -> NoReturn:
    # One line, never wrapped: field scripts grep for it. Plain text after the prefix.
    err_console.print("[red]error:[/red]", escape(message), soft_wrap=True)
    sys.exit(code)


def _stream(
    socket_path: Path,
    cmd: str,
    args: dict[str, Any] | None = None,
    *,
    timeout: float | None = 300.0,
) -> Iterator[dict[str, Any]]:
    """Every line of the daemon's answer; a failure to reach it exits with its code."""
    try:
        yield from ControlClient(socket_path, timeout=timeout).stream(cmd, args)
    except DaemonUnreachable as exc:
        _fail(str(exc), Exit.REFUSED if exc.running else Exit.DAEMON_DOWN)
    except ControlError as exc:
        _fail(exc.message, exit_for_control(exc.code))
    except TimeoutError:
        _fail(f"the daemon at {socket_path} did not answer within {timeout:g} s", Exit.FAILURE)
    except OSError as exc:
        _fail(f"lost the daemon at {socket_path}: {exc}", Exit.DAEMON_DOWN)


def _final(doc: dict[str, Any]) -> dict[str, Any]:
    try:
        return result_of(doc)
    except ControlError as exc:
        _fail(exc.message, exit_for_control(exc.code))


def _daemon_call(socket_path: Path, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    final: dict[str, Any] = {}
    for doc in _stream(socket_path, cmd, args):
        final = doc
    return _final(final)


def _tz(text: object) -> dt.tzinfo | None:
    try:
        return dt.datetime.strptime(str(text), "%z").tzinfo
    except ValueError:
        return None


def _when(t: float | None, tz: dt.tzinfo | None) -> str:
    if t is None:
        return "-"
    return dt.datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M:%S")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _rate(read: int, missing: int) -> str:
    total = read + missing
    return f"{read / total * 100:.2f} %" if total else "-"


def _compact(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _modem_line(modem: dict[str, Any] | None) -> str:
    if modem is None:
        return "not configured"
    state = "link up" if modem["link_up"] else f"link DOWN ({modem['cause']})"
    signal = "-" if modem["rssi_dbm"] is None else f"{modem['rssi_dbm']} dBm"
    return (
        f"{state}, {modem['registration']}, {modem['operator'] or '-'}, signal {signal}; "
        f"{modem['outages']} outages, {modem['resets']} resets, {modem['hangs']} hangs"
    )


def _uplink_line(uplink: dict[str, Any] | None) -> str:
    if uplink is None:
        return "not configured"
    state = "connected" if uplink["connected"] else "not connected"
    return (
        f"{state}, {uplink['in_flight']} batches in flight, {uplink['batches_acked']} acked, "
        f"{uplink['batches_resent']} resent, {uplink['rejected']} rejected"
    )


@main.command()
@_socket_option
@_json_option
def status(socket_path: Path, as_json: bool) -> None:
    """The running daemon: uptime, buses, meter health, today's read success, backlog,
    uplink."""
    doc = _daemon_call(socket_path, "status")
    if as_json:
        click.echo(json.dumps(doc))
        return
    tz = _tz(doc["timezone"])
    m, today, b = doc["meters"], doc["today"], doc["backlog"]
    console = Console()
    for line in (
        f"concentrator {doc['concentrator']}  version {doc['version']}  pid {doc['pid']}  "
        f"up {_age(doc['uptime_s'])}",
        f"clock    {_when(doc['wall'], tz)} ({doc['timezone']})",
        f"meters   {m['total']}: {m['online']} online, {m['degraded']} degraded, "
        f"{m['offline']} offline, {m['unknown']} not read yet",
        f"today    {_rate(today['read'], today['missing'])} read success "
        f"({today['read']} read, {today['missing']} missing)",
        f"backlog  {b['readings']} readings, {b['events']} events undelivered; "
        f"oldest read {_age(b['oldest_age_s'])} ago",
        f"uplink   {_uplink_line(doc['uplink'])}",
        f"modem    {_modem_line(doc['modem'])}",
    ):
        _plain(console, line)
    table = Table(title="buses")
    for col in ("bus", "type", "busy", "utilisation", "queued", "transactions", "timeouts"):
        table.add_column(col, justify="left" if col in ("bus", "type") else "right")
    for col in ("frame errors", "reads", "missing"):
        table.add_column(col, justify="right")
    for name, bus in doc["buses"].items():
        table.add_row(
            name,
            bus["type"],
            "yes" if bus["busy"] else "no",
            f"{bus['utilisation'] * 100:.1f} %",
            str(bus["queued"]),
            str(bus["transactions"]),
            str(bus["timeouts"]),
            str(bus["frame_errors"]),
            str(bus["reads_ok"]),
            str(bus["missing"]),
        )
    console.print(table)


@main.command()
@click.option("--offline", is_flag=True, help="Only the meters that are offline.")
@click.option("--bus", default=None, help="Only the meters on this bus.")
@_socket_option
@_json_option
def meters(offline: bool, bus: str | None, socket_path: Path, as_json: bool) -> None:
    """Every configured meter: bus, protocol, health, last read, today's read/missing."""
    doc = _daemon_call(socket_path, "meters", {"offline": offline, "bus": bus})
    if as_json:
        click.echo(json.dumps(doc))
        return
    tz = _tz(doc["timezone"])
    table = Table(
        title="meters" + (" (offline)" if offline else "") + (f" on {bus}" if bus else "")
    )
    for col in ("meter", "bus", "protocol", "state", "last read", "read today", "missing today"):
        table.add_column(col, justify="right" if "today" in col else "left")
    table.add_column("last error")
    for row in doc["meters"]:
        table.add_row(
            row["address"],
            row["bus"],
            row["protocol"],
            row["state"],
            _when(row["last_read_at"], tz),
            str(row["read_today"]),
            str(row["missing_today"]),
            escape(row["last_error"] or ""),
        )
    console = Console()
    console.print(table)
    _plain(console, f"{len(doc['meters'])} meter(s)")


def _read_via_daemon(
    socket_path: Path, address: str, quantities: Sequence[str], as_json: bool
) -> None:
    doc = _daemon_call(socket_path, "read", {"meter": address, "quantities": list(quantities)})
    unsupported: list[str] = doc["not_supported"]
    if as_json:
        out = {"meter": doc["meter"], "bus": doc["bus"], "readings": doc["readings"]}
        if unsupported:
            out["not_supported"] = unsupported
        click.echo(json.dumps(out))
    else:
        table = Table(title=f"meter {doc['meter']} on {doc['bus']} (daemon)")
        table.add_column("quantity")
        table.add_column("id")
        table.add_column("value", justify="right")
        table.add_column("unit")
        for r in doc["readings"]:
            table.add_row(r["name"], r["di"], r["value"], r["unit"])
        Console().print(table)
    # As in direct mode: a quantity asked for by name must be read; of the default set,
    # what the meter does not have is only listed.
    for name in unsupported:
        if quantities:
            err_console.print(
                "[red]error:[/red]",
                escape(f"meter {address}, {name}: not supported by the meter"),
                soft_wrap=True,
            )
        elif not as_json:
            err_console.print(f"[yellow]not supported by meter {address}:[/yellow] {name}")
    if unsupported and quantities:
        sys.exit(Exit.METER_ERROR)


@main.command()
@click.argument("meter")
@click.argument("action", type=click.Choice(["open", "close"]))
@_socket_option
@_json_option
def relay(meter: str, action: str, socket_path: Path, as_json: bool) -> None:
    """Open (trip) or close a meter's load switch: DL/T 645 0x1C with the meter's
    password and operator code from the daemon's config, ahead of the polls on its bus.
    Every attempt is recorded as a "relay" event (who, when, result)."""
    doc = _daemon_call(socket_path, "relay", {"meter": meter, "action": action})
    if as_json:
        click.echo(json.dumps(doc))
        return
    state = doc["relay_state"]
    if state is None:
        text = f"meter {meter}: {action} accepted; the relay state could not be read back"
    else:
        text = f"meter {meter}: relay {state} (status word 3 = {doc['status_word_3']})"
        if action == "close" and state == "open":
            text += "; closing is allowed, the customer closes it at the meter"
    _plain(Console(), text)


@main.command("time-sync")
@_socket_option
@_json_option
def time_sync(socket_path: Path, as_json: bool) -> None:
    """Set the clock of every DL/T 645 meter: one broadcast time frame (0x08) per bus,
    sent by each bus worker between two polls. Recorded as a "time_sync" event."""
    doc = _daemon_call(socket_path, "time-sync")
    if as_json:
        click.echo(json.dumps(doc))
    else:
        table = Table(title=f"broadcast time ({doc['timezone']})")
        for col in ("bus", "meters", "result", "time sent / why not"):
            table.add_column(col, justify="right" if col == "meters" else "left")
        for row in doc["buses"]:
            detail = row.get("sent") or row.get("reason") or row.get("error", {}).get("message")
            table.add_row(row["bus"], str(row["meters"]), row["result"], escape(str(detail)))
        Console().print(table)
    failed = [row for row in doc["buses"] if row["result"] == "failed"]
    if failed:
        sys.exit(exit_for_control(failed[0]["error"]["code"]))


@main.command()
@click.option(
    "--since",
    default=None,
    help="Unix seconds, an ISO date or time (concentrator time), or an age: 30m, 2h, 1d.",
)
@click.option("--kind", default=None, help="Only this kind: relay, time_sync, meter_state, loss...")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="The newest N."
)
@_socket_option
@_json_option
def events(
    since: str | None, kind: str | None, limit: int, socket_path: Path, as_json: bool
) -> None:
    """Events from the daemon's store, oldest first (they also go upstream)."""
    doc = _daemon_call(socket_path, "events", {"since": since, "kind": kind, "limit": limit})
    if as_json:
        click.echo(json.dumps(doc))
        return
    tz = _tz(doc["timezone"])
    table = Table(title="events")
    for col in ("time", "kind", "severity", "meter", "detail"):
        table.add_column(col, overflow="fold")
    for e in doc["events"]:
        detail = " ".join(f"{k}={_compact(v)}" for k, v in e["detail"].items())
        table.add_row(
            _when(e["at"], tz), e["kind"], e["severity"], e["meter"] or "", escape(detail)
        )
    console = Console()
    console.print(table)
    _plain(console, f"{len(doc['events'])} of {doc['total']} event(s)")


@main.command()
@_socket_option
@_json_option
def buffer(socket_path: Path, as_json: bool) -> None:
    """What waits for the uplink: undelivered readings and events, the oldest one's age,
    batches in flight."""
    doc = _daemon_call(socket_path, "buffer")
    if as_json:
        click.echo(json.dumps(doc))
        return
    tz = _tz(doc["timezone"])
    console = Console()
    for line in (
        f"undelivered  {doc['readings']} readings, {doc['events']} events",
        f"oldest       slot {_when(doc['oldest_slot'], tz)}, read {_age(doc['oldest_age_s'])} ago",
        f"in flight    {doc['batches_in_flight']} batches ({doc['readings_in_flight']} readings)",
        f"not written  {doc['pending_writes']} readings"
        + (" (disk full: held in memory)" if doc["disk_full"] else ""),
        f"uplink       {_uplink_line(doc['uplink'])}",
    ):
        _plain(console, line)


@main.command()
@_socket_option
@_json_option
def flush(socket_path: Path, as_json: bool) -> None:
    """Ask the uplink to send what is waiting now instead of at its next poll."""
    doc = _daemon_call(socket_path, "flush")
    if as_json:
        click.echo(json.dumps(doc))
        return
    p = doc["pending"]
    uplink = doc["uplink"]
    text = (
        f"uplink asked to send now: {p['readings']} readings and {p['events']} events were "
        f"waiting (oldest read {_age(p['oldest_age_s'])} ago); {_uplink_line(uplink)}"
    )
    if not uplink["connected"]:
        text += "; they go as soon as the broker is reached"
    _plain(Console(), text)


@main.command()
@click.argument("meter")
@click.option(
    "--from",
    "first",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="First day (YYYY-MM-DD, concentrator time).",
)
@click.option(
    "--to",
    "last",
    type=click.DateTime(["%Y-%m-%d"]),
    required=True,
    help="Last day, included.",
)
@_socket_option
@_json_option
def backfill(
    meter: str, first: dt.datetime, last: dt.datetime, socket_path: Path, as_json: bool
) -> None:
    """Recover a meter's daily freezes of a range of days from its own history (the last
    62 days), through the daemon's backfill at low priority; shows progress."""
    args = {"meter": meter, "from": first.date().isoformat(), "to": last.date().isoformat()}
    # No timeout: a backfill waits behind the polls on a busy bus. The first line comes
    # at once; the bar appears only once the daemon answers.
    lines = _stream(socket_path, "backfill", args, timeout=None)
    final: dict[str, Any] = next(lines)
    with Progress(
        TextColumn(f"backfill {meter}"),
        BarColumn(),
        TextColumn(
            "{task.completed}/{task.total} days, "
            "{task.fields[stored]} stored, {task.fields[failed]} failed"
        ),
        TimeElapsedColumn(),
        console=err_console,
        disable=as_json,
    ) as progress:
        bar = progress.add_task("backfill", total=None, stored=0, failed=0)
        for doc in itertools.chain([final], lines):
            if "progress" in doc:
                p = doc["progress"]
                progress.update(
                    bar,
                    total=p["total"],
                    completed=p["done"],
                    stored=p["stored"],
                    failed=p["failed"],
                )
            final = doc
    result = _final(final)
    if as_json:
        click.echo(json.dumps(result))
    else:
        table = Table(title=f"daily freezes of meter {meter}")
        for col in ("day", "state", "detail"):
            table.add_column(col)
        for row in result["days"]:
            if row["state"] == "stored":
                detail = ", ".join(f"{r['name']} {r['value']}" for r in row["readings"][:2])
            else:
                detail = row.get("reason") or row.get("error", {}).get("message", "")
            table.add_row(row["day"], row["state"], escape(detail))
        Console().print(table)
    failed = [row for row in result["days"] if row["state"] == "failed"]
    if failed:
        sys.exit(exit_for_control(failed[0]["error"]["code"]))


@main.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(0, LOG_RING_LINES),
    default=50,
    show_default=True,
    help="How many recent lines first.",
)
@_socket_option
@_json_option
def logs(follow: bool, lines: int, socket_path: Path, as_json: bool) -> None:
    """The daemon's recent log lines (INFO and up, or DEBUG with run -vv), from memory."""
    final: dict[str, Any] = {}
    try:
        for doc in _stream(
            socket_path, "logs", {"lines": lines, "follow": follow}, timeout=None if follow else 300
        ):
            if "log" in doc:
                click.echo(json.dumps(doc["log"]) if as_json else doc["log"]["text"])
                sys.stdout.flush()
            final = doc
    except KeyboardInterrupt:
        return  # how a follower ends
    error = final.get("error")
    if follow and isinstance(error, dict) and error.get("code") == ErrorCode.STOPPING:
        err_console.print("the daemon stopped")
        return
    _final(final)


if __name__ == "__main__":
    main()
