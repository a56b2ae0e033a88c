"""Conflicting readings and the quarantine's budget (issue 19, items 2 and 4).

- ``reading_conflicts``: a second, different value for a stored (meter, quantity, slot),
  with both values, sources and times (`cloud_receiver.storage.conflicts`).
- ``quarantine`` gains ``size`` (the payload's length as it arrived) and ``charged``
  (what the row counts against the budget), and ``quarantine_totals`` /
  ``quarantine_senders`` hold the running sums the budget is enforced on
  (`cloud_receiver.storage.quarantine`). Rows kept before this revision are counted
  as they are (text lengths in characters); the first refusal after the upgrade evicts
  the oldest of them until the quarantine is within its budget again.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "reading_conflicts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Text(), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("stored_value", sa.Text(), nullable=False),
        sa.Column("stored_unit", sa.Text(), nullable=False),
        sa.Column("stored_read_at", sa.Double(), nullable=False),
        sa.Column("stored_concentrator", sa.Text(), nullable=False),
        sa.Column("stored_seq", sa.BigInteger(), nullable=False),
        sa.Column("stored_received_at", sa.Double(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.Column("read_at", sa.Double(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("concentrator", sa.Text(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("reading_conflicts_by_time", "reading_conflicts", ["received_at"])
    op.create_index("reading_conflicts_by_meter", "reading_conflicts", ["meter", "slot"])

    for name in ("size", "charged"):
        op.add_column(
            "quarantine", sa.Column(name, sa.BigInteger(), nullable=False, server_default="0")
        )
    q = sa.table(
        "quarantine",
        sa.column("concentrator", sa.Text()),
        sa.column("topic", sa.Text()),
        sa.column("detail", sa.Text()),
        sa.column("payload", sa.LargeBinary()),
        sa.column("size", sa.BigInteger()),
        sa.column("charged", sa.BigInteger()),
    )
    length = sa.func.length
    op.execute(
        q.update().values(
            size=length(q.c.payload),
            charged=length(q.c.payload) + length(q.c.topic) + length(q.c.detail),
        )
    )
    op.create_index("quarantine_by_sender", "quarantine", ["concentrator", "id"])

    totals = op.create_table(
        "quarantine_totals",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "quarantine_senders",
        sa.Column("sender", sa.Text(), nullable=False),
        *(
            sa.Column(name, sa.BigInteger(), nullable=False)
            for name in ("rows", "bytes", "kept", "truncated", "evicted", "evicted_bytes")
        ),
        sa.PrimaryKeyConstraint("sender"),
    )
    conn = op.get_bind()
    sender = sa.func.coalesce(q.c.concentrator, sa.literal_column("''"))
    held = conn.execute(
        sa.select(sender, sa.func.count(), sa.func.sum(q.c.charged)).group_by(sender)
    ).all()
    op.bulk_insert(
        totals,
        [{"id": 1, "rows": sum(int(r[1]) for r in held),
          "bytes": sum(int(r[2] or 0) for r in held)}],
    )  # fmt: skip
    if held:
        senders = sa.table(
            "quarantine_senders",
            *(sa.column(n) for n in ("sender", "rows", "bytes", "kept", "truncated", "evicted",
                                     "evicted_bytes")),
        )  # fmt: skip
        op.bulk_insert(
            senders,
            [
                {"sender": r[0], "rows": int(r[1]), "bytes": int(r[2] or 0), "kept": int(r[1]),
                 "truncated": 0, "evicted": 0, "evicted_bytes": 0}
                for r in held
            ],
        )  # fmt: skip


def downgrade() -> None:
    op.drop_table("quarantine_senders")
    op.drop_table("quarantine_totals")
    op.drop_index("quarantine_by_sender", table_name="quarantine")
    with op.batch_alter_table("quarantine") as batch:
        batch.drop_column("charged")
        batch.drop_column("size")
    op.drop_index("reading_conflicts_by_meter", table_name="reading_conflicts")
    op.drop_index("reading_conflicts_by_time", table_name="reading_conflicts")
    op.drop_table("reading_conflicts")
