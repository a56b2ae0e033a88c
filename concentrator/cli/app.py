"""The ``concentrator`` command group and the commands in it."""

from __future__ import annotations

import click

from concentrator.cli import control, direct, files, service
from concentrator.cli.edge import EdgeGroup


@click.group(cls=EdgeGroup)
@click.version_option(package_name="meterflow")
def main() -> None:
    """meterflow concentrator: read meters, run the daemon, talk to it."""


for _command in (
    direct.read,
    direct.scan_command,
    files.config_group,
    files.stats,
    files.backup,
    service.run,
    service.supervise,
    control.status,
    control.meters,
    control.relay,
    control.time_sync,
    control.events,
    control.buffer,
    control.flush,
    control.backfill,
    control.logs,
    control.commissioning,
):
    main.add_command(_command)
