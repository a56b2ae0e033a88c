"""A Mosquitto 2.x configuration for the deployment's broker.

Who may do what is decided by the client certificate alone (docs/architecture.md,
"Security model"): the listener requires a certificate from the deployment CA, the
certificate's CN becomes the MQTT username (``use_identity_as_username``), and the ACL
file confines each username:

    concentrator <id>   write mf/v1/<id>/up        read mf/v1/<id>/ack, mf/v1/<id>/cmd
    receiver            read  mf/v1/+/up (also as $share/<group>/mf/v1/+/up)
                        write mf/v1/+/ack, mf/v1/+/cmd

The username also replaces the MQTT client id (``use_username_as_clientid``): a stolen
or misbehaving concentrator certificate cannot take over another client's session by
connecting with its client id. The price is that two processes with the same
certificate evict each other, so every receiver instance gets its own certificate (and
its own ``user`` block in the ACL, see ``receivers``).

Checked against Mosquitto 2.0.11 (tests/test_pki_broker.py):
- ``allow_anonymous false`` works together with ``use_identity_as_username``: the CN
  counts as the username, a client without a certificate fails the TLS handshake.
- A denied QoS 1 publish gets PUBACK reason 0x87 (Not authorized) under MQTT v5, a
  denied subscription SUBACK 0x87; a ``$share/<group>/`` subscription is checked
  against the ACL without its prefix.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from pathlib import Path

from clitools.files import GROUP_READ, write_file
from cloud_receiver.applications.fleet.pki import CA_NAME, RECEIVER_NAME, SERVER_NAME, PkiError
from contract import topics

# Offline persistent sessions keep their backlog up to this many QoS 1 messages each
# (Mosquitto's default is 1,000: a receiver down for an hour would lose batches).
MAX_QUEUED_MESSAGES = 100_000
# Seconds between writes of the persistence file; a clean shutdown (SIGTERM) writes it
# too, this bounds what a crash of the broker can lose.
AUTOSAVE_INTERVAL_S = 60


def free_port() -> int:
    """A TCP port nobody listens on right now (racy by nature; fine for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def acl_text(receivers: Sequence[str] = (RECEIVER_NAME,)) -> str:
    lines = [
        "# Written by `cloud-receiver broker-config`. Usernames are certificate CNs.",
        "# Concentrators: %u is the concentrator id.",
        f"pattern write {topics.up(topics.ACL_USER)}",
        f"pattern read {topics.ack(topics.ACL_USER)}",
        f"pattern read {topics.cmd(topics.ACL_USER)}",
        f"pattern read {topics.pkg(topics.ACL_USER)}",
        f"pattern write {topics.pkgreq(topics.ACL_USER)}",
    ]
    for name in receivers:
        lines += [
            "",
            f"user {name}",
            f"topic read {topics.up(topics.ANY)}",
            f"topic write {topics.ack(topics.ANY)}",
            f"topic write {topics.cmd(topics.ANY)}",
            f"topic read {topics.pkgreq(topics.ANY)}",
            f"topic write {topics.pkg(topics.ANY)}",
        ]
    return "\n".join(lines) + "\n"


def write_mosquitto_config(
    path: Path | str,
    *,
    pki_dir: Path | str,
    port: int,
    bind: str = "127.0.0.1",
    data_dir: Path | str,
    receivers: Sequence[str] = (RECEIVER_NAME,),
    run_as: str | None = None,
) -> Path:
    """Write ``path`` and its ACL file (``path`` with suffix ``.acl``); return ``path``.

    ``run_as`` is Mosquitto's ``user``: the account it switches to when started as root
    (default "mosquitto"); it must be able to write ``data_dir``.
    """
    path = Path(path).absolute()
    pki_dir = Path(pki_dir).absolute()
    data_dir = Path(data_dir).absolute()
    if not 1 <= port <= 65535:
        raise PkiError(f"port {port} is out of range 1-65535")
    if not receivers:
        raise PkiError("at least one receiver name is needed")
    needed = [pki_dir / f"{n}.{ext}" for n in (CA_NAME, SERVER_NAME) for ext in ("crt", "key")]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise PkiError(f"PKI in {pki_dir} is incomplete, missing: {', '.join(missing)}")
    for value, what in ((str(pki_dir), "PKI directory"), (str(data_dir), "data directory")):
        # Mosquitto's config format has no quoting: a newline would inject directives.
        if "\n" in value or "\r" in value:
            raise PkiError(f"{what} {value!r} contains a line break")

    data_dir.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    acl_path = path.with_suffix(".acl")
    write_file(acl_path, acl_text(receivers), GROUP_READ)

    lines = [
        "# Written by `cloud-receiver broker-config` for Mosquitto 2.x.",
        # Authentication and ACL apply to every listener alike.
        "per_listener_settings false",
        "allow_anonymous false",
        f"acl_file {acl_path}",
        "",
        "persistence true",
        # Mosquitto 1.x appends the file name verbatim (the slash matters there); 2.x
        # adds its own, and the resulting double slash is harmless.
        f"persistence_location {data_dir}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        f"max_queued_messages {MAX_QUEUED_MESSAGES}",
        "max_queued_bytes 0",
        "",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
    ]
    if run_as:
        lines.append(f"user {run_as}")
    lines += [
        "",
        f"listener {port} {bind}",
        "protocol mqtt",
        f"cafile {pki_dir / f'{CA_NAME}.crt'}",
        f"certfile {pki_dir / f'{SERVER_NAME}.crt'}",
        f"keyfile {pki_dir / f'{SERVER_NAME}.key'}",
        "tls_version tlsv1.2",
        "require_certificate true",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ]
    write_file(path, "\n".join(lines) + "\n", GROUP_READ)
    return path
