"""``cloud-receiver``: the utility-side service and its queries."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
import os
import pwd
import sys
from collections.abc import Callable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from cloud_receiver import broker, pki

if TYPE_CHECKING:
    from cloud_receiver.archive import Archive
    from cloud_receiver.storage import Storage


@click.group()
@click.version_option(package_name="meterflow")
def main() -> None:
    """meterflow cloud receiver: ingest concentrator batches and answer queries."""


_db_option = click.option("--db", "db_url", required=True, help="Receiver database URL.")
_json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")

# Exit codes, as for `concentrator`: 2 = bad command line, 1 = anything else.
EXIT_FAILURE = 1


def _fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _concentrator_id(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return pki.validate_concentrator_id(value)
    except pki.PkiError as exc:
        raise click.BadParameter(str(exc)) from None


@main.command()
@click.argument("concentrator_id", callback=_concentrator_id)
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="PKI directory (created with a new CA if missing).",
)
@click.option("--broker-host", required=True, help="Host name the concentrator dials.")
@click.option("--broker-port", type=click.IntRange(1, 65535), required=True)
@click.option(
    "--rotate-key",
    is_flag=True,
    help="Add a new payload key under the next key id; old keys stay in keys.json.",
)
@click.option(
    "--keepalive",
    "keepalive_s",
    type=click.IntRange(min=0),
    default=pki.DEFAULT_KEEPALIVE_S,
    show_default=True,
    help="MQTT keepalive in seconds (each ping is paid for on GPRS).",
)
def provision(
    concentrator_id: str,
    pki_dir: Path,
    broker_host: str,
    broker_port: int,
    rotate_key: bool,
    keepalive_s: int,
) -> None:
    """Issue a concentrator's certificate and payload key; write its uplink config."""
    try:
        result = pki.provision_details(
            pki_dir,
            concentrator_id,
            broker_host=broker_host,
            broker_port=broker_port,
            rotate_key=rotate_key,
            keepalive_s=keepalive_s,
        )
    except pki.PkiError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"{pki_dir}: {exc}")
    for path in result.files:
        click.echo(str(path))
    click.echo(str(pki_dir / pki.KEY_REGISTRY))
    note = "new key" if result.new_key else "existing key kept"
    click.echo(f"{concentrator_id}: key id {result.key_id} ({note})", err=True)


