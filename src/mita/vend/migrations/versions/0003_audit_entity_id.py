"""audit entity ids as wide as the widest identifier (a tariff's name, 100 characters)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03 19:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mita.vend.schema import APPEND_ONLY_SQL

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _resize(old: int, new: int) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "sqlite":  # PostgreSQL widens a VARCHAR in place, without touching a row
        op.alter_column(
            "audit", "entity_id", type_=sa.String(new), existing_type=sa.String(old), existing_nullable=False
        )
        return
    # SQLite enforces no length, but its declared type is what a schema check reads: the table is copied,
    # and the triggers that keep the audit append-only go with the old table, so they are made again.
    for trigger in ("audit_no_update", "audit_no_delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
    with op.batch_alter_table("audit", recreate="always") as batch:
        batch.alter_column("entity_id", type_=sa.String(new), existing_type=sa.String(old), existing_nullable=False)
    for statement in APPEND_ONLY_SQL["sqlite"]:
        op.execute(statement)


def upgrade() -> None:
    _resize(40, 100)


def downgrade() -> None:
    # PostgreSQL refuses if an entry's id is longer than 40 characters: nothing is cut short
    _resize(100, 40)
