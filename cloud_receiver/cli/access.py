"""``login``, ``logout``, ``whoami``, ``passwd``, ``operator``, ``requests``,
``approve``, ``cancel`` and ``settings``: operators, their sessions, the requests
waiting for a second operator, and the access settings.

The commands live by what they act on: an operator's own session (`.sessions`),
operator accounts (`.operators`), the request queue (`.requests`) and the access
settings (`.settings`); passwords are read by `.passwords`, never from the command line.
This module gathers them into the one list the command line registers, and keeps the
commands importable from here, where they were before the split.
"""

from __future__ import annotations

from cloud_receiver.cli.operators import (
    operator,
    operator_add,
    operator_disable,
    operator_enable,
    operator_list,
    operator_reset_password,
    operator_reset_totp,
    operator_set_role,
)
from cloud_receiver.cli.requests import approve, cancel, requests_list
from cloud_receiver.cli.sessions import login, logout, passwd, whoami
from cloud_receiver.cli.settings import settings, settings_set, settings_show

__all__ = [
    "COMMANDS",
    "approve",
    "cancel",
    "login",
    "logout",
    "operator",
    "operator_add",
    "operator_disable",
    "operator_enable",
    "operator_list",
    "operator_reset_password",
    "operator_reset_totp",
    "operator_set_role",
    "passwd",
    "requests_list",
    "settings",
    "settings_set",
    "settings_show",
    "whoami",
]

COMMANDS = [login, logout, whoami, passwd, operator, requests_list, approve, cancel, settings]