def _chown_for_broker(user: str, paths: list[Path]) -> None:
    """Let the account Mosquitto switches to read its key and write its data.

    Mosquitto 2.0 drops root privileges *before* it loads the TLS key, so a root-owned
    0600 key would stop it at start-up ("Unable to load server key file").
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        click.echo(
            f"warning: user {user!r} does not exist; Mosquitto started as root will not "
            f"be able to switch to it (pass --run-as)",
            err=True,
        )
        return
    for path in paths:
        os.chown(path, entry.pw_uid, entry.pw_gid)


@main.command("broker-config")
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="PKI directory (created with a new CA if missing).",
)
@click.option("--port", type=click.IntRange(1, 65535), required=True)
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="Mosquitto config to write; the ACL goes next to it with suffix .acl.",
)
@click.option("--bind", default="127.0.0.1", show_default=True, help="Listen address.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Persistence directory [default: mosquitto-data next to --out].",
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Host name in the broker certificate (repeatable) [default: localhost].",
)
@click.option(
    "--ip",
    "ips",
    multiple=True,
    help="IP address in the broker certificate (repeatable) [default: 127.0.0.1].",
)
@click.option(
    "--receiver",
    "receivers",
    multiple=True,
    help="Receiver identity (certificate CN, repeatable; one per receiver instance) "
    "[default: receiver].",
)
@click.option(
    "--run-as",
    default=None,
    help="Account Mosquitto switches to when started as root [Mosquitto: mosquitto].",
)
def broker_config(
    pki_dir: Path,
    port: int,
    out: Path,
    bind: str,
    data_dir: Path | None,
    hostnames: tuple[str, ...],
    ips: tuple[str, ...],
    receivers: tuple[str, ...],
    run_as: str | None,
) -> None:
    """Write a Mosquitto 2.x config and ACL; issue the broker and receiver certificates."""
    receivers = receivers or (pki.RECEIVER_NAME,)
    data_dir = data_dir if data_dir is not None else out.parent / "mosquitto-data"
    if not hostnames and not ips:
        hostnames, ips = ("localhost",), ("127.0.0.1",)
        if bind not in ("127.0.0.1", "0.0.0.0", "::", "localhost"):
            ips = (*ips, bind)
    try:
        for name in receivers:
            if not pki.CONCENTRATOR_ID_RE.fullmatch(name) or name in (
                pki.CA_NAME,
                pki.SERVER_NAME,
            ):
                raise click.BadParameter(
                    f"{name!r} is not a usable identity ([A-Za-z0-9._-]{{1,64}}, "
                    "not 'ca' or 'server')",
                    param_hint="--receiver",
                )
        pki.init_pki(pki_dir)
        written = [
            *pki.ensure_server_cert(pki_dir, hostnames, ips),
            *(p for name in receivers for p in pki.ensure_client_cert(pki_dir, name)),
        ]
        conf = broker.write_mosquitto_config(
            out,
            pki_dir=pki_dir,
            port=port,
            bind=bind,
            data_dir=data_dir,
            receivers=receivers,
            run_as=run_as,
        )
        if os.geteuid() == 0 and (run_as or "mosquitto") != "root":
            _chown_for_broker(run_as or "mosquitto", [pki_dir / f"{pki.SERVER_NAME}.key", data_dir])
    except pki.PkiError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(str(exc))
    for path in [conf, conf.with_suffix(".acl"), *written]:
        click.echo(str(path))


def _broker_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r}: expected HOST:PORT, e.g. broker.example:8883")
    return host, int(port)


@main.command()
@click.option("--broker", "broker_addr", required=True, help="Broker HOST:PORT (TLS).")
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="Deployment PKI: ca.crt, the receiver's certificate, keys.json.",
)
@click.option(
    "--db",
    "db_url",
    required=True,
    help="sqlite:///PATH (default backend) or postgresql://… (scale-out).",
)
@click.option(
    "--receiver",
    "receiver_name",
    default=pki.RECEIVER_NAME,
    show_default=True,
    help="Receiver identity: certificate CN, also the MQTT client id.",
)
@click.option(
    "--share-group",
    default="receivers",
    show_default=True,
    help="Shared-subscription group; receivers in one group split the load.",
)
@click.option(
    "--cutoff-hours",
    default="08:00-18:00",
    show_default=True,
    help="Prepayment: local hours in which a supply may be cut off (00:00-24:00: any).",
)
@click.option(
    "--holiday",
    "holidays",
    multiple=True,
    metavar="YYYY-MM-DD",
    help="Prepayment: a day without cut-offs (repeat).",
)
@click.option(
    "--tz", "tz_text", default="+08:00", show_default=True, help="Local time zone (UTC offset)."
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
def run(
    broker_addr: str,
    pki_dir: Path,
    db_url: str,
    receiver_name: str,
    share_group: str,
    cutoff_hours: str,
    holidays: tuple[str, ...],
    tz_text: str,
    verbose: int,
) -> None:
    """Ingest batches until SIGTERM: verify, decrypt, store exactly once, then ack."""
    import asyncio
    import logging
    import signal

    from cloud_receiver.service import BrokerSettings, Ingestor, KeyRegistry, ReceiverService
    from cloud_receiver.storage import open_storage

    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from cloud_receiver import prepay

    try:
        policy = prepay.Policy.parse(cutoff_hours, holidays, tz_text)
    except prepay.PrepayError as exc:
        raise click.BadParameter(str(exc)) from None
    host, port = _broker_address(broker_addr)
    cert, key = pki_dir / f"{receiver_name}.crt", pki_dir / f"{receiver_name}.key"
    # Commands (and prepaid disconnections) need the utility's signing key.
    command_key = pki.command_key(pki_dir) if (pki_dir / pki.COMMAND_KEY).exists() else None
    for path in (pki_dir / "ca.crt", cert, key):
        if not path.is_file():
            _fail(f"{path} is missing: run `cloud-receiver broker-config` (or provision) first")
    try:
        storage = open_storage(db_url)
    except Exception as exc:  # a wrong URL or an unreachable server: say which
        _fail(f"cannot open database {db_url}: {exc}")
    ingestor = Ingestor(storage, KeyRegistry(pki_dir / pki.KEY_REGISTRY).lookup)
    service = ReceiverService(
        ingestor,
        BrokerSettings(
            host,
            port,
            pki_dir / "ca.crt",
            cert,
            key,
            client_id=receiver_name,
            share_group=share_group,
        ),
        command_key=command_key,
        prepay_policy=policy,
    )

    async def main_loop() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    try:
        asyncio.run(main_loop())
    finally:
        storage.close()


def _open_db(db_url: str) -> Any:
    from cloud_receiver.storage import open_storage

    try:
        return open_storage(db_url)
    except Exception as exc:
        _fail(f"cannot open database {db_url}: {exc}")


def _time_arg(text: str | None) -> int | None:
    """Unix seconds or an ISO date/time (local time when no offset is given)."""
    if text is None:
        return None
    import datetime as dt

    if text.lstrip("-").isdigit():
        return int(text)
    try:
        return int(dt.datetime.fromisoformat(text).timestamp())
    except ValueError:
        raise click.BadParameter(f"{text!r}: expected unix seconds or an ISO date/time") from None


@main.command()
@_db_option
@click.option("--meter", default=None, help="Meter address (all meters when omitted).")
@click.option("--from", "since", default=None, help="First slot: unix seconds or ISO time.")
@click.option("--to", "until", default=None, help="End slot (exclusive): unix or ISO time.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
def readings(
    db_url: str, meter: str | None, since: str | None, until: str | None, as_csv: bool
) -> None:
    """Readings the receiver stored, by meter and time range."""
    import csv

    from rich.console import Console
    from rich.table import Table

    storage = _open_db(db_url)
    try:
        rows = storage.readings(meter=meter, since=_time_arg(since), until=_time_arg(until))
    finally:
        storage.close()
    columns = (
        "meter",
        "quantity",
        "slot",
        "value",
        "unit",
        "read_at",
        "source",
        "concentrator",
        "seq",
    )
    if as_csv:
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        for r in rows:
            out.writerow([getattr(r, c) for c in columns])
        return
    table = Table(title=f"{len(rows)} readings")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(getattr(r, c)) for c in columns))
    Console().print(table)


@main.command()
@_db_option
@_json_option
def concentrators(db_url: str, as_json: bool) -> None:
    """Every concentrator heard from: last seen, batches and readings acked, sequence gaps."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    storage = _open_db(db_url)
    try:
        infos = storage.concentrators()
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in infos]))
        return
    table = Table(title="concentrators")
    for c in ("concentrator", "last seen", "batches", "readings", "max seq", "gaps"):
        table.add_column(c)
    import datetime as dt

    for i in infos:
        table.add_row(
            i.concentrator,
            dt.datetime.fromtimestamp(i.last_seen).isoformat(" ", "seconds"),
            str(i.batches),
            str(i.readings),
            str(i.max_seq),
            str(i.missing_seqs),
        )
    Console().print(table)


