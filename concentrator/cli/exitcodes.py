"""Exit codes of the ``concentrator`` CLI, so field scripts can tell causes apart, and
which error means which (`concentrator.cli.edge` applies it)."""

from __future__ import annotations

from enum import IntEnum

from concentrator.config import ConfigError
from concentrator.control.client import DaemonUnreachable
from concentrator.control.protocol import ControlError, ErrorCode
from drivers.errors import BusError, BusTimeout, DriverError, EncodeError, FrameError, MeterError


class Exit(IntEnum):
    OK = 0
    FAILURE = 1  # anything not listed below
    USAGE = 2  # bad command line (click's own code)
    NO_REPLY = 3  # the meter did not answer
    GARBLED = 4  # the meter answered garbage (noise, bad checksum, collision)
    METER_ERROR = 5  # the meter answered with an error reply
    PORT = 6  # the serial port could not be opened or used
    CONFIG = 7  # invalid configuration
    DAEMON_DOWN = 8  # the daemon's control socket is not there (or the daemon is stopping)
    UNKNOWN_METER = 9  # the running daemon has no such meter in its configuration
    REFUSED = 10  # the daemon refused (no relay password, no uplink) or the socket refused us
    PROTOCOL = 11  # the daemon did not understand the request, or the CLI its answer


def exit_for(exc: BaseException) -> Exit:
    """The exit code for an error of ours (`ConcentratorError`) or of the drivers."""
    if isinstance(exc, ConfigError):
        return Exit.CONFIG
    if isinstance(exc, ControlError):
        return exit_for_control(exc.code)
    if isinstance(exc, DaemonUnreachable):
        return Exit.REFUSED if exc.running else Exit.DAEMON_DOWN
    if isinstance(exc, BusTimeout):
        return Exit.NO_REPLY
    if isinstance(exc, FrameError):
        return Exit.GARBLED
    if isinstance(exc, MeterError):
        return Exit.METER_ERROR
    if isinstance(exc, BusError):
        return Exit.PORT
    if isinstance(exc, EncodeError):
        return Exit.USAGE
    if isinstance(exc, DriverError):
        return Exit.FAILURE
    return Exit.FAILURE


# What each error of the daemon's control API means for a script (`concentrator.control`).
_CONTROL_EXITS: dict[ErrorCode, Exit] = {
    ErrorCode.BAD_ARGUMENT: Exit.USAGE,
    ErrorCode.NO_REPLY: Exit.NO_REPLY,
    ErrorCode.GARBLED: Exit.GARBLED,
    ErrorCode.METER_ERROR: Exit.METER_ERROR,
    ErrorCode.BUS_ERROR: Exit.PORT,
    ErrorCode.STOPPING: Exit.DAEMON_DOWN,
    ErrorCode.UNKNOWN_METER: Exit.UNKNOWN_METER,
    ErrorCode.REFUSED: Exit.REFUSED,
    ErrorCode.BAD_JSON: Exit.PROTOCOL,
    ErrorCode.BAD_REQUEST: Exit.PROTOCOL,
    ErrorCode.UNSUPPORTED_VERSION: Exit.PROTOCOL,
    ErrorCode.UNKNOWN_COMMAND: Exit.PROTOCOL,
    ErrorCode.LINE_TOO_LONG: Exit.PROTOCOL,
}


def exit_for_control(code: str) -> Exit:
    """The exit code for an error the daemon answered with (its ``error.code``)."""
    try:
        return _CONTROL_EXITS.get(ErrorCode(code), Exit.FAILURE)
    except ValueError:  # a code from a newer daemon
        return Exit.FAILURE
