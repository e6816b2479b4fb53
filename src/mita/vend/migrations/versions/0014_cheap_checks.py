"""PostgreSQL: the status and kind checks of the rows every vend writes, as a comparison with one array constant

PostgreSQL reads a table's CHECK constraints back from their stored trees and simplifies them in every statement
that writes the table. ``status in ('completed', 'reversed')`` is stored as an array built from its values and
cast to ``text[]``, which every vend's write built and cast again, six times (``meters``, ``vends``, ``tokens``,
``outbox``): about 0.02 ms of the database's CPU a vend in ``benchmarks/vend_load.py``. The same check as
``status::text = ANY ('{completed,reversed}'::text[])`` is stored with the array as a constant. The values allowed
are the same (``schema.one_of``, from ``lifecycles``); SQLite keeps the checks as they are.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-05 07:00:00
"""

from __future__ import annotations

from alembic import op

from mita.vend.lifecycles import MeterStatus, OutboxStatus, TokenKind, Utility, VendKind, VendStatus, sql_in

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

#: (table, column, the values it allows)
CHECKS = (
    ("meters", "status", MeterStatus),
    ("meters", "utility", Utility),
    ("vends", "status", VendStatus),
    ("vends", "kind", VendKind),
    ("tokens", "kind", TokenKind),
    ("outbox", "status", OutboxStatus),
)


def _replace(table: str, column: str, condition: str) -> None:
    """The check on ``table.column`` redefined (NOT VALID, then validated: the table is read once, not locked
    against writes while it is)."""
    name = f"ck_{table}_{column}"
    op.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}, ADD CONSTRAINT {name} CHECK ({condition}) NOT VALID")
    op.execute(f"ALTER TABLE {table} VALIDATE CONSTRAINT {name}")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, values in CHECKS:
        _replace(table, column, f"{column}::text = ANY ('{{{','.join(values)}}}'::text[])")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table, column, values in CHECKS:
        _replace(table, column, f"{column} in {sql_in(values)}")
