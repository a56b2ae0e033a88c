"""Customer feedback (issue 21, item 3): a customer's question or complaint and the
conversation that answers it (`cloud_receiver.applications.feedback`).

- ``feedback``: one row per matter raised — whose account, its topic (``bill``,
  ``cutoff``, ``privacy``, ``other``), a subject, and its status (``open`` →
  ``answered`` → ``resolved``; a customer's reply reopens it);
- ``feedback_messages``: every message of it in order, the customer's and the
  operators', with who wrote it.

Revision ID: 0010
Revises: 0009 (the task said 0006; chained after the portal's 0009 when merged)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision: str | None = "0009"
branch_labels: str | None = None
depends_on: str | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("account", sa.Text(), nullable=False),
        sa.Column("raised_by", sa.Text(), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("resolved_by", sa.Text()),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("feedback_by_account", "feedback", ["account", "id"])
    op.create_index("feedback_by_status", "feedback", ["status", "id"])
    op.create_table(
        "feedback_messages",
        sa.Column("id", _ID, autoincrement=True, nullable=False),
        sa.Column("feedback", sa.BigInteger(), nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("author", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("feedback_messages_by_feedback", "feedback_messages", ["feedback", "id"])


def downgrade() -> None:
    op.drop_index("feedback_messages_by_feedback", table_name="feedback_messages")
    op.drop_table("feedback_messages")
    op.drop_index("feedback_by_status", table_name="feedback")
    op.drop_index("feedback_by_account", table_name="feedback")
    op.drop_table("feedback")
