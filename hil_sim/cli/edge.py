"""Where a ``hil_sim`` error becomes what a person reads and the exit code a script sees.

Every ``hil-sim`` command is a ``SimCommand``; nothing below the command line turns
errors into messages. The mapping (``hil_sim.errors`` says what each error means):

- ``OptionError``: exit 2, the usage and ``Invalid value[ for FLAG]: <message>``;
- ``SpecError``: exit 2, the usage and ``Error: <message>``;
- ``SimUnavailable``: exit 1, ``error: <message>`` on stderr;
- ``OSError`` (a file that cannot be written, a folder removed meanwhile): exit 1,
  ``error: <what the system said>``;
- anything else is a bug: exit 1, one ``error: internal error`` line (the traceback
  with ``MF_TRACEBACK=1``), never a bare traceback.
"""

from __future__ import annotations

import os
import traceback
from typing import Any

import click

from hil_sim.errors import OptionError, SimUnavailable, SpecError


class SimCommand(click.Command):
    """A ``hil-sim`` command: runs its callback and converts ``SimError``s (above)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OptionError as exc:
            raise click.BadParameter(str(exc), ctx=ctx, param_hint=exc.option) from None
        except SpecError as exc:
            raise click.UsageError(str(exc), ctx=ctx) from None
        except SimUnavailable as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except OSError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:  # a bug: one line, the traceback only when asked for
            if os.environ.get("MF_TRACEBACK"):
                traceback.print_exc()
            click.echo(
                f"error: internal error (a bug): {type(exc).__name__}: {exc}; "
                "run again with MF_TRACEBACK=1 for the traceback to report",
                err=True,
            )
            ctx.exit(1)
