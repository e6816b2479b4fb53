"""the outbox becomes a queue: recipient, dedupe key, attempts, next attempt, last error, sent time

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03 21:00:00

Rows already queued keep their place: due from when they were written, never tried. Their dedupe key is
the one their writer uses from now on where it can be told (``receipt:<vend id>``, a campaign's SMS
``sms:campaign:<campaign>:kc:<key change>``), so that queuing the same message again after the upgrade is
still refused; any other row gets ``outbox:<row id>``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UNIQUE = "uq_outbox_dedupe_key"
INDEX = "ix_outbox_dispatch"
TEXT = 200  # recipient, dedupe_key and last_error, as at this revision


def _field(dialect: str, name: str) -> str:
    """A JSON payload's field as text, in this dialect's SQL."""
    if dialect == "postgresql":
        return f"(payload->>'{name}')"
    return f"CAST(json_extract(payload, '$.{name}') AS TEXT)"


def upgrade() -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("recipient", sa.String(TEXT), nullable=True))
        batch.add_column(sa.Column("dedupe_key", sa.String(TEXT), nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_attempt_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("last_error", sa.String(TEXT), nullable=True))
        batch.add_column(sa.Column("sent_at", sa.DateTime(), nullable=True))

    meter, phone = _field(dialect, "meter"), _field(dialect, "phone")
    campaign, change = _field(dialect, "campaign"), _field(dialect, "key_change_id")
    op.execute(
        "UPDATE outbox SET next_attempt_at = created_at, dedupe_key = 'outbox:' || CAST(id AS VARCHAR(20)), "
        f"recipient = COALESCE(CASE channel WHEN 'receipt' THEN {meter} WHEN 'sms' THEN {phone} END, '')"
    )
    # the first row of each logical message takes the writers' key (a repeat, if any, keeps its row's)
    op.execute(
        "UPDATE outbox SET dedupe_key = 'receipt:' || vend_id WHERE id IN "
        "(SELECT MIN(id) FROM outbox WHERE channel = 'receipt' AND vend_id IS NOT NULL GROUP BY vend_id)"
    )
    op.execute(
        f"UPDATE outbox SET dedupe_key = 'sms:campaign:' || {campaign} || ':kc:' || {change} WHERE id IN "
        f"(SELECT MIN(id) FROM outbox WHERE channel = 'sms' AND vend_id IS NULL AND {campaign} IS NOT NULL "
        f"AND {change} IS NOT NULL GROUP BY {campaign}, {change})"
    )

    with op.batch_alter_table("outbox") as batch:
        batch.alter_column("recipient", existing_type=sa.String(TEXT), nullable=False)
        batch.alter_column("dedupe_key", existing_type=sa.String(TEXT), nullable=False)
        batch.alter_column("next_attempt_at", existing_type=sa.DateTime(), nullable=False)
        batch.alter_column("attempts", existing_type=sa.Integer(), existing_nullable=False, server_default=None)
        batch.create_unique_constraint(op.f(UNIQUE), ["dedupe_key"])
    op.create_index(op.f(INDEX), "outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index(op.f(INDEX), table_name="outbox")
    with op.batch_alter_table("outbox") as batch:
        batch.drop_constraint(op.f(UNIQUE), type_="unique")
        for column in ("sent_at", "last_error", "next_attempt_at", "attempts", "dedupe_key", "recipient"):
            batch.drop_column(column)
