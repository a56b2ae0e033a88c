"""Meter ownership: which concentrator each meter sits behind, from when (issue 19,
item 1; the rule is `cloud_receiver.storage.ownership`).

Existing archives migrate by inference: an archive meter whose readings all came from
one concentrator belongs to it (from its first stored slot; the first assignment
reaches back anyway). A meter delivered by several concentrators (a move, or a spoof:
this revision cannot tell) or by none is left unassigned, for an operator to settle
with `cloud-receiver archive import` (a ``concentrator`` column) — until then its
readings are not guarded, as before this revision.

Revision ID: 0006
Revises: 0004 (the task said 0002; re-chained when main was merged)
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    owners = op.create_table(
        "meter_owners",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("effective_from", sa.BigInteger(), nullable=False),
        sa.Column("concentrator", sa.Text(), nullable=False),
        sa.Column("assigned_at", sa.Double(), nullable=False),
        sa.Column("assigned_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("meter", "effective_from"),
    )
    conn = op.get_bind()
    inferred = conn.execute(
        sa.text(
            "SELECT r.meter, min(r.concentrator), min(r.slot) FROM readings r"
            " JOIN meters m ON m.meter = r.meter"
            " GROUP BY r.meter HAVING count(DISTINCT r.concentrator) = 1"
        )
    ).all()
    now = time.time()
    if inferred:
        op.bulk_insert(
            owners,
            [
                {"meter": r[0], "effective_from": int(r[2]), "concentrator": r[1],
                 "assigned_at": now, "assigned_by": "migration 0006 (inferred from readings)"}
                for r in inferred
            ],
        )  # fmt: skip


def downgrade() -> None:
    op.drop_table("meter_owners")
