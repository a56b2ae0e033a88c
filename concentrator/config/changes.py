"""What a reload (SIGHUP) may change in a running daemon, and what only a restart may.

The daemon applies a new configuration table by table: the polling side (buses,
meters, tasks, the timezone) and the services (``[uplink]`` with ``[update]``,
``[modem]``, ``[metrics]``) are rebuilt while it runs; the store and the daemon's
identity are not: the store is open with its settings, the concentrator id names
its MQTT topics and its certificate, the control socket is bound. Those keep their
running values, and the refusal says why.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from concentrator.config.model import Config


def keep_restart_only(
    running: Config, new: Config, *, socket_fixed: bool
) -> tuple[Config, dict[str, str]]:
    """``new`` with the running values of what only a restart changes, and why each of
    those changes was refused (by table). ``socket_fixed``: the control socket was given
    on the command line, so the file's does not count."""
    refused: dict[str, str] = {}
    if new.storage != running.storage:
        refused["storage"] = (
            "the store is open with the running settings (path, quota, synchronous, "
            "retention); the new ones take effect at the next restart"
        )
        new = dataclasses.replace(new, storage=running.storage)
    section = new.concentrator
    if section.id != running.concentrator.id:
        refused["concentrator.id"] = (
            "the concentrator's identity (its MQTT topics and certificate, the receiver's "
            "records) changes only at a restart"
        )
        section = dataclasses.replace(section, id=running.concentrator.id)
    if section.control_socket != running.concentrator.control_socket:
        if not socket_fixed:
            refused["concentrator.control_socket"] = (
                f"the control socket is bound at {running.concentrator.control_socket}; "
                "the new path takes effect at the next restart"
            )
        section = dataclasses.replace(section, control_socket=running.concentrator.control_socket)
    return dataclasses.replace(new, concentrator=section), refused


def polling_part(cfg: Config) -> tuple[object, ...]:
    """What the polling side is built from: a change restarts its workers and schedulers."""
    return (cfg.buses, cfg.meters, cfg.tasks, cfg.concentrator.timezone,
            cfg.concentrator.commissioning)  # fmt: skip


def uplink_fingerprint(cfg: Config) -> tuple[object, ...]:
    """``[uplink]`` and ``[update]`` with the content of the files they name: renewed
    certificates or a rotated key under the same names are a change too."""
    files: list[Path | None] = []
    if cfg.uplink is not None:
        u = cfg.uplink
        files += [u.ca_file, u.cert_file, u.key_file, u.payload_key_file, u.command_key_file]
    if cfg.update is not None:
        files.append(cfg.update.release_key_file)
    contents: list[bytes | None] = []
    for path in files:
        try:
            contents.append(path.read_bytes() if path is not None else None)
        except OSError:
            contents.append(None)
    return (cfg.uplink, cfg.update, tuple(contents))
