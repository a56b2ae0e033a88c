"""A GPRS/LTE module's AT port on a pseudo-terminal, with scripted faults.

The concentrator opens the PTY's slave side (through a stable symlink) as it would open
/dev/ttyUSB2; we hold the master side and play a Quectel-like module: echo while ATE1,
V.250 framing (``<CR><LF>text<CR><LF>``), information text and final result codes as
TS 27.007 specifies, registration URCs when enabled with ``AT+CGREG=1``.

Timing: radio and firmware delays (booting, cell search, PS attach, AT+CFUN) are in
simulated seconds and divided by the clock's time scale; the wire stays real (10 bits
per character at the port's baud rate), as on ``hil_sim.bus``.

Faults, set from a test at run time or scripted (``ModemFault``):
- outage: the network is gone: registration "searching", CSQ 99,99, attach fails;
  when it returns the module searches for ``register_s`` and registers again.
- weak signal: CSQ reports a low rssi.
- hang: the module answers nothing, echoes nothing. A "soft" hang still obeys a blind
  ``AT+CFUN=1,1`` (the firmware's reset path runs while its AT responder is stuck); a
  "hard" one only recovers from a power cycle (``power_cycle()``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from drivers.at_command import CME_ERRORS, AccessTech, Domain, RegStatus
from hil_sim.clock import SimClock
from hil_sim.errors import OptionError
from hil_sim.pty_port import PtyPort, wire_time

log = logging.getLogger(__name__)

BITS_PER_CHAR = 10  # 8N1
MAX_COMMAND_LINE = 512  # longer input is dropped, as a module's command buffer overflows
AREA, CELL = "1A2B", "01C3D4E5"  # the serving cell's LAC/TAC and cell id (hex)


@dataclass(frozen=True)
class ModemTiming:
    """Simulated seconds; typical of a Quectel EC20 [M: its AT manual and bench logs]."""

    command_s: float = 0.02  # a short command's answer
    cfun_s: float = 0.5  # AT+CFUN=0 / =1 (radio off / on)
    boot_s: float = 12.0  # reset or power-on until RDY
    register_s: float = 4.0  # cell search until registered, after radio on or an outage
    attach_s: float = 1.0  # AT+CGATT=1 on a registered module


def _luhn_digit(digits: str) -> str:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return str((10 - total % 10) % 10)


def make_imei(seed: int) -> str:
    """A 15-digit IMEI with a valid Luhn check digit (TAC 86612345: made up)."""
    body = f"86612345{random.Random(seed).randrange(10**6):06d}"
    return body + _luhn_digit(body)


@dataclass(frozen=True)
class ModemIdentity:
    manufacturer: str = "Quectel"
    model: str = "EC20F"
    revision: str = "EC20CEFAGR06A05M4G"
    imei: str = field(default_factory=lambda: make_imei(0))


FaultKind = Literal["outage", "weak", "hang", "hang_hard"]
FAULT_KINDS: tuple[FaultKind, ...] = ("outage", "weak", "hang", "hang_hard")


@dataclass(frozen=True)
class ModemFault:
    """A scripted fault between ``start`` and ``end`` simulated seconds after start.

    A hang has no end: it lasts until a reset (``hang``) or a power cycle
    (``hang_hard``). ``rssi`` is the weak signal's CSQ value."""

    kind: FaultKind
    start: float
    end: float | None = None
    rssi: int = 5


def parse_modem_fault(text: str) -> ModemFault:
    """``outage@60-120``, ``weak@0-300:4``, ``hang@90``, ``hang_hard@90``: the value
    of ``hil-sim modem --fault`` (an ``OptionError`` names that flag)."""
    flag = "--fault"
    kind, sep, when = text.partition("@")
    if not sep or kind not in FAULT_KINDS:
        raise OptionError(
            f"{text!r}: expected KIND@START[-END], KIND one of {', '.join(FAULT_KINDS)}",
            option=flag,
        )
    when, _, rssi_text = when.partition(":")
    start_text, dash, end_text = when.partition("-")
    try:
        start = float(start_text)
        end = float(end_text) if dash else None
        rssi = int(rssi_text) if rssi_text else 5
    except ValueError:
        raise OptionError(
            f"{text!r}: START, END (seconds) and RSSI must be numbers", option=flag
        ) from None
    if start < 0 or (end is not None and end <= start):
        raise OptionError(f"{text!r}: expected 0 <= START < END", option=flag)
    if kind in ("outage", "weak") and end is None:
        raise OptionError(f"{text!r}: an {kind} needs an END", option=flag)
    if kind.startswith("hang") and end is not None:
        raise OptionError(f"{text!r}: a hang lasts until a reset; give no END", option=flag)
    if not 0 <= rssi <= 31:
        raise OptionError(f"{text!r}: RSSI is a CSQ value 0..31", option=flag)
    return ModemFault(kind, start, end, rssi)


