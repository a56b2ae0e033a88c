"""Signed downlink commands: the one definition both ends use.

A command travels from the receiver to one concentrator on ``mf/v1/<id>/cmd``. The
broker is not trusted with it (README, "Downlink commands"): the receiver signs each
command with the utility's Ed25519 command key, and the concentrator executes only what
that key signed, for itself, inside the command's validity window, and with a counter
higher than any it accepted before (so a recorded command cannot be replayed). A
stolen concentrator certificate or a compromised broker can therefore delay or drop
commands, never forge or repeat one: a relay that cuts a customer off only moves on the
utility's word.

Layout (CBOR): ``{"v": 1, "body": <CBOR bytes>, "sig": <64 bytes>}``; the body is a map
``{"id", "cid", "n", "action", "meters", "params", "nb", "na", "at"}`` and the
signature covers ``DOMAIN + body``, so a signature made for anything else never
verifies as a command.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from drivers.meter_ids import any_meter_problem, dlt645_address_problem

FORMAT_VERSION = 1
DOMAIN = b"meterflow command v1\x00"
ACTIONS = (
    "relay_open",
    "relay_close",
    "time_sync",
    "clock_check",
    "read",
    "add_meter",
    "remove_meter",
    "upgrade",
)
NO_METERS = ("time_sync", "upgrade")
# Actions a Modbus meter (no relay, no clock: docs/quantities.md) can take; the others
# are DL/T 645's.
ANY_METER = ("read",)
# A command is a short-lived order: a window longer than this is refused, so a command
# lost in a queue cannot take effect days later.
MAX_VALIDITY_S = 7 * 86400
MAX_BLOB_BYTES = 64 * 1024  # an upgrade carries its package manifest
MAX_METERS = 256
COUNTER_WINDOW = 64  # out-of-order arrivals tolerated; older counters are replays


class CommandError(Exception):
    """A command that cannot be built or read (malformed, wrongly signed)."""


class CommandRefused(CommandError):
    """A well-formed command the concentrator must not execute, with the reason."""

    def __init__(self, reason: str, command: Command | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.command = command


@dataclass(frozen=True)
class Command:
    id: str
    concentrator: str
    counter: int
    action: str
    meters: tuple[str, ...]
    not_before: float
    not_after: float
    issued_at: float
    params: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What the audit log keeps of it (both ends)."""
        return {
            "id": self.id,
            "counter": self.counter,
            "action": self.action,
            "meters": list(self.meters),
            "not_before": self.not_before,
            "not_after": self.not_after,
        }


def _body(cmd: Command) -> bytes:
    return cbor2.dumps(
        {
            "id": cmd.id,
            "cid": cmd.concentrator,
            "n": cmd.counter,
            "action": cmd.action,
            "meters": list(cmd.meters),
            "params": cmd.params,
            "nb": cmd.not_before,
            "na": cmd.not_after,
            "at": cmd.issued_at,
        }
    )


