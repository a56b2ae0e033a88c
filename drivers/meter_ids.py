"""How a person writes a meter's identity: the one rule for the config file, the field
CLI and the simulator's options.

- DL/T 645: the meter address is 12 BCD digits, as printed on the nameplate
  (docs/protocols.md §1.2); a request may put ``AA`` (the wildcard byte of abbreviated
  addressing, §1.4) in place of any digit pair. The codec also pads shorter all-digit
  addresses (`drivers.dlt645.encode_address`), for addresses read off a frame; a person
  must write all twelve, so that ``12345`` is a typing mistake, not meter
  000000012345.
- Modbus RTU: the slave id is 1..247 (docs/protocols.md §2.1), written as a
  decimal number without leading zeros, so that one slave has one name (``7``, never
  ``007`` or ``000000000007``, which reads like a DL/T 645 address).

Each check returns what is wrong in words (None when the text is fine), so every
caller reports it in its own way: a config issue, a usage error, an option error.
"""

from __future__ import annotations

import re

DLT645_DIGITS = 12
MODBUS_SLAVES = range(1, 248)

_DLT645_RE = re.compile(r"[0-9]{12}")
_DLT645_WILD_RE = re.compile(r"(?:[0-9]{2}|AA){6}")
_SLAVE_RE = re.compile(r"[1-9][0-9]{0,2}")


def _shown(text: str) -> str:
    """The text as the config checker shows a value: in double quotes, cut at 40."""
    quoted = f'"{text}"'
    return quoted if len(quoted) <= 40 else quoted[:37] + "..."


def dlt645_address_problem(text: str, *, wildcards: bool = False) -> str | None:
    """Why ``text`` is not a DL/T 645 address (with ``wildcards``: AA pairs allowed)."""
    if _DLT645_RE.fullmatch(text):
        return None
    if wildcards and _DLT645_WILD_RE.fullmatch(text.upper()):
        return None
    problem = f"{_shown(text)} is not a 12-digit DL/T 645 address"
    pairs = ", AA wildcard pairs allowed" if wildcards else ""
    if text.isascii() and text.isdigit():
        return f"{problem} (expected 12 digits{pairs}, got {len(text)}: write the leading zeros)"
    return f"{problem} (expected 12 digits{pairs})"


def modbus_slave_problem(text: str) -> str | None:
    """Why ``text`` is not a Modbus slave id (1..247, no leading zeros)."""
    if _SLAVE_RE.fullmatch(text) and int(text) in MODBUS_SLAVES:
        return None
    problem = f"{_shown(text)} is not a Modbus slave id 1..247"
    if text.isascii() and text.isdigit() and text.startswith("0") and int(text) in MODBUS_SLAVES:
        return f"{problem} (write it without leading zeros: {int(text)})"
    return problem


def address_problem(protocol: str, text: str, *, wildcards: bool = False) -> str | None:
    """Why ``text`` is not the address of a ``protocol`` meter (``dlt645``/``modbus``)."""
    if protocol == "modbus":
        return modbus_slave_problem(text)
    return dlt645_address_problem(text, wildcards=wildcards)


def any_meter_problem(text: str) -> str | None:
    """Why ``text`` is the address of no meter a concentrator reads: the receiver sees
    DL/T 645 meters by address and Modbus meters by slave id (`docs/quantities.md`)."""
    if dlt645_address_problem(text) is None or modbus_slave_problem(text) is None:
        return None
    return f"{_shown(text)} is neither a 12-digit DL/T 645 address nor a Modbus slave id 1..247"


def has_relay(meter: str) -> bool:
    """A DL/T 645 meter has a load switch (0x1C relay control); the Eastron SDM Modbus
    meters do not, so nothing can cut or restore their supply."""
    return dlt645_address_problem(meter) is None
