"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25 14:34:12.211836
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from mita.vend.schema import APPEND_ONLY_SQL

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    # generated from mita.vend.schema, then checked by hand
    op.create_table(
        "audit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.String(length=40), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit")),
    )
    op.create_table(
        "customers",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("account", sa.String(length=40), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("phone", sa.String(length=30), nullable=True),
        sa.Column("fbe_eligible", sa.Boolean(), nullable=False),
        sa.Column("debt", sa.BigInteger(), nullable=False),
        sa.Column("debt_rate", sa.String(length=12), nullable=False),
        sa.Column("carried", sa.BigInteger(), nullable=False),
        sa.Column("refund_balance", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("debt >= 0 and carried >= 0 and refund_balance >= 0", name=op.f("ck_customers_money")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_customers")),
        sa.UniqueConstraint("account", name=op.f("uq_customers_account")),
    )
    op.create_table(
        "supply_groups",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("sgc", sa.String(length=6), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("krn", sa.Integer(), nullable=False),
        sa.Column("kt", sa.Integer(), nullable=False),
        sa.Column("ea", sa.Integer(), nullable=False),
        sa.Column("dkga", sa.Integer(), nullable=False),
        sa.Column("base_date", sa.Integer(), nullable=False),
        sa.Column("ken", sa.Integer(), nullable=False),
        sa.Column("key_expiry", sa.DateTime(), nullable=True),
        sa.Column("vending_key_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["vending_key_id"],
            ["vending_keys.id"],
            name=op.f("fk_supply_groups_vending_key_id_vending_keys"),
            use_alter=True,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_supply_groups")),
        sa.UniqueConstraint("sgc", name=op.f("uq_supply_groups_sgc")),
    )
    op.create_table(
        "tariffs",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("carry_leftover", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariffs")),
        sa.UniqueConstraint("name", name=op.f("uq_tariffs_name")),
    )
    op.create_table(
        "vendors",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("credit_limit", sa.BigInteger(), nullable=True),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("credit_limit is null or credit_limit >= 0", name=op.f("ck_vendors_credit_limit")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vendors")),
        sa.UniqueConstraint("name", name=op.f("uq_vendors_name")),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("vendor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("role in ('admin', 'operator', 'vendor')", name=op.f("ck_api_keys_role")),
        sa.ForeignKeyConstraint(["vendor_id"], ["vendors.id"], name=op.f("fk_api_keys_vendor_id_vendors")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
    )
    op.create_table(
        "meters",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("drn", sa.String(length=13), nullable=False),
        sa.Column("iin", sa.String(length=6), nullable=False),
        sa.Column("manufacturer", sa.String(length=40), nullable=False),
        sa.Column("supply_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("tariff_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("utility", sa.String(length=12), nullable=False),
        sa.Column("ti", sa.Integer(), nullable=False),
        sa.Column("kt", sa.Integer(), nullable=False),
        sa.Column("krn", sa.Integer(), nullable=False),
        sa.Column("ea", sa.Integer(), nullable=False),
        sa.Column("base_date", sa.Integer(), nullable=False),
        sa.Column("ken", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("last_tid", sa.BigInteger(), nullable=False),
        sa.Column("pending_key", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status in ('active', 'blocked', 'retired')", name=op.f("ck_meters_status")),
        sa.CheckConstraint("utility in ('electricity', 'water', 'gas')", name=op.f("ck_meters_utility")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_meters_customer_id_customers")),
        sa.ForeignKeyConstraint(
            ["supply_group_id"], ["supply_groups.id"], name=op.f("fk_meters_supply_group_id_supply_groups")
        ),
        sa.ForeignKeyConstraint(["tariff_id"], ["tariffs.id"], name=op.f("fk_meters_tariff_id_tariffs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_meters")),
        sa.UniqueConstraint("drn", name=op.f("uq_meters_drn")),
    )
    op.create_table(
        "tariff_versions",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("tariff_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("effective_from", sa.DateTime(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["tariff_id"], ["tariffs.id"], name=op.f("fk_tariff_versions_tariff_id_tariffs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tariff_versions")),
        sa.UniqueConstraint("tariff_id", "effective_from", name=op.f("uq_tariff_versions_tariff_id")),
    )
    op.create_table(
        "vending_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("supply_group_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("krn", sa.Integer(), nullable=False),
        sa.Column("dkga", sa.Integer(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("kcv", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["supply_group_id"], ["supply_groups.id"], name=op.f("fk_vending_keys_supply_group_id_supply_groups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vending_keys")),
        sa.UniqueConstraint("supply_group_id", "krn", name=op.f("uq_vending_keys_supply_group_id")),
    )
    op.create_table(
        "meter_months",
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("purchases", sa.Integer(), nullable=False),
        sa.Column("fixed_charged", sa.Boolean(), nullable=False),
        sa.Column("fbe_issued", sa.Boolean(), nullable=False),
        sa.CheckConstraint("units >= 0 and purchases >= 0", name=op.f("ck_meter_months_counts")),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name=op.f("fk_meter_months_meter_id_meters")),
        sa.PrimaryKeyConstraint("meter_id", "month", name=op.f("pk_meter_months")),
    )
    op.create_table(
        "vends",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("vendor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("api_key_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("customer_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("receipt", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reversed_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("status in ('completed', 'reversed')", name=op.f("ck_vends_status")),
        sa.CheckConstraint("amount >= 0 and units >= 0", name=op.f("ck_vends_amounts")),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name=op.f("fk_vends_api_key_id_api_keys")),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_vends_customer_id_customers")),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name=op.f("fk_vends_meter_id_meters")),
        sa.ForeignKeyConstraint(["vendor_id"], ["vendors.id"], name=op.f("fk_vends_vendor_id_vendors")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vends")),
    )
    with op.batch_alter_table("vends", schema=None) as batch_op:
        batch_op.create_index("ix_vends_meter_created", ["meter_id", "created_at"], unique=False)

    op.create_table(
        "idempotency",
        sa.Column("api_key_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=False),
        sa.Column("response", sa.JSON(), nullable=False),
        sa.Column("vend_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_keys.id"], name=op.f("fk_idempotency_api_key_id_api_keys")),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name=op.f("fk_idempotency_vend_id_vends")),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_idempotency")),
    )
    op.create_table(
        "ledger",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("vend_id", sa.String(length=36), nullable=False),
        sa.Column("account", sa.String(length=40), nullable=False),
        sa.Column("debit", sa.BigInteger(), nullable=False),
        sa.Column("credit", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("debit >= 0 and credit >= 0 and (debit = 0 or credit = 0)", name=op.f("ck_ledger_one_side")),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name=op.f("fk_ledger_vend_id_vends")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger")),
    )
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.create_index("ix_ledger_vend", ["vend_id"], unique=False)

    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("vend_id", sa.String(length=36), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name=op.f("fk_outbox_vend_id_vends")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("vend_id", sa.String(length=36), nullable=False),
        sa.Column("meter_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("tid", sa.BigInteger(), nullable=True),
        sa.Column("base_date", sa.Integer(), nullable=False),
        sa.Column("token_class", sa.Integer(), nullable=False),
        sa.Column("subclass", sa.Integer(), nullable=False),
        sa.Column("digits", sa.String(length=20), nullable=False),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("units >= 0", name=op.f("ck_tokens_units")),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name=op.f("fk_tokens_meter_id_meters")),
        sa.ForeignKeyConstraint(["vend_id"], ["vends.id"], name=op.f("fk_tokens_vend_id_vends")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tokens")),
        sa.UniqueConstraint("meter_id", "base_date", "tid", name="uq_tokens_meter_tid"),
    )
    # ### end Alembic commands ###
    for statement in APPEND_ONLY_SQL.get(op.get_bind().dialect.name, []):
        op.execute(statement)


def downgrade() -> None:
    # generated from mita.vend.schema, then checked by hand
    op.drop_table("tokens")
    op.drop_table("outbox")
    with op.batch_alter_table("ledger", schema=None) as batch_op:
        batch_op.drop_index("ix_ledger_vend")

    op.drop_table("ledger")
    op.drop_table("idempotency")
    with op.batch_alter_table("vends", schema=None) as batch_op:
        batch_op.drop_index("ix_vends_meter_created")

    op.drop_table("vends")
    op.drop_table("meter_months")
    op.drop_table("vending_keys")
    op.drop_table("tariff_versions")
    op.drop_table("meters")
    op.drop_table("api_keys")
    op.drop_table("vendors")
    op.drop_table("tariffs")
    op.drop_table("supply_groups")
    op.drop_table("customers")
    op.drop_table("audit")
    # ### end Alembic commands ###
