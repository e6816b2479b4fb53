"""schema guard: the supply group's foreign key on PostgreSQL, CHECKs on every status and kind

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03 20:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

FK = "fk_supply_groups_vending_key_id_vending_keys"
# the values as they stand at this revision (later ones add theirs in their own migration)
CHECKS = {
    "vending_keys": ("keystore", ("software", "pkcs11")),
    "vends": ("kind", ("purchase", "engineering", "key_change")),
    "tokens": ("kind", ("credit", "fbe", "key_change", "engineering")),
    "outbox": ("status", ("pending", "sent", "dead")),
    "key_changes": ("via", ("campaign", "vend", "operator")),
}


def upgrade() -> None:
    bind = op.get_bind()
    for table, (column, values) in CHECKS.items():
        listed = ", ".join(f"'{v}'" for v in values)
        odd = bind.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {column} NOT IN ({listed})")).scalar()
        if odd:
            raise RuntimeError(f"{odd} rows of {table} have a {column} outside ({listed}): fix them, then migrate")
        with op.batch_alter_table(table) as batch:
            batch.create_check_constraint(op.f(f"ck_{table}_{column}"), f"{column} in ({listed})")
    if bind.dialect.name == "sqlite":  # SQLite made this key with the table (0001); PostgreSQL did not
        return
    dangling = bind.execute(
        sa.text(
            "SELECT count(*) FROM supply_groups g WHERE g.vending_key_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM vending_keys k WHERE k.id = g.vending_key_id)"
        )
    ).scalar()
    if dangling:
        raise RuntimeError(f"{dangling} supply groups name a vending key that does not exist: fix them, then migrate")
    op.create_foreign_key(op.f(FK), "supply_groups", "vending_keys", ["vending_key_id"], ["id"])


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.drop_constraint(op.f(FK), "supply_groups", type_="foreignkey")
    for table, (column, _) in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            batch.drop_constraint(op.f(f"ck_{table}_{column}"), type_="check")