# ------------------------------------------------------------------ downlink commands
def _duration(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """``90s``, ``10m``, ``2h``, ``1d`` or plain seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = value.strip()
    factor = units.get(text[-1:], 1) if text else 1
    number = text[:-1] if text[-1:] in units else text
    try:
        seconds = float(number) * factor
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise click.BadParameter(f"{value!r}: expected a duration such as 90s, 10m, 2h or 1d")
    return seconds


_ACTIONS = {
    "relay-open": "relay_open",
    "relay-close": "relay_close",
    "time-sync": "time_sync",
    "clock-check": "clock_check",
    "read": "read",
    "add-meter": "add_meter",
    "remove-meter": "remove_meter",
}


@main.command()
@click.argument("action", type=click.Choice(sorted(_ACTIONS)))
@click.option("--concentrator", "concentrator_id", required=True, callback=_concentrator_id)
@click.option("--meter", "meters", multiple=True, help="Target meter (repeat for several).")
@click.option("--quantity", "quantities", multiple=True, help="read: quantities to read.")
@click.option(
    "--threshold", type=click.FloatRange(min=0), default=None, help="clock-check: seconds."
)
@click.option("--bus", default=None, help="add-meter: the bus the meter is wired to.")
@click.option("--group", default=None, help="add-meter: the meter's task group.")
@click.option("--not-before", default=None, help="Valid from: unix seconds or ISO time.")
@click.option(
    "--valid-for",
    default="1h",
    show_default=True,
    callback=_duration,
    help="How long the command may take effect after --not-before (at most 7d).",
)
@_db_option
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="PKI directory holding command.key (the utility's signing key).",
)
@_json_option
def command(
    action: str,
    concentrator_id: str,
    meters: tuple[str, ...],
    quantities: tuple[str, ...],
    threshold: float | None,
    bus: str | None,
    group: str | None,
    not_before: str | None,
    valid_for: float,
    db_url: str,
    pki_dir: Path,
    as_json: bool,
) -> None:
    """Sign a command for a concentrator and queue it; the running receiver sends it."""
    import json

    from cloud_receiver import commands as receiver_commands
    from contract.commands import CommandError

    params: dict[str, object] = {}
    if quantities:
        params["quantities"] = list(quantities)
    if threshold is not None:
        params["threshold_s"] = threshold
    if bus is not None:
        params["bus"] = bus
    if group is not None:
        params["group"] = group
    try:
        key = pki.command_key(pki_dir)
    except pki.PkiError as exc:
        _fail(str(exc))
    storage = _open_db(db_url)
    try:
        record = receiver_commands.issue(
            storage,
            key,
            concentrator=concentrator_id,
            action=_ACTIONS[action],
            meters=meters,
            params=params,
            not_before=_time_arg(not_before),
            valid_for_s=valid_for,
            issued_by=f"cli:{pwd.getpwuid(os.getuid()).pw_name}",
        )
    except CommandError as exc:
        raise click.BadParameter(str(exc)) from None
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps({"id": record.id, "counter": record.counter, "status": "issued"}))
    else:
        click.echo(
            f"command {record.id} ({action}, counter {record.counter}) queued for "
            f"{concentrator_id}; `cloud-receiver commands --id {record.id}` shows its outcome"
        )


@main.command("commands")
@_db_option
@click.option("--concentrator", "concentrator_id", default=None, help="Only this concentrator.")
@click.option(
    "--status",
    type=click.Choice(["issued", "published", "scheduled", "done", "failed", "refused", "expired"]),
    default=None,
)
@click.option("--id", "command_id", default=None, help="One command, with its audit log.")
@_json_option
def commands_list(
    db_url: str,
    concentrator_id: str | None,
    status: str | None,
    command_id: str | None,
    as_json: bool,
) -> None:
    """Commands issued and what became of them (the receiver's audit log)."""
    import dataclasses
    import datetime as dt
    import json

    from rich.console import Console
    from rich.table import Table

    storage = _open_db(db_url)
    try:
        rows = storage.commands(concentrator_id, status, command_id, limit=1000)
        log = storage.command_log(command_id) if command_id is not None else []
    finally:
        storage.close()
    if command_id is not None and not rows:
        _fail(f"no command {command_id}", EXIT_UNKNOWN)
    if as_json:
        docs = [{k: v for k, v in dataclasses.asdict(r).items() if k != "blob"} for r in rows]
        if command_id is not None:
            docs[0]["log"] = [{"at": at, "status": st, "detail": d} for at, st, d in log]
        click.echo(json.dumps(docs))
        return
    table = Table(title=f"{len(rows)} commands")
    for c in ("id", "concentrator", "counter", "action", "meters", "status", "issued", "outcome"):
        table.add_column(c)
    for r in rows:
        outcome = "" if r.result is None else str(r.result.get("reason") or r.result.get("result"))
        table.add_row(
            r.id,
            r.concentrator,
            str(r.counter),
            r.action,
            ", ".join(r.meters),
            r.status,
            dt.datetime.fromtimestamp(r.issued_at).isoformat(" ", "seconds"),
            outcome,
        )
    Console().print(table)
    for at, st, detail in log:
        when = dt.datetime.fromtimestamp(at).isoformat(" ", "seconds")
        click.echo(f"{when}  {st}  {json.dumps(detail)}")


# ------------------------------------------------------------------ prepayment
@contextlib.contextmanager
def _prepay_errors() -> Iterator[None]:
    from cloud_receiver.prepay import PrepayError

    try:
        yield
    except PrepayError as exc:
        _fail(str(exc), EXIT_UNKNOWN if str(exc).startswith("unknown account") else 2)


def _wheel_release_info(wheel: Path) -> dict[str, Any]:
    """Ask the wheel itself what it needs (``concentrator.release_info``, imported from
    the wheel's zip in a child process): the package must state the store schema of the
    release it carries, and the receiver never imports the concentrator."""
    import json
    import subprocess

    code = (
        "import json, sys; sys.path.insert(0, sys.argv[1]); "
        "from concentrator.release_info import release_info; print(json.dumps(release_info()))"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code, str(wheel)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{wheel.name}: cannot read its release information ({last})")
    info: dict[str, Any] = json.loads(done.stdout)
    return info


@main.group()
def account() -> None:
    """Prepaid accounts: one per meter, with its tariff."""


@account.command("open")
@click.argument("account_id")
@click.option("--meter", required=True, help="The meter this account pays for.")
@click.option(
    "--concentrator",
    "concentrator_id",
    required=True,
    callback=_concentrator_id,
    help="The concentrator the meter is wired to: only its readings bill the account, "
    "and its relay commands go there.",
)
@click.option("--multiplier", default="1", show_default=True, help="CT ratio: register kWh x this.")
@click.option(
    "--price",
    "prices",
    multiple=True,
    required=True,
    metavar="PERIOD=YUAN",
    help="Price per kWh: flat=0.55, or one per period with --tou (peak=0.85 ...).",
)
@click.option("--tou", default="", help="Time-of-use periods, e.g. peak=08-11,18-23;valley=23-07.")
@click.option("--grace", default="0", show_default=True, help="Credit allowed below zero (yuan).")
@click.option("--low", default="10", show_default=True, help="Low-balance warning below (yuan).")
@click.option("--tz", "tz_text", default="+08:00", show_default=True, help="Tariff time zone.")
@_db_option
def account_open(
    account_id: str,
    meter: str,
    concentrator_id: str,
    multiplier: str,
    prices: tuple[str, ...],
    tou: str,
    grace: str,
    low: str,
    tz_text: str,
    db_url: str,
) -> None:
    """Open a prepaid account for a meter (balance 0: top it up)."""
    import time
    from decimal import Decimal, InvalidOperation

    from cloud_receiver import prepay

    with _prepay_errors():
        tariff = prepay.Tariff.parse(prices, tou, tz_text)
        try:
            grace_d, low_d, ratio = Decimal(grace), Decimal(low), Decimal(multiplier)
        except InvalidOperation:
            raise prepay.PrepayError(
                f"--grace {grace!r} / --low {low!r} / --multiplier {multiplier!r}: not numbers"
            ) from None
        storage = _open_db(db_url)
        try:
            acc = prepay.open_account(
                storage,
                account_id,
                meter,
                tariff,
                concentrator=concentrator_id,
                multiplier=ratio,
                grace=grace_d,
                low=low_d,
                now=time.time(),
            )
        finally:
            storage.close()
    click.echo(f"account {acc.account} opened for meter {acc.meter}")


@main.command(context_settings={"ignore_unknown_options": True})  # "-5" is an amount
@click.argument("account_id")
@click.argument("amount")
@_db_option
def topup(account_id: str, amount: str, db_url: str) -> None:
    """Credit AMOUNT yuan to a prepaid account; a cut-off supply is restored at once
    when the balance is back at zero or above."""
    import time

    from cloud_receiver import prepay

    with _prepay_errors():
        value = prepay.money(amount, "top-up")
        storage = _open_db(db_url)
        try:
            acc = prepay.topup(
                storage,
                account_id,
                value,
                now=time.time(),
                by=f"cli:{pwd.getpwuid(os.getuid()).pw_name}",
            )
        finally:
            storage.close()
    click.echo(f"account {acc.account}: balance {prepay.balance_text(acc.balance_cents)}")


@main.command()
@click.argument("account_id")
@click.option("--ledger", "show_ledger", is_flag=True, help="Every entry of the ledger too.")
@_json_option
@_db_option
def balance(account_id: str, show_ledger: bool, as_json: bool, db_url: str) -> None:
    """A prepaid account's balance, supply state and (with --ledger) its ledger."""
    import json

    from cloud_receiver import prepay

    with _prepay_errors():
        storage = _open_db(db_url)
        try:
            acc = prepay.get_account(storage, account_id)
            entries = prepay.ledger(storage, account_id) if show_ledger or as_json else []
        finally:
            storage.close()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "account": acc.account,
                    "meter": acc.meter,
                    "balance": prepay.balance_text(acc.balance_cents),
                    "balance_cents": acc.balance_cents,
                    "state": acc.state,
                    "billed_slot": acc.billed_slot,
                    "billed_kwh": None if acc.billed_kwh is None else str(acc.billed_kwh),
                    "ledger": [
                        {"at": at, "kind": k, "ref": ref, "amount_cents": a, "balance_cents": b,
                         "detail": d}
                        for at, k, ref, a, b, d in entries
                    ],
                }
            )
        )  # fmt: skip
        return
    click.echo(
        f"account {acc.account} (meter {acc.meter}): balance "
        f"{prepay.balance_text(acc.balance_cents)}, supply {acc.state}"
    )
    for at, kind, _ref, amount, after, detail in entries:
        when = dt.datetime.fromtimestamp(at).isoformat(" ", "seconds")
        click.echo(
            f"{when}  {kind:<14} {prepay.balance_text(amount):>10}  "
            f"{prepay.balance_text(after):>10}  {json.dumps(detail)}"
        )


