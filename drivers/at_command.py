"""The AT command set of a GPRS/LTE module, sans-I/O: command lines out, responses and
unsolicited result codes in, and the information text of the commands we use parsed.

Conversation (ITU-T V.250 §5; TS 27.007 for the +C commands; docs/protocols.md §4)::

    DTE → module:  AT+CSQ<CR>
    module → DTE:  [AT+CSQ<CR>]                 echo, while ATE1 (the power-on default)
                   <CR><LF>+CSQ: 20,99<CR><LF>   information text ("intermediate response")
                   <CR><LF>OK<CR><LF>            final result code: OK | ERROR |
                                                 +CME ERROR: <err> | +CMS ERROR: <err>
    at any time:   <CR><LF>+CGREG: 2<CR><LF>     unsolicited result code (URC)

``AtParser`` never touches a port: ``command(text)`` returns the bytes to write, bytes
read go in with ``feed(chunk)``, and ``next_event()`` hands out ``Response`` (one per
command, with its information lines and final result) and ``Urc`` objects, or raises
``FrameError`` for a line that is garbage (a byte that no module sends, an endless
line). The ``parse_*`` functions turn a ``Response`` into frozen dataclasses and raise
``FrameError`` when the information text is not what 27.007 specifies. The session that
drives a real port with it is ``drivers.modem``.

Telling a URC from an information line: while a command waits, a line is a URC only if
it looks like one (``RING``, ``+CGREG:``, …) *and* does not carry the waiting command's
own prefix; everything else belongs to the command. ``+CREG: 2`` (a URC) can therefore
land among the lines of ``AT+CREG?``; ``parse_registration`` tells the two forms apart
(the solicited form starts with ``<n>,<stat>``, both unquoted).
"""

from __future__ import annotations

import contextlib
import re
from collections import deque
from dataclasses import dataclass
from enum import IntEnum, StrEnum

from drivers.errors import EncodeError, FrameError, ModemError

MAX_LINE_BYTES = 1024  # AT+COPS=? lists every operator in one line: a few hundred bytes
MAX_COMMAND_CHARS = 256  # V.250 §5.2.4 asks for >= 40; modules accept 256 or more


# ---------------------------------------------------------------------- result codes
class Final(StrEnum):
    """Final result codes in verbose form (ATV1, V.250 §6.2.6 and TS 27.007 §9.2)."""

    OK = "OK"
    ERROR = "ERROR"
    CME_ERROR = "+CME ERROR"
    CMS_ERROR = "+CMS ERROR"


# TS 27.007 §9.2.1 (general) and §9.2.2 (GPRS-related) <err> values; the common ones.
CME_ERRORS: dict[int, str] = {
    0: "phone failure",
    1: "no connection to phone",
    2: "phone-adaptor link reserved",
    3: "operation not allowed",
    4: "operation not supported",
    5: "PH-SIM PIN required",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    17: "SIM PIN2 required",
    18: "SIM PUK2 required",
    20: "memory full",
    21: "invalid index",
    22: "not found",
    23: "memory failure",
    30: "no network service",
    31: "network timeout",
    32: "network not allowed - emergency calls only",
    100: "unknown",
    103: "illegal MS",
    106: "illegal ME",
    107: "GPRS services not allowed",
    111: "PLMN not allowed",
    112: "location area not allowed",
    113: "roaming not allowed in this location area",
    132: "service option not supported",
    133: "requested service option not subscribed",
    134: "service option temporarily out of order",
    148: "unspecified GPRS error",
    149: "PDP authentication failure",
    150: "invalid mobile class",
}

