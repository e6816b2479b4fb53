"""listing vends and API keys: indexes for the vend filters and the sales report; an API key's last characters

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-10 10:00:00

Vends are listed newest first, by time alone or by vendor or customer (a meter's history already has
``ix_vends_meter_created``), and the sales report reads a period's sales by ``created_at`` and its reversals by
``reversed_at``. An API key keeps its last four characters (``key_last4``), so that a list of keys tells them
apart without holding anything that would let a key be used: keys made before this revision show none.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

INDEXES = {
    "ix_vends_created": ("created_at", "id"),
    "ix_vends_vendor_created": ("vendor_id", "created_at"),
    "ix_vends_customer_created": ("customer_id", "created_at"),
    "ix_vends_reversed": ("reversed_at",),
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "vends", list(columns))
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("key_last4", sa.String(4), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("key_last4")
    for name in INDEXES:
        op.drop_index(name, table_name="vends")
