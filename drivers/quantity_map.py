"""How a protocol's register maps into the canonical vocabulary (`contract.quantities`).

Drivers sit below the contract and cannot import it, so each codec holds one table of
`Mapped` entries keyed by its own register id (DI, Modbus register, OAD) and a test
checks every name and unit against the vocabulary (tests/test_quantities.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation


@dataclass(frozen=True, slots=True)
class Mapped:
    """The canonical ``name`` and ``unit`` a register's value is stored under; the
    register's own value is multiplied by 10**``shift`` to get there (W -> kW: -3)."""

    name: str
    unit: str
    shift: int = 0

    def value(self, text: str) -> str:
        """The register's value text in the canonical unit, exactly (never via float)."""
        return shift_decimal(text, self.shift)


def shift_decimal(value: str, shift: int) -> str:
    """``value`` times 10**``shift``, exactly, as plain decimal text ("1234.5", -3 ->
    "1.2345"). Text that is not a finite decimal (a meter's NaN) is returned unchanged."""
    if shift == 0:
        return value
    try:
        number = Decimal(value)
    except InvalidOperation:
        return value
    if not number.is_finite():
        return value
    sign, digits, exponent = number.as_tuple()
    assert isinstance(exponent, int)  # finite
    # Moving the exponent is exact at any length (scaleb rounds to the context).
    return format(Decimal((sign, digits, exponent + shift)), "f")
