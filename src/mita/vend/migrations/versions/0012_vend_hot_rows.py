"""vends: no foreign keys to the vendor's and the API key's rows (never deleted instead); ix_vends_reversed partial

Every vend named its vendor and its API key through foreign keys (``vends.vendor_id``, ``vends.api_key_id``,
``idempotency.api_key_id``). PostgreSQL checks one by share-locking the row it names (FOR KEY SHARE): the same
few rows in every concurrent vend, so each lock wrote a WAL record and, shared with the other vends in flight, a
new MultiXact (about 1.8 per vend in ``benchmarks/vend_load.py``). Those rows are never deleted: triggers now
refuse a DELETE, a TRUNCATE or a change of id on ``vendors`` and ``api_keys`` (``schema.KEPT_SQL``), which keeps
every id a vend names pointing at its row. ``ix_vends_reversed`` holds only reversed vends (it had an entry for
every vend's NULL); the sales report's range on ``reversed_at`` implies the index's condition.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 18:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mita.vend.schema import KEPT_SQL, KEPT_TABLES

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

DROPPED = {
    "vends": [
        ("fk_vends_vendor_id_vendors", "vendor_id", "vendors"),
        ("fk_vends_api_key_id_api_keys", "api_key_id", "api_keys"),
    ],
    "idempotency": [("fk_idempotency_api_key_id_api_keys", "api_key_id", "api_keys")],
}
REVERSED = sa.text("reversed_at IS NOT NULL")


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for table, keys in DROPPED.items():
        with op.batch_alter_table(table) as batch:
            for name, _, _ in keys:
                batch.drop_constraint(name, type_="foreignkey")
    for statement in KEPT_SQL.get(dialect, []):
        op.execute(statement)
    op.drop_index("ix_vends_reversed", table_name="vends")
    op.create_index("ix_vends_reversed", "vends", ["reversed_at"], postgresql_where=REVERSED, sqlite_where=REVERSED)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_index("ix_vends_reversed", table_name="vends")
    op.create_index("ix_vends_reversed", "vends", ["reversed_at"])
    if dialect == "postgresql":
        for table in KEPT_TABLES:
            op.execute(f"DROP TRIGGER {table}_kept ON {table}")
            op.execute(f"DROP TRIGGER {table}_kept_truncate ON {table}")
        op.execute("DROP FUNCTION mita_kept()")
    elif dialect == "sqlite":
        for table in KEPT_TABLES:
            op.execute(f"DROP TRIGGER {table}_kept_delete")
            op.execute(f"DROP TRIGGER {table}_kept_id")
    for table, keys in DROPPED.items():
        with op.batch_alter_table(table) as batch:
            for name, column, target in keys:
                batch.create_foreign_key(name, target, [column], ["id"])
