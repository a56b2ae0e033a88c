"""One meter's readings found by meter on SQLite too (issue 21, the portal's month view).

``readings_by_meter`` (meter, slot) existed on PostgreSQL only; on SQLite the readings'
primary key (slot, meter, quantity) made one meter's month a scan of every meter's rows
of that month (72 ms on a 10-million-reading database, 3 ms with the index; see
docs/benchmarks.md). PostgreSQL has it since 0001, so this creates it where missing.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision: str | None = "0010"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index(
        "readings_by_meter", "readings", ["meter", "slot"], unique=False, if_not_exists=True
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":  # PostgreSQL had it before (0001)
        op.drop_index("readings_by_meter", table_name="readings")
