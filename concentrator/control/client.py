"""The CLI's side of the control socket: blocking, one request per connection.

Whatever goes wrong on the way is one of our errors (`DaemonUnreachable`,
`DaemonTimeout`, `ControlError`), which the CLI turns into a message and an exit code.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from concentrator.control.protocol import (
    PROTOCOL_VERSION,
    SOCKET_GROUP,
    ControlError,
    ErrorCode,
    encode,
    short,
)
from concentrator.errors import ConcentratorError


class DaemonUnreachable(ConcentratorError):
    """Nobody answers on the socket (``running`` False), or we may not use it."""

    def __init__(self, message: str, *, running: bool) -> None:
        super().__init__(message)
        self.running = running


class DaemonTimeout(ConcentratorError, TimeoutError):
    """The daemon took the request but did not answer in time."""


class ControlClient:
    def __init__(self, path: Path, *, timeout: float | None = 300.0) -> None:
        self.path = path
        self.timeout = timeout
        self._next_id = 0

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            sock.close()
            raise DaemonUnreachable(
                f"no daemon at {self.path}: is `concentrator run` started?", running=False
            ) from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"permission denied on {self.path}: the control socket is for its owner "
                f"and group {SOCKET_GROUP}",
                running=True,
            ) from None
        return sock

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every line of the answer; the last one has ``result`` or ``error``."""
        self._next_id += 1
        request_id = self._next_id
        request = {"v": PROTOCOL_VERSION, "id": request_id, "cmd": cmd, "args": args or {}}
        try:
            sock = self._connect()
            try:
                sock.sendall(encode(request))
                with sock.makefile("rb") as lines:
                    for raw in lines:
                        doc = _line(raw)
                        yield doc
                        if "result" in doc or "error" in doc:
                            return
            finally:
                sock.close()
        except TimeoutError:
            raise DaemonTimeout(
                f"the daemon at {self.path} did not answer within {self.timeout:g} s"
            ) from None
        except OSError as exc:
            raise DaemonUnreachable(
                f"lost the daemon at {self.path}: {exc}", running=False
            ) from None
        raise ControlError(
            ErrorCode.STOPPING, "the daemon closed the connection before answering (stopping?)"
        )

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for doc in self.stream(cmd, args):
            final = doc
        return result_of(final)


def _line(raw: bytes) -> dict[str, Any]:
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ControlError(
            ErrorCode.BAD_JSON, f"the daemon sent a line that is not JSON: {raw[:80]!r}"
        ) from None
    if not isinstance(doc, dict) or doc.get("v") != PROTOCOL_VERSION:
        raise ControlError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"the daemon answered in another protocol: {short(str(doc))}",
        )
    return doc


def result_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of a final line, or its ``error`` raised as ControlError."""
    if "error" in doc:
        error = doc["error"]
        if not isinstance(error, dict):
            raise ControlError(ErrorCode.BAD_JSON, f"malformed error from the daemon: {error!r}")
        raise ControlError(str(error.get("code", "failed")), str(error.get("message", "")))
    result = doc.get("result")
    if not isinstance(result, dict):
        raise ControlError(
            ErrorCode.BAD_JSON, f"malformed answer from the daemon: {short(str(doc))}"
        )
    return result
