"""Canonical quantity names (issue 18, item 6; docs/quantities.md): readings that
concentrators of the previous release stored under Eastron SDM register names
(``energy_import``, ``power_l1`` in W, ...) are renamed and rescaled in place by
`contract.quantities.LEGACY_RENAMES`, so usage, line loss, theft, prepayment and demand
response see Modbus meters. No reading is dropped: one whose (slot, meter) already
holds the canonical name keeps its old name.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from contract.quantities import LEGACY_RENAMES
from drivers.quantity_map import shift_decimal

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_CHUNK = 10_000  # readings per page


def upgrade() -> None:
    conn = op.get_bind()
    for r in LEGACY_RENAMES:
        names = {"old": r.old, "new": r.new, "old_unit": r.old_unit, "new_unit": r.new_unit}
        if r.old != r.new:
            conn.execute(
                sa.text(
                    "UPDATE readings SET quantity = :new"
                    " WHERE quantity = :old AND unit = :old_unit AND NOT EXISTS ("
                    " SELECT 1 FROM readings x WHERE x.slot = readings.slot"
                    " AND x.meter = readings.meter AND x.quantity = :new)"
                ),
                names,
            )
        if r.shift == 0 and r.old_unit == r.new_unit:
            continue
        # Page by the primary key (slot, meter, quantity), so each page starts where the
        # last one ended and memory stays one page, whatever the table's size.
        page = sa.text(
            "SELECT slot, meter, value FROM readings WHERE quantity = :new"
            " AND unit = :old_unit AND (slot > :slot OR (slot = :slot AND meter > :meter))"
            " ORDER BY slot, meter LIMIT :limit"
        )
        update = sa.text(
            "UPDATE readings SET value = :value, unit = :new_unit"
            " WHERE slot = :slot AND meter = :meter AND quantity = :new"
        )
        after: dict[str, object] = {"slot": -(2**62), "meter": ""}
        while rows := conn.execute(page, {**names, **after, "limit": _CHUNK}).fetchall():
            conn.execute(
                update,
                [
                    {**names, "slot": slot, "meter": meter,
                     "value": shift_decimal(value, r.shift)}
                    for slot, meter, value in rows
                ],
            )  # fmt: skip
            after = {"slot": rows[-1][0], "meter": rows[-1][1]}


def downgrade() -> None:
    """Nothing to undo in the schema, which 0003 leaves as 0002 had it. The names stay
    canonical: which energy_fwd_total rows were once energy_import is not recorded, and
    software of revision 0002 stores and reads them like any other name."""
