"""outbox: the pending rows by channel, recipient and id (a meter's commands go out in the order written)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 18:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pending = sa.text("status = 'pending'")
    op.create_index(
        "ix_outbox_open",
        "outbox",
        ["channel", "recipient", "id"],
        postgresql_where=pending,
        sqlite_where=pending,
    )


def downgrade() -> None:
    op.drop_index("ix_outbox_open", table_name="outbox")
