"""the head-end: connected meters' endpoints, and the commands sent to them

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04 00:00:00

``meter_endpoints`` is the device registry: one row per connected meter (its address, its DLMS client and server
addresses, how its token gateway takes tokens, its sealed LLS secret). ``meter_commands`` holds every command and
its lifecycle (queued, sent, acknowledged, failed, expired); each one's delivery is an outbox row of the
``headend`` channel.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

STATUSES = "('queued', 'sent', 'acknowledged', 'failed', 'expired')"
KINDS = (
    "('deliver_tokens', 'disconnect', 'reconnect', 'set_power_limit', 'set_tariff_rate', 'read_registers', "
    "'read_events', 'set_clock')"
)


def upgrade() -> None:
    op.create_table(
        "meter_endpoints",
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("client", sa.Integer(), nullable=False),
        sa.Column("server", sa.Integer(), nullable=False),
        sa.Column("token_encoding", sa.String(5), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("port between 1 and 65535", name="port"),
        sa.CheckConstraint("token_encoding in ('bcd', 'ascii')", name="token_encoding"),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name="fk_meter_endpoints_meter_id_meters"),
        sa.PrimaryKeyConstraint("meter_id", name="pk_meter_endpoints"),
    )
    op.create_table(
        "meter_commands",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("vend_id", sa.String(36), nullable=True),
        sa.Column("actor", sa.String(100), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(f"status in {STATUSES}", name="status"),
        sa.CheckConstraint(f"kind in {KINDS}", name="kind"),
        sa.CheckConstraint("attempts >= 0", name="attempts"),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name="fk_meter_commands_meter_id_meters"),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name="fk_meter_commands_vend_id_vends"),
        sa.PrimaryKeyConstraint("id", name="pk_meter_commands"),
        sa.UniqueConstraint("vend_id", name="uq_meter_commands_vend_id"),
    )
    op.create_index("ix_meter_commands_meter_created", "meter_commands", ["meter_id", "created_at"])
    op.create_index("ix_meter_commands_status", "meter_commands", ["status"])


def downgrade() -> None:
    op.drop_table("meter_commands")
    op.drop_table("meter_endpoints")