@dataclass
class ModemCounters:
    commands: int = 0  # command lines answered
    ignored: int = 0  # command lines swallowed while hung or booting
    resets: int = 0  # AT+CFUN=1,1, also the blind one a soft-hung module still obeys
    radio_cycles: int = 0  # AT+CFUN=1 after AT+CFUN=0/4
    power_cycles: int = 0
    hangs: int = 0

    @property
    def total_resets(self) -> int:
        return self.resets + self.radio_cycles + self.power_cycles


class SimModem:
    """Serve one module on a fresh PTY until ``stop()``; ``link`` is a stable symlink."""

    def __init__(
        self,
        *,
        link: Path | None = None,
        baud: int = 115200,
        clock: SimClock | None = None,
        timing: ModemTiming | None = None,
        identity: ModemIdentity | None = None,
        operator: str = "CHINA MOBILE",
        rssi: int = 22,
        ber: int = 99,
        lte: bool = True,
        roaming: bool = False,
        script: Sequence[ModemFault] = (),
        seed: int = 0,
    ) -> None:
        self.link = link
        self.baud = baud
        self.clock = clock or SimClock()
        self.timing = timing or ModemTiming()
        self.identity = identity or ModemIdentity()
        self.operator = operator
        self.lte = lte
        self.act = AccessTech.EUTRAN if lte else AccessTech.GSM_EGPRS
        self.roaming = roaming
        self.script = list(script)
        self.counters = ModemCounters()
        self.pty_name = ""
        self._rng = random.Random(seed)
        self._rssi = rssi
        self._ber = ber
        self._base_rssi = rssi
        self._port = PtyPort(link, log=log, what="modem")
        self._rx = bytearray()
        self._lines: asyncio.Queue[str] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._timers: set[asyncio.Task[None]] = set()
        # Module state; times are time.monotonic() (real seconds).
        self._gen = 0  # boot generation: answers and timers of an earlier run are void
        self._boot_until = 0.0
        self._search_until = 0.0
        self._radio = True
        self._outage = False
        self._detached = False
        self._hung: Literal["soft", "hard"] | None = None
        self._echo = True
        self._cmee = 0
        self._urc_mode: dict[Domain, int] = dict.fromkeys(Domain, 0)
        self._announced: dict[Domain, RegStatus] = dict.fromkeys(Domain, RegStatus.HOME)
        self._t0 = 0.0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the PTY with the module already booted and registered."""
        self.pty_name = self._port.open(self._on_readable)
        self._t0 = self.clock.now()
        self._worker = asyncio.create_task(self._serve(), name="sim-modem")
        if self.script:
            self._spawn(self._run_script())

    async def stop(self) -> None:
        for task in list(self._timers):
            task.cancel()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        self._port.close()

    # ------------------------------------------------------------------ faults
    def set_outage(self, on: bool) -> None:
        if on == self._outage:
            return
        self._outage = on
        if not on:
            self._search_until = time.monotonic() + self._real(self.timing.register_s)
            self._at(self._search_until, self._announce)
        self._announce()

    def set_signal(self, rssi: int, ber: int = 99) -> None:
        """CSQ values: rssi 0..31 (or 99), ber 0..7 (or 99)."""
        self._rssi, self._ber = rssi, ber

    def restore_signal(self) -> None:
        self._rssi = self._base_rssi

    def hang(self, *, reset_cures: bool = True) -> None:
        """Stop answering; ``reset_cures``: a blind AT+CFUN=1,1 still reboots it."""
        self._hung = "soft" if reset_cures else "hard"
        self.counters.hangs += 1

    def power_cycle(self) -> None:
        """Cut and restore the module's supply: it reboots whatever its state."""
        self.counters.power_cycles += 1
        self._reboot()

    # ------------------------------------------------------------------ observation
    @property
    def hung(self) -> bool:
        return self._hung is not None

    @property
    def booting(self) -> bool:
        return time.monotonic() < self._boot_until

    @property
    def data_up(self) -> bool:
        """Whether packets would flow: registered, attached and answering. A
        ``hil_sim.netlink.LinkProxy`` follows this to cut the emulated data link."""
        return not self.hung and self._attached()

    def stat(self) -> RegStatus:
        now = time.monotonic()
        if now < self._boot_until or not self._radio:
            return RegStatus.NOT_REGISTERED
        if self._outage or now < self._search_until:
            return RegStatus.SEARCHING
        return RegStatus.ROAMING if self.roaming else RegStatus.HOME

    # ------------------------------------------------------------------ receive
    def _on_readable(self) -> None:
        data = self._port.read()
        if not data:
            return
        if self._echo and self._hung is None and not self.booting:
            self._port.write(data)  # V.250 §6.2.4: characters echo as they arrive
        for byte in data:
            if byte == 0x0D:  # S3, the command line terminator
                line = self._rx.decode("ascii", "replace").strip()
                self._rx.clear()
                if line:
                    self._lines.put_nowait(line)
            elif byte != 0x0A:
                self._rx.append(byte)
                if len(self._rx) > MAX_COMMAND_LINE:
                    self._rx.clear()

    async def _serve(self) -> None:
        while True:
            line = await self._lines.get()
            try:
                await self._execute(line)
            except Exception:  # a simulator bug must not silently kill the module
                log.exception("simulated modem failed on %r", line)

    # ------------------------------------------------------------------ answer
    async def _execute(self, line: str) -> None:
        cmd = line.replace(" ", "").upper()
        if not cmd.startswith("AT"):
            return  # a module ignores input until it sees "AT"
        if self._hung is not None:
            self.counters.ignored += 1
            if self._hung == "soft" and cmd == "AT+CFUN=1,1":
                self.counters.resets += 1
                self._reboot()
            return
        if self.booting:
            self.counters.ignored += 1
            return
        gen = self._gen
        await asyncio.sleep(self._real(self.timing.command_s))
        lines = await self._dispatch(cmd)
        if gen != self._gen or self._hung is not None:
            return  # rebooted or hung while working on it: the answer never comes
        self.counters.commands += 1
        await self._send_lines(lines)
        if cmd == "AT+CFUN=1,1":
            self.counters.resets += 1
            self._reboot()

    async def _send_lines(self, lines: list[str]) -> None:
        data = b"".join(b"\r\n" + t.encode("ascii") + b"\r\n" for t in lines)
        await self._port.write_after(wire_time(len(data), self.baud, BITS_PER_CHAR), data)

    async def _dispatch(self, cmd: str) -> list[str]:
        ident = self.identity
        simple: dict[str, Callable[[], list[str]]] = {
            "AT": lambda: ["OK"],
            "ATE0": lambda: self._set_echo(False),
            "ATE1": lambda: self._set_echo(True),
            "ATE": lambda: self._set_echo(False),
            "ATV1": lambda: ["OK"],
            "ATQ0": lambda: ["OK"],
            "AT&F": lambda: ["OK"],
            "AT&W": lambda: ["OK"],
            "ATI": lambda: [ident.manufacturer, ident.model, f"Revision: {ident.revision}", "OK"],
            "AT+CGMI": lambda: [ident.manufacturer, "OK"],
            "AT+GMI": lambda: [ident.manufacturer, "OK"],
            "AT+CGMM": lambda: [ident.model, "OK"],
            "AT+GMM": lambda: [ident.model, "OK"],
            "AT+CGMR": lambda: [ident.revision, "OK"],
            "AT+GMR": lambda: [ident.revision, "OK"],
            "AT+CGSN": lambda: [ident.imei, "OK"],
            "AT+GSN": lambda: [ident.imei, "OK"],
            "AT+CMEE?": lambda: [f"+CMEE: {self._cmee}", "OK"],
            "AT+CSQ": self._csq,
            "AT+COPS?": self._cops,
            "AT+CGATT?": lambda: [f"+CGATT: {int(self._attached())}", "OK"],
            "AT+CGATT=0": self._detach,
            "AT+CFUN?": lambda: [f"+CFUN: {int(self._radio)}", "OK"],
        }
        if cmd in simple:
            return simple[cmd]()
        for domain in Domain:
            if cmd == f"AT{domain.value}?":
                return self._registration(domain)
            if cmd.startswith(f"AT{domain.value}="):
                return self._set_urc_mode(domain, cmd.partition("=")[2])
        if cmd.startswith("AT+CMEE="):
            value = cmd.partition("=")[2]
            if value in ("0", "1", "2"):
                self._cmee = int(value)
                return ["OK"]
            return ["ERROR"]
        if cmd == "AT+CGATT=1":
            return await self._attach()
        if cmd in ("AT+CFUN=0", "AT+CFUN=4", "AT+CFUN=1", "AT+CFUN=1,1"):
            return await self._cfun(cmd)
        return ["ERROR"]  # V.250: a command this module does not know

    def _set_echo(self, on: bool) -> list[str]:
        self._echo = on
        return ["OK"]

    def _cme(self, code: int) -> list[str]:
        if self._cmee == 0:
            return ["ERROR"]
        if self._cmee == 1:
            return [f"+CME ERROR: {code}"]
        return [f"+CME ERROR: {CME_ERRORS[code]}"]

    def _no_signal(self) -> bool:
        return self.booting or not self._radio or self._outage

    def _csq(self) -> list[str]:
        if self._no_signal() or self._rssi == 99:
            return ["+CSQ: 99,99", "OK"]
        # Readings wander by a step between polls, as a real module's do.
        rssi = min(31, max(0, self._rssi + self._rng.choice((-1, 0, 0, 1))))
        return [f"+CSQ: {rssi},{self._ber}", "OK"]

    def _registration(self, domain: Domain) -> list[str]:
        if domain == Domain.EPS and not self.lte:
            return ["ERROR"]  # a 2G module does not know +CEREG
        mode = self._urc_mode[domain]
        stat = self.stat()
        text = f"{domain.value}: {mode},{int(stat)}"
        if mode == 2 and stat.registered:
            text += f',"{AREA}","{CELL}",{int(self.act)}'
        return [text, "OK"]

    def _set_urc_mode(self, domain: Domain, value: str) -> list[str]:
        if domain == Domain.EPS and not self.lte:
            return ["ERROR"]
        if value not in ("0", "1", "2"):
            return self._cme(3)  # operation not allowed
        self._urc_mode[domain] = int(value)
        self._announced[domain] = self.stat()
        return ["OK"]

    def _cops(self) -> list[str]:
        if not self.stat().registered:
            return ["+COPS: 0", "OK"]
        return [f'+COPS: 0,0,"{self.operator}",{int(self.act)}', "OK"]

    def _attached(self) -> bool:
        return self.stat().registered and not self._detached

    async def _attach(self) -> list[str]:
        await asyncio.sleep(self._real(self.timing.attach_s))
        if not self.stat().registered:
            return self._cme(30)  # no network service
        self._detached = False
        return ["OK"]

    def _detach(self) -> list[str]:
        self._detached = True
        return ["OK"]

    async def _cfun(self, cmd: str) -> list[str]:
        if cmd == "AT+CFUN=1,1":
            return ["OK"]  # the reboot follows the OK (``_execute``)
        await asyncio.sleep(self._real(self.timing.cfun_s))
        if cmd in ("AT+CFUN=0", "AT+CFUN=4"):
            self._radio = False
        elif not self._radio:
            self._radio = True
            self.counters.radio_cycles += 1
            self._search_until = time.monotonic() + self._real(self.timing.register_s)
            self._at(self._search_until, self._announce)
        self._announce()
        return ["OK"]

    def _reboot(self) -> None:
        self._gen += 1
        gen = self._gen
        self._hung = None
        self._echo = True
        self._cmee = 0
        self._radio = True
        self._detached = False
        self._urc_mode = dict.fromkeys(Domain, 0)
        self._rx.clear()
        now = time.monotonic()
        self._boot_until = now + self._real(self.timing.boot_s)
        self._search_until = self._boot_until + self._real(self.timing.register_s)

        def banner() -> None:
            if gen == self._gen:
                self._port.write(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n")

        self._at(self._boot_until, banner)

    def _announce(self) -> None:
        """Registration URCs for the domains whose changes were asked for (+CxREG=1/2)."""
        stat = self.stat()
        for domain, mode in self._urc_mode.items():
            if mode == 0 or self._announced[domain] == stat or self._hung is not None:
                continue
            if domain == Domain.EPS and not self.lte:
                continue
            self._announced[domain] = stat
            text = f"{domain.value}: {int(stat)}"
            if mode == 2 and stat.registered:
                text += f',"{AREA}","{CELL}",{int(self.act)}'
            self._port.write(b"\r\n" + text.encode("ascii") + b"\r\n")

    # ------------------------------------------------------------------ time
    def _real(self, sim_s: float) -> float:
        return sim_s / self.clock.scale

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        """Run ``fn`` at monotonic time ``when``."""

        async def later() -> None:
            await asyncio.sleep(max(0.0, when - time.monotonic()))
            fn()

        self._spawn(later())

    async def _run_script(self) -> None:
        steps: list[tuple[float, Callable[[], None]]] = []
        for f in self.script:
            if f.kind == "outage":
                steps.append((f.start, functools.partial(self.set_outage, True)))
                steps.append((f.end or 0.0, functools.partial(self.set_outage, False)))
            elif f.kind == "weak":
                steps.append((f.start, functools.partial(self.set_signal, f.rssi)))
                steps.append((f.end or 0.0, self.restore_signal))
            else:
                cured = f.kind == "hang"
                steps.append((f.start, functools.partial(self.hang, reset_cures=cured)))
        for at, step in sorted(steps, key=lambda s: s[0]):
            await asyncio.sleep(max(0.0, (self._t0 + at - self.clock.now()) / self.clock.scale))
            step()
