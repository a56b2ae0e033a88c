"""The services tables: ``[uplink]``, ``[modem]``, ``[update]`` and ``[metrics]``, checked
like the rest.

Each function reads one table through the checker's `Table`, so every problem is an
issue with its line, and returns the typed section (None when the table is invalid).
Defaults come from the dataclasses, so they are written once. The key files a table
names are loaded here as the task will load them: a missing or malformed key is an
issue at the line of the key that names it, not a crash at start-up.
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Callable
from dataclasses import MISSING, fields
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from concentrator.config.model import (
    MODEM_BAUDS,
    RESET_METHODS,
    MetricsConfig,
    ModemConfig,
    UpdateConfig,
    UplinkConfig,
    load_public_key,
    read_payload_key,
    read_store_key,
    wire_versions,
)
from concentrator.config.table import Table, optional, resolve_port, show

T = TypeVar("T")

_UPLINK_FILES = ("ca_file", "cert_file", "key_file", "payload_key_file")
_UPLINK_COUNTS = ("key_id", "keepalive_s", "window", "batch_readings", "batch_events")
_UPLINK_TIMES = ("ack_timeout_s", "reconnect_min_s", "reconnect_max_s", "poll_s")
_MODEM_TIMES = (
    "poll_s",
    "dead_link_s",
    "reset_backoff_min_s",
    "reset_backoff_max_s",
    "command_timeout_s",
    "reset_timeout_s",
    "attach_timeout_s",
    "operator_timeout_s",
    "boot_timeout_s",
)


def _defaults(cls: type[Any]) -> dict[str, Any]:
    """Each field's default (a factory's value: ``wire_version`` imports the wire
    format only when an ``[uplink]`` is configured)."""
    return {
        f.name: f.default if f.default_factory is MISSING else f.default_factory()
        for f in fields(cls)
    }


def uplink(t: Table) -> UplinkConfig | None:
    d = _defaults(UplinkConfig)
    t.unknown_keys_at_once(d)
    failed: list[bool] = []
    host = optional(lambda: t.string("broker_host"), failed)
    port = optional(lambda: t.integer("broker_port", 0, None), failed)
    if port is not None and not 1 <= port <= 65535:
        t.issue("broker_port", f"{port} is not a TCP port")
        failed.append(True)
    files = {key: optional(partial(t.path, key), failed) for key in _UPLINK_FILES}
    # Read the keys as the uplink will: one it cannot load would stop the daemon.
    if (payload := files["payload_key_file"]) is not None:
        _loads(t, "payload_key_file", payload, lambda: read_payload_key(payload), failed)
    counts = {
        key: optional(partial(t.integer, key, 0, None, d[key]), failed) for key in _UPLINK_COUNTS
    }
    if counts["window"] == 0:
        t.issue("window", "at least one batch must be allowed in flight")
        failed.append(True)
    times = {
        key: optional(partial(t.number, key, positive=True, default=d[key]), failed)
        for key in _UPLINK_TIMES
    }
    command_key_file = optional(lambda: t.path("command_key_file", None), failed)
    if (command := command_key_file) is not None:
        _loads(
            t, "command_key_file", command, lambda: load_public_key(command, "command key"), failed
        )
    version = optional(lambda: t.integer("wire_version", 0, None, d["wire_version"]), failed)
    if version is not None and version not in wire_versions():
        t.issue("wire_version", f"{version}, expected one of {list(wire_versions())}")
        failed.append(True)
    if failed:
        return None
    return UplinkConfig(
        broker_host=_given(host),
        broker_port=_given(port),
        ca_file=_given(files["ca_file"]),
        cert_file=_given(files["cert_file"]),
        key_file=_given(files["key_file"]),
        payload_key_file=_given(files["payload_key_file"]),
        key_id=_given(counts["key_id"]),
        keepalive_s=_given(counts["keepalive_s"]),
        window=_given(counts["window"]),
        ack_timeout_s=_given(times["ack_timeout_s"]),
        batch_readings=_given(counts["batch_readings"]),
        batch_events=_given(counts["batch_events"]),
        reconnect_min_s=_given(times["reconnect_min_s"]),
        reconnect_max_s=_given(times["reconnect_max_s"]),
        poll_s=_given(times["poll_s"]),
        command_key_file=command_key_file,
        wire_version=_given(version),
    )


def modem(t: Table) -> ModemConfig | None:
    d = _defaults(ModemConfig)
    t.unknown_keys_at_once(d)
    failed: list[bool] = []
    port = optional(lambda: t.string("port"), failed)
    if port is not None and not port.strip():
        t.issue("port", "empty; expected the modem's AT port, e.g. /dev/ttyUSB2")
        failed.append(True)
    elif port is not None:
        port = resolve_port(t.base, port)
        t.serial_port("port", port)
    baud = optional(lambda: t.integer("baud", None, None, d["baud"]), failed)
    if baud is not None and baud not in MODEM_BAUDS:
        rates = ", ".join(map(str, MODEM_BAUDS))
        t.issue("baud", f"{baud} is not a UART rate a module offers ({rates})")
        failed.append(True)
    times = {key: optional(partial(t.seconds, key, d[key]), failed) for key in _MODEM_TIMES}
    poll, dead = times["poll_s"], times["dead_link_s"]
    if poll is not None and dead is not None and dead < poll:
        t.issue(
            "dead_link_s",
            f"{dead:g} s is shorter than poll_s ({poll:g} s): "
            "a dead link is noticed only at a poll",
        )
        failed.append(True)
    low, high = times["reset_backoff_min_s"], times["reset_backoff_max_s"]
    if low is not None and high is not None and high < low:
        t.issue("reset_backoff_max_s", f"{high:g} s is below reset_backoff_min_s ({low:g} s)")
        failed.append(True)
    method = optional(lambda: t.string("reset_method", d["reset_method"]), failed)
    if method is not None and method not in RESET_METHODS:
        t.issue("reset_method", f"{show(method)}; expected one of {', '.join(RESET_METHODS)}")
        failed.append(True)
    dbm = optional(lambda: t.integer("weak_signal_dbm", None, None, d["weak_signal_dbm"]), failed)
    if dbm is not None and not -113 <= dbm <= -51:
        t.issue("weak_signal_dbm", f"{dbm} is outside what AT+CSQ reports (-113..-51 dBm)")
        failed.append(True)
    counts: dict[str, int | None] = {}
    for key in ("signal_history", "hung_probe_tries"):
        counts[key] = n = optional(partial(t.integer, key, None, None, d[key]), failed)
        if n is not None and n < 1:
            t.issue(key, f"expected at least 1, got {n}")
            failed.append(True)
    command = optional(lambda: t.string("power_cycle_command", ""), failed)
    try:
        shlex.split(command or "")
    except ValueError as exc:
        t.issue("power_cycle_command", str(exc))
        failed.append(True)
    if failed:
        return None
    return ModemConfig(
        port=_given(port),
        baud=_given(baud),
        reset_method=_given(method),
        weak_signal_dbm=_given(dbm),
        signal_history=_given(counts["signal_history"]),
        hung_probe_tries=_given(counts["hung_probe_tries"]),
        power_cycle_command=_given(command),
        **{key: _given(value) for key, value in times.items()},
    )


def update(t: Table, *, has_uplink: bool) -> UpdateConfig | None:
    d = _defaults(UpdateConfig)
    t.unknown_keys_at_once(d)
    failed: list[bool] = []
    if not has_uplink:
        t.report.add(t.line(), t.prefix, "updates arrive over the uplink: [update] needs [uplink]")
        failed.append(True)
    key_file = optional(lambda: t.path("release_key_file"), failed)
    if key_file is not None:
        _loads(
            t,
            "release_key_file",
            key_file,
            lambda: load_public_key(key_file, "release key"),
            failed,
        )
    releases_dir = optional(lambda: t.path("releases_dir", None), failed)
    # The guard creates the release directory itself, but in a folder that exists:
    # a mistyped path must not become a tree of new folders.
    if releases_dir is not None and not releases_dir.parent.is_dir():
        t.issue("releases_dir", f"{releases_dir}: the folder {releases_dir.parent} does not exist")
        failed.append(True)
    timeout = optional(
        lambda: t.number("chunk_timeout_s", positive=True, default=d["chunk_timeout_s"]), failed
    )
    rate = optional(lambda: t.integer("download_bps", 0, None, d["download_bps"]), failed)
    refusals = optional(
        lambda: t.integer("max_chunk_refusals", 0, None, d["max_chunk_refusals"]), failed
    )
    if failed:
        return None
    return UpdateConfig(
        release_key_file=_given(key_file),
        releases_dir=releases_dir,
        chunk_timeout_s=_given(timeout),
        download_bps=_given(rate),
        max_chunk_refusals=_given(refusals),
    )


def metrics(t: Table) -> MetricsConfig | None:
    """Where the Prometheus endpoint listens: an IP address (not a name: the daemon may
    start before DNS works) and a TCP port."""
    t.unknown_keys_at_once(_defaults(MetricsConfig))
    failed: list[bool] = []
    address = optional(lambda: t.string("address", MetricsConfig.address), failed)
    if address is not None:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            t.issue(
                "address",
                f'{show(address)} is not an IP address; expected e.g. "127.0.0.1" (this '
                'machine only), "0.0.0.0" (every interface) or "::1"',
            )
            failed.append(True)
    port = optional(lambda: t.integer("port", 1, 65535), failed)
    if failed:
        return None
    return MetricsConfig(port=_given(port), address=_given(address))


def _loads(t: Table, key: str, path: Path, load: Callable[[], object], failed: list[bool]) -> None:
    """Load a key file as its task will; a failure is an issue at the line naming it.
    Not done for a command that never uses the keys (``stats`` reads only the store,
    and may run as a user who cannot read them)."""
    if not t.report.keys:
        return
    if not t.existing_file(key, path):
        failed.append(True)
        return
    try:
        load()
    except (ValueError, OSError) as exc:
        t.issue(key, str(exc))
        failed.append(True)


def _given(value: T | None) -> T:
    """A value the checks above have made sure of (only None when something failed)."""
    assert value is not None
    return value


def store_key_file(t: Table, failed: list[bool]) -> Path | None:
    """``[storage] key_file``: checked as every opener of the store will read it
    (there, mode 0600, 64 hex digits), whatever the command: even ``stats`` reads the
    store, so it needs the key."""
    key_file = optional(lambda: t.path("key_file", None), failed)
    if key_file is None:
        return None
    if not t.existing_file("key_file", key_file):
        failed.append(True)
        return None
    try:
        read_store_key(key_file)
    except (ValueError, OSError) as exc:
        t.issue("key_file", str(exc))
        failed.append(True)
    return key_file