def check(cmd: Command) -> None:
    """The rules every command obeys, checked when it is made and when it is read."""
    if not cmd.id or len(cmd.id) > 64:
        raise CommandError(f"id {cmd.id!r}: expected 1-64 characters")
    if cmd.action not in ACTIONS:
        raise CommandError(f"action {cmd.action!r}: expected one of {', '.join(ACTIONS)}")
    if not 1 <= cmd.counter < 2**63:
        raise CommandError(f"counter {cmd.counter}: expected 1 .. 2^63-1")
    if not all(math.isfinite(t) for t in (cmd.not_before, cmd.not_after, cmd.issued_at)):
        raise CommandError("validity times must be finite unix times")
    if cmd.not_after <= cmd.not_before:
        raise CommandError("not_after must be later than not_before")
    if cmd.not_after - cmd.not_before > MAX_VALIDITY_S:
        raise CommandError(
            f"validity of {cmd.not_after - cmd.not_before:.0f} s exceeds {MAX_VALIDITY_S} s"
        )
    needs_meters = cmd.action not in NO_METERS
    if needs_meters and not cmd.meters:
        raise CommandError(f"action {cmd.action} needs at least one meter")
    if len(cmd.meters) > MAX_METERS:
        raise CommandError(f"{len(cmd.meters)} meters: at most {MAX_METERS} per command")
    for m in cmd.meters:
        if cmd.action in ANY_METER:
            if any_meter_problem(m) is not None:
                raise CommandError(
                    f"meter {m!r}: expected a 12-digit address or a Modbus slave id 1..247"
                )
        elif dlt645_address_problem(m) is not None:
            raise CommandError(f"meter {m!r}: expected a 12-digit address")
    if cmd.action == "add_meter":
        if len(cmd.meters) != 1:
            raise CommandError("add_meter adds one meter at a time")
        bus = cmd.params.get("bus")
        if not isinstance(bus, str) or not bus:
            raise CommandError("add_meter needs params.bus, the bus the meter is wired to")
        for name in ("group", "area"):
            if not isinstance(cmd.params.get(name, ""), str):
                raise CommandError(f"add_meter params.{name} must be text")
    if cmd.action == "upgrade":
        if cmd.meters:
            raise CommandError("upgrade is for the concentrator, not for meters")
        for name in ("manifest", "signature"):
            value = cmd.params.get(name)
            if not isinstance(value, str) or not re.fullmatch(r"(?:[0-9a-f]{2})+", value):
                raise CommandError(f"upgrade needs params.{name} as lower-case hex")
        window = cmd.params.get("health_window_s")
        if not isinstance(window, int | float) or isinstance(window, bool) or window <= 0:
            raise CommandError("upgrade needs params.health_window_s, a positive number")


def sign(cmd: Command, key: Ed25519PrivateKey) -> bytes:
    """The signed blob published on the concentrator's ``cmd`` topic."""
    check(cmd)
    body = _body(cmd)
    blob = cbor2.dumps({"v": FORMAT_VERSION, "body": body, "sig": key.sign(DOMAIN + body)})
    if len(blob) > MAX_BLOB_BYTES:
        raise CommandError(f"command is {len(blob)} bytes, more than {MAX_BLOB_BYTES}")
    return blob


