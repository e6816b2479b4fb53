"""tokens, ledger, outbox, idempotency: no foreign keys to vends (never deleted instead)

A vend's tokens, ledger lines, outbox receipt and stored answer are written with it, in the statement that
writes the vend (``hotpath.PG_VEND``), and named it through foreign keys. PostgreSQL checks each by running a
query per row (share-locking the vend's row): ten queries in a vend with six ledger lines, a twentieth of the CPU
a vend costs in ``benchmarks/vend_load.py``. Vends are never deleted: triggers now refuse a DELETE, a TRUNCATE or
a change of id on ``vends`` (``schema.VENDS_KEPT_SQL``), as 0012 did for vendors and API keys, which keeps every
id those rows name pointing at its vend. The foreign keys between vends, meters and customers stay.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 06:10:00
"""

from __future__ import annotations

from alembic import op

from mita.vend.schema import VENDS_KEPT_SQL

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

#: The tables that name a vend without a foreign key from now on.
NAMING = ("tokens", "ledger", "outbox", "idempotency")


def upgrade() -> None:
    for table in NAMING:
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(f"fk_{table}_vend_id_vends", type_="foreignkey")
    for statement in VENDS_KEPT_SQL.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER vends_kept ON vends")
        op.execute("DROP TRIGGER vends_kept_truncate ON vends")
        op.execute("DROP FUNCTION mita_vends_kept()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER vends_kept_delete")
        op.execute("DROP TRIGGER vends_kept_id")
    for table in NAMING:
        with op.batch_alter_table(table) as batch:
            batch.create_foreign_key(f"fk_{table}_vend_id_vends", "vends", ["vend_id"], ["id"])