# ------------------------------------------------------------------ demand response
@contextlib.contextmanager
def _dr_errors() -> Iterator[None]:
    from cloud_receiver.dr import DrError

    try:
        yield
    except DrError as exc:
        _fail(str(exc), EXIT_UNKNOWN if str(exc).startswith(("unknown", "no meter")) else 2)


@main.group()
def dr() -> None:
    """Demand response: enrol meters, run an event, report its reduction."""


@dr.command("enrol")
@click.argument("group")
@click.argument("meters", nargs=-1, required=True)
@click.option(
    "--concentrator",
    "concentrator_id",
    required=True,
    callback=_concentrator_id,
    help="The concentrator these meters are wired to.",
)
@_db_option
def dr_enrol(group: str, meters: tuple[str, ...], concentrator_id: str, db_url: str) -> None:
    """Opt METERS in to demand-response group GROUP (a meter is in one group)."""
    from cloud_receiver import dr as dr_mod

    with _dr_errors():
        storage = _open_db(db_url)
        try:
            dr_mod.enrol(storage, group, meters, concentrator_id)
        finally:
            storage.close()
    click.echo(f"{len(meters)} meter(s) enrolled in {group}")


@dr.command("event")
@click.option("--group", required=True, help="Enrolled group.")
@click.option("--from", "start", required=True, help="Start: unix seconds or ISO time.")
@click.option("--to", "end", required=True, help="End: unix seconds or ISO time.")
@click.option("--limit-kw", required=True, help="The group's load limit in kW.")
@click.option("--baseline-days", type=click.IntRange(1, 10), default=5, show_default=True)
@click.option("--tz", "tz_text", default="+08:00", show_default=True, help="Local time zone.")
@_db_option
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="PKI directory holding command.key.",
)
@_json_option
def dr_event(
    group: str,
    start: str,
    end: str,
    limit_kw: str,
    baseline_days: int,
    tz_text: str,
    db_url: str,
    pki_dir: Path,
    as_json: bool,
) -> None:
    """Curtail the group's largest loads in a window, by signed relay commands held by
    the concentrators until due."""
    import json
    from decimal import Decimal, InvalidOperation

    from cloud_receiver import dr as dr_mod

    t0, t1 = _time_arg(start), _time_arg(end)
    assert t0 is not None and t1 is not None
    try:
        limit = Decimal(limit_kw)
    except InvalidOperation:
        raise click.BadParameter(f"{limit_kw!r}: expected kW", param_hint="--limit-kw") from None
    with _dr_errors():
        storage = _open_db(db_url)
        try:
            event = dr_mod.create_event(
                storage, pki.command_key(pki_dir), group=group, start=t0, end=t1,
                limit_kw=limit, tz=tz_text, baseline_days=baseline_days,
            )  # fmt: skip
        finally:
            storage.close()
    if as_json:
        click.echo(json.dumps(event))
    else:
        click.echo(
            f"event {event['id']}: {len(event['curtailed'])} meter(s) curtailed"
            f" ({', '.join(event['curtailed']) or 'none'}); `cloud-receiver dr report"
            f" {event['id']}` after the window"
        )


