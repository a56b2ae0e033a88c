"""Where the concentrator's errors leave the program: once, as a message and an exit code.

Commands let any `ConcentratorError` through; the command group catches it here,
prints it (a configuration error as its list of issues, anything else as one
``error:`` line) and exits with its code from `concentrator.cli.exitcodes`. What a
command reports about its own results (a meter that did not answer a direct read, a
bus that failed a time sync) stays in the command.
"""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
from rich.markup import escape

from concentrator.cli.common import err_console
from concentrator.cli.exitcodes import exit_for
from concentrator.config import ConfigError
from concentrator.errors import ConcentratorError


class ServiceCommand(click.Command):
    """A command that starts a long-running process (``run``, ``supervise``): a bad
    configuration means it did not start, and says so."""


class EdgeGroup(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConcentratorError as exc:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            fail(exc, starting=isinstance(command, ServiceCommand))


def fail(exc: ConcentratorError, *, starting: bool = False) -> NoReturn:
    if isinstance(exc, ConfigError):
        heading = "invalid configuration, not starting:" if starting else "invalid configuration:"
        err_console.print(f"[red]{heading}[/red]")
        click.echo(str(exc), err=True)  # plain: "[meter]" in an issue is text, not markup
    else:
        # One line, never wrapped: field scripts grep for it. Plain text after the prefix.
        err_console.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
    sys.exit(exit_for(exc))
