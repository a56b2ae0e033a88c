"""Cli: the ``cloud-receiver`` command line, one module per command group.

`main` is the console script (and ``python -m cloud_receiver``). Every command reports a
`cloud_receiver.errors.ReceiverError` the same way, here at the edge: ``error: message``
on stderr and the error's exit code (2 = bad command line, 1 = anything else; the
analytics add 3, 7 and 9). Commands import what they run lazily, so ``--help`` and
``provision`` stay quick.

Every command that reads customer data or acts runs as an operator logged in with
``cloud-receiver login`` (`.auth`); ``--help``, ``provision``, ``broker-config``, ``crl``,
``release build`` (offline tools with their own key files), ``run`` (the service
itself), ``restore`` (into an empty database) and the first ``operator add`` need no
session.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from clitools.output import JsonGroup, report_error
from clitools.timefmt import tz_option
from cloud_receiver.cli import (
    access,
    analytics,
    audit,
    backup,
    commands,
    completeness,
    conflicts,
    dr,
    ownership,
    pki,
    portal,
    prepay,
    queries,
    releases,
    service,
    supply,
    web,
)
from cloud_receiver.errors import ReceiverError


class _Main(JsonGroup):
    """The receiver's command group: turns a `ReceiverError` into its exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReceiverError as exc:
            report_error(str(exc), exc.exit_code)
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


@click.group(cls=_Main)
@click.version_option(package_name="meterflow")
@tz_option()
def main(site_tz: object) -> None:
    """meterflow cloud receiver: ingest concentrator batches and answer queries."""


for _module in (pki, service, queries, completeness, conflicts, commands, prepay, dr, supply,
                analytics, ownership, releases, access, audit, backup, portal, web):  # fmt: skip
    for _command in _module.COMMANDS:
        main.add_command(_command)
