"""Software updates inside the daemon: take a signed upgrade offer, fetch the package in
resumable chunks over the uplink's MQTT session, check it, install it beside the
running release, and hand over to the guard (`concentrator supervise`) to switch.

Order of trust: the offer arrives in a command signed with the command key; the
manifest in it must verify with the separate *release* key; every chunk must match the
manifest's hash for its index before it is written; the whole payload and every file in
it must match before anything is installed. A chunk is written to the ``.part`` file
only after it verified, so after a cut link or a restart the download goes on from the
first chunk not yet there — it never starts again.

Progress goes upstream as ``upgrade`` events (``downloading``, ``refused``, ``failed``,
``installed``, ``trial``, ``healthy``, ``rolled_back``) through the store and the
encrypted uplink, like every other event; the receiver's rollout acts on them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from clitools.files import create_file, write_file
from concentrator import __version__
from concentrator.clock import Clock
from concentrator.config import UpdateConfig
from concentrator.storage import SCHEMA_VERSION, StoreError, StoreWriter
from concentrator.update.releases import SUPERVISOR_ENV, Releases
from contract import package
from contract.records import Event

if TYPE_CHECKING:
    from contract.commands import Command

log = logging.getLogger(__name__)

OFFER_KEY = "update:offer"  # the accepted offer being downloaded (survives restarts)
REPORTED_KEY = "update:reported"  # trial and outcome records already sent upstream
PIP_TIMEOUT_S = 600.0


@dataclass
class DownloadStats:
    fetched: int = 0  # chunks accepted in this process
    refused: int = 0  # chunks that failed their check
    link_losses: int = 0  # waits cut short by a dropped link
    resumed_at: int = 0  # the chunk this process started from


class PackageLink(Protocol):
    """The uplink's side of a download (`concentrator.uplink.mqtt.Uplink`)."""

    @property
    def connected(self) -> asyncio.Event: ...

    @property
    def link_down(self) -> asyncio.Event: ...

    def request_package_chunk(self, payload: bytes) -> bool: ...


