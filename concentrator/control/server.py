"""The daemon's local control socket: how the field CLI reaches a running concentrator.

A Unix stream socket, never a network listener (docs/architecture.md, "Security
model"): ``[concentrator] control_socket`` or ``concentrator run --control-socket``,
default ``/run/meterflow/concentrator.sock``. The socket is mode 0660 and belongs to
group ``meterflow`` when that group exists, so only the service account and the field
engineers in that group can switch a relay. A stale socket left by a killed daemon is
replaced; one that a live daemon answers on is left alone.

The lines it carries are `concentrator.control.protocol`; what a request does is
`concentrator.control.api`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import pwd
import socket
import stat
import struct
from pathlib import Path
from typing import Any

from concentrator.control.api import Call, ControlApi
from concentrator.control.protocol import (
    MAX_LINE,
    SOCKET_GROUP,
    SOCKET_MODE,
    Args,
    ControlError,
    ErrorCode,
    answer,
    encode,
    error_for,
    parse_request,
)
from drivers.errors import DriverError

log = logging.getLogger(__name__)


class ControlServer:
    """The socket: connections, request lines and their answers; `api` does the work."""

    def __init__(self, path: Path, api: ControlApi) -> None:
        self.path = path
        self.api = api
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._inode: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Serve until cancelled. Without a socket the daemon still polls: a control
        socket it cannot bind is logged, not fatal (the readings matter more)."""
        try:
            try:
                sock = self._bind()
            except OSError as exc:
                log.error(
                    "no control socket at %s (the field CLI cannot reach this daemon): %s",
                    self.path,
                    exc,
                )
            else:
                self._server = await asyncio.start_unix_server(
                    self._connection, sock=sock, limit=MAX_LINE
                )
                log.info("control socket %s", self.path)
            await asyncio.Future()  # until the daemon stops
        finally:
            await self.close()

    def _bind(self) -> socket.socket:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise OSError(f"{path} exists and is not a socket")
            if _answers(path):
                raise OSError(f"another daemon answers on {path}")
            path.unlink()  # left behind by a daemon that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Never group- or world-writable for a moment: the umask applies at bind().
        old = os.umask(0o777 & ~SOCKET_MODE)
        try:
            sock.bind(os.fspath(path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, SOCKET_MODE)
        try:
            gid = grp.getgrnam(SOCKET_GROUP).gr_gid
        except KeyError:
            log.debug("no group %s: %s keeps group %d", SOCKET_GROUP, path, path.stat().st_gid)
        else:
            try:
                os.chown(path, -1, gid)
            except OSError as exc:
                log.warning("cannot give %s to group %s: %s", path, SOCKET_GROUP, exc)
        self._inode = path.stat().st_ino
        sock.listen(16)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Stop accepting, end every open request with a ``stopping`` error, remove the
        socket file (if it is still ours). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._connections)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inode is not None:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            self._inode = None

    # ------------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            writer.close()
            return
        self._connections.add(task)
        peer = _peer(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE: the rest of it is not a request
                    error = ControlError(
                        ErrorCode.LINE_TOO_LONG,
                        f"a request line may be at most {MAX_LINE} bytes; closing",
                    )
                    writer.write(encode(answer(None, "error", error.as_dict())))
                    await writer.drain()
                    break
                if not line:
                    break
                if line.strip():
                    await self._serve(line, Call(None, peer, reader, writer))
        except ConnectionError:
            pass  # the client went away
        except asyncio.CancelledError:
            # close() cancels us; end quietly (asyncio 3.11 logs a handler that ends
            # cancelled as an error). Any other cancellation goes on up.
            if not self._closed:
                raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, line: bytes, call: Call) -> None:
        try:
            request = parse_request(line)
        except ControlError as exc:
            call.id = exc.request_id
            await call.send("error", exc.as_dict())
            return
        call.id = request.id
        try:
            result = await self.api.handle(request.cmd, call, Args(request.cmd, request.args))
        except asyncio.CancelledError:
            # The daemon is stopping: the client gets a final line, not a cut connection.
            stopping = ControlError(ErrorCode.STOPPING, "the daemon is stopping")
            with contextlib.suppress(Exception):
                call.writer.write(encode(answer(call.id, "error", stopping.as_dict())))
            raise
        except ControlError as exc:
            await call.send("error", exc.as_dict())
        except DriverError as exc:
            await call.send("error", error_for(exc).as_dict())
        except ConnectionError:
            raise
        except Exception as exc:  # a bug must cost one answer, never the daemon
            log.exception("control: %s failed", request.cmd)
            error = ControlError(ErrorCode.INTERNAL, f"{request.cmd} failed: {exc!r}")
            await call.send("error", error.as_dict())
        else:
            await call.send("result", result)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _peer(writer: asyncio.StreamWriter) -> dict[str, object]:
    """Who is on the other end (SO_PEERCRED: the kernel says so, the client cannot lie)."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return {}
    pid, uid, _gid = struct.unpack("3i", raw)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return {"user": user, "uid": uid, "pid": pid}
