"""A minimal HTTP/1.1 server on the daemon's event loop for Prometheus to scrape.

On the loop, not in a thread, so the figures are read where the tasks change them
(never half-updated, no dict changing size under a reader) and no thread stack is
added to the concentrator's RSS. It answers ``GET``/``HEAD`` of ``/metrics`` (and
``/``), one request per connection, gzip when asked (Prometheus asks; over GPRS the
text shrinks about five times), and closes a connection that sends no request head
within ``HEAD_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

HEAD_TIMEOUT_S = 10.0
MAX_HEAD_BYTES = 16 * 1024
MAX_CLIENTS = 8  # a scraper or two, and a person with curl; more is a scan

Render = Callable[[], Awaitable[tuple[bytes, str]]]  # (body, content type)

_INDEX = b"meterflow concentrator: Prometheus metrics at /metrics\n"


class ScrapeServer:
    """``await start()`` binds (OSError if it cannot); ``await close()`` stops it."""

    def __init__(self, host: str, port: int, render: Render) -> None:
        self.host = host
        self.port = port
        self.render = render
        self._server: asyncio.Server | None = None
        self._clients = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_HEAD_BYTES, reuse_address=True
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients += 1
        try:
            if self._clients > MAX_CLIENTS:
                return
            try:
                async with asyncio.timeout(HEAD_TIMEOUT_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                return
            except ConnectionError:
                return
            status, headers, body = await self._answer(head)
            lines = [f"HTTP/1.1 {status}", *headers, f"Content-Length: {len(body)}"]
            lines.append("Connection: close")
            head_out = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            writer.write(head_out if head.startswith(b"HEAD ") else head_out + body)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        except Exception:  # a bug in one answer must not end the endpoint
            log.exception("metrics: answering a request failed")
        finally:
            self._clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, head: bytes) -> tuple[str, list[str], bytes]:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/"):
            return "400 Bad Request", ["Content-Type: text/plain"], b"malformed request line\n"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return (
                "405 Method Not Allowed",
                ["Allow: GET, HEAD", "Content-Type: text/plain"],
                f"{method} is not served; use GET\n".encode(),
            )
        path = target.split("?", 1)[0]
        if path == "/":
            return "200 OK", ["Content-Type: text/plain; charset=utf-8"], _INDEX
        if path != "/metrics":
            return "404 Not Found", ["Content-Type: text/plain"], b"not found; try /metrics\n"
        body, content_type = await self.render()
        headers = [f"Content-Type: {content_type}"]
        if _accepts_gzip(header_lines):
            body = gzip.compress(body, compresslevel=6)
            headers.append("Content-Encoding: gzip")
        return "200 OK", headers, body


def _accepts_gzip(header_lines: list[str]) -> bool:
    for line in header_lines:
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept-encoding":
            codings = [c.split(";")[0].strip().lower() for c in value.split(",")]
            return "gzip" in codings
    return False