class Updater:
    def __init__(
        self,
        cfg: UpdateConfig,
        *,
        releases: Releases,
        writer: StoreWriter,
        link: PackageLink,
        clock: Clock,
        wire_version: int,
        config_format: Callable[[], int],
        on_installed: Callable[[], None],
    ) -> None:
        self.cfg = cfg
        self.key = cfg.release_key()
        self.releases = releases
        self.writer = writer
        self.link = link
        self.clock = clock
        self.wire_version = wire_version  # what the uplink sends
        self.config_format = config_format  # of the configuration in force
        # The release is installed: the daemon exits with EXIT_SWITCH for the guard.
        self.on_installed = on_installed
        self.stats = DownloadStats()
        self.version: str | None = None  # the version being fetched
        self._task: asyncio.Task[None] | None = None
        self._waiting: tuple[str, int] | None = None
        self._chunk: asyncio.Future[bytes] | None = None
        self._reported: list[str] | None = None  # REPORTED_KEY, read from the store once

    @property
    def busy(self) -> bool:
        """Whether an upgrade is being downloaded or installed."""
        return self._task is not None and not self._task.done()

    # ------------------------------------------------------------------ the offer
    def device(self) -> package.Device:
        return package.Device(__version__, self.config_format(), self.wire_version, SCHEMA_VERSION)

    async def offer(self, cmd: Command) -> dict[str, Any]:
        """Check an ``upgrade`` command and start the download; the command's result."""
        try:
            manifest_bytes = bytes.fromhex(str(cmd.params["manifest"]))
            signature = bytes.fromhex(str(cmd.params["signature"]))
            m = package.verify_manifest(manifest_bytes, signature, self.key)
            package.check_compatible(m, self.device())
            outcome = self.releases.read("outcome.json") or {}
            if outcome.get("version") == m.version and outcome.get("state") == "rolled_back":
                raise package.PackageError(
                    "incompatible",
                    f"{m.version} was rolled back here before ({outcome.get('reason')}); "
                    "ship a fixed release under a new version",
                )
            trial = self.releases.read("trial.json")
            if trial is not None:
                raise package.PackageError(
                    "incompatible", f"release {trial.get('version')} is still on trial here"
                )
            if os.environ.get(SUPERVISOR_ENV) is None:
                raise package.PackageError(
                    "incompatible",
                    "not running under `concentrator supervise`: nothing would switch "
                    "to the new release or roll it back",
                )
        except package.PackageError as exc:
            version = _version_of(cmd)
            self._event("refused", version, {"reason": str(exc)}, "warning")
            return {"result": "refused", "error": str(exc)}
        if self._task is not None and not self._task.done():
            if self.version == m.version:
                return {"result": "ok", "state": "downloading", "version": m.version}
            reason = f"the upgrade to {self.version} is still in progress"
            self._event("refused", m.version, {"reason": reason}, "warning")
            return {"result": "refused", "error": reason}
        window = float(cmd.params["health_window_s"])
        doc = {"manifest": manifest_bytes.hex(), "signature": signature.hex(), "window": window}
        try:
            await self.writer.write_state(OFFER_KEY, json.dumps(doc))
        except StoreError as exc:
            return {"result": "failed", "error": f"cannot record the offer: {exc}"}
        self._start(m, manifest_bytes, signature, window)
        return {"result": "ok", "state": "downloading", "version": m.version}

    async def resume(self) -> None:
        """At start-up: go on with an accepted offer the last process did not finish."""
        saved = await self.writer.read_state(OFFER_KEY)
        if not saved:
            return
        try:
            doc = json.loads(saved)
            manifest_bytes = bytes.fromhex(doc["manifest"])
            signature = bytes.fromhex(doc["signature"])
            m = package.verify_manifest(manifest_bytes, signature, self.key)
            package.check_compatible(m, self.device())
        except (ValueError, KeyError, TypeError, package.PackageError) as exc:
            log.info("not resuming the saved upgrade offer: %s", exc)
            await self.writer.delete_state(OFFER_KEY)
            return
        self._start(m, manifest_bytes, signature, float(doc["window"]))

    def _start(self, m: package.Manifest, manifest: bytes, signature: bytes, window: float) -> None:
        self.version = m.version
        self._task = asyncio.create_task(
            self._fetch_and_install(m, manifest, signature, window), name="updater"
        )

    # ------------------------------------------------------------------ download
    def on_chunk(self, data: bytes) -> None:
        """A message on the package topic (called in the event loop)."""
        try:
            version, index, body = package.decode_chunk(data)
        except package.PackageError as exc:
            self.stats.refused += 1
            log.warning("ignored a package message: %s", exc)
            return
        if self._waiting == (version, index) and self._chunk and not self._chunk.done():
            self._chunk.set_result(body)
        # else: a late answer to a request already asked again; the next one counts

    async def _fetch_and_install(
        self, m: package.Manifest, manifest: bytes, signature: bytes, window: float
    ) -> None:
        try:
            if not self.releases.installed(m.version):  # else: killed after installing
                await self._fetch(m)
                await asyncio.to_thread(self._install, m, manifest, signature)
        except package.PackageError as exc:
            await self._fail(m, str(exc), discard=True)
            return
        except Exception as exc:  # disk, pip, a bug: reported, and the daemon polls on
            log.exception("upgrade to %s failed", m.version)
            await self._fail(m, f"{type(exc).__name__}: {exc}", discard=False)
            return
        self._event(
            "installed",
            m.version,
            {
                "chunks": len(m.chunks),
                "fetched": self.stats.fetched,
                "resumed_at": self.stats.resumed_at,
                "refused_chunks": self.stats.refused,
                "link_losses": self.stats.link_losses,
            },
        )
        self.releases.write(
            "switch.json",
            {"version": m.version, "window_s": window, "from": __version__, "at": time.time()},
        )
        await self.writer.delete_state(OFFER_KEY)
        log.info("release %s installed; handing over to the guard to switch", m.version)
        self.on_installed()

    def _part(self, m: package.Manifest) -> Path:
        return self.releases.incoming / f"{m.version}.part"

    async def _fetch(self, m: package.Manifest) -> None:
        part = self._part(m)
        part.parent.mkdir(parents=True, exist_ok=True)
        have = part.stat().st_size if part.exists() else 0
        index = min(have // m.chunk_size, len(m.chunks))
        if have >= m.payload_size:
            index = len(m.chunks)
        create_file(part)
        with part.open("r+b") as fh:
            fh.truncate(min(index * m.chunk_size, m.payload_size))
        self.stats.resumed_at = index
        if index:
            log.info(
                "resuming the download of %s at chunk %d of %d", m.version, index, len(m.chunks)
            )
        else:
            self._event(
                "downloading", m.version, {"chunks": len(m.chunks), "bytes": m.payload_size}
            )
        uplink = self.link
        refusals = 0
        loop = asyncio.get_running_loop()
        while index < len(m.chunks):
            if not uplink.connected.is_set():
                self.stats.link_losses += 1
                log.info("link down during the download of %s, at chunk %d", m.version, index)
                await uplink.connected.wait()
            self._waiting, self._chunk = (m.version, index), loop.create_future()
            if not uplink.request_package_chunk(package.encode_request(m.version, index)):
                continue  # the link went down just now: counted and waited for above
            try:
                async with asyncio.timeout(self.cfg.chunk_timeout_s):
                    data = await _until_answer_or_link_loss(self._chunk, uplink.link_down)
            except TimeoutError:
                continue  # a lost request or chunk: ask again
            if data is None:
                continue  # the link dropped while we waited: counted at the top
            try:
                package.check_chunk(m, index, data)
            except package.PackageError as exc:
                self.stats.refused += 1
                refusals += 1
                log.warning("refused %s (%d of %d)", exc, refusals, self.cfg.max_chunk_refusals)
                if refusals >= self.cfg.max_chunk_refusals:
                    raise
                continue
            await asyncio.to_thread(_append, part, data)
            self.stats.fetched += 1
            index += 1
            refusals = 0
            if self.cfg.download_bps:
                await asyncio.sleep(len(data) / self.cfg.download_bps)
        self._waiting = self._chunk = None

    def _install(self, m: package.Manifest, manifest: bytes, signature: bytes) -> None:
        """Check every byte, then install into a staging folder and rename it into place:
        a failure at any step leaves no release behind."""
        payload = self._part(m).read_bytes()
        staging = self.releases.root / "staging" / m.version
        shutil.rmtree(staging, ignore_errors=True)
        try:
            files = package.extract(m, payload, staging / "files")
            wheels = [str(f) for f in files if f.suffix == ".whl"]
            if not wheels:
                raise package.PackageError("bad_archive", "the package holds no wheel")
            proc = subprocess.run(
                [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps",
                 "--disable-pip-version-check", "--no-warn-script-location", "--quiet",
                 "--target", str(staging / "site"), *wheels],
                capture_output=True,
                text=True,
                timeout=PIP_TIMEOUT_S,
                check=False,
            )  # fmt: skip
            if proc.returncode != 0:
                tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
                raise RuntimeError(f"pip could not install {m.version}: {tail}")
            shutil.rmtree(staging / "files")
            write_file(staging / "manifest.cbor", manifest)
            write_file(staging / "manifest.sig", signature)
            target = self.releases.release_dir(m.version)
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self._part(m).unlink(missing_ok=True)

    async def _fail(self, m: package.Manifest, reason: str, *, discard: bool) -> None:
        log.error("upgrade to %s failed: %s", m.version, reason)
        if discard:  # bad bytes on disk: the next offer fetches them again
            self._part(m).unlink(missing_ok=True)
        self._event("failed", m.version, {"reason": reason}, "error")
        try:
            await self.writer.delete_state(OFFER_KEY)
        except StoreError as exc:
            log.warning("cannot forget the failed offer: %s", exc)

    # ------------------------------------------------------------------ reporting
    async def report(self) -> None:
        """Send upstream what the guard wrote (a trial started, how it ended), once."""
        records = []
        trial = self.releases.read("trial.json")
        if trial is not None and trial.get("version") == __version__:
            records.append(("trial", trial))
        outcome = self.releases.read("outcome.json")
        if outcome is not None and outcome.get("state") in ("healthy", "rolled_back"):
            records.append((str(outcome["state"]), outcome))
        if not records:
            return
        if self._reported is None:
            saved = await self.writer.read_state(REPORTED_KEY)
            self._reported = json.loads(saved) if saved else []
        reported = self._reported
        new = False
        for state, doc in records:
            ident = f"{state}:{doc.get('version')}:{doc.get('started') or doc.get('at')}"
            if ident in reported:
                continue
            detail = {k: v for k, v in doc.items() if k in ("previous", "reason", "window_s")}
            severity = "warning" if state == "rolled_back" else "info"
            self._event(state, str(doc.get("version")), detail, severity)
            reported = [*reported, ident][-20:]
            new = True
        if new:
            self._reported = reported
            self.writer.set_state(REPORTED_KEY, json.dumps(reported))

    def _event(
        self, state: str, version: str | None, detail: dict[str, Any], severity: str = "info"
    ) -> None:
        self.writer.event(
            Event(
                "upgrade",
                severity,
                None,
                {"state": state, "version": version, "running": __version__, **detail},
                self.clock.wall(),
            )
        )


async def _until_answer_or_link_loss(
    chunk: asyncio.Future[bytes], link_down: asyncio.Event
) -> bytes | None:
    """The chunk, or None as soon as the link drops (the request is asked again then)."""
    lost: asyncio.Future[Any] = asyncio.ensure_future(link_down.wait())
    try:
        await asyncio.wait([chunk, lost], return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
    return chunk.result() if chunk.done() and not chunk.cancelled() else None


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _version_of(cmd: Command) -> str | None:
    try:
        doc = package.Manifest.from_bytes(bytes.fromhex(str(cmd.params["manifest"])))
    except (ValueError, KeyError, package.PackageError):
        return None
    return doc.version