def _field(doc: dict[Any, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in doc:
        raise CommandError(f"command body lacks {name!r}")
    value = doc[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise CommandError(f"command body field {name!r}: unexpected type {type(value).__name__}")
    return value


def open_signed(blob: bytes, key: Ed25519PublicKey) -> Command:
    """Check the signature and the layout; the result is what the utility signed."""
    if len(blob) > MAX_BLOB_BYTES:
        raise CommandError(f"command is {len(blob)} bytes, more than {MAX_BLOB_BYTES}")
    try:
        outer = cbor2.loads(blob)
    except Exception as exc:  # cbor2 raises several types on garbage
        raise CommandError(f"not a CBOR command: {exc}") from None
    if not isinstance(outer, dict):
        raise CommandError("not a command: expected a CBOR map")
    version = outer.get("v")
    if version != FORMAT_VERSION:
        shown = version if isinstance(version, int) and abs(version) < 10**6 else "?"
        raise CommandError(f"command format {shown}: this concentrator reads {FORMAT_VERSION}")
    body, sig = outer.get("body"), outer.get("sig")
    if not isinstance(body, bytes) or not isinstance(sig, bytes) or len(sig) != 64:
        raise CommandError("command lacks its body or its 64-byte signature")
    try:
        key.verify(sig, DOMAIN + body)
    except InvalidSignature:
        raise CommandError("bad signature: not signed by the utility's command key") from None
    try:
        doc = cbor2.loads(body)
    except Exception as exc:
        raise CommandError(f"signed body is not CBOR: {exc}") from None
    if not isinstance(doc, dict):
        raise CommandError("signed body is not a map")
    meters = _field(doc, "meters", list)
    params = _field(doc, "params", dict)
    cmd = Command(
        id=_field(doc, "id", str),
        concentrator=_field(doc, "cid", str),
        counter=_field(doc, "n", int),
        action=_field(doc, "action", str),
        meters=tuple(str(m) for m in meters),
        not_before=float(_field(doc, "nb", (int, float))),
        not_after=float(_field(doc, "na", (int, float))),
        issued_at=float(_field(doc, "at", (int, float))),
        params=params,
    )
    check(cmd)
    return cmd


def is_due(cmd: Command, now: float) -> bool:
    """Whether a command's window has opened. Not a second early: a demand-response
    reconnection two minutes early is two minutes of load in the window. (A command
    meant for "now" from an issuer whose clock runs ahead just waits that much.)"""
    return now >= cmd.not_before


@dataclass
class CounterWindow:
    """The counters a concentrator has accepted: the highest, and every one within
    ``COUNTER_WINDOW`` below it. Commands may arrive out of order (two receivers
    publishing, a redelivery), so a counter is refused only when it was seen before or
    is older than the window, not merely because a higher one came first."""

    high: int = 0
    seen: set[int] = field(default_factory=set)

    def state(self) -> dict[str, Any]:
        return {"high": self.high, "seen": sorted(self.seen)}

    @classmethod
    def from_state(cls, doc: dict[str, Any]) -> CounterWindow:
        return cls(int(doc.get("high", 0)), {int(n) for n in doc.get("seen", [])})

    def add(self, counter: int) -> None:
        self.high = max(self.high, counter)
        self.seen = {n for n in (*self.seen, counter) if n > self.high - COUNTER_WINDOW}


class CommandDuplicate(CommandRefused):
    """A copy of a command already accepted (a redelivery, or a replay inside the
    window): not run again, reported as a duplicate, never as the command's outcome."""


def accept(
    blob: bytes,
    key: Ed25519PublicKey,
    *,
    concentrator_id: str,
    now: float,
    window: CounterWindow,
    issued_after: float | None = None,
) -> Command:
    """What a concentrator takes: a signed command for it, not expired (it may be due
    later: see `is_due`), never seen before. Raises `CommandRefused` (with the command
    when it could be read) otherwise. ``issued_after``: commands issued before it are
    refused — the counters they were checked against may be lost (a replaced store)."""
    try:
        cmd = open_signed(blob, key)
    except CommandError as exc:
        raise CommandRefused(str(exc)) from None
    if cmd.concentrator != concentrator_id:
        raise CommandRefused(f"addressed to concentrator {cmd.concentrator!r}", cmd)
    if cmd.not_before - now > MAX_VALIDITY_S:
        # A command may be scheduled (demand response at 18:00), but not for any time.
        raise CommandRefused(
            f"scheduled for {cmd.not_before:.0f}, more than {MAX_VALIDITY_S} s ahead", cmd
        )
    if now > cmd.not_after:
        raise CommandRefused(f"expired at {cmd.not_after:.0f} (now {now:.0f})", cmd)
    if cmd.counter in window.seen:
        raise CommandDuplicate(f"duplicate: counter {cmd.counter} was accepted before", cmd)
    if cmd.counter <= window.high - COUNTER_WINDOW:
        raise CommandRefused(
            f"replayed: counter {cmd.counter} is older than the last {COUNTER_WINDOW}"
            f" accepted (highest {window.high})",
            cmd,
        )
    if issued_after is not None and cmd.issued_at < issued_after:
        raise CommandRefused(
            f"issued at {cmd.issued_at:.0f}, before this concentrator's command log began"
            f" ({issued_after:.0f}): reissue it",
            cmd,
        )
    return cmd


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def load_public_key(path: Path, what: str) -> Ed25519PublicKey:
    """An Ed25519 public key (PEM) from ``path``; ValueError says which file and why."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot load the {what}: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path}: expected an Ed25519 public key")
    return key
