"""channels: payments through providers (one per provider transaction) and what they said, outbound and inbound
SMS, retail tills' purchases; a vendor's partner webhook

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 12:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
PAYMENT = "'initiated', 'received', 'held', 'vended', 'delivered', 'unvendable', 'refund_pending', 'refunded', "
PAYMENT += "'cancelled', 'failed', 'expired', 'flagged'"


def upgrade() -> None:
    with op.batch_alter_table("vendors") as batch:
        batch.add_column(sa.Column("webhook", sa.String(100), nullable=True))
    op.create_table(
        "payments",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("provider_ref", sa.String(64), nullable=False),
        sa.Column("checkout_id", sa.String(64), nullable=True),
        sa.Column("receipt", sa.String(64), nullable=True),
        sa.Column("account_ref", sa.String(40), nullable=False),
        sa.Column("meter", sa.String(13), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("payer", sa.String(40), nullable=False),
        sa.Column("deliver_to", sa.String(30), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("vend_id", sa.String(36), nullable=True),
        sa.Column("api_key_id", Id, nullable=False),
        sa.Column("detail", sa.String(200), nullable=True),
        sa.Column("refund_ref", sa.String(64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payments"),
        sa.UniqueConstraint("provider", "provider_ref", name="uq_payments_provider"),
        sa.UniqueConstraint("provider", "receipt", name="uq_payments_provider_receipt"),
        sa.UniqueConstraint("checkout_id", name="uq_payments_checkout_id"),
        sa.UniqueConstraint("vend_id", name="uq_payments_vend_id"),
        sa.CheckConstraint(f"status in ({PAYMENT})", name="status"),
        sa.CheckConstraint("amount > 0", name="amount"),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name="fk_payments_vend_id_vends"),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name="fk_payments_api_key_id_api_keys"),
    )
    op.create_index("ix_payments_status_updated", "payments", ["status", "updated_at"])
    op.create_index("ix_payments_meter_created", "payments", ["meter", "created_at"])
    op.create_table(
        "payment_events",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("payment_id", Id, nullable=True),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payment_events"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name="fk_payment_events_payment_id_payments"),
    )
    op.create_index("ix_payment_events_payment", "payment_events", ["payment_id"])
    op.create_table(
        "sms_messages",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("dedupe_key", sa.String(200), nullable=False),
        sa.Column("phone", sa.String(30), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("payment_id", Id, nullable=True),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("submits", sa.Integer(), nullable=False),
        sa.Column("report", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sms_messages"),
        sa.UniqueConstraint("dedupe_key", name="uq_sms_messages_dedupe_key"),
        sa.CheckConstraint("status in ('submitted', 'smsc', 'delivered', 'rejected', 'unknown')", name="status"),
        sa.ForeignKeyConstraint(["payment_id"], ["payments.id"], name="fk_sms_messages_payment_id_payments"),
    )
    op.create_index("ix_sms_messages_status_updated", "sms_messages", ["status", "updated_at"])
    op.create_table(
        "sms_inbound",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("gateway_id", sa.String(64), nullable=False),
        sa.Column("phone", sa.String(30), nullable=False),
        sa.Column("text", sa.String(400), nullable=False),
        sa.Column("answer", sa.String(400), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_sms_inbound"),
        sa.UniqueConstraint("gateway_id", name="uq_sms_inbound_gateway_id"),
    )
    op.create_table(
        "pos_purchases",
        sa.Column("api_key_id", Id, nullable=False),
        sa.Column("purchase_id", sa.String(200), nullable=False),
        sa.Column("vend_id", sa.String(36), nullable=False),
        sa.Column("status", sa.String(10), nullable=False),
        sa.Column("advice_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("settled_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("api_key_id", "purchase_id", name="pk_pos_purchases"),
        sa.UniqueConstraint("vend_id", name="uq_pos_purchases_vend_id"),
        sa.CheckConstraint("status in ('issued', 'confirmed', 'reversed')", name="status"),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name="fk_pos_purchases_api_key_id_api_keys"),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name="fk_pos_purchases_vend_id_vends"),
    )
    op.create_index("ix_pos_purchases_status_created", "pos_purchases", ["status", "created_at"])


def downgrade() -> None:
    op.drop_table("pos_purchases")
    op.drop_table("sms_inbound")
    op.drop_table("sms_messages")
    op.drop_table("payment_events")
    op.drop_table("payments")
    with op.batch_alter_table("vendors") as batch:
        batch.drop_column("webhook")
