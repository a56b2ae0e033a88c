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
- A denied QoS 1 publish gets PUBACK reason 0x87 (Not authorized) under MQTT v5.
- ``crlfile``: a certificate in the CRL fails the TLS handshake; SIGHUP makes the
  broker re-read the CRL (`revocation` says more).
- The ACL file never refuses a SUBSCRIBE: Mosquitto 2.0's ``acl_file`` check returns
  success for every subscription ("FIXME - implement ACL subscription strings" in its
  ``mosquitto_acl_check_default``) and filters only at delivery. So any certificate
  could join the receivers' shared subscription ``$share/<group>/mf/v1/+/up``, and
  Mosquitto, which hands each message of a share to one member, then dropped the
  intruder's share at its read ACL: batches lost to the receivers (issue 19).

Subscriptions are therefore checked by Mosquitto's own dynamic-security plugin
(``mosquitto_dynamic_security.so``, shipped with Mosquitto 2.0), for the concentrators
it knows: each provisioned concentrator (``<pki>/concentrators/<id>/``) gets a role that
allows subscribing to exactly ``mf/v1/<id>/ack``, ``cmd`` and ``pkg`` and denies every
other filter (``#``: any ``$share/...`` group, ``mf/v1/+/up``, ``pkgreq``, ``$SYS``);
SUBACK 0x87. Publishing and delivery stay with the ACL file: the plugin defers on them
(``defaultACLAccess`` all false), and on everything for identities it does not know
(receivers, and a concentrator provisioned after Mosquitto started: ``provision``
rewrites the rules, `refresh_rules`, and Mosquitto reads them when restarted). Checked with
Mosquitto 2.0.11 (tests/test_broker_hardening.py).

Bounded resources (`BrokerLimits`): ``message_size_limit`` (a larger PUBLISH is
dropped; MQTT v5 clients are told the limit in CONNACK), ``max_queued_messages`` and
``max_queued_bytes`` per offline persistent session (beyond them new messages are
dropped), and ``max_connections`` on the listener.
"""

from __future__ import annotations

import glob
import json
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from clitools.files import GROUP_READ, write_file
from cloud_receiver.applications.fleet.pki import CA_NAME, RECEIVER_NAME, SERVER_NAME, PkiError
from cloud_receiver.applications.fleet.revocation import write_crl
from contract import topics

# Offline persistent sessions keep their backlog up to this many QoS 1 messages each
# (Mosquitto's default is 1,000: a receiver down for an hour would lose batches).
MAX_QUEUED_MESSAGES = 100_000
MiB = 1 << 20
# The smallest message size limit we write: release chunks (16 KiB by default,
# `contract.package.DEFAULT_CHUNK_BYTES`) and batches must pass with room to spare.
MIN_MESSAGE_SIZE_LIMIT = 64 * 1024
DYNSEC_PLUGIN = "mosquitto_dynamic_security.so"
RULES_POINTER = "broker-rules.path"  # in the PKI: where broker-config wrote the rules
DYNSEC_DIRS = ("/usr/lib/*/", "/usr/lib/", "/usr/local/lib/", "/usr/lib64/", "/opt/homebrew/lib/")


@dataclass(frozen=True)
class BrokerLimits:
    """What one client may cost the broker (written into the config)."""

    # Largest PUBLISH payload: a release chunk is at most 256 KiB, a batch far less.
    message_size_limit: int = 1 * MiB
    max_queued_messages: int = MAX_QUEUED_MESSAGES
    # 100,000 batches of a few KiB each: a receiver away for a day or two.
    max_queued_bytes: int = 512 * MiB
    max_connections: int = 20_000  # on the listener: concentrators plus receivers

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if value < 1:
                raise PkiError(f"{name} {value} must be at least 1")
        if self.message_size_limit < MIN_MESSAGE_SIZE_LIMIT:
            raise PkiError(
                f"message_size_limit {self.message_size_limit} is below"
                f" {MIN_MESSAGE_SIZE_LIMIT}: release chunks and batches would not pass"
            )


def dynsec_plugin() -> Path:
    """Where Mosquitto's dynamic-security plugin is installed on this machine."""
    for pattern in DYNSEC_DIRS:
        found = sorted(glob.glob(pattern + DYNSEC_PLUGIN))
        if found:
            return Path(found[0])
    raise PkiError(
        f"{DYNSEC_PLUGIN} not found (searched {', '.join(DYNSEC_DIRS)}): install Mosquitto"
        " 2.x with its plugins, or pass the plugin's path (--dynsec-plugin)"
    )


def provisioned(pki_dir: Path | str) -> list[str]:
    """The concentrator ids provisioned in ``pki_dir`` (those with a certificate)."""
    root = Path(pki_dir) / "concentrators"
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / f"{d.name}.crt").is_file())


