"""What the field CLI's commands share: the error console, the control-socket option
and the calls to the running daemon."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from concentrator.config import DEFAULT_CONTROL_SOCKET
from concentrator.control.client import ControlClient, result_of

err_console = Console(stderr=True)

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
