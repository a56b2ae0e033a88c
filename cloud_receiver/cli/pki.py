"""``provision``, ``broker-config``, ``revoke`` and ``crl``: the deployment's PKI and its
broker (docs/architecture.md, "Keys: revocation and rotation")."""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
from pathlib import Path

import click

from clitools.options import db_option, json_option, pki_dir_option
from clitools.output import print_json
from cloud_receiver.applications.fleet import broker, pki, revocation
from cloud_receiver.cli.auth import session_option
from cloud_receiver.cli.common import check_concentrator_id, duration, size_arg
from cloud_receiver.errors import ReceiverError
from contract.timezone import iso_time


def _when(unix: float) -> str:
    return iso_time(unix)


@click.command()
@click.argument("concentrator_id", callback=check_concentrator_id)
@pki_dir_option(help="PKI directory (created with a new CA if missing).")
@click.option("--broker-host", required=True, help="Host name the concentrator dials.")
@click.option("--broker-port", type=click.IntRange(1, 65535), required=True)
@click.option(
    "--rotate-key",
    is_flag=True,
    help="Add a new payload key under the next key id; old keys stay in keys.json.",
)
@click.option(
    "--renew-cert",
    is_flag=True,
    help="Issue a new certificate and key under the same file names; the old certificate"
    " is revoked when --grace has passed (or at once with `revoke --superseded`).",
)
@click.option(
    "--grace",
    "grace_s",
    default="7d",
    show_default=True,
    callback=duration,
    help="With --renew-cert: how long the old certificate stays valid.",
)
@click.option(
    "--keepalive",
    "keepalive_s",
    type=click.IntRange(min=0),
    default=pki.DEFAULT_KEEPALIVE_S,
    show_default=True,
    help="MQTT keepalive in seconds (each ping is paid for on GPRS).",
)
@json_option()
def provision(
    concentrator_id: str,
    pki_dir: Path,
    broker_host: str,
    broker_port: int,
    rotate_key: bool,
    renew_cert: bool,
    grace_s: float,
    keepalive_s: int,
    as_json: bool,
) -> None:
    """Issue a concentrator's certificate and payload key; write its uplink config."""
    cert_file = pki_dir / "concentrators" / concentrator_id / f"{concentrator_id}.crt"
    renewal: revocation.Renewal | None = None
    try:
        if renew_cert and cert_file.exists():
            # Before provisioning: a revoked concentrator is refused with nothing written.
            renewal = revocation.renew_certificate(
                pki_dir, concentrator_id, grace=dt.timedelta(seconds=grace_s)
            )
        result = pki.provision_details(
            pki_dir,
            concentrator_id,
            broker_host=broker_host,
            broker_port=broker_port,
            rotate_key=rotate_key,
            keepalive_s=keepalive_s,
        )
    except OSError as exc:
        raise ReceiverError(f"{pki_dir}: {exc}") from exc
    files = [*result.files, pki_dir / pki.KEY_REGISTRY]
    try:
        rules = broker.refresh_rules(pki_dir)
    except OSError as exc:
        raise ReceiverError(f"cannot update the broker's subscription rules: {exc}") from exc
    if as_json:
        print_json({"concentrator": concentrator_id, "key_id": result.key_id,
                    "new_key": result.new_key, "files": files,
                    "subscription_rules": rules})  # fmt: skip
        return
    for path in files:
        click.echo(str(path))
    note = "new key" if result.new_key else "existing key kept"
    click.echo(f"{concentrator_id}: key id {result.key_id} ({note})", err=True)
    if renewal is not None:
        click.echo(
            f"{concentrator_id}: new certificate {renewal.new_serial:x}; the old one"
            f" ({renewal.old_serial:x}) enters the CRL at {_when(renewal.old_revoked_at)}"
            " (`cloud-receiver crl`)",
            err=True,
        )
    if rules is None:
        click.echo(
            "no broker config for this PKI yet: `cloud-receiver broker-config` writes one",
            err=True,
        )
    else:
        click.echo(
            f"{concentrator_id}: subscription rules updated in {rules}; restart the broker"
            " to apply them (until then its subscriptions are not confined)",
            err=True,
        )


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


@click.command("broker-config")
@pki_dir_option(help="PKI directory (created with a new CA if missing).")
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
@click.option(
    "--message-size-limit",
    default="1M",
    show_default=True,
    callback=size_arg,
    metavar="SIZE",
    help="Largest PUBLISH payload the broker takes (at least 64K).",
)
@click.option(
    "--max-queued-messages",
    type=click.IntRange(min=1),
    default=broker.MAX_QUEUED_MESSAGES,
    show_default=True,
    help="QoS 1 messages kept per offline persistent session.",
)
@click.option(
    "--max-queued-bytes",
    default="512M",
    show_default=True,
    callback=size_arg,
    metavar="SIZE",
    help="Bytes kept per offline persistent session.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=20_000,
    show_default=True,
    help="Clients connected at once on the listener.",
)
@click.option(
    "--dynsec-plugin", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="Mosquitto's mosquitto_dynamic_security.so [default: found on this machine].",
)  # fmt: skip
@json_option()
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
    message_size_limit: int,
    max_queued_messages: int,
    max_queued_bytes: int,
    max_connections: int,
    dynsec_plugin: Path | None,
    as_json: bool,
) -> None:
    """Write a Mosquitto 2.x config, its ACL and subscription rules; issue the broker
    and receiver certificates."""
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
            limits=broker.BrokerLimits(
                message_size_limit=message_size_limit,
                max_queued_messages=max_queued_messages,
                max_queued_bytes=max_queued_bytes,
                max_connections=max_connections,
            ),
            plugin=dynsec_plugin,
        )
        if os.geteuid() == 0 and (run_as or "mosquitto") != "root":
            _chown_for_broker(run_as or "mosquitto", [pki_dir / f"{pki.SERVER_NAME}.key", data_dir])
    except OSError as exc:
        raise ReceiverError(str(exc)) from exc
    files = [conf, conf.with_suffix(".acl"), conf.with_suffix(".dynsec.json"), *written]
    if as_json:
        print_json({"files": files})
        return
    for path in files:
        click.echo(str(path))


