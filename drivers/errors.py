"""One error tree for everything meter-facing, split by what the caller should do.

- ``FrameError``: bytes that are not a valid frame (noise, bad checksum, collision).
  The caller resynchronises and may retry.
- ``EncodeError``: the caller asked a codec to build something the protocol cannot carry
  (a 13-digit address, a value out of range). A programming or configuration mistake.
- ``MeterError``: the meter understood us and answered with an error reply; retrying the
  same request will not help. Carries the meter's own code and the raw frame.
- ``BusTimeout``: nobody answered in time.
- ``BusError``: the transport itself failed (port gone, write error).
"""

from __future__ import annotations


class DriverError(Exception):
    """Root of every error raised by ``drivers``."""


class FrameError(DriverError):
    """Received bytes are not a valid frame.

    ``offset`` is the byte position inside the candidate frame where the problem was
    found, when known, so a person reading a capture can find it.
    """

    def __init__(self, reason: str, *, offset: int | None = None, raw: bytes = b"") -> None:
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason}{where}")
        self.reason = reason
        self.offset = offset
        self.raw = raw


class EncodeError(DriverError, ValueError):
    """A request or value cannot be encoded: the argument is outside what the protocol allows."""


class MeterError(DriverError):
    """The meter answered with a protocol error reply."""

    def __init__(self, meter: str, code: int, description: str, raw: bytes = b"") -> None:
        super().__init__(f"meter {meter} replied with error 0x{code:02X}: {description}")
        self.meter = meter
        self.code = code
        self.description = description
        self.raw = raw


class BusTimeout(DriverError):
    """No (complete) answer arrived within the response timeout."""


class BusError(DriverError):
    """The transport failed: the port could not be opened, read or written."""


class PortBusy(BusError):
    """Another program holds the port's exclusive lock (two masters on one half-duplex
    line garble each other). ``holder`` names it when it could be found: a
    ``drivers.port_lock.Holder`` (its pid and command line), else None."""

    def __init__(self, message: str, *, port: str, holder: object | None = None) -> None:
        super().__init__(message)
        self.port = port
        self.holder = holder


# -- cellular modem (drivers/at_command.py, drivers/modem.py) ---------------------------
# The same split by action: the module refused a command (ModemError: the code says
# why; retrying the same command rarely helps), a command went unanswered (ModemTimeout:
# probe the module), or the module answers nothing at all, not even ``AT``
# (ModemHung: only a reset or a power cycle brings it back).


class ModemError(DriverError):
    """The modem answered a command with ERROR, +CME ERROR or +CMS ERROR.

    ``kind`` is ``"CME"`` (TS 27.007 §9.2, mobile equipment), ``"CMS"`` (TS 27.005
    §3.2.5, message service) or ``None`` for a bare ``ERROR`` (V.250: syntax error or a
    module with ``AT+CMEE=0``). ``code`` is the numeric code when the module sent one;
    ``description`` is its meaning, or the module's own text in verbose mode (CMEE=2).
    """

    def __init__(self, command: str, kind: str | None, code: int | None, description: str) -> None:
        if kind is None:
            what = "ERROR"
        elif code is None:
            what = f"+{kind} ERROR"
        else:
            what = f"+{kind} ERROR {code}"
        super().__init__(f"modem refused {command}: {what} ({description})")
        self.command = command
        self.kind = kind
        self.code = code
        self.description = description


class ModemTimeout(BusTimeout):
    """No final result code (OK/ERROR) arrived within the command's timeout."""

    def __init__(self, command: str, timeout: float, message: str | None = None) -> None:
        super().__init__(message or f"modem did not answer {command} within {timeout:.3f} s")
        self.command = command
        self.timeout = timeout


class ModemHung(ModemTimeout):
    """The module does not answer even ``AT``: it must be reset or power-cycled.

    A subclass of ``ModemTimeout`` (it is one), so catch it first.
    """

    def __init__(self, tries: int, timeout: float) -> None:
        super().__init__(
            "AT", timeout, f"modem hung: {tries} probes (AT) unanswered, {timeout:.3f} s each"
        )
        self.tries = tries


# -- carrier module (drivers/plc_bus.py) ------------------------------------------------
# A Q/GDW 1376.2 power-line carrier module stands between us and the meters. Split by
# action again: the module refused (CarrierDenied and its children say why and what to
# do), restarted (CarrierReset: what was in flight is lost), or said nothing at all
# (CarrierTimeout). A meter's own error reply still arrives as MeterError.


class CarrierError(DriverError):
    """The local communication (carrier) module itself reported a problem."""


class CarrierDenied(CarrierError):
    """The module answered with a deny frame (AFN 00 F2) instead of doing the request.

    ``code`` is the module's error status, ``node`` the meter the request was for (if
    any), ``raw`` the deny frame. Subclasses say what the caller should do.
    """

    def __init__(
        self, code: int, description: str, *, node: str | None = None, raw: bytes = b""
    ) -> None:
        about = f" for node {node}" if node else ""
        super().__init__(f"carrier module denied the request{about}: {description} ({code})")
        self.code = code
        self.description = description
        self.node = node
        self.raw = raw


class NodeNotInRoute(CarrierDenied):
    """The meter is not in the module's node table: add it (AFN 11 F1), then retry."""


class NodeNoReply(CarrierDenied):
    """The module tried and the meter (or its carrier node) did not answer, or the node is
    not in the network at the moment: retry later, count it as a failed read."""


class CarrierBusy(CarrierDenied):
    """The module is busy or runs fewer requests at once than we sent: retry shortly."""


class CarrierReset(CarrierError):
    """The module restarted; requests that were in flight are lost and may be repeated."""


class CarrierTimeout(BusTimeout):
    """The carrier module itself did not answer in time (not even with a deny)."""
