"""Where the concentrator's errors leave the program: once, as a message and an exit code.

Commands let any `ConcentratorError` through; the command group catches it here,
prints it (a configuration error as its list of issues, anything else as one
``error:`` line) and exits with its code from `concentrator.cli.exitcodes`. What a
command reports about its own results (a meter that did not answer a direct read, a
bus that failed a time sync) stays in the command.

Nothing else leaves as a traceback either: an ``OSError`` (a file that cannot be
written, a folder removed meanwhile) is one ``error:`` line with what the system said,
and any other exception is a bug, said as such in one line (exit 1); its traceback is
printed only with ``MF_TRACEBACK=1``, for the report.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, NoReturn

import click

from clitools.output import JsonGroup, report_error
from concentrator.cli.common import err_console, escape
from concentrator.cli.exitcodes import Exit, exit_for
from concentrator.config import ConfigError
from concentrator.errors import ConcentratorError


class ServiceCommand(click.Command):
    """A command that starts a long-running process (``run``, ``supervise``): a bad
    configuration means it did not start, and says so."""


class EdgeGroup(JsonGroup):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConcentratorError as exc:
            command = self.get_command(ctx, ctx.invoked_subcommand or "")
            fail(exc, starting=isinstance(command, ServiceCommand))
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click's own: usage errors (exit 2), --help, Ctrl-C
        except OSError as exc:
            report_error(str(exc), Exit.FAILURE)
            err_console.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
            sys.exit(Exit.FAILURE)
        except Exception as exc:
            if os.environ.get("MF_TRACEBACK"):
                traceback.print_exc()
            err_console.print(
                "[red]error:[/red]",
                escape(
                    f"internal error (a bug): {type(exc).__name__}: {exc}; "
                    "run again with MF_TRACEBACK=1 for the traceback to report"
                ),
                soft_wrap=True,
            )
            sys.exit(Exit.FAILURE)


def fail(exc: ConcentratorError, *, starting: bool = False) -> NoReturn:
    if isinstance(exc, ConfigError):
        report_error(
            "invalid configuration",
            exit_for(exc),
            issues=[str(i) for i in exc.issues],
            warnings=[str(w) for w in exc.warnings],
        )
        heading = "invalid configuration, not starting:" if starting else "invalid configuration:"
        err_console.print(f"[red]{heading}[/red]")
        # Plain: "[meter]" in an issue is text, not markup. Warnings too, in file order.
        for issue in sorted([*exc.issues, *exc.warnings], key=lambda i: i.line or 0):
            click.echo(str(issue), err=True)
    else:
        # One line, never wrapped: field scripts grep for it. Plain text after the prefix.
        report_error(str(exc), exit_for(exc))
        err_console.print("[red]error:[/red]", escape(str(exc)), soft_wrap=True)
    sys.exit(exit_for(exc))
