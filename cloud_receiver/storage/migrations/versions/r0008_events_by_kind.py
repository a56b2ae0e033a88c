"""Events found by kind and time (issue 20, item 6).

``events_by_kind`` (kind, at): the completeness report looks up the concentrators'
``collection_day`` events of its days (`cloud_receiver.storage.completeness.reported`)
without reading every event the fleet ever sent.

Revision ID: 0008
Revises: 0006
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_index("events_by_kind", "events", ["kind", "at"])


def downgrade() -> None:
    op.drop_index("events_by_kind", table_name="events")