@dr.command("report")
@click.argument("event_id")
@_db_option
@_json_option
def dr_report(event_id: str, db_url: str, as_json: bool) -> None:
    """Baseline, actual use and reduction of an event, per meter and in total."""
    import json

    from rich.console import Console
    from rich.table import Table

    from cloud_receiver import dr as dr_mod

    with _dr_errors():
        storage = _open_db(db_url)
        try:
            doc = dr_mod.report(storage, event_id).as_dict()
        finally:
            storage.close()
    if as_json:
        click.echo(json.dumps(doc))
        return
    table = Table(title=f"event {event_id}: reduction {doc['reduction_kwh']} kWh"
                  f" ({doc['reduction_kw']} kW on average)")  # fmt: skip
    for c in ("meter", "curtailed", "baseline kWh", "actual kWh", "reduction kWh"):
        table.add_column(c)
    for m in doc["meters"]:
        table.add_row(m["meter"], "yes" if m["curtailed"] else "no", str(m["baseline_kwh"]),
                      str(m["actual_kwh"]), str(m["reduction_kwh"]))  # fmt: skip
    Console().print(table)


# ------------------------------------------------------------------ utility analytics
# Exit codes of `archive` and `report`, beside 1 (failure) and 2 (bad command line).
EXIT_NO_DATA = 3  # the stored readings do not cover what the report needs
EXIT_ARCHIVE = 7  # the archive file is invalid, or lacks what the report needs
EXIT_UNKNOWN = 9  # no such area, meter or account in the archive


@contextlib.contextmanager
def _analytics_errors() -> Iterator[None]:
    from cloud_receiver.archive import ArchiveError, UnknownName
    from cloud_receiver.energy import NotEnoughData
    from cloud_receiver.plots import PlotError

    try:
        yield
    except UnknownName as exc:
        _fail(str(exc), EXIT_UNKNOWN)
    except ArchiveError as exc:
        _fail(str(exc), EXIT_ARCHIVE)
    except NotEnoughData as exc:
        _fail(str(exc), EXIT_NO_DATA)
    except PlotError as exc:
        _fail(str(exc))


@contextlib.contextmanager
def _archive_db(db_url: str) -> Iterator[tuple[Storage, Archive]]:
    """The opened storage and its `Archive`, closed afterwards."""
    from cloud_receiver.archive import Archive

    storage: Storage = _open_db(db_url)
    try:
        yield storage, Archive(storage.archive())
    finally:
        storage.close()


def _day_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected a date YYYY-MM-DD") from None


