"""Where a command reads a password from, for operators and portal customers alike.

Passwords are never taken from the command line, where ``ps`` and the shell history
would keep them: ``--password-file FILE`` (its first line), else an environment variable
(``$MF_PASSWORD``, ``$MF_NEW_PASSWORD`` for a new one), else a hidden prompt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from clitools.options import Decorator
from cloud_receiver.errors import ReceiverError


def password_file_option(
    flag: str = "--password-file", dest: str = "password_file"
) -> Decorator[Any]:
    """``--password-file FILE`` (or ``flag``, into ``dest``): the password's first place."""
    return click.option(
        flag,
        dest,
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Read the password from the first line of FILE (for automation).",
    )


def read_password(file: Path | None, prompt: str, env: str, *, confirm: bool = False) -> str:
    """From ``file``, else ``$env``, else a hidden prompt (typed twice when ``confirm``)."""
    if file is not None:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ReceiverError(f"password file {file}: {exc.strerror or exc}") from exc
        if not lines or not lines[0]:
            raise ReceiverError(f"password file {file}: the first line is empty")
        return lines[0]
    if os.environ.get(env):
        return os.environ[env]
    text: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return text
