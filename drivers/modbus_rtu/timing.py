"""RTU timing ([SL] §2.5.1): character time, the t1.5 / t3.5 silences, and how long
a frame takes on the wire, so a transport can size its gaps and response timeouts."""

from __future__ import annotations

from drivers.modbus_rtu.checks import _require


def char_time(baud: int, bits_per_char: int = 11) -> float:
    """Seconds per character. [SL] §2.5.1: RTU characters are 11 bits (start, 8 data,
    parity or a second stop, stop); meters set to 8N1 use 10."""
    _require("baud", baud, 1, 10_000_000, "a positive baud rate")
    _require("bits_per_char", bits_per_char, 7, 12, "7..12 bits per character")
    return bits_per_char / baud


def t1_5(baud: int, bits_per_char: int = 11) -> float:
    """Longest silence allowed inside a frame ([SL] §2.5.1.1); fixed 750 us above 19200."""
    character = char_time(baud, bits_per_char)  # validates the arguments
    return 0.000750 if baud > 19200 else 1.5 * character


def t3_5(baud: int, bits_per_char: int = 11) -> float:
    """Silence that ends a frame ([SL] §2.5.1.1); fixed 1.75 ms above 19200 baud, since a
    character-based gap would be too short for the receiving UART and software."""
    character = char_time(baud, bits_per_char)  # validates the arguments
    return 0.001750 if baud > 19200 else 3.5 * character


def wire_time(size: int, baud: int, bits_per_char: int = 11) -> float:
    """Seconds to transmit ``size`` bytes back to back (without the t3.5 around them)."""
    _require("size", size, 0, 1 << 30, "a byte count >= 0")
    return size * char_time(baud, bits_per_char)
