"""``run``: the receiver service itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from clitools.options import db_option, json_option, pki_dir_option
from clitools.output import print_json, to_jsonable
from clitools.timefmt import site_tz_text
from cloud_receiver.applications.fleet import pki
from cloud_receiver.cli.common import collection_options, open_db, size_arg
from cloud_receiver.errors import ReceiverError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from cloud_receiver.ingest.ingestor import Ingestor
    from cloud_receiver.ingest.service import ReceiverService
    from cloud_receiver.storage.completeness import Plan


def _broker_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r}: expected HOST:PORT, e.g. broker.example:8883")
    return host, int(port)


def _metrics_address(
    ctx: click.Context, param: click.Parameter, text: str | None
) -> tuple[str, int] | None:
    """``--metrics``: an IP address and a TCP port (``[::1]:9470`` for IPv6)."""
    if text is None:
        return None
    import ipaddress

    host, _, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected IP:PORT, e.g. 127.0.0.1:9470 (this machine only), "
            "0.0.0.0:9470 (every interface) or [::1]:9470"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise click.BadParameter(f"{text!r}: the port must be 1..65535")
    return host, int(port)


def _quarantine_options(f: Callable[..., None]) -> Callable[..., None]:
    """The quarantine's budget and rate limit (`cloud_receiver.storage.quarantine`)."""
    for option in reversed(
        [
            click.option("--quarantine-bytes", default="64M", show_default=True,
                         callback=size_arg, metavar="SIZE",
                         help="Quarantine: at most this many bytes in all."),
            click.option("--quarantine-rows", type=click.IntRange(min=1), default=10_000,
                         show_default=True, help="Quarantine: at most this many messages."),
            click.option("--quarantine-sender-bytes", default="8M", show_default=True,
                         callback=size_arg, metavar="SIZE",
                         help="Quarantine: at most this many bytes per sender."),
            click.option("--quarantine-sender-rows", type=click.IntRange(min=1),
                         default=1_000, show_default=True,
                         help="Quarantine: at most this many messages per sender."),
            click.option("--quarantine-prefix", default="4K", show_default=True,
                         callback=size_arg, metavar="SIZE",
                         help="Quarantine: keep this much of a payload, cut the rest."),
            click.option("--quarantine-rate", type=click.FloatRange(min=0, min_open=True),
                         default=60.0, show_default=True, metavar="PER_MINUTE",
                         help="Quarantine: messages kept per sender per minute."),
            click.option("--quarantine-burst", type=click.IntRange(min=1), default=60,
                         show_default=True,
                         help="Quarantine: messages a sender may have kept at once."),
        ]
    ):  # fmt: skip
        f = option(f)
    return f