@click.command()
@click.argument("concentrator_id", callback=check_concentrator_id)
@pki_dir_option(help="The deployment's PKI directory.")
@click.option(
    "--reason",
    type=click.Choice(["key-compromise", "cessation-of-operation"]),
    default="key-compromise",
    show_default=True,
    help="The CRL's reason code (RFC 5280 §5.3.1): stolen or decommissioned.",
)
@click.option(
    "--superseded",
    is_flag=True,
    help="Revoke only the certificates a renewal replaced (end their grace period now);"
    " the concentrator stays trusted.",
)
@db_option(help="Receiver database (for the operator's session and the audit log).")
@session_option()
@json_option()
def revoke(
    concentrator_id: str,
    pki_dir: Path,
    reason: str,
    superseded: bool,
    db_url: str,
    session_file: Path | None,
    as_json: bool,
) -> None:
    """Revoke a concentrator's certificates: write the CRL the broker enforces, and have
    the receivers quarantine its batches (reason ``revoked``)."""
    from cloud_receiver.access.policy import Action, Resource
    from cloud_receiver.cli.auth import acting

    target = Resource("concentrator", concentrator_id)
    with acting(db_url, session_file, Action.KEY_REVOKE, target) as a:
        try:
            if superseded:
                serials = revocation.revoke_superseded(pki_dir, concentrator_id)
            else:
                serials = revocation.revoke_concentrator(
                    pki_dir, concentrator_id, reason=reason.replace("-", "_")
                )
        except OSError as exc:
            raise ReceiverError(f"{pki_dir}: {exc}") from exc
        a.record(
            "revoke",
            str(Action.KEY_REVOKE),
            str(target),
            detail={
                "serials": [f"{s:x}" for s in serials],
                "reason": "superseded" if superseded else reason,
                "concentrator_revoked": not superseded,
            },
        )
    crl = pki_dir / revocation.CRL_FILE
    if as_json:
        doc = {
            "concentrator": concentrator_id,
            "revoked": [f"{s:x}" for s in serials],
            "concentrator_revoked": not superseded,
            "crl": str(crl),
        }
        click.echo(json.dumps(doc))
        return
    listed = ", ".join(f"{s:x}" for s in serials) or "none new"
    click.echo(f"{concentrator_id}: certificates revoked: {listed}; CRL written to {crl}")
    click.echo(
        "reload the broker (`systemctl reload mosquitto`, SIGHUP) so that it refuses them"
        + ("" if superseded else f"; the receivers quarantine {concentrator_id}'s batches now")
    )


@click.command()
@pki_dir_option(help="The deployment's PKI directory.")
@click.option(
    "--days",
    type=click.IntRange(1, 365),
    default=revocation.CRL_VALIDITY.days,
    show_default=True,
    help="How long the CRL stays valid (its nextUpdate): rewrite it well before.",
)
@json_option()
def crl(pki_dir: Path, days: int, as_json: bool) -> None:
    """Rewrite the CRL: every revoked certificate and every renewed one whose grace period
    is over. Run it daily (the broker refuses every client once the CRL has expired),
    then reload the broker."""
    try:
        path = revocation.write_crl(pki_dir, validity=dt.timedelta(days=days))
    except OSError as exc:
        raise ReceiverError(f"{pki_dir}: {exc}") from exc
    from cryptography import x509

    written = x509.load_pem_x509_crl(path.read_bytes())
    assert written.next_update_utc is not None
    pending = revocation.pending(pki_dir)
    if as_json:
        print_json(
            {
                "crl": str(path),
                "revoked": len(written),
                "next_update": iso_time(written.next_update_utc.timestamp()),
                "pending": [
                    {"concentrator": e.concentrator, "serial": f"{e.serial:x}",
                     "revoke_at": iso_time(e.revoke_at)}
                    for e in pending
                ],
            }
        )  # fmt: skip
        return
    click.echo(
        f"{path}: {len(written)} revoked certificate(s), valid until"
        f" {written.next_update_utc.isoformat(' ', 'seconds')}"
    )
    for entry in pending:
        click.echo(
            f"pending: {entry.concentrator} certificate {entry.serial:x} (superseded) enters"
            f" the CRL at {_when(entry.revoke_at)}"
        )


COMMANDS = [provision, broker_config, revoke, crl]
