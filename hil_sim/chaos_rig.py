"""What the chaos soak (``hil_sim.chaos``) acts on: the processes it kills and restarts,
the link proxy it cuts, and the small disk it fills.

Each is a plain handle with the few moves a fault needs; the soak decides when.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

from hil_sim.netlink import LinkProxy

DISK_MB = 64  # the concentrator's data directory: room for hours of backlog, quickly filled
STOP_TIMEOUT_S = 60.0


class Proxy:
    """The link proxy on its own event loop in a thread, switched from the runner."""

    def __init__(self, broker_port: int) -> None:
        self.loop = asyncio.new_event_loop()
        self.proxy = LinkProxy("127.0.0.1", broker_port)
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self.proxy.start(), self.loop).result(30)

    def set_mode(self, mode: Any) -> None:
        self.loop.call_soon_threadsafe(self.proxy.set_mode, mode)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


class Proc:
    """A process the runner starts, kills and restarts; output appended to a log."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT)

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> int | None:
        if not self.alive():
            return None if self.proc is None else self.proc.returncode
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill9()
            return -9

    def rss_mb(self) -> float:
        if not self.alive():
            return 0.0
        assert self.proc is not None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0


class SmallDisk:
    """The concentrator's data directory on a small tmpfs, so that a fault can fill it
    the way a full flash card would (ENOSPC on every write) and free it again."""

    def __init__(self, path: Path, size_mb: int = DISK_MB) -> None:
        self.path = path
        self.size_mb = size_mb
        self.mounted = False
        self.filler = path / "filler.bin"

    def mount(self) -> str | None:
        """Mount it; on failure (not root, no CAP_SYS_ADMIN) say why and use a plain
        directory, with the disk fault left out of the run."""
        self.path.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m,mode=0755", "tmpfs",
             str(self.path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            return (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
        self.mounted = True
        return None

    def fill(self) -> int:
        """Write until the filesystem refuses (ENOSPC); return the bytes written."""
        written = 0
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            for chunk in (1 << 20, 1 << 12, 1 << 9):
                block = bytes(chunk)
                while True:
                    try:
                        n = os.write(fd, block)
                    except OSError:
                        break
                    written += n
                    if n < chunk:
                        break
        finally:
            os.close(fd)
        return written

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False