# TS 27.005 §3.2.5 <err> values of +CMS ERROR; the ones a data-only module may send.
CMS_ERRORS: dict[int, str] = {
    300: "ME failure",
    302: "operation not allowed",
    303: "operation not supported",
    310: "SIM not inserted",
    311: "SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    320: "memory failure",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}


def describe_error(kind: str | None, code: int | None, text: str | None = None) -> str:
    """The meaning of an error result, for people."""
    if text:
        return text  # verbose mode (AT+CMEE=2): the module's own words
    if kind is None:
        return "command not accepted (syntax, parameter, or AT+CMEE=0)"
    table = CME_ERRORS if kind == "CME" else CMS_ERRORS
    if code is None:
        return "no error code given"
    return table.get(code, f"code {code} (not in TS 27.00{7 if kind == 'CME' else 5})")


@dataclass(frozen=True)
class Response:
    """One command's answer: its information lines and its final result code."""

    command: str
    lines: tuple[str, ...]
    final: Final
    error_code: int | None = None
    error_text: str | None = None  # verbose +CME ERROR text (AT+CMEE=2)

    @property
    def ok(self) -> bool:
        return self.final == Final.OK

    def error(self) -> ModemError:
        kind = {Final.CME_ERROR: "CME", Final.CMS_ERROR: "CMS"}.get(self.final)
        return ModemError(
            self.command,
            kind,
            self.error_code,
            describe_error(kind, self.error_code, self.error_text),
        )

    def check(self) -> Response:
        if not self.ok:
            raise self.error()
        return self


@dataclass(frozen=True)
class Urc:
    """An unsolicited result code (``RING``, ``+CGREG: 2``, ``RDY`` …)."""

    text: str


Event = Response | Urc

# URCs of 27.007/27.005 and the boot banners of common modules (Quectel RDY/+QIND,
# SIMCom "SMS Ready"/"Call Ready", Cinterion ^SYSSTART).
_URC_PREFIXES = (
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+C5GREG:",
    "+CRING:",
    "+CMTI:",
    "+CMT:",
    "+CDS:",
    "+CBM:",
    "+CGEV:",
    "+CPIN:",
    "+CFUN:",
    "+CUSD:",
    "+CIEV:",
    "+CLIP:",
    "+CTZV:",
    "+CTZE:",
    "+CTZU:",
    "+QIND:",
    "+QUSIM:",
    "+QIURC:",
    "+PACSP",
    "^SYSSTART",
)
_URC_WORDS = frozenset(
    {"RING", "RDY", "NO CARRIER", "SMS READY", "CALL READY", "POWERED DOWN", "NORMAL POWER DOWN"}
)
# What a module prints once it has (re)booted.
BOOT_URCS = frozenset({"RDY", "^SYSSTART", "SMS READY", "CALL READY", "+CPIN: READY"})
_PREFIX_RE = re.compile(r"AT([+^$#%&*][A-Z0-9]+)", re.IGNORECASE)
_EOL_RE = re.compile(rb"[\r\n]")


def _is_urc(text: str) -> bool:
    upper = text.upper()
    return upper in _URC_WORDS or upper.startswith(_URC_PREFIXES)


def _final(text: str) -> tuple[Final, int | None, str | None] | None:
    if text == "OK":
        return Final.OK, None, None
    if text == "ERROR":
        return Final.ERROR, None, None
    upper = text.upper()
    for final in (Final.CME_ERROR, Final.CMS_ERROR):
        tag = final.value + ":"
        if upper.startswith(tag):
            rest = text[len(tag) :].strip()
            if rest.isdigit() and len(rest) <= 6:
                return final, int(rest), None
            return final, None, rest or None
    return None


def command_prefix(command: str) -> str | None:
    """``AT+CGREG?`` → ``+CGREG``: the prefix of the command's information lines."""
    m = _PREFIX_RE.match(command)
    return m.group(1).upper() if m else None


# ---------------------------------------------------------------------- the parser
class AtParser:
    """Sans-I/O AT conversation: one command at a time, URCs at any time."""

    def __init__(self, max_line: int = MAX_LINE_BYTES) -> None:
        self.max_line = max_line
        self._buf = bytearray()
        self._discarding = False  # inside an overlong line: drop up to its end
        self._out: deque[Event | FrameError] = deque()
        self._pending: str | None = None
        self._prefix: str | None = None
        self._lines: list[str] = []
        self.echoes = 0  # echoed command lines dropped
        self.stray = 0  # final result codes with no command waiting (answers given up on)

    @property
    def pending(self) -> str | None:
        return self._pending

    def command(self, text: str) -> bytes:
        """Start ``text`` (``AT…``); returns the bytes to write.

        Raises ``EncodeError`` for a command a module cannot take: not ``AT…``, not
        printable ASCII, too long, or while another command still waits (``cancel()``
        it first: V.250 §5.6 lets a command line end only with its final result code).
        """
        text = text.strip()
        if not text[:2].upper() == "AT":
            raise EncodeError(f"{text!r}: an AT command line starts with AT")
        if any(not 0x20 <= ord(c) < 0x7F for c in text):
            raise EncodeError(f"{text!r}: AT commands are printable ASCII")
        if len(text) > MAX_COMMAND_CHARS:
            raise EncodeError(f"{text[:20]!r}…: longer than {MAX_COMMAND_CHARS} characters")
        if self._pending is not None:
            raise EncodeError(f"{text}: {self._pending} is still waiting for its result code")
        self._pending = text
        self._prefix = command_prefix(text)
        self._lines = []
        return text.encode("ascii") + b"\r"

    def cancel(self) -> None:
        """Give up on the waiting command (after its timeout); its late lines become
        URCs and its late final result code is counted in ``stray``."""
        self._pending = None
        self._prefix = None
        self._lines = []

    def reset(self) -> None:
        """Forget everything: after the module rebooted or the port was reopened."""
        self.cancel()
        self._buf.clear()
        self._discarding = False
        self._out.clear()

    def feed(self, chunk: bytes) -> None:
        start = 0
        for m in _EOL_RE.finditer(chunk):
            self._take(chunk[start : m.start()], end=True)
            start = m.end()
        self._take(chunk[start:], end=False)

    def next_event(self) -> Event | None:
        """The next response or URC; ``None`` when more bytes are needed.

        Raises ``FrameError`` once per garbage line (the line is dropped and parsing
        goes on with the next one).
        """
        if not self._out:
            return None
        item = self._out.popleft()
        if isinstance(item, FrameError):
            raise item
        return item

    # -- lines
    def _take(self, part: bytes, *, end: bool) -> None:
        if self._discarding:
            self._discarding = not end
            return
        self._buf += part
        if len(self._buf) > self.max_line:
            self._out.append(
                FrameError(
                    f"response line longer than {self.max_line} bytes", raw=bytes(self._buf[:64])
                )
            )
            self._buf.clear()
            self._discarding = not end
            return
        if end and self._buf:
            line = bytes(self._buf)
            self._buf.clear()
            self._line(line)

    def _line(self, raw: bytes) -> None:
        # Modules send printable ASCII only (27.007 §4.1; UCS2 strings travel as hex).
        # Anything else is line noise, a baud-rate mismatch or a power-up glitch.
        for i, b in enumerate(raw):
            if not (0x20 <= b < 0x7F or b == 0x09):
                self._out.append(
                    FrameError(f"byte 0x{b:02X} in a response line", offset=i, raw=raw)
                )
                return
        text = raw.decode("ascii").strip()
        if text:
            self._classify(text)

    def _classify(self, text: str) -> None:
        final = _final(text)
        pending = self._pending
        if pending is None:
            if final is not None:
                self.stray += 1
            elif text[:2].upper() == "AT":
                self.echoes += 1  # the echo of a command given up on
            else:
                self._out.append(Urc(text))
            return
        if final is not None:
            self._out.append(Response(pending, tuple(self._lines), *final))
            self.cancel()
            return
        if _same_command(text, pending):
            self.echoes += 1
            return
        own = self._prefix is not None and text.upper().startswith(self._prefix + ":")
        if not own and _is_urc(text):
            self._out.append(Urc(text))
        else:
            self._lines.append(text)


def _same_command(a: str, b: str) -> bool:
    return a.replace(" ", "").upper() == b.replace(" ", "").upper()


# ---------------------------------------------------------------------- information text
def split_fields(text: str) -> list[str]:
    """``1,"1A2B","01C3D4E5",7`` → ``['1', '"1A2B"', '"01C3D4E5"', '7']`` (quotes kept:
    27.007 §4.1 quotes strings, so a quoted ``"1"`` is not the number 1)."""
    fields: list[str] = []
    current: list[str] = []
    quoted = False
    for c in text:
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            fields.append("".join(current).strip())
            current = []
        else:
            current.append(c)
    if quoted:
        raise FrameError(f"unterminated string in {text!r}")
    fields.append("".join(current).strip())
    return fields


def _values(response: Response, prefix: str) -> list[list[str]]:
    tag = prefix + ":"
    return [
        split_fields(line[len(tag) :].strip())
        for line in response.lines
        if line.upper().startswith(tag)
    ]


def _int(token: str, what: str, line: str) -> int:
    if not token.isdigit() or len(token) > 9:
        raise FrameError(f"{what}: expected a number, got {token!r} in {line!r}")
    return int(token)


def _string(token: str, what: str, line: str) -> str:
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise FrameError(f"{what}: expected a quoted string, got {token!r} in {line!r}")
    return token[1:-1]


@dataclass(frozen=True)
class SignalQuality:
    """``+CSQ: <rssi>,<ber>`` (TS 27.007 §8.5).

    rssi 0 = -113 dBm or less, 1 = -111 dBm, 2..30 = -109..-53 dBm (2 dB steps),
    31 = -51 dBm or more, 99 = not known. Modules with TD-SCDMA report 100 = -116 dBm
    or less … 191 = -25 dBm or more, 199 = not known [M: Quectel UC/EC manuals]. ber
    0..7 are RXQUAL classes (TS 45.008 §8.2.4), 99 = not known (always, on LTE).
    """

    rssi: int
    ber: int

    @property
    def dbm(self) -> int | None:
        if 0 <= self.rssi <= 31:
            return -113 + 2 * self.rssi
        if 100 <= self.rssi <= 191:
            return self.rssi - 216
        return None

    @property
    def known(self) -> bool:
        return self.dbm is not None


def parse_csq(response: Response) -> SignalQuality:
    for fields in _values(response, "+CSQ"):
        line = ",".join(fields)
        if len(fields) != 2:
            raise FrameError(f"+CSQ: expected <rssi>,<ber>, got {line!r}")
        rssi = _int(fields[0], "rssi", line)
        ber = _int(fields[1], "ber", line)
        if not (rssi <= 31 or rssi == 99 or 100 <= rssi <= 191 or rssi == 199):
            raise FrameError(f"rssi {rssi} is outside TS 27.007 §8.5 (0..31, 99)")
        if not (ber <= 7 or ber == 99):
            raise FrameError(f"ber {ber} is outside TS 27.007 §8.5 (0..7, 99)")
        return SignalQuality(rssi, ber)
    raise FrameError(f"no +CSQ: line in the answer to {response.command}")


class RegStatus(IntEnum):
    """``<stat>`` of +CREG/+CGREG/+CEREG (TS 27.007 §7.2, §10.1.20, §10.1.22)."""

    NOT_REGISTERED = 0  # and not searching
    HOME = 1
    SEARCHING = 2
    DENIED = 3
    UNKNOWN = 4  # e.g. out of coverage
    ROAMING = 5
    HOME_SMS_ONLY = 6  # E-UTRAN only
    ROAMING_SMS_ONLY = 7
    EMERGENCY_ONLY = 8
    HOME_CSFB_NOT_PREFERRED = 9
    ROAMING_CSFB_NOT_PREFERRED = 10

    @property
    def registered(self) -> bool:
        return self not in _NOT_REGISTERED


_NOT_REGISTERED = frozenset(
    {
        RegStatus.NOT_REGISTERED,
        RegStatus.SEARCHING,
        RegStatus.DENIED,
        RegStatus.UNKNOWN,
        RegStatus.EMERGENCY_ONLY,
    }
)


class AccessTech(IntEnum):
    """``<AcT>`` (TS 27.007 §7.3)."""

    GSM = 0
    GSM_COMPACT = 1
    UTRAN = 2
    GSM_EGPRS = 3
    UTRAN_HSDPA = 4
    UTRAN_HSUPA = 5
    UTRAN_HSPA = 6
    EUTRAN = 7
    EC_GSM_IOT = 8
    EUTRAN_NB_S1 = 9


class Domain(StrEnum):
    """Which registration: circuit-switched, GPRS packet, or EPS (LTE) packet."""

    CS = "+CREG"
    GPRS = "+CGREG"
    EPS = "+CEREG"

    @property
    def query(self) -> str:
        return f"AT{self.value}?"


@dataclass(frozen=True)
class Registration:
    """One domain's registration. ``mode`` is the URC setting ``<n>`` (None in a URC);
    ``area`` is the LAC (or TAC on LTE) and ``cell`` the cell id, hex, when reported."""

    domain: Domain
    stat: RegStatus
    mode: int | None = None
    area: str | None = None
    cell: str | None = None
    act: AccessTech | None = None

    @property
    def registered(self) -> bool:
        return self.stat.registered


def _stat(value: int) -> RegStatus:
    try:
        return RegStatus(value)
    except ValueError:
        return RegStatus.UNKNOWN  # a <stat> newer than this table: not a link we trust


def _registration(domain: Domain, fields: list[str], line: str, *, solicited: bool) -> Registration:
    mode = None
    if solicited:
        mode = _int(fields[0], "<n>", line)
        fields = fields[1:]
    stat = _stat(_int(fields[0], "<stat>", line))
    area = cell = None
    act = None
    rest = fields[1:]
    if len(rest) >= 2:
        # +CEREG may leave <tac> and <ci> empty: [<tac>],[<ci>] (§10.1.22)
        area = _string(rest[0], "area", line) if rest[0] else None
        cell = _string(rest[1], "cell", line) if rest[1] else None
        if len(rest) >= 3 and rest[2]:
            try:
                act = AccessTech(_int(rest[2], "<AcT>", line))
            except ValueError:
                act = None
    elif rest:
        raise FrameError(f"{domain.value}: <lac> without <ci> in {line!r}")
    return Registration(domain, stat, mode, area, cell, act)


def _is_solicited(fields: list[str]) -> bool:
    # Read form: <n>,<stat>[,...]: the first two fields are bare numbers. URC form:
    # <stat>[,<lac>,<ci>[,<AcT>]]: one field, or a quoted second field.
    return len(fields) >= 2 and fields[0].isdigit() and fields[1].isdigit()


def parse_registration(response: Response, domain: Domain) -> Registration:
    """The read form of ``AT+CREG?``/``AT+CGREG?``/``AT+CEREG?``."""
    for fields in _values(response, domain.value):
        if _is_solicited(fields):
            return _registration(domain, fields, ",".join(fields), solicited=True)
    raise FrameError(f"no {domain.value}: <n>,<stat> line in the answer to {response.command}")


def parse_registration_urc(text: str) -> Registration | None:
    """A registration URC (``+CGREG: 5``) as a ``Registration``; None for other URCs
    and for malformed ones (a URC is advice, never worth an error)."""
    upper = text.upper()
    for domain in Domain:
        tag = domain.value + ":"
        if upper.startswith(tag):
            try:
                fields = split_fields(text[len(tag) :].strip())
                if _is_solicited(fields):
                    return _registration(domain, fields, text, solicited=True)
                return _registration(domain, fields, text, solicited=False)
            except FrameError:
                return None
    return None


@dataclass(frozen=True)
class Operator:
    """``+COPS: <mode>[,<format>,<oper>[,<AcT>]]`` (TS 27.007 §7.3); ``name`` is None
    while not registered."""

    mode: int
    name: str | None = None
    format: int | None = None
    act: AccessTech | None = None


def parse_cops(response: Response) -> Operator:
    for fields in _values(response, "+COPS"):
        line = ",".join(fields)
        mode = _int(fields[0], "<mode>", line)
        if len(fields) == 1:
            return Operator(mode)
        if len(fields) < 3:
            raise FrameError(f"+COPS: <format> without <oper> in {line!r}")
        fmt = _int(fields[1], "<format>", line)
        name = _string(fields[2], "<oper>", line)
        act = None
        if len(fields) >= 4 and fields[3]:
            with contextlib.suppress(ValueError):
                act = AccessTech(_int(fields[3], "<AcT>", line))
        return Operator(mode, name, fmt, act)
    raise FrameError(f"no +COPS: line in the answer to {response.command}")


def parse_cgatt(response: Response) -> bool:
    for fields in _values(response, "+CGATT"):
        line = ",".join(fields)
        state = _int(fields[0], "<state>", line)
        if state not in (0, 1):
            raise FrameError(f"+CGATT: <state> {state} is neither 0 nor 1")
        return state == 1
    raise FrameError(f"no +CGATT: line in the answer to {response.command}")


def parse_text(response: Response) -> str:
    """The one line of ``AT+CGMI``/``+CGMM``/``+CGMR``/``+CGSN``. Some modules prefix it
    with the command (``+CGMR: …``) or a label (``Revision: …``); both are removed."""
    if not response.lines:
        raise FrameError(f"no information text in the answer to {response.command}")
    text = response.lines[0]
    prefix = command_prefix(response.command)
    if prefix and text.upper().startswith(prefix + ":"):
        text = text[len(prefix) + 1 :].strip()
    if text.upper().startswith("REVISION:"):
        text = text[len("REVISION:") :].strip()
    return text.strip('"')
