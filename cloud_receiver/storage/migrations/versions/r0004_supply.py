"""One supply state per meter: the relay position last commanded, the reasons that
keep it open, and the history of their changes (issue 18, item 7;
`cloud_receiver.applications.supply`).

A prepaid account the previous release cut off (or was cutting off) keeps its supply
off: its meter starts with the ``prepayment`` reason, so no other path reconnects it.

Revision ID: 0004
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "supply",
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("concentrator", sa.Text(), nullable=False),
        sa.Column("relay", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("meter"),
    )
    op.create_table(
        "supply_reasons",
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("ref", sa.Text(), nullable=False),
        sa.Column("since", sa.Double(), nullable=False),
        sa.Column("until", sa.Double(), nullable=True),
        sa.Column("set_by", sa.Text(), nullable=False),
        sa.Column("set_at", sa.Double(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("meter", "reason"),
    )
    op.create_table(
        "supply_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("change", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("by", sa.Text(), nullable=False),
        sa.Column("reasons_after", sa.Text(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("supply_history_by_meter", "supply_history", ["meter", "id"], unique=False)
    cut = "FROM accounts WHERE state IN ('disconnecting', 'disconnected')"
    op.execute(
        "INSERT INTO supply (meter, concentrator, relay, updated_at)"
        f" SELECT meter, concentrator, 'open', created_at {cut}"
    )
    op.execute(
        "INSERT INTO supply_reasons (meter, reason, ref, since, until, set_by, set_at, detail)"
        f" SELECT meter, 'prepayment', account, created_at, NULL, 'migration 0004', created_at,"
        f" '{{}}' {cut}"
    )
    op.execute(
        "INSERT INTO supply_history (meter, at, change, reason, by, reasons_after, detail)"
        f" SELECT meter, created_at, 'set', 'prepayment', 'migration 0004', '[\"prepayment\"]',"
        f" '{{}}' {cut}"
    )


def downgrade() -> None:
    op.drop_index("supply_history_by_meter", table_name="supply_history")
    for table in ("supply_history", "supply_reasons", "supply"):
        op.drop_table(table)
