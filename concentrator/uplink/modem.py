"""Cellular link supervisor: watch the modem, notice a dead link, reset it with backoff.

A concentrator on GPRS/LTE loses its uplink in ways the MQTT client cannot fix: the
module drops its registration and does not search again, sits attached with a dead PDP
context, or stops answering on its AT port. Field practice is a watchdog that resets the
module, and this is ours, one supervised task of the daemon:

- every ``poll_s`` it records signal (AT+CSQ) and packet-domain registration
  (AT+CEREG?/AT+CGREG?) in a bounded history, and reports weak signal;
- the link is *down* while the module is not registered, does not answer, or the
  daemon says the uplink is dead (``uplink_dead``: no MQTT connection or no ack for a
  while); down for ``dead_link_s`` is an *outage*;
- during an outage it resets the module (AT+CFUN=1,1, or AT+CFUN=0 then =1), again and
  again with exponential backoff between ``reset_backoff_min_s`` and
  ``reset_backoff_max_s`` and random jitter, so the concentrators of a village that
  lost their cell together do not all come back at the same instant;
- a module that answers nothing, not even ``AT``, is reset at once (a blind
  AT+CFUN=1,1, which some firmwares still obey when mute) and power-cycled if that
  does not bring it back (``power_cycle`` hook or ``power_cycle_command``);
- everything noteworthy is a ``ModemEvent`` record handed to ``on_event``.

A reset cannot fix a broker that is down: the backoff keeps the damage to one module
reset per ``reset_backoff_max_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shlex
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import ClassVar

from concentrator.clock import Clock, SystemClock
from concentrator.config import ModemConfig
from contract.records import Event
from drivers.errors import BusError, FrameError, ModemError, ModemHung, ModemTimeout
from drivers.modem import (
    AccessTech,
    Domain,
    ModemClient,
    ModemInfo,
    Operator,
    Registration,
    RegStatus,
    SignalQuality,
    Urc,
    parse_registration_urc,
)

log = logging.getLogger(__name__)

WEAK_HYSTERESIS_DB = 4  # signal counts as restored this far above the threshold
POWER_CYCLE_TIMEOUT_S = 30.0  # a GPIO script that takes longer is itself stuck
BACKOFF_JITTER = 0.5  # a reset waits between (1 - this) and all of its backoff step


# ---------------------------------------------------------------------- events
@dataclass(frozen=True)
class ModemEvent:
    """Something about the cellular link the cloud should hear of; ``at`` is wall time."""

    at: float
    kind: ClassVar[str] = "modem"
    severity: ClassVar[str] = "info"

    def detail(self) -> dict[str, object]:
        return {k: v for k, v in asdict(self).items() if k != "at"}

    def to_store_event(self) -> Event:
        return Event(f"modem_{self.kind}", self.severity, None, self.detail(), self.at)


@dataclass(frozen=True)
class OutageStarted(ModemEvent):
    since: float  # wall time the link was first seen down
    cause: str
    kind: ClassVar[str] = "outage_start"
    severity: ClassVar[str] = "warning"


@dataclass(frozen=True)
class OutageEnded(ModemEvent):
    since: float
    duration_s: float  # monotonic: first seen down → first seen up
    cause: str
    resets: int  # module resets while the link was down
    kind: ClassVar[str] = "outage_end"


@dataclass(frozen=True)
class ModemReset(ModemEvent):
    reason: str
    method: str  # cfun11 | cfun01 | cfun11-blind | power-cycle
    attempt: int  # 1 for the first reset of this outage
    answered: bool  # the module answered AT afterwards
    next_reset_in_s: float  # backoff until another reset is allowed
    kind: ClassVar[str] = "reset"
    severity: ClassVar[str] = "warning"


@dataclass(frozen=True)
class HungDetected(ModemEvent):
    tries: int
    kind: ClassVar[str] = "hung"
    severity: ClassVar[str] = "warning"


@dataclass(frozen=True)
class WeakSignal(ModemEvent):
    dbm: int
    threshold_dbm: int
    kind: ClassVar[str] = "weak_signal"
    severity: ClassVar[str] = "warning"


@dataclass(frozen=True)
class SignalRestored(ModemEvent):
    dbm: int
    threshold_dbm: int
    kind: ClassVar[str] = "signal_restored"


@dataclass(frozen=True)
class SignalSample:
    at: float  # wall time
    rssi: int  # raw CSQ value (99: not known)
    dbm: int | None
    ber: int
    stat: RegStatus | None  # best packet-domain registration
    act: AccessTech | None

    @property
    def registered(self) -> bool:
        return self.stat is not None and self.stat.registered


@dataclass
class SupervisorStats:
    polls: int = 0
    poll_failures: int = 0
    outages: int = 0
    resets: int = 0
    power_cycles: int = 0
    hangs: int = 0


# ---------------------------------------------------------------------- supervisor
class ModemSupervisor:
    """Run with ``await supervisor.run()`` (cancel to stop).

    ``on_event`` receives every ``ModemEvent``; ``power_cycle`` cuts and restores the
    module's power (default: run ``power_cycle_command`` if configured). The daemon
    feeds uplink evidence with ``uplink_alive()`` and ``uplink_dead(reason)``.
    """

    def __init__(
        self,
        cfg: ModemConfig,
        *,
        on_event: Callable[[ModemEvent], None] | None = None,
        power_cycle: Callable[[], Awaitable[None]] | None = None,
        clock: Clock | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.cfg = cfg
        self.on_event = on_event
        self.clock: Clock = clock or SystemClock()
        if power_cycle is None and cfg.power_cycle_command:
            power_cycle = self._run_power_cycle_command
        self.power_cycle = power_cycle
        self._rng = rng or random.Random()
        self.client = ModemClient(cfg.port, cfg.baud, timeouts=cfg.timeouts(), on_urc=self._on_urc)
        self.history: deque[SignalSample] = deque(maxlen=cfg.signal_history)
        self.stats = SupervisorStats()
        self.info: ModemInfo | None = None
        self.operator: Operator | None = None
        self.last: SignalSample | None = None
        # LTE first; a 2G-only module refuses +CEREG and is asked +CGREG only.
        self._domains = [Domain.EPS, Domain.GPRS]
        self._prepared = False
        self._wake = asyncio.Event()
        self._hung = False
        self._weak = False
        self._down_since: float | None = None  # monotonic
        self._down_since_wall: float | None = None
        self._down_cause: str | None = None
        self._outage = False
        self._outage_resets = 0
        self._attempt = 0  # resets in this outage
        self._next_reset_at: float | None = None  # monotonic
        self._uplink_dead_since: float | None = None
        self._uplink_dead_reason = ""

    # ------------------------------------------------------------------ evidence in
    def uplink_alive(self) -> None:
        """The uplink works (connected, an ack arrived): clears ``uplink_dead``."""
        if self._uplink_dead_since is not None:
            self._uplink_dead_since = None
            self._wake.set()

    def uplink_dead(self, reason: str) -> None:
        """The uplink does not work (no MQTT connection, pings failing). Repeated calls
        keep the first time: the link counts as down from then on."""
        if self._uplink_dead_since is None:
            self._uplink_dead_since = self.clock.monotonic()
            self._uplink_dead_reason = reason
            self._wake.set()

    def _on_urc(self, urc: Urc) -> None:
        reg = parse_registration_urc(urc.text)
        if reg is not None and reg.domain in self._domains:
            self._wake.set()  # a registration change: look now, not at the next poll

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        try:
            while True:
                await self._tick()
                await self._nap()
        finally:
            await self.client.close()

    async def _nap(self) -> None:
        wait = self.cfg.poll_s
        if self._outage and self._next_reset_at is not None:
            wait = min(wait, max(0.0, self._next_reset_at - self.clock.monotonic()))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()
        self._wake.clear()

    async def _tick(self) -> None:
        c = self.client
        if not c.is_open:
            try:
                await c.close()
                await c.open()
                self._prepared = False
            except BusError as exc:
                self._evaluate(f"modem port unavailable: {exc}")
                await self._reset_if_due()
                return
        try:
            try:
                if not self._prepared:
                    await self._prepare()
                sample = await self._poll()
            except ModemHung:
                raise
            except ModemTimeout as exc:
                log.warning("modem: %s; probing", exc)
                await c.probe(self.cfg.hung_probe_tries)  # ModemHung if it is mute
                self.stats.poll_failures += 1
                return
        except ModemHung as exc:
            await self._on_hung(exc)
            return
        except (ModemError, FrameError) as exc:
            self.stats.poll_failures += 1
            log.warning("modem poll failed: %s", exc)
            return
        except BusError as exc:
            self.stats.poll_failures += 1
            log.warning("modem port: %s", exc)
            await c.close()  # reopened at the next tick
            return
        self._hung = False
        self._record(sample)
        cause = None if sample.registered else f"not registered ({_stat_name(sample.stat)})"
        self._evaluate(cause)
        await self._reset_if_due()

    async def _prepare(self) -> None:
        c = self.client
        await c.probe(self.cfg.hung_probe_tries)
        with contextlib.suppress(ModemError):
            await c.echo_off()
        with contextlib.suppress(ModemError):
            await c.command("AT+CMEE=1")  # numeric +CME ERROR codes
        for domain in self._domains:
            with contextlib.suppress(ModemError):
                await c.command(f"AT{domain.value}=1")  # URC on every change
        if self.info is None:
            with contextlib.suppress(ModemError, FrameError):
                self.info = await c.info()
        self._prepared = True

    async def _poll(self) -> SignalSample:
        c = self.client
        sq = await c.signal_quality()
        regs: list[Registration] = []
        for domain in list(self._domains):
            try:
                regs.append(await c.registration(domain))
            except ModemError as exc:
                # Unknown command (ERROR) or "operation not supported": this module has
                # no such domain (2G-only: no +CEREG). Anything else is a real failure.
                if len(self._domains) > 1 and (exc.kind is None or exc.code == 4):
                    log.info("modem does not support %s; not asking again", domain.query)
                    self._domains.remove(domain)
                    continue
                raise
        best = next((r for r in regs if r.registered), regs[0] if regs else None)
        was_registered = self.last is not None and self.last.registered
        if best is not None and best.registered and (not was_registered or self.operator is None):
            with contextlib.suppress(ModemError, FrameError):
                self.operator = await c.operator()
        elif best is None or not best.registered:
            self.operator = None
        self.stats.polls += 1
        return SignalSample(
            at=self.clock.wall(),
            rssi=sq.rssi,
            dbm=sq.dbm,
            ber=sq.ber,
            stat=best.stat if best is not None else None,
            act=best.act if best is not None else None,
        )

    def _record(self, sample: SignalSample) -> None:
        self.last = sample
        self.history.append(sample)
        self._check_signal(SignalQuality(sample.rssi, sample.ber), sample.at)

    def _check_signal(self, sq: SignalQuality, at: float) -> None:
        dbm = sq.dbm
        if dbm is None:
            return  # no measurement (no cell at all): the outage logic covers it
        threshold = self.cfg.weak_signal_dbm
        if not self._weak and dbm < threshold:
            self._weak = True
            self._emit(WeakSignal(at, dbm, threshold))
        elif self._weak and dbm >= threshold + WEAK_HYSTERESIS_DB:
            self._weak = False
            self._emit(SignalRestored(at, dbm, threshold))

    # ------------------------------------------------------------------ link state
    def _evaluate(self, radio_cause: str | None) -> None:
        """Fold the module's state and the uplink evidence into up/down/outage."""
        now = self.clock.monotonic()
        cause = radio_cause
        since = now
        if cause is None and self._uplink_dead_since is not None:
            cause = f"uplink dead: {self._uplink_dead_reason}"
            since = self._uplink_dead_since
        if cause is None:
            self._link_up(now)
            return
        if self._down_since is None:
            self._down_since = since
            self._down_since_wall = self.clock.wall() - (now - since)
            self._down_cause = cause
            self._outage_resets = 0
            log.warning("cellular link down: %s", cause)
        if not self._outage and now - self._down_since >= self.cfg.dead_link_s:
            self._outage = True
            self.stats.outages += 1
            assert self._down_since_wall is not None and self._down_cause is not None
            self._emit(OutageStarted(self.clock.wall(), self._down_since_wall, self._down_cause))
            if self._next_reset_at is None:
                self._next_reset_at = now  # the first reset goes at once

    def _link_up(self, now: float) -> None:
        if self._down_since is None:
            return
        if self._outage:
            assert self._down_since_wall is not None and self._down_cause is not None
            self._emit(
                OutageEnded(
                    self.clock.wall(),
                    self._down_since_wall,
                    round(now - self._down_since, 3),
                    self._down_cause,
                    self._outage_resets,
                )
            )
            self._outage = False
        log.info("cellular link up again after %.1f s", now - self._down_since)
        self._down_since = self._down_since_wall = self._down_cause = None
        self._attempt = 0
        self._next_reset_at = None

    async def _reset_if_due(self) -> None:
        if not self._outage or self._next_reset_at is None:
            return
        if self.clock.monotonic() >= self._next_reset_at:
            assert self._down_cause is not None
            await self._reset(self._down_cause, mute=False)

    async def _on_hung(self, exc: ModemHung) -> None:
        self.stats.hangs += 1
        if not self._hung:
            self._hung = True
            log.error("modem: %s", exc)
            self._emit(HungDetected(self.clock.wall(), exc.tries))
        self._prepared = False
        self._evaluate("modem not answering AT")
        # A mute module does not heal by waiting: reset now, later ones after backoff.
        if self._next_reset_at is None:
            self._next_reset_at = self.clock.monotonic()
        if self.clock.monotonic() >= self._next_reset_at:
            await self._reset("modem not answering AT", mute=True)

    # ------------------------------------------------------------------ reset
    async def _reset(self, reason: str, *, mute: bool) -> None:
        c = self.client
        method = "cfun11-blind" if mute else self.cfg.reset_method
        self._prepared = False
        answered = False
        try:
            if mute:
                c.send_blind("AT+CFUN=1,1")
                answered = await c.wait_ready()
            else:
                answered = await c.reset(self.cfg.reset_method)
        except (ModemTimeout, ModemError, FrameError, BusError) as exc:
            log.warning("modem reset (%s) failed: %s", method, exc)
        if not answered and self.power_cycle is not None:
            method = "power-cycle"
            self.stats.power_cycles += 1
            try:
                async with asyncio.timeout(POWER_CYCLE_TIMEOUT_S):
                    await self.power_cycle()
                answered = await c.wait_ready()
            except (TimeoutError, OSError, BusError) as exc:
                log.error("modem power cycle failed: %s", exc)
        self._attempt += 1
        self._outage_resets += 1
        self.stats.resets += 1
        delay = self._backoff(self._attempt)
        self._next_reset_at = self.clock.monotonic() + delay
        log.warning(
            "modem reset #%d (%s, %s): %s; next reset not before %.0f s",
            self._attempt,
            method,
            reason,
            "answers again" if answered else "still silent",
            delay,
        )
        self._emit(
            ModemReset(self.clock.wall(), reason, method, self._attempt, answered, round(delay, 3))
        )

    def _backoff(self, attempt: int) -> float:
        """The wait after reset number ``attempt``: doubling from the minimum up to the
        maximum, each drawn between half and all of its step (never below the min)."""
        lo, hi = self.cfg.reset_backoff_min_s, self.cfg.reset_backoff_max_s
        step = min(hi, lo * 2.0 ** min(attempt - 1, 40))
        return max(lo, step * self._rng.uniform(1.0 - BACKOFF_JITTER, 1.0))

    async def _run_power_cycle_command(self) -> None:
        argv = shlex.split(self.cfg.power_cycle_command)
        proc = await asyncio.create_subprocess_exec(*argv)
        try:
            rc = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        if rc != 0:
            raise OSError(f"power_cycle_command exited with {rc}")

    # ------------------------------------------------------------------ out
    def _emit(self, event: ModemEvent) -> None:
        if self.on_event is not None:
            try:
                self.on_event(event)
            except Exception:  # a broken event sink must not stop the supervision
                log.exception("modem event handler failed on %r", event)

    @property
    def link_up(self) -> bool:
        return self._down_since is None

    def signal_history(self) -> tuple[SignalSample, ...]:
        return tuple(self.history)

    def status(self) -> dict[str, object]:
        """For the daemon's status file."""
        last = self.last
        s = self.stats
        next_reset = None
        if self._outage and self._next_reset_at is not None:
            next_reset = round(max(0.0, self._next_reset_at - self.clock.monotonic()), 1)
        return {
            "port": self.cfg.port,
            "link_up": self.link_up,
            "outage": self._outage,
            "down_since": self._down_since_wall,
            "cause": self._down_cause,
            "hung": self._hung,
            "registration": _stat_name(last.stat) if last is not None else None,
            "act": last.act.name if last is not None and last.act is not None else None,
            "operator": self.operator.name if self.operator is not None else None,
            "rssi_dbm": last.dbm if last is not None else None,
            "weak_signal": self._weak,
            "polls": s.polls,
            "poll_failures": s.poll_failures,
            "outages": s.outages,
            "resets": s.resets,
            "power_cycles": s.power_cycles,
            "hangs": s.hangs,
            "next_reset_in_s": next_reset,
            "module": asdict(self.info) if self.info is not None else None,
        }


def _stat_name(stat: RegStatus | None) -> str:
    return stat.name.lower().replace("_", " ") if stat is not None else "unknown"