def refresh_rules(pki_dir: Path | str) -> Path | None:
    """Rewrite the subscription rules that ``broker-config`` wrote for this PKI with
    every concentrator provisioned now (`provision` calls it); their path, or None when
    no config was written yet. Mosquitto reads them when it starts: restart it."""
    pointer = Path(pki_dir) / RULES_POINTER
    if not pointer.is_file():
        return None
    rules = Path(pointer.read_text().strip())
    if not rules.parent.is_dir():
        return None
    write_file(rules, dynsec_text(provisioned(pki_dir)), GROUP_READ)
    return rules


def dynsec_text(concentrators: Sequence[str]) -> str:
    """The dynamic-security plugin's configuration: the subscription rules (see the
    module). No admin client: nothing can change the rules over ``$CONTROL``."""
    roles = [
        {
            "rolename": f"concentrator-{cid}",
            "acls": [
                *({"acltype": "subscribeLiteral", "topic": topic, "priority": 1, "allow": True}
                  for topic in (topics.ack(cid), topics.cmd(cid), topics.pkg(cid))),
                {"acltype": "subscribePattern", "topic": "#", "priority": 0, "allow": False},
            ],
        }
        for cid in concentrators
    ]  # fmt: skip
    doc = {
        "defaultACLAccess": {
            "publishClientSend": False,
            "publishClientReceive": False,
            "subscribe": False,
            "unsubscribe": False,
        },
        "clients": [
            {"username": cid, "roles": [{"rolename": f"concentrator-{cid}"}]}
            for cid in concentrators
        ],
        "groups": [],
        "roles": roles,
    }
    return json.dumps(doc, indent=1) + "\n"


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
    limits: BrokerLimits | None = None,
    plugin: Path | None = None,
) -> Path:
    """Write ``path``, its ACL file (``path`` with suffix ``.acl``) and the subscription
    rules of the concentrators provisioned in ``pki_dir`` (suffix ``.dynsec.json``);
    return ``path``.

    ``run_as`` is Mosquitto's ``user``: the account it switches to when started as root
    (default "mosquitto"); it must be able to write ``data_dir``. ``plugin``: the
    dynamic-security plugin's path (default: found on this machine).
    """
    limits = limits or BrokerLimits()
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
    plugin = Path(plugin).absolute() if plugin is not None else dynsec_plugin()
    for value, what in (
        (str(pki_dir), "PKI directory"),
        (str(data_dir), "data directory"),
        (str(path), "config path"),
        (str(plugin), "plugin path"),
    ):
        # Mosquitto's config format has no quoting: a newline would inject directives.
        if "\n" in value or "\r" in value:
            raise PkiError(f"{what} {value!r} contains a line break")

    data_dir.mkdir(parents=True, exist_ok=True)
    # Written afresh from the ledger: an expired CRL would lock every client out.
    crl = write_crl(pki_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    acl_path = path.with_suffix(".acl")
    write_file(acl_path, acl_text(receivers), GROUP_READ)
    dynsec_path = path.with_suffix(".dynsec.json")
    write_file(dynsec_path, dynsec_text(provisioned(pki_dir)), GROUP_READ)
    write_file(pki_dir / RULES_POINTER, f"{dynsec_path}\n")

    lines = [
        "# Written by `cloud-receiver broker-config` for Mosquitto 2.x.",
        # Authentication and ACL apply to every listener alike.
        "per_listener_settings false",
        "allow_anonymous false",
        # Subscriptions: the dynamic-security plugin (the ACL file cannot refuse them).
        f"plugin {plugin}",
        f"plugin_opt_config_file {dynsec_path}",
        f"acl_file {acl_path}",
        "",
        f"message_size_limit {limits.message_size_limit}",
        "persistence true",
        # Mosquitto 1.x appends the file name verbatim (the slash matters there); 2.x
        # adds its own, and the resulting double slash is harmless.
        f"persistence_location {data_dir}/",
        f"autosave_interval {AUTOSAVE_INTERVAL_S}",
        f"max_queued_messages {limits.max_queued_messages}",
        f"max_queued_bytes {limits.max_queued_bytes}",
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
        f"max_connections {limits.max_connections}",
        f"cafile {pki_dir / f'{CA_NAME}.crt'}",
        f"certfile {pki_dir / f'{SERVER_NAME}.crt'}",
        f"keyfile {pki_dir / f'{SERVER_NAME}.key'}",
        "tls_version tlsv1.2",
        "require_certificate true",
        # Every client certificate is checked against the deployment's CRL at the
        # handshake (`revocation`; SIGHUP re-reads it).
        f"crlfile {crl}",
        "use_identity_as_username true",
        "use_username_as_clientid true",
    ]
    write_file(path, "\n".join(lines) + "\n", GROUP_READ)
    return path