@click.command()
@click.option("--broker", "broker_addr", required=True, help="Broker HOST:PORT (TLS).")
@pki_dir_option(help="Deployment PKI: ca.crt, the receiver's certificate, keys.json.")
@db_option(help="sqlite:///PATH (default backend) or postgresql://… (scale-out).")
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
    "--tz",
    "tz_text",
    default=site_tz_text,
    show_default="the site's zone: cloud-receiver --tz, MF_TZ, +08:00",
    help="Local time zone (UTC offset).",
)
@click.option(
    "--metrics",
    "metrics_at",
    metavar="IP:PORT",
    callback=_metrics_address,
    help="Serve Prometheus metrics at http://IP:PORT/metrics (off by default).",
)
@click.option(
    "--metrics-refresh",
    type=click.FloatRange(min=1.0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Reuse the database figures of the metrics this long (the counters are live).",
)
@collection_options("--collection-interval")
@_quarantine_options
@click.option("-v", "--verbose", count=True, help="More logging (-vv for debug).")
@json_option()
def run(
    broker_addr: str,
    pki_dir: Path,
    db_url: str,
    receiver_name: str,
    share_group: str,
    cutoff_hours: str,
    holidays: tuple[str, ...],
    tz_text: str,
    metrics_at: tuple[str, int] | None,
    metrics_refresh: float,
    interval_s: int,
    late_after: float,
    quarantine_bytes: int,
    quarantine_rows: int,
    quarantine_sender_bytes: int,
    quarantine_sender_rows: int,
    quarantine_prefix: int,
    quarantine_rate: float,
    quarantine_burst: int,
    verbose: int,
    as_json: bool,
) -> None:
    """Ingest batches until SIGTERM: verify, decrypt, store exactly once, then ack.

    Every failed connection to the broker is logged with its reason and the delay
    before the next attempt; at the stop, the counters go to stderr (with --json, as
    one JSON object on stdout)."""
    import asyncio
    import signal

    from cloud_receiver.ingest.ratelimit import SenderRate
    from cloud_receiver.storage.quarantine import Budget

    try:
        budget = Budget(
            total_bytes=quarantine_bytes, total_rows=quarantine_rows,
            sender_bytes=quarantine_sender_bytes, sender_rows=quarantine_sender_rows,
            prefix_bytes=quarantine_prefix,
        )  # fmt: skip
        rate = SenderRate(per_minute=quarantine_rate, burst=quarantine_burst)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None

    from cloud_receiver.applications.reactions import Applications
    from cloud_receiver.ingest.ingestor import Ingestor
    from cloud_receiver.ingest.keys import REVOCATIONS, KeyRegistry, Revocations
    from cloud_receiver.ingest.service import BrokerSettings, ReceiverService

    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from cloud_receiver.applications import prepay

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
            raise ReceiverError(
                f"{path} is missing: run `cloud-receiver broker-config` (or provision) first"
            )
    from cloud_receiver.applications.requests import Keys

    def release() -> Ed25519PublicKey:
        """The release key's public half, which checks a rollout's package (read when
        needed: `release build` may create the key after the service started)."""
        if not (pki_dir / pki.RELEASE_KEY).exists():
            raise ReceiverError(f"no {pki.RELEASE_KEY} in {pki_dir}: run `release build` there")
        return pki.release_key(pki_dir).public_key()

    storage = open_db(db_url, create=True)  # a wrong URL or an unreachable server: says which
    reactions = Applications(
        storage, command_key=command_key, prepay_policy=policy,
        request_keys=Keys(command=command_key, release=release), name=receiver_name,
    )  # fmt: skip
    ingestor = Ingestor(
        storage,
        KeyRegistry(pki_dir / pki.KEY_REGISTRY).lookup,
        reactions,
        revoked=Revocations(pki_dir / REVOCATIONS).is_revoked,
        budget=budget,
        rate=rate,
    )
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
    )

    async def main_loop() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, service.stop)
        await service.run()

    closing = [storage.close]
    try:
        if metrics_at is not None:
            from cloud_receiver.storage.completeness import Plan

            plan = Plan(prepay.parse_offset(tz_text), interval_s=interval_s,
                        late_after_s=int(late_after))  # fmt: skip
            closing += _serve_metrics(metrics_at, metrics_refresh, db_url, plan, ingestor, service)
        asyncio.run(main_loop())
    finally:
        for close in reversed(closing):
            close()
    # Not a log record: the counters are the result of the run, at every log level.
    if as_json:
        print_json(to_jsonable(ingestor.counters))
    click.echo(service.summary(), err=True)


def _serve_metrics(
    at: tuple[str, int],
    refresh_s: float,
    db_url: str,
    plan: Plan,
    ingestor: Ingestor,
    service: ReceiverService,
) -> list[Callable[[], None]]:
    """Start the Prometheus endpoint of ``run``; what to close at the end. The database
    figures get a connection of their own: a scrape never waits for an ingest."""
    from cloud_receiver.ingest.metrics import CachedFigures, MetricsServer

    storage = open_db(db_url)
    figures = CachedFigures(storage, plan, refresh_s)
    server = MetricsServer(ingestor.counters, figures, service.connected.is_set)
    host, port = at
    try:
        server.start(host, port)
    except OSError as exc:
        storage.close()
        raise ReceiverError(
            f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
        ) from None
    service.observe_latency = server.observe_latency
    log.info("metrics: http://%s:%d/metrics", host, port)
    return [storage.close, server.stop]


COMMANDS = [run]