def _tz_arg(ctx: click.Context, param: click.Parameter, value: str) -> dt.tzinfo:
    from cloud_receiver.energy import parse_tz

    try:
        return parse_tz(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _date_range(first: dt.date, end: dt.date) -> None:
    if end <= first:
        raise click.UsageError(
            f"empty range: --to {end} must be after --from {first} (the --to day is excluded)"
        )


def _num(value: object, places: int = 2) -> str:
    """A table/CSV cell: empty for None, fixed decimals for numbers."""
    if value is None:
        return ""
    if isinstance(value, float | Decimal):
        return f"{value:.{places}f}"
    return str(value)


def _emit(columns: Sequence[str], rows: Sequence[Sequence[str]], title: str, as_csv: bool) -> None:
    if as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(columns)
        out.writerows(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for row in rows:
        table.add_row(*row)
    Console().print(table)


def _analytics_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            _db_option,
            click.option(
                "--tz",
                default="+08:00",
                show_default=True,
                callback=_tz_arg,
                help="UTC offset of the local days (China Standard Time by default).",
            ),
            click.option(
                "--max-gap",
                "max_gap_min",
                type=click.IntRange(15, 24 * 60),
                default=60,
                show_default=True,
                help="Minutes within which a missing midnight reading is interpolated.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@main.group()
def archive() -> None:
    """The meter archive: each meter's transformer area, role, account and group."""


@archive.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@_db_option
@click.option(
    "--replace", is_flag=True, help="Replace the whole archive (default: add and update meters)."
)
def archive_import(file: Path, db_url: str, replace: bool) -> None:
    """Load an archive CSV (meter,area,role[,account,group,multiplier])."""
    from cloud_receiver.archive import ArchiveError, merge, parse_archive_csv

    try:
        records = parse_archive_csv(file.read_text(encoding="utf-8"))
    except OSError as exc:
        _fail(f"{file}: {exc.strerror or exc}")
    except UnicodeDecodeError:
        _fail(f"{file}: not UTF-8 text", EXIT_ARCHIVE)
    except ArchiveError as exc:
        _fail(f"{file}: {exc}", EXIT_ARCHIVE)
    storage = _open_db(db_url)
    try:
        try:
            merged = records if replace else merge(storage.archive(), records)
        except ArchiveError as exc:
            _fail(f"{file}: merged with the stored archive: {exc}", EXIT_ARCHIVE)
        storage.replace_archive(merged)
    finally:
        storage.close()
    areas = {r.area for r in records}
    click.echo(
        f"{len(records)} meters in {len(areas)} areas imported;"
        f" the archive holds {len(merged)} meters"
    )


@archive.command("list")
@_db_option
@click.option("--area", default=None, help="Only this transformer area.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (the import format).")
def archive_list(db_url: str, area: str | None, as_csv: bool) -> None:
    """The archive's meters, by area (total meter first)."""
    from cloud_receiver.archive import COLUMNS

    with _analytics_errors(), _archive_db(db_url) as (_, arch):
        records = list(arch.area(area).meters) if area is not None else list(arch.records)
    rows = [[r.meter, r.area, r.role, r.account, r.group, str(r.multiplier)] for r in records]
    _emit(COLUMNS, rows, f"{len(rows)} meters", as_csv)


@main.group()
def report() -> None:
    """Utility analytics on the stored readings: usage, line loss, suspects, forecast."""


@report.command()
@click.option("--meter", default=None, help="One meter address.")
@click.option("--account", default=None, help="A billing account (all its meters).")
@click.option("--area", default=None, help="A transformer area (its total meter).")
@click.option("--from", "first", required=True, callback=_day_arg, help="First day, YYYY-MM-DD.")
@click.option("--to", "end", required=True, callback=_day_arg, help="End day (excluded).")
@click.option(
    "--by",
    type=click.Choice(["day", "month", "slot"]),
    default="day",
    show_default=True,
    help="Rows per day, per calendar month, or per 15-minute slot (the load curve).",
)
@click.option(
    "--tou",
    "tou_spec",
    default=None,
    help="Time-of-use periods, e.g. 'peak=08-11,18-23;valley=23-07' (flat: the rest)"
    " [default: that one].",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the load curve as a PNG.",
)
@_analytics_options
def usage(
    meter: str | None,
    account: str | None,
    area: str | None,
    first: dt.date,
    end: dt.date,
    by: str,
    tou_spec: str | None,
    as_csv: bool,
    png: Path | None,
    db_url: str,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Energy per day, month or slot, time-of-use split, peak hour and load curve."""
    from cloud_receiver.usage import DEFAULT_TOU, Scope, parse_tou, slot_time, usage_report

    named: list[tuple[Scope, str | None]] = [
        ("meter", meter),
        ("account", account),
        ("area", area),
    ]
    chosen = [(s, v) for s, v in named if v is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --meter, --account, --area")
    _date_range(first, end)
    try:
        tou = parse_tou(tou_spec or DEFAULT_TOU)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tou") from None
    scope, name = chosen[0]
    with _analytics_errors():
        with _archive_db(db_url) as (storage, arch):
            result = usage_report(storage, arch, scope, name, first, end, tz, tou, max_gap_min * 60)
        if png is not None:
            from cloud_receiver import plots

            plots.save_png(plots.load_curve(result, tz), png)
    periods = list(tou.periods)
    title = f"{scope} {name}: {first} to {end - dt.timedelta(days=1)}, time of use {tou.spec}"
    if by == "slot":
        rows = [
            [
                slot_time(result, i, tz).isoformat(" ", "minutes"),
                _num(s.kw if s else None, 3),
                _num(s.kwh if s else None, 4),
            ]
            for i, s in enumerate(result.curve)
        ]
        _emit(("slot", "kw", "kwh"), rows, title, as_csv)
    elif by == "month":
        rows = [
            [
                m.month,
                _num(m.kwh),
                *(_num(m.tou.get(p)) for p in periods),
                str(m.days),
                str(m.missing_days),
            ]
            for m in result.months
        ]
        cols = ("month", "kwh", *(f"{p}_kwh" for p in periods), "days", "missing_days")
        _emit(cols, rows, title, as_csv)
    else:
        rows = [
            [
                d.day.isoformat(),
                _num(d.kwh),
                *(_num(d.tou.get(p)) for p in periods),
                "" if d.peak_hour is None else f"{d.peak_hour:02d}:00",
                _num(d.max_kw, 3),
                d.status,
                d.note,
            ]
            for d in result.days
        ]
        cols = (
            "day",
            "kwh",
            *(f"{p}_kwh" for p in periods),
            "peak_hour",
            "max_kw",
            "status",
            "note",
        )
        _emit(cols, rows, title, as_csv)
    if not as_csv:
        total = result.total_kwh
        peak = result.peak_hour
        click.echo(
            f"total {_num(total) or 'incomplete'} kWh;"
            f" peak hour {'-' if peak is None else f'{peak:02d}:00-{peak + 1:02d}:00'}"
            + (f"; load curve written to {png}" if png else "")
        )


@report.command()
@click.option("--area", required=True, help="Transformer area.")
@click.option("--from", "first", required=True, callback=_day_arg, help="First day, YYYY-MM-DD.")
@click.option("--to", "end", required=True, callback=_day_arg, help="End day (excluded).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the loss over time as a PNG.",
)
@_analytics_options
def loss(
    area: str,
    first: dt.date,
    end: dt.date,
    as_csv: bool,
    png: Path | None,
    db_url: str,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Line loss per day: total meter against the sum of the customer meters."""
    from cloud_receiver.lineloss import line_loss, summarise

    _date_range(first, end)
    with _analytics_errors():
        with _archive_db(db_url) as (storage, arch):
            days = line_loss(storage, arch, area, first, end, tz, max_gap_min * 60)
        if png is not None:
            from cloud_receiver import plots

            plots.save_png(plots.line_loss(days, area), png)
    rows = [
        [
            d.day.isoformat(),
            _num(d.supply_kwh),
            _num(d.sales_kwh),
            _num(d.loss_kwh),
            _num(None if d.loss_rate is None else 100 * d.loss_rate),
            str(d.customers),
            str(len(d.missing_customers)),
            str(d.estimated),
            d.status,
            " ".join(d.missing_customers),
        ]
        for d in days
    ]
    cols = (
        "day",
        "supply_kwh",
        "sales_kwh",
        "loss_kwh",
        "loss_pct",
        "customers",
        "missing_customers",
        "estimated_meters",
        "status",
        "missing",
    )
    _emit(cols, rows, f"line loss, area {area}", as_csv)
    if not as_csv:
        s = summarise(days)
        rate = "-" if s.loss_rate is None else f"{100 * s.loss_rate:.2f} %"
        click.echo(
            f"{s.complete_days} of {s.days} days complete: supply {s.supply_kwh:.2f} kWh,"
            f" loss {s.loss_kwh:.2f} kWh, loss rate {rate}"
            " (incomplete days are left out, never counted as loss)"
            + (f"; plot written to {png}" if png else "")
        )


@report.command()
@click.option("--area", required=True, help="Transformer area.")
@click.option("--day", required=True, callback=_day_arg, help="Analysis day, YYYY-MM-DD.")
@_json_option
@_analytics_options
def suspects(
    area: str, day: dt.date, as_json: bool, db_url: str, tz: dt.tzinfo, max_gap_min: int
) -> None:
    """Theft and tamper suspects of an area, ranked, each with its evidence."""
    import dataclasses
    import json

    from cloud_receiver.suspects import rank_suspects

    with _analytics_errors(), _archive_db(db_url) as (storage, arch):
        result = rank_suspects(storage, arch, area, day, tz, max_gap_s=max_gap_min * 60)
    t = result.trend
    if as_json:
        doc = dataclasses.asdict(result)
        doc["day"] = result.day.isoformat()
        click.echo(json.dumps(doc, ensure_ascii=False))
        return
    if t.excess_points is None or t.excess_kwh is None or t.z is None:
        trend = "area loss trend: not enough complete days"
    else:
        trend = (
            f"area loss rate: baseline {_num(100 * (t.baseline_rate or 0))} %, recent"
            f" {_num(100 * (t.recent_rate or 0))} %; above what the load explains:"
            f" {t.excess_points:+.2f} points, {t.excess_kwh:+.1f} kWh/day (z = {t.z:.1f})"
        )
    rows = [
        [
            str(i),
            s.meter,
            s.account,
            f"{s.score:.1f}",
            "ALARM" if s.alarm else "",
            "\n".join(s.reasons),
        ]
        for i, s in enumerate(result.suspects, start=1)
    ]
    _emit(
        ("rank", "meter", "account", "score", "alarm", "evidence"),
        rows,
        f"suspects, area {area}, {day} (alarm at score >= {result.alarm_score:.0f})",
        False,
    )
    click.echo(trend)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{len(result.alarms)} alarm(s), {len(result.suspects)} suspect(s)")


@report.command()
@click.option("--area", required=True, help="Transformer area.")
@click.option("--day", required=True, callback=_day_arg, help="Day to forecast, YYYY-MM-DD.")
@click.option(
    "--history-days",
    type=click.IntRange(8, 730),
    default=56,
    show_default=True,
    help="Days of load before --day to learn from.",
)
@click.option("--csv", "as_csv", is_flag=True, help="The 96 values as CSV on stdout.")
@_json_option
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also plot the forecast (and the actual load, when stored) as a PNG.",
)
@_analytics_options
def forecast(
    area: str,
    day: dt.date,
    history_days: int,
    as_csv: bool,
    as_json: bool,
    png: Path | None,
    db_url: str,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Next-day load of an area, 96 quarter-hours, by the method that validated best."""
    import json

    from cloud_receiver import forecast as fc

    first = day - dt.timedelta(days=history_days)
    with _analytics_errors():
        with _archive_db(db_url) as (storage, arch):
            history = fc.area_history(
                storage, arch, area, first, day + dt.timedelta(days=1), tz, max_gap_min * 60
            )
        result = fc.forecast(history, area, day)
        actual = history.get(day)
        if actual is not None and all(v is None for v in actual):
            actual = None
        if png is not None:
            from cloud_receiver import plots

            plots.save_png(plots.forecast(result, tz, actual), png)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    times = [(start + dt.timedelta(minutes=15 * q)).strftime("%H:%M") for q in range(96)]
    complete = fc.complete(history, day)
    if as_json:
        doc = {
            "area": area,
            "day": day.isoformat(),
            "method": result.method,
            "validation_mape": result.validation,
            "validation_days": [d.isoformat() for d in result.validation_days],
            "baseline": fc.BASELINE,
            "kw": list(result.kw),
            "baseline_kw": list(result.baseline_kw) if result.baseline_kw else None,
            "actual_kw": list(actual) if actual is not None else None,
            "mape": fc.mape(complete, result.kw) if complete else None,
        }
        click.echo(json.dumps(doc))
        return
    baseline = result.baseline_kw
    rows = [
        [
            times[q],
            _num(result.kw[q], 3),
            _num(baseline[q] if baseline else None, 3),
            _num(actual[q] if actual is not None else None, 3),
        ]
        for q in range(96)
    ]
    _emit(
        ("time", "forecast_kw", "naive_kw", "actual_kw"),
        rows,
        f"load forecast, area {area}, {day} ({result.method})",
        as_csv,
    )
    if as_csv:
        return
    n = len(result.validation_days)
    for name, error in sorted(result.validation.items(), key=lambda x: x[1]):
        mark = " <- chosen" if name == result.method else ""
        mark += " (seasonal-naive baseline)" if name == fc.BASELINE else ""
        click.echo(f"  {name:14s} MAPE {error:6.2f} % on {n} validation days{mark}")
    if complete:
        got, naive = fc.mape(complete, result.kw), fc.mape(complete, baseline or complete)
        click.echo(f"actual {day}: forecast MAPE {_num(got)} %, naive MAPE {_num(naive)} %")
    if png:
        click.echo(f"plot written to {png}")


# --------------------------------------------------------------------- software updates


@main.group()
def release() -> None:
    """Software release packages for concentrators."""


@release.command("build")
@click.option(
    "--wheel",
    "wheels",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    help="The meterflow wheel; repeat for pinned dependency wheels the release needs.",
)
@click.option("--version", "version", default=None, help="Release version (default: the wheel's).")
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Ed25519 release key (PEM); default: release.key in --pki-dir.",
)
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="PKI directory holding release.key (created there on first use).",
)
@click.option(
    "--min-config-format",
    type=click.IntRange(1),
    default=1,
    show_default=True,
    help="The oldest concentrator config format the release reads.",
)
@click.option(
    "--wire",
    "wire_range",
    default=None,
    help="Uplink wire formats the release can send, MIN-MAX (default: this build's).",
)
@click.option(
    "--chunk-size",
    type=click.IntRange(1024, 256 * 1024),
    default=16 * 1024,
    show_default=True,
    help="Bytes per MQTT chunk: small enough that a lost one costs little on GPRS.",
)
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Package file to write (.mfpkg).",
)
def release_build(
    wheels: tuple[Path, ...],
    version: str | None,
    key_file: Path | None,
    pki_dir: Path | None,
    min_config_format: int,
    wire_range: str | None,
    chunk_size: int,
    out_path: Path,
) -> None:
    """Turn built wheels into a signed update package."""
    import time

    from contract import package, wire

    main_wheel = next((w for w in wheels if w.name.startswith("meterflow-")), None)
    if main_wheel is None:
        _fail("one --wheel must be the meterflow wheel (meterflow-<version>-...whl)")
    wheel_version = main_wheel.name.split("-")[1]
    version = version or wheel_version
    if version != wheel_version:
        _fail(f"--version {version} differs from the wheel's {wheel_version}")
    lo, hi = min(wire.VERSIONS), max(wire.VERSIONS)
    if wire_range is not None:
        try:
            lo, hi = (int(x) for x in wire_range.split("-"))
        except ValueError:
            raise click.BadParameter(f"{wire_range!r}: expected MIN-MAX, e.g. 1-2") from None
    if key_file is None:
        if pki_dir is None:
            raise click.UsageError("give --key or --pki-dir")
        key_file = pki_dir / pki.RELEASE_KEY
    try:
        info = _wheel_release_info(main_wheel)
        key = pki.signing_key(key_file, "release key")
        pkg = package.build(
            list(wheels),
            version=version,
            key=key,
            requires=package.Requirements(
                min_config_format=min_config_format,
                min_wire_version=lo,
                max_wire_version=hi,
                store_schema=int(info["store_schema"]),
                store_min_reader=int(info["store_min_reader"]),
            ),
            chunk_size=chunk_size,
            built_at=time.time(),
        )
    except (pki.PkiError, package.PackageError, ValueError) as exc:
        _fail(str(exc))
    out_path.write_bytes(pkg.to_bytes())
    m = package.Manifest.from_bytes(pkg.manifest)
    click.echo(
        f"{out_path}: release {m.version}, {len(m.files)} file(s), {m.payload_size} bytes "
        f"in {len(m.chunks)} chunks, signed"
    )


@main.group()
def rollout() -> None:
    """Staged upgrades of concentrators, with health-based rollback."""


@rollout.command("start")
@click.argument("version")
@click.option(
    "--package",
    "package_path",
    type=click.Path(path_type=Path, dir_okay=False, exists=True),
    default=None,
    help="The release package (.mfpkg); needed the first time a version is rolled out.",
)
@click.option(
    "--stage",
    "stages",
    multiple=True,
    required=True,
    help="NAME:GROUP, in order; GROUP is ALL or comma-separated ids or patterns (dc-0*).",
)
@click.option(
    "--health-window",
    default="30m",
    show_default=True,
    callback=_duration,
    help="How long each upgraded concentrator must stay healthy (90s, 30m, 2h).",
)
@_db_option
@click.option(
    "--pki-dir",
    type=click.Path(path_type=Path, file_okay=False),
    required=True,
    help="PKI directory holding release.key (its public half checks the package).",
)
@_json_option
def rollout_start(
    version: str,
    package_path: Path | None,
    stages: tuple[str, ...],
    health_window: float,
    db_url: str,
    pki_dir: Path,
    as_json: bool,
) -> None:
    """Roll VERSION out in stages; the running receiver sends the offers."""
    import json
    import time

    from cloud_receiver import rollout as ro
    from contract import package

    window = health_window
    try:
        parsed = [ro.Stage.parse(s) for s in stages]
        public = pki.release_key(pki_dir).public_key()
    except (ro.RolloutError, pki.PkiError) as exc:
        _fail(str(exc))
    storage = _open_db(db_url)
    try:
        now = time.time()
        if package_path is not None:
            m = ro.add_release(storage, package.Package.from_bytes(package_path.read_bytes()),
                               public, now)  # fmt: skip
            if m.version != version:
                _fail(f"{package_path} holds release {m.version}, not {version}")
        rollout_id = ro.start(storage, version, parsed, window, now)
    except (ro.RolloutError, package.PackageError) as exc:
        _fail(str(exc))
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps({"id": rollout_id, "version": version}))
    else:
        click.echo(f"rollout {rollout_id} of {version} started: {', '.join(stages)}")


@rollout.command("status")
@click.option("--id", "rollout_id", type=int, default=None, help="One rollout (default: all).")
@_db_option
@_json_option
def rollout_status(rollout_id: int | None, db_url: str, as_json: bool) -> None:
    """Rollouts, their stages and each concentrator's state and running release."""
    import json

    from rich.console import Console
    from rich.table import Table

    from cloud_receiver import rollout as ro

    storage = _open_db(db_url)
    try:
        docs = ro.status(storage, rollout_id)
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps(docs, indent=1))
        return
    console = Console()
    for d in docs:
        console.print(
            f"rollout {d['id']}: {d['version']} [{d['state']}] stage {d['stage']} of "
            f"{', '.join(d['stages'])}; window {d['health_window_s']:.0f} s"
            + (f"; {d['reason']}" if d["reason"] else "")
        )
        table = Table("concentrator", "stage", "state", "running", "wire", "reason")
        for t in d["targets"]:
            table.add_row(t["concentrator"], t["stage"], t["state"], str(t["running"]),
                          str(t["wire_version"]), t["reason"] or "")  # fmt: skip
        console.print(table)


@rollout.command("abort")
@_db_option
@click.option("--reason", default="aborted by hand", show_default=True)
def rollout_abort(db_url: str, reason: str) -> None:
    """Halt the running rollout: no further offers or stages."""
    import time

    from cloud_receiver import rollout as ro

    storage = _open_db(db_url)
    try:
        halted = ro.abort(storage, time.time(), reason)
    finally:
        storage.close()
    if halted is None:
        _fail("no rollout is running")
    click.echo(f"rollout {halted} halted: {reason}")
