"""The newest refused reading of each series, so a reference to it resolves (issue 22,
item 1): a concentrator codes its next reading of a meter it does not own against the
refused one its batch's ack taught it; without this table every such batch was answered
"resync" (`cloud_receiver.storage.schema.refused_latest`).

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision: str | None = "0011"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "refused_latest",
        sa.Column("concentrator", sa.Text(), nullable=False),
        sa.Column("meter", sa.Text(), nullable=False),
        sa.Column("quantity", sa.Text(), nullable=False),
        sa.Column("slot", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("read_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("concentrator", "meter", "quantity"),
    )


def downgrade() -> None:
    op.drop_table("refused_latest")
