"""Exact decimal text as (integer mantissa, decimals): a value is never a float."""

from __future__ import annotations

import re

# Spellings a (mantissa, decimals) pair restores exactly. Anything else ("007", "-0",
# "1E-7", "+5", "n/a") travels verbatim in the exceptions map.
CANONICAL = re.compile(r"(-?)(0|[1-9][0-9]{0,17})(?:\.([0-9]{1,18}))?")
MAX_DECIMALS = 18


def parse_decimal(value: str) -> tuple[int, int] | None:
    match = CANONICAL.fullmatch(value)
    if match is None:
        return None
    sign, whole, fraction = match.groups()
    mantissa = int(whole + fraction) if fraction else int(whole)
    if sign:
        if mantissa == 0:
            return None  # "-0.0": the sign would be lost
        mantissa = -mantissa
    return mantissa, len(fraction) if fraction else 0


def format_decimal(mantissa: int, decimals: int) -> str:
    digits = str(-mantissa if mantissa < 0 else mantissa)
    if decimals:
        digits = digits.rjust(decimals + 1, "0")
        digits = f"{digits[:-decimals]}.{digits[-decimals:]}"
    return f"-{digits}" if mantissa < 0 else digits


def format_column(mantissas: list[int], decimals: int) -> list[str]:
    """`format_decimal` of each mantissa at the same ``decimals``: one format string
    for the column, as a receiver decodes hundreds of thousands a second."""
    if decimals == 0:
        return [str(m) for m in mantissas]
    scale = 10**decimals
    spec = f"%d.%0{decimals}d"
    return [
        spec % divmod(m, scale) if m >= 0 else "-" + spec % divmod(-m, scale) for m in mantissas
    ]
