"""What the field CLI's commands share: the error console, the control-socket option
and the calls to the running daemon."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from concentrator.cli.exitcodes import Exit
from concentrator.config import DEFAULT_CONTROL_SOCKET
from concentrator.control.client import ControlClient, result_of

if TYPE_CHECKING:
    from rich.console import Console


class _ErrConsole:
    """rich's stderr console, built at its first message: rich costs the process
    about 3 MB, which ``concentrator run`` (the daemon) never needs to pay."""

    def __init__(self) -> None:
        self._console: Console | None = None

    def rich(self) -> Console:
        if self._console is None:
            from rich.console import Console

            self._console = Console(stderr=True)
        return self._console

    def print(self, *objects: Any, **kwargs: Any) -> None:
        self.rich().print(*objects, **kwargs)


err_console = _ErrConsole()


def stdout_console() -> Console:
    """A rich console on stdout (rich imported here, not by the daemon)."""
    from rich.console import Console

    return Console()


def escape(text: str) -> str:
    """rich markup escaped (`rich.markup.escape`), rich imported only when needed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


socket_option = click.option(
    "--socket",
    "socket_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_CONTROL_SOCKET,
    show_default=True,
    envvar="MF_CONTROL_SOCKET",
    show_envvar=True,
    help="The running daemon's control socket.",
)


def stream(
    socket_path: Path,
    cmd: str,
    args: dict[str, Any] | None = None,
    *,
    timeout: float | None = 300.0,
) -> Iterator[dict[str, Any]]:
    """Every line of the daemon's answer; not reaching it is a `ConcentratorError`."""
    return ControlClient(socket_path, timeout=timeout).stream(cmd, args)


def daemon_call(socket_path: Path, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The daemon's result for one request; an error answer raises `ControlError`."""
    final: dict[str, Any] = {}
    for doc in stream(socket_path, cmd, args):
        final = doc
    return result_of(final)


def report_not_supported(
    address: str, unsupported: Sequence[str], *, read_any: bool, as_json: bool
) -> Exit:
    """List the quantities the meter does not have; the exit code of the read.

    One rule for direct mode and reads through the daemon (docs/concentrator.md, "read"):
    a quantity the meter reports as not supported is listed, never an error by itself;
    the read fails (exit 5, the meter's "no requested data") only when nothing that was
    asked for could be read.
    """
    if unsupported and not read_any:
        err_console.print(
            "[red]error:[/red]",
            escape(
                f"meter {address}: no requested data: {', '.join(unsupported)} "
                "not supported by the meter"
            ),
            soft_wrap=True,
        )
        return Exit.METER_ERROR
    if not as_json:
        for name in unsupported:
            err_console.print(f"[yellow]not supported by meter {address}:[/yellow] {name}")
    return Exit.OK
