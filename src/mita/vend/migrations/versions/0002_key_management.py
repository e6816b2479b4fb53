"""key management

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 16:09:07.988803
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # generated from mita.vend.schema, then checked by hand (defaults for existing rows, check constraints)
    op.create_table(
        "campaigns",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("supply_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("delivery", sa.String(length=10), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("planned", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("delivery in ('csv', 'sms', 'attach')", name=op.f("ck_campaigns_delivery")),
        sa.CheckConstraint(
            "status in ('planned', 'generating', 'generated', 'closed')", name=op.f("ck_campaigns_status")
        ),
        sa.ForeignKeyConstraint(
            ["supply_group_id"], ["supply_groups.id"], name=op.f("fk_campaigns_supply_group_id_supply_groups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_campaigns")),
        sa.UniqueConstraint("name", name=op.f("uq_campaigns_name")),
    )
    op.create_table(
        "key_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("campaign_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("vend_id", sa.String(length=36), nullable=True),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("from_key", sa.JSON(), nullable=True),
        sa.Column("to_key", sa.JSON(), nullable=True),
        sa.Column("tokens", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("issued_at", sa.DateTime(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status in ('planned', 'issued', 'delivered', 'confirmed', 'cancelled')", name=op.f("ck_key_changes_status")
        ),
        sa.ForeignKeyConstraint(["campaign_id"], ["campaigns.id"], name=op.f("fk_key_changes_campaign_id_campaigns")),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name=op.f("fk_key_changes_meter_id_meters")),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name=op.f("fk_key_changes_vend_id_vends")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_changes")),
    )
    with op.batch_alter_table("key_changes", schema=None) as batch_op:
        batch_op.create_index("ix_key_changes_campaign", ["campaign_id", "status", "batch"], unique=False)
        batch_op.create_index("ix_key_changes_meter", ["meter_id", "status"], unique=False)

    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.add_column(sa.Column("area", sa.String(length=40), nullable=False, server_default=""))

    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("vend_id", existing_type=sa.String(length=36), nullable=True)

    with op.batch_alter_table("vending_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("keystore", sa.String(length=16), nullable=False, server_default="software"))
        batch_op.add_column(sa.Column("handle", sa.String(length=100), nullable=False, server_default=""))
        batch_op.add_column(sa.Column("ken", sa.Integer(), nullable=False, server_default="255"))
        batch_op.add_column(sa.Column("issued_until", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("credit_limit", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("credit_issued", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("status", sa.String(length=10), nullable=False, server_default="active"))
        batch_op.create_check_constraint("status", "status in ('pending', 'active', 'retired', 'destroyed')")
        batch_op.create_check_constraint("credit", "credit_issued >= 0 and (credit_limit is null or credit_limit >= 0)")

    # What 0001 knew about keys moves onto them: the group's KEN and issued-until date belong to its current
    # key; keys of older KRNs are retired.
    op.execute(
        "UPDATE vending_keys SET "
        "ken = COALESCE((SELECT g.ken FROM supply_groups g WHERE g.vending_key_id = vending_keys.id), 255), "
        "issued_until = (SELECT g.key_expiry FROM supply_groups g WHERE g.vending_key_id = vending_keys.id), "
        "status = CASE WHEN EXISTS (SELECT 1 FROM supply_groups g WHERE g.id = vending_keys.supply_group_id "
        "AND g.krn = vending_keys.krn) THEN 'active' ELSE 'retired' END"
    )
    with op.batch_alter_table("supply_groups", schema=None) as batch_op:
        batch_op.drop_column("key_expiry")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT count(*) FROM vending_keys WHERE keystore <> 'software'")).scalar():
        raise RuntimeError("vending keys held in an HSM cannot be described by schema 0001: move them first")
    op.execute("DELETE FROM outbox WHERE vend_id IS NULL")  # campaign SMS: 0001 has no place for them
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.alter_column("vend_id", existing_type=sa.String(length=36), nullable=False)

    with op.batch_alter_table("supply_groups", schema=None) as batch_op:
        batch_op.add_column(sa.Column("key_expiry", sa.DateTime(), nullable=True))
    op.execute(
        "UPDATE supply_groups SET key_expiry = "
        "(SELECT k.issued_until FROM vending_keys k WHERE k.id = supply_groups.vending_key_id)"
    )

    # generated from mita.vend.schema, then checked by hand (defaults for existing rows, check constraints)
    with op.batch_alter_table("vending_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_vending_keys_credit"), type_="check")
        batch_op.drop_constraint(op.f("ck_vending_keys_status"), type_="check")
        batch_op.drop_column("status")
        batch_op.drop_column("credit_issued")
        batch_op.drop_column("credit_limit")
        batch_op.drop_column("issued_until")
        batch_op.drop_column("ken")
        batch_op.drop_column("handle")
        batch_op.drop_column("keystore")

    with op.batch_alter_table("meters", schema=None) as batch_op:
        batch_op.drop_column("area")

    with op.batch_alter_table("key_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_key_changes_meter")
        batch_op.drop_index("ix_key_changes_campaign")

    op.drop_table("key_changes")
    op.drop_table("campaigns")
