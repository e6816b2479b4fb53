"""telemetry: readings (partitioned by month on PostgreSQL), each meter's latest state, events, alarms; MQTT
endpoints

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 09:00:00

``readings`` is declared ``PARTITION BY RANGE (read_at)`` on PostgreSQL; its monthly partitions are made by the
ingest (``mita.headend.ingest.partitions``), ahead of the readings, and dropped past the retention. ``alarms`` has a
partial unique index: one alarm per (meter, rule) that is not closed. ``meter_endpoints.transport`` says how the
head-end reaches a meter (``dlms`` for every existing row).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Utc = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("meter_endpoints") as batch:
        batch.add_column(sa.Column("transport", sa.String(4), nullable=False, server_default="dlms"))
        batch.create_check_constraint("transport", "transport in ('dlms', 'mqtt')")
    op.create_table(
        "readings",
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("read_at", Utc, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("received_at", Utc, nullable=False),
        sa.Column("register", sa.BigInteger(), nullable=False),
        sa.Column("demand", sa.BigInteger(), nullable=False),
        sa.Column("credit", sa.BigInteger(), nullable=False),
        sa.Column("relay_closed", sa.Boolean(), nullable=False),
        sa.Column("reverse", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("meter_id", "read_at", "seq", name="pk_readings"),
        postgresql_partition_by="RANGE (read_at)",
    )
    op.create_table(
        "meter_state",
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("medium", sa.String(12), nullable=True),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.Column("read_at", Utc, nullable=True),
        sa.Column("received_at", Utc, nullable=True),
        sa.Column("register", sa.BigInteger(), nullable=True),
        sa.Column("demand", sa.BigInteger(), nullable=True),
        sa.Column("credit", sa.BigInteger(), nullable=True),
        sa.Column("relay_closed", sa.Boolean(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=True),
        sa.Column("status_at", Utc, nullable=True),
        sa.Column("event_at", Utc, nullable=True),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name="fk_meter_state_meter_id_meters"),
        sa.PrimaryKeyConstraint("meter_id", name="pk_meter_state"),
    )
    op.create_table(
        "meter_events",
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("occurred_at", Utc, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("code", sa.Integer(), nullable=False),
        sa.Column("received_at", Utc, nullable=False),
        sa.PrimaryKeyConstraint("meter_id", "occurred_at", "seq", name="pk_meter_events"),
    )
    op.create_table(
        "alarms",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("meter_id", Id, nullable=False),
        sa.Column("rule", sa.String(40), nullable=False),
        sa.Column("severity", sa.String(8), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("summary", sa.String(200), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("occurrences", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(), nullable=True),
        sa.Column("acknowledged_by", sa.String(100), nullable=True),
        sa.Column("closed_at", sa.DateTime(), nullable=True),
        sa.Column("closed_by", sa.String(100), nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.CheckConstraint("status in ('open', 'acknowledged', 'closed')", name="status"),
        sa.CheckConstraint("severity in ('low', 'medium', 'high')", name="severity"),
        sa.CheckConstraint("occurrences >= 1", name="occurrences"),
        sa.ForeignKeyConstraint(["meter_id"], ["meters.id"], name="fk_alarms_meter_id_meters"),
        sa.PrimaryKeyConstraint("id", name="pk_alarms"),
    )
    open_only = sa.text("status <> 'closed'")
    op.create_index(
        "uq_alarms_meter_rule_open",
        "alarms",
        ["meter_id", "rule"],
        unique=True,
        postgresql_where=open_only,
        sqlite_where=open_only,
    )
    op.create_index("ix_alarms_status_opened", "alarms", ["status", "opened_at"])
    op.create_index("ix_alarms_meter_opened", "alarms", ["meter_id", "opened_at"])


def downgrade() -> None:
    op.drop_table("alarms")
    op.drop_table("meter_events")
    op.drop_table("meter_state")
    op.drop_table("readings")
    with op.batch_alter_table("meter_endpoints") as batch:
        batch.drop_constraint("transport", type_="check")
        batch.drop_column("transport")
