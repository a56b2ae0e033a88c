"""Runs the utility's signed commands on this concentrator.

Commands arrive on the uplink's ``cmd`` subscription and run one at a time, in arrival
order. Each is checked by `contract.commands.accept` (signature, addressee, validity
window, counter), the counter is committed to the store *before* anything is done (a
crash mid-command never lets the same command run twice), and the outcome — done,
failed with the meter's own error, or refused with the reason — is written as a
``command`` event. That event is the concentrator's audit log entry and, carried by the
encrypted uplink ahead of the backlog, the result the receiver waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from concentrator.config import DEFAULT_GROUP, MeterConfig
from concentrator.config.quantities import quantity_problem
from concentrator.polling.meter_actions import (
    ActionRefused,
    BusTurns,
    broadcast_time,
    switch_relay,
)
from concentrator.storage import StoreError, StoreWriter
from contract.commands import (
    Command,
    CommandDuplicate,
    CommandError,
    CommandRefused,
    CounterWindow,
    accept,
    is_due,
    open_signed,
)
from contract.records import Event
from drivers import dlt645
from drivers.errors import DriverError, MeterError
from drivers.readers import QuantityValue

log = logging.getLogger(__name__)

COUNTERS_KEY = "commands:counters"  # the accepted counters (`CounterWindow`)
SCHEDULED_KEY = "commands:scheduled"  # {id: signed blob hex} accepted, not due yet
EPOCH_KEY = "commands:epoch"  # real unix time this store began taking commands
UNREADABLE_AUDIT_S = 60.0  # garbage on the cmd topic: one audit event a minute, counted
READ_WITHIN_S = 60.0
DEFAULT_DRIFT_S = 60.0  # a meter clock further off than this is a `clock_drift` event
MAX_QUEUED = 64  # commands waiting to run; more is a flood, refused


class CommandTargets(BusTurns, Protocol):
    """What commands need of the polling side (`Polling`): the meters and their buses."""

    async def read_now(
        self, address: str, quantities: Sequence[str], within_s: float = ...
    ) -> list[QuantityValue]: ...

    async def add_meter(self, address: str, bus: str, group: str, area: str | None) -> None: ...

    async def remove_meter(self, address: str) -> None: ...

    async def apply_archive(
        self, version: int, meters: list[str], command: str
    ) -> dict[str, object]: ...


class UpgradeOffers(Protocol):
    """Who takes an ``upgrade`` command (`concentrator.update.updater.Updater`)."""

    async def offer(self, cmd: Command) -> dict[str, Any]: ...


class CommandRunner:
    def __init__(
        self,
        key: Ed25519PublicKey,
        *,
        targets: CommandTargets,
        writer: StoreWriter,
        flush: Callable[[], None],
        upgrades: UpgradeOffers | None = None,
    ) -> None:
        self.key = key
        self.targets = targets
        self.writer = writer
        self.flush = flush  # the uplink: send the audit record now, ahead of the backlog
        self.upgrades = upgrades  # None: updates are not configured
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._idle = asyncio.Event()  # nothing queued and nothing being handled
        self._busy = asyncio.Lock()  # one command on the meters at a time
        self._state = asyncio.Lock()  # read-modify-write of the stored command state
        self._waiters: set[asyncio.Task[None]] = set()
        self.done = 0
        self.refused = 0
        self._unreadable = 0
        self._unreadable_audit_at = -UNREADABLE_AUDIT_S

    def submit(self, blob: bytes) -> None:
        """Called for every message on the ``cmd`` topic (in the event loop)."""
        if self._queue.qsize() >= MAX_QUEUED:
            self._audit(None, "refused", f"{MAX_QUEUED} commands already waiting", [])
            return
        self._idle.clear()
        self._queue.put_nowait(blob)

    async def run(self) -> None:
        try:
            if await self.writer.read_state(EPOCH_KEY) is None:
                # Real time, as the receiver stamps commands (not a test's scaled clock).
                await self.writer.write_state(EPOCH_KEY, repr(time.time()))
            await self._resume_scheduled()
            while True:
                if self._queue.empty():
                    self._idle.set()
                blob = await self._queue.get()
                self._idle.clear()
                try:
                    await self.handle(blob)
                except Exception:  # one bad command must not stop the next ones
                    log.exception("command handling failed")
        finally:
            for waiter in self._waiters:  # held in the store: the next runner resumes them
                waiter.cancel()

    async def stop(self, task: asyncio.Task[None]) -> None:
        """Stop the runner ``task`` (a reload of ``[uplink]``) between two commands, never
        in the middle of one: what was received is handled first, and a held command
        that is running finishes; the ones still waiting stay in the store for the next
        runner."""
        await self._idle.wait()
        async with self._busy:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ------------------------------------------------------------------ scheduled
    async def _scheduled(self) -> dict[str, str]:
        saved = await self.writer.read_state(SCHEDULED_KEY)
        doc: dict[str, str] = json.loads(saved) if saved else {}
        return doc

    async def _save_scheduled(self, doc: dict[str, str]) -> None:
        await self.writer.write_state(SCHEDULED_KEY, json.dumps(doc))

    async def _resume_scheduled(self) -> None:
        """Commands accepted for later before a restart: wait for them again."""
        for command_id, blob_hex in (await self._scheduled()).items():
            try:
                cmd = open_signed(bytes.fromhex(blob_hex), self.key)
            except (CommandError, ValueError) as exc:
                await self._forget(command_id)
                self._audit(None, "failed", f"scheduled command {command_id} unreadable: {exc}", [])
                continue
            self._hold(cmd)

    def _hold(self, cmd: Command) -> None:
        task = asyncio.create_task(self._wait_and_run(cmd), name=f"command-{cmd.id}")
        self._waiters.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self._waiters.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("scheduled command %s failed", cmd.id, exc_info=t.exception())

        task.add_done_callback(done)

    async def _forget(self, command_id: str) -> None:
        async with self._state:
            doc = await self._scheduled()
            if doc.pop(command_id, None) is not None:
                await self._save_scheduled(doc)

    async def _wait_and_run(self, cmd: Command) -> None:
        clock = self.targets.clock
        while not is_due(cmd, clock.wall()):
            # Re-read the clock at least once a real second: it may be stepped.
            remaining = cmd.not_before - clock.wall()
            await clock.sleep_wall(min(max(remaining, 0.0), clock.scale))
        async with self._busy:
            await self._forget(cmd.id)
            if clock.wall() > cmd.not_after:
                self._audit(cmd, "failed", "expired before it could run (daemon down)", [])
                return
            await self._run(cmd)

    async def handle(self, blob: bytes) -> dict[str, Any]:
        """Check, run and audit one command; return the audit record's detail."""
        clock = self.targets.clock
        async with self._state:
            saved = await self.writer.read_state(COUNTERS_KEY)
            window = CounterWindow.from_state(json.loads(saved) if saved else {})
            epoch = await self.writer.read_state(EPOCH_KEY)
            try:
                cmd = accept(
                    blob,
                    self.key,
                    concentrator_id=self.targets.config.concentrator.id,
                    now=clock.wall(),
                    window=window,
                    issued_after=float(epoch) if epoch is not None else None,
                )
            except CommandDuplicate as exc:
                # Refused like any replay, but marked: the receiver must not take it for
                # the outcome of the command it copies.
                log.info("command %s: %s", exc.command.id if exc.command else "?", exc.reason)
                return self._audit(exc.command, "refused", exc.reason, [], duplicate=True)
            except CommandRefused as exc:
                self.refused += 1
                log.warning("command refused: %s", exc.reason)
                if exc.command is None:
                    return self._unreadable_refusal(exc.reason)
                return self._audit(exc.command, "refused", exc.reason, [])
            window.add(cmd.counter)
            due = is_due(cmd, clock.wall())
            try:
                await self.writer.write_state(COUNTERS_KEY, json.dumps(window.state()))
                if not due:
                    doc = await self._scheduled()
                    doc[cmd.id] = blob.hex()
                    await self._save_scheduled(doc)
            except StoreError as exc:
                # Without the counter on disk the command could run again after a restart.
                self.refused += 1
                return self._audit(cmd, "refused", f"cannot record its counter: {exc}", [])
        if not due:
            self._hold(cmd)
            return self._audit(cmd, "scheduled", f"scheduled for {cmd.not_before:.0f}", [])
        async with self._busy:
            return await self._run(cmd)

    async def _run(self, cmd: Command) -> dict[str, Any]:
        results = await self._execute(cmd)
        ok = all(r["result"] == "ok" for r in results)
        self.done += 1
        failed = [r for r in results if r["result"] != "ok"]
        reason = None if ok else f"{len(failed)} of {len(results)} targets failed"
        log.info("command %s (%s) %s", cmd.id, cmd.action, "done" if ok else reason)
        return self._audit(cmd, "done" if ok else "failed", reason, results)

    # ------------------------------------------------------------------ actions
    async def _execute(self, cmd: Command) -> list[dict[str, Any]]:
        if cmd.action == "time_sync":
            return await self._time_sync(cmd)
        if cmd.action in ("add_meter", "remove_meter"):
            return [await self._change_meter(cmd, address) for address in cmd.meters]
        if cmd.action == "archive":
            return [await self._archive(cmd)]
        if cmd.action == "upgrade":
            if self.upgrades is None:
                return [{"result": "refused", "error": "updates are not configured ([update])"}]
            return [await self.upgrades.offer(cmd)]
        out: list[dict[str, Any]] = []
        for address in cmd.meters:
            meter = self._meter(address)
            if meter is None:
                out.append(
                    {"meter": address, "result": "refused", "error": "not in this configuration"}
                )
                continue
            try:
                row = await self._one(cmd, meter)
            except ActionRefused as exc:
                row = {"result": "refused", "error": str(exc)}
            except MeterError as exc:
                row = {"result": "failed", "error": f"meter error: {exc.description}"}
            except DriverError as exc:
                row = {"result": "failed", "error": str(exc)}
            except KeyError:
                row = {"result": "failed", "error": "meter left the configuration"}
            out.append({"meter": address, **row})
        return out

    async def _one(self, cmd: Command, meter: MeterConfig) -> dict[str, Any]:
        t = self.targets
        if cmd.action in ("relay_open", "relay_close"):
            state, word = await switch_relay(t, meter, cmd.action.removeprefix("relay_"))
            return {"result": "ok", "relay_state": state, "status_word_3": word}
        if cmd.action == "read":
            names = [str(q) for q in cmd.params.get("quantities", ["energy_fwd_total"])]
            for name in names:
                if meter.protocol != "dlt645":  # canonical names (docs/quantities.md)
                    problem = quantity_problem(name, meter.protocol, meter.model)
                    if problem is not None:
                        raise ActionRefused(f"no quantity {name!r} for this meter{problem}")
                    continue
                try:
                    dlt645.lookup(name)
                except KeyError:
                    raise ActionRefused(f"no quantity {name!r} in the DL/T 645 table") from None
            values = await t.read_now(meter.address, names, within_s=READ_WITHIN_S)
            return {"result": "ok", "values": {v.quantity: [v.value, v.unit] for v in values}}
        if cmd.action == "clock_check":
            return await self._clock_check(cmd, meter)
        raise ActionRefused(f"action {cmd.action} is not run per meter")

    async def _change_meter(self, cmd: Command, address: str) -> dict[str, Any]:
        """Add a DL/T 645 meter to a bus or remove one; relay passwords are never sent
        over the air, so a meter added this way reads but cannot be switched until its
        passwords are put in the config file."""
        t = self.targets
        try:
            if cmd.action == "add_meter":
                await t.add_meter(
                    address,
                    str(cmd.params["bus"]),
                    str(cmd.params.get("group") or DEFAULT_GROUP),
                    cmd.params.get("area"),
                )
            else:
                await t.remove_meter(address)
        except ValueError as exc:
            return {"meter": address, "result": "refused", "error": str(exc)}
        return {"meter": address, "result": "ok", "meters": len(t.config.meters)}

    async def _archive(self, cmd: Command) -> dict[str, Any]:
        """The archive download: poll the meters it lists and no others (unless
        commissioning); an older version than the one in force is refused."""
        version, meters = int(cmd.params["version"]), [str(m) for m in cmd.params["meters"]]
        try:
            applied = await self.targets.apply_archive(version, meters, cmd.id)
        except ValueError as exc:
            return {"result": "refused", "error": str(exc)}
        return {"result": "ok", **applied}

    async def _clock_check(self, cmd: Command, meter: MeterConfig) -> dict[str, Any]:
        t = self.targets
        if meter.protocol != "dlt645":
            raise ActionRefused(f"meter {meter.address}: clock check needs a DL/T 645 meter")
        values = await t.read_now(meter.address, ["meter_date", "meter_time"], READ_WITHIN_S)
        got = {v.quantity: v for v in values}
        if "meter_date" not in got or "meter_time" not in got:
            raise ActionRefused(f"meter {meter.address} has no readable clock")
        tz = t.config.concentrator.tzinfo
        shown = dt.datetime.combine(
            dt.date.fromisoformat(got["meter_date"].value),
            dt.time.fromisoformat(got["meter_time"].value),
            tz,
        ).timestamp()
        drift = round(shown - got["meter_time"].read_at, 1)
        try:
            threshold = float(cmd.params.get("threshold_s", DEFAULT_DRIFT_S))
        except (TypeError, ValueError):
            raise ActionRefused("params.threshold_s must be a number of seconds") from None
        if abs(drift) > threshold:
            self.writer.event(
                Event(
                    "clock_drift",
                    "warning",
                    meter.address,
                    {"drift_s": drift, "threshold_s": threshold, "command": cmd.id},
                    t.clock.wall(),
                )
            )
        return {"result": "ok", "drift_s": drift, "beyond_threshold": abs(drift) > threshold}

    async def _time_sync(self, cmd: Command) -> list[dict[str, Any]]:
        wanted = set(cmd.meters)
        buses = sorted(
            {
                m.bus
                for m in self.targets.config.meters
                if m.protocol != "modbus" and (not wanted or m.address in wanted)
            }
        )
        if not buses:
            return [{"bus": None, "result": "refused", "error": "no DL/T 645 meter to set"}]
        out: list[dict[str, Any]] = []
        for bus in buses:
            try:
                out.append(
                    {"bus": bus, "result": "ok", "sent": await broadcast_time(self.targets, bus)}
                )
            except DriverError as exc:
                out.append({"bus": bus, "result": "failed", "error": str(exc)})
            except KeyError:
                out.append({"bus": bus, "result": "failed", "error": "bus gone"})
        return out

    def _unreadable_refusal(self, reason: str) -> dict[str, Any]:
        """Garbage anyone with a certificate can publish: counted, and audited at most
        once a minute, so it cannot flood the store and the uplink."""
        self._unreadable += 1
        now = time.monotonic()
        detail = {"result": "refused", "reason": reason, "unreadable": self._unreadable}
        if now - self._unreadable_audit_at >= UNREADABLE_AUDIT_S:
            self._unreadable_audit_at = now
            detail = self._audit(None, "refused", f"{reason} ({self._unreadable} unreadable)", [])
            self._unreadable = 0
        return detail

    # ------------------------------------------------------------------ helpers
    def _meter(self, address: str) -> MeterConfig | None:
        return next((m for m in self.targets.config.meters if m.address == address), None)

    def _audit(
        self,
        cmd: Command | None,
        result: str,
        reason: str | None,
        results: list[dict[str, Any]],
        *,
        duplicate: bool = False,
    ) -> dict[str, Any]:
        detail: dict[str, Any] = {
            **(cmd.summary() if cmd is not None else {}),
            "result": result,
            "reason": reason,
            "results": results,
        }
        if duplicate:
            detail["duplicate"] = True
        severity = "info" if result in ("done", "scheduled") else "warning"
        self.writer.event(Event("command", severity, None, detail, self.targets.clock.wall()))
        self.flush()  # the result goes up now, ahead of the backlog
        return detail
