"""The vending database, as SQLAlchemy Core tables (the Alembic migrations are made from these).

Constraints are the last guard of correctness, so they say what must never
happen: one vend per (client, idempotency key), one token per (meter, TID),
no negative money, ledger lines on one side only, and an audit log that
triggers keep append-only.
"""

from __future__ import annotations

import re
from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    text,
)

from . import limits
from .lifecycles import (
    AlarmSeverity,
    AlarmStatus,
    CampaignStatus,
    CommandKind,
    CommandStatus,
    Delivery,
    KeyChangeStatus,
    KeyStatus,
    Keystore,
    MeterStatus,
    OutboxStatus,
    PaymentStatus,
    PosStatus,
    Role,
    SmsStatus,
    TokenEncoding,
    TokenKind,
    Transport,
    Utility,
    VendKind,
    VendStatus,
    Via,
    sql_in,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Id = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER PRIMARY KEY only
VendId = String(limits.VEND_ID)


def _id() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def one_of(column: str, values: type[StrEnum]) -> CheckConstraint:
    """The column holds one of the enumeration's values (the same definition the code uses). On PostgreSQL the
    checks of the tables every vend writes are stored as ``column::text = ANY ('{...}'::text[])`` instead, the same
    values (migration 0014, ``CHECKS``): a migration that changes one of those enumerations writes that form."""
    return CheckConstraint(f"{column} in {sql_in(values)}", name=column)


def _created() -> Column[object]:
    return Column("created_at", DateTime, nullable=False)


api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    Column("name", String(limits.NAME), nullable=False),
    Column("role", String(20), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("vendor_id", ForeignKey("vendors.id"), nullable=True),
    _created(),
    Column("revoked_at", DateTime, nullable=True),
    Column("key_last4", String(4), nullable=True),  # tells keys apart in a list; NULL for keys made before 0006
    one_of("role", Role),
)

vendors = Table(
    "vendors",
    metadata,
    _id(),
    Column("name", String(limits.NAME), nullable=False, unique=True),
    Column("credit_limit", BigInteger, nullable=True),  # minor units; NULL: no limit
    # owed to the utility, minor units; kept here for vendors on credit only (others: their ledger account)
    Column("balance", BigInteger, nullable=False, default=0),
    _created(),
    # a partner's webhook (a name in MITA_WEBHOOK_URLS): its vends and their deliveries are posted to it, signed
    Column("webhook", String(limits.NAME), nullable=True),
    CheckConstraint("credit_limit is null or credit_limit >= 0", name="credit_limit"),
)

vending_keys = Table(
    "vending_keys",
    metadata,
    _id(),
    Column("supply_group_id", ForeignKey("supply_groups.id"), nullable=True),
    Column("krn", Integer, nullable=False),
    Column("dkga", Integer, nullable=False),
    Column("keystore", String(16), nullable=False, default=Keystore.SOFTWARE),
    Column("handle", String(100), nullable=False, default=""),  # the keystore's name for it (HSM object label)
    Column("sealed", LargeBinary, nullable=False),  # software keystore: AES-256-GCM under the master key
    Column("kcv", String(16), nullable=False),  # key check value: verify a key without seeing it
    Column("ken", Integer, nullable=False, default=255),  # key expiry number carried to the meters
    Column("issued_until", DateTime, nullable=True),  # no credit under this key after this time
    Column("credit_limit", BigInteger, nullable=True),  # base units of credit this key may issue; NULL: none
    Column("credit_issued", BigInteger, nullable=False, default=0),
    Column("status", String(10), nullable=False, default="active"),
    _created(),
    UniqueConstraint("supply_group_id", "krn"),
    one_of("status", KeyStatus),
    one_of("keystore", Keystore),
    CheckConstraint("credit_issued >= 0 and (credit_limit is null or credit_limit >= 0)", name="credit"),
)

supply_groups = Table(
    "supply_groups",
    metadata,
    _id(),
    Column("sgc", String(6), nullable=False, unique=True),
    Column("name", String(limits.NAME), nullable=False),
    Column("krn", Integer, nullable=False),
    Column("kt", Integer, nullable=False),
    Column("ea", Integer, nullable=False),
    Column("dkga", Integer, nullable=False),
    Column("base_date", Integer, nullable=False),
    Column("ken", Integer, nullable=False, default=255),
    Column("vending_key_id", ForeignKey("vending_keys.id", use_alter=True), nullable=True),
    _created(),
)

tariffs = Table(
    "tariffs",
    metadata,
    _id(),
    Column("name", String(limits.NAME), nullable=False, unique=True),
    Column("currency", String(3), nullable=False),
    Column("carry_leftover", Boolean, nullable=False, default=True),
    _created(),
)

tariff_versions = Table(
    "tariff_versions",
    metadata,
    _id(),
    Column("tariff_id", ForeignKey("tariffs.id"), nullable=False),
    Column("effective_from", DateTime, nullable=False),
    Column("spec", JSON, nullable=False),  # blocks, vat_rate, fixed_monthly, fbe_kwh (decimals as strings)
    _created(),
    UniqueConstraint("tariff_id", "effective_from"),
)

customers = Table(
    "customers",
    metadata,
    _id(),
    Column("account", String(limits.ACCOUNT), nullable=False, unique=True),
    Column("name", String(limits.PERSON), nullable=False),
    Column("phone", String(limits.PHONE), nullable=True),
    Column("fbe_eligible", Boolean, nullable=False, default=False),
    Column("debt", BigInteger, nullable=False, default=0),
    Column("debt_rate", String(12), nullable=False, default="0"),  # a Decimal fraction, e.g. "0.2"
    Column("carried", BigInteger, nullable=False, default=0),  # leftover applied to the next purchase
    Column("refund_balance", BigInteger, nullable=False, default=0),  # leftover owed back
    _created(),
    CheckConstraint("debt >= 0 and carried >= 0 and refund_balance >= 0", name="money"),
)

meters = Table(
    "meters",
    metadata,
    _id(),
    Column("drn", String(limits.DRN), nullable=False, unique=True),
    Column("iin", String(6), nullable=False),
    Column("manufacturer", String(limits.LABEL), nullable=False, default=""),
    Column("area", String(limits.LABEL), nullable=False, default=""),
    Column("supply_group_id", ForeignKey("supply_groups.id"), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=True),
    Column("tariff_id", ForeignKey("tariffs.id"), nullable=True),
    Column("utility", String(12), nullable=False, default="electricity"),
    Column("ti", Integer, nullable=False),
    Column("kt", Integer, nullable=False),
    Column("krn", Integer, nullable=False),
    Column("ea", Integer, nullable=False),
    Column("base_date", Integer, nullable=False),
    Column("ken", Integer, nullable=False, default=255),
    Column("status", String(10), nullable=False, default="active"),
    Column("last_tid", BigInteger, nullable=False, default=-1),
    Column("pending_key", JSON, nullable=True),  # a key configuration not yet confirmed on the meter
    _created(),
    one_of("status", MeterStatus),
    one_of("utility", Utility),
)

meter_months = Table(
    "meter_months",
    metadata,
    Column("meter_id", ForeignKey("meters.id"), primary_key=True),
    Column("month", String(7), primary_key=True),  # YYYY-MM
    Column("units", BigInteger, nullable=False, default=0),
    Column("purchases", Integer, nullable=False, default=0),
    Column("fixed_charged", Boolean, nullable=False, default=False),  # the month's fixed charge is paid
    Column("fbe_issued", Boolean, nullable=False, default=False),
    CheckConstraint("units >= 0 and purchases >= 0", name="counts"),
)

REVERSED = text("reversed_at IS NOT NULL")

vends = Table(
    "vends",
    metadata,
    Column("id", VendId, primary_key=True),
    # A vendor and an API key are named by every vend, and never deleted (``KEPT_SQL``): no foreign key, whose
    # check would share-lock those few rows in every vend (migration 0012).
    Column("vendor_id", Id, nullable=True),
    Column("api_key_id", Id, nullable=True),  # NULL: done by the system itself
    Column("meter_id", ForeignKey("meters.id"), nullable=False),
    Column("customer_id", ForeignKey("customers.id"), nullable=True),
    Column("kind", String(12), nullable=False, default=VendKind.PURCHASE),
    Column("amount", BigInteger, nullable=False),
    Column("units", BigInteger, nullable=False),
    Column("receipt", JSON, nullable=False),
    Column("status", String(10), nullable=False, default="completed"),
    Column("reversed_at", DateTime, nullable=True),
    _created(),
    CheckConstraint("amount >= 0 and units >= 0", name="amounts"),
    one_of("status", VendStatus),
    one_of("kind", VendKind),
    Index("ix_vends_meter_created", "meter_id", "created_at"),
    # the listings (newest first, by vendor, by customer) and the sales report (sales and reversals by time)
    Index("ix_vends_created", "created_at", "id"),
    Index("ix_vends_vendor_created", "vendor_id", "created_at"),
    Index("ix_vends_customer_created", "customer_id", "created_at"),
    # only the reversed few: every vend inserted an entry for its NULL
    Index("ix_vends_reversed", "reversed_at", postgresql_where=REVERSED, sqlite_where=REVERSED),
)

tokens = Table(
    "tokens",
    metadata,
    _id(),
    Column("vend_id", VendId, nullable=False),  # no foreign key: written with its vend (``VENDS_KEPT_SQL``)
    Column("meter_id", ForeignKey("meters.id"), nullable=False),
    Column("seq", Integer, nullable=False),  # entry order within the vend
    Column("kind", String(16), nullable=False),
    Column("tid", BigInteger, nullable=True),  # key change tokens carry none
    Column("base_date", Integer, nullable=False),  # a TID counts minutes from this base
    Column("token_class", Integer, nullable=False),
    Column("subclass", Integer, nullable=False),
    Column("digits", String(20), nullable=False),
    Column("units", BigInteger, nullable=False, default=0),
    _created(),
    UniqueConstraint("meter_id", "base_date", "tid", name="uq_tokens_meter_tid"),
    CheckConstraint("units >= 0", name="units"),
    one_of("kind", TokenKind),
)

idempotency = Table(
    "idempotency",
    metadata,
    Column("api_key_id", Id, primary_key=True),  # an API key's id (never deleted: ``KEPT_SQL``)
    Column("key", String(limits.IDEMPOTENCY_KEY), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSON, nullable=False),
    Column("vend_id", VendId, nullable=True),  # no foreign key: written with its vend (``VENDS_KEPT_SQL``)
    _created(),
)

ledger = Table(
    "ledger",
    metadata,
    _id(),
    Column("vend_id", VendId, nullable=False),  # no foreign key: written with its vend (``VENDS_KEPT_SQL``)
    Column("account", String(40), nullable=False),
    Column("debit", BigInteger, nullable=False, default=0),
    Column("credit", BigInteger, nullable=False, default=0),
    _created(),
    CheckConstraint("debit >= 0 and credit >= 0 and (debit = 0 or credit = 0)", name="one_side"),
    Index("ix_ledger_vend", "vend_id"),
)

audit = Table(
    "audit",
    metadata,
    _id(),
    Column("at", DateTime, nullable=False),
    Column("actor", String(limits.NAME), nullable=False),
    Column("action", String(40), nullable=False),
    Column("entity", String(40), nullable=False),
    Column("entity_id", String(limits.ENTITY_ID), nullable=False),
    Column("detail", JSON, nullable=False),
)

#: The queue of what goes out (receipts, SMS, webhooks, background jobs), dispatched by ``mita worker``
#: (:mod:`mita.outbox`). A row is due when pending and ``next_attempt_at`` has passed; a worker's claim moves
#: ``next_attempt_at`` to the end of its lease and counts the attempt, so a worker that dies loses nothing.
outbox = Table(
    "outbox",
    metadata,
    _id(),
    Column("vend_id", VendId, nullable=True),  # NULL: not a vend's (a campaign's SMS); no foreign key: as ledger
    Column("channel", String(20), nullable=False),  # the transport: receipt, sms, webhook, campaign.generate...
    Column("recipient", String(200), nullable=False, default=""),  # a phone number, a webhook's name, a meter
    Column("dedupe_key", String(200), nullable=False),  # one logical message, queued once, sent with its key
    Column("payload", JSON, nullable=False),
    Column("status", String(10), nullable=False, default=OutboxStatus.PENDING),
    Column("attempts", Integer, nullable=False, default=0),  # claims so far (a claim counts as a try)
    Column("next_attempt_at", DateTime, nullable=False),  # due from then; while claimed, the lease's end
    Column("last_error", String(200), nullable=True),  # short, never a secret (an HTTP status, an error class)
    Column("sent_at", DateTime, nullable=True),
    _created(),
    UniqueConstraint("dedupe_key"),
    one_of("status", OutboxStatus),
    Index("ix_outbox_dispatch", "status", "next_attempt_at"),
    # the pending rows of a recipient in the order written: the claim's "oldest open row" probe for the channels
    # that go one at a time per recipient (mita.outbox.queue.ORDERED: a meter's commands); pending rows only, few
    Index(
        "ix_outbox_open",
        "channel",
        "recipient",
        "id",
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
)

campaigns = Table(
    "campaigns",
    metadata,
    _id(),
    Column("name", String(limits.NAME), nullable=False, unique=True),
    Column("supply_group_id", ForeignKey("supply_groups.id"), nullable=False),
    Column("selection", JSON, nullable=False),  # the filters the meters were chosen by
    Column("target", JSON, nullable=False),  # the key configuration the meters move to
    Column("delivery", String(10), nullable=False),  # csv, sms or attach (to the next purchase)
    Column("batch_size", Integer, nullable=False),
    Column("planned", Integer, nullable=False, default=0),
    Column("status", String(12), nullable=False, default="planned"),
    _created(),
    one_of("delivery", Delivery),
    one_of("status", CampaignStatus),
)

#: Every key change a meter is sent: by a campaign, with a vend, or on an operator's order; its
#: tokens, and how far it got (planned, issued, delivered, confirmed; or cancelled).
key_changes = Table(
    "key_changes",
    metadata,
    _id(),
    Column("meter_id", ForeignKey("meters.id"), nullable=False),
    Column("campaign_id", ForeignKey("campaigns.id"), nullable=True),
    Column("vend_id", ForeignKey("vends.id"), nullable=True),  # the vend that carried the tokens
    Column("batch", Integer, nullable=True),
    Column("via", String(10), nullable=False),
    Column("from_key", JSON, nullable=True),
    Column("to_key", JSON, nullable=True),
    Column("tokens", JSON, nullable=True),  # the set's digits in entry order
    Column("status", String(10), nullable=False),
    _created(),
    Column("issued_at", DateTime, nullable=True),
    Column("delivered_at", DateTime, nullable=True),
    Column("confirmed_at", DateTime, nullable=True),
    one_of("status", KeyChangeStatus),
    one_of("via", Via),
    Index("ix_key_changes_campaign", "campaign_id", "status", "batch"),
    Index("ix_key_changes_meter", "meter_id", "status"),
)

#: Triggers that make the audit log append-only, per dialect.
APPEND_ONLY_SQL = {
    "sqlite": [
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'audit is append-only'; END $$",
        "CREATE TRIGGER audit_no_change BEFORE UPDATE OR DELETE ON audit "
        "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    ],
}

#: Vendors and API keys are never deleted, nor their ids changed: vends and stored answers name them without a
#: foreign key (``vends.vendor_id``, ``vends.api_key_id``, ``idempotency.api_key_id``), per dialect. A key is
#: revoked, never removed.
KEPT_TABLES = ("vendors", "api_keys")
KEPT_SQL = {
    "sqlite": [
        f"CREATE TRIGGER {t}_kept_{what} BEFORE {event} ON {t} BEGIN SELECT RAISE(ABORT, '{t} are never deleted'); END"
        for t in KEPT_TABLES
        for what, event in (("delete", "DELETE"), ("id", "UPDATE OF id"))
    ],
    "postgresql": [
        "CREATE FUNCTION mita_kept() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION '% are never deleted: vends name them', TG_TABLE_NAME; END $$",
        *(
            f"CREATE TRIGGER {t}_kept BEFORE DELETE OR UPDATE OF id ON {t} FOR EACH ROW EXECUTE FUNCTION mita_kept()"
            for t in KEPT_TABLES
        ),
        *(f"CREATE TRIGGER {t}_kept_truncate BEFORE TRUNCATE ON {t} EXECUTE FUNCTION mita_kept()" for t in KEPT_TABLES),
    ],
}

#: Vends are never deleted, nor their ids changed: the rows written with a vend, in the same statement (its tokens,
#: ledger lines, receipt in the outbox and stored answer), name it without a foreign key, whose check was an SQL
#: query per row, a twentieth of a vend's CPU with six ledger lines (migration 0013). A vend is reversed, never
#: removed. Per dialect, as ``KEPT_SQL``.
VENDS_KEPT_SQL = {
    "sqlite": [
        f"CREATE TRIGGER vends_kept_{what} BEFORE {event} ON vends "
        "BEGIN SELECT RAISE(ABORT, 'vends are never deleted: reverse one instead'); END"
        for what, event in (("delete", "DELETE"), ("id", "UPDATE OF id"))
    ],
    "postgresql": [
        "CREATE FUNCTION mita_vends_kept() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'vends are never deleted: reverse one instead'; END $$",
        "CREATE TRIGGER vends_kept BEFORE DELETE OR UPDATE OF id ON vends "
        "FOR EACH ROW EXECUTE FUNCTION mita_vends_kept()",
        "CREATE TRIGGER vends_kept_truncate BEFORE TRUNCATE ON vends EXECUTE FUNCTION mita_vends_kept()",
    ],
}

#: A connected meter's communication endpoint (the head-end's device registry). A meter without a row is a
#: keypad meter; adding or removing the row changes nothing about its keys, TIDs or history. The management
#: association's LLS secret is stored only sealed under the master key, bound to the meter's number.
meter_endpoints = Table(
    "meter_endpoints",
    metadata,
    Column("meter_id", ForeignKey("meters.id"), primary_key=True),
    Column("host", String(limits.HOST), nullable=False),
    Column("port", Integer, nullable=False),
    Column("client", Integer, nullable=False, default=1),  # the client SAP of the management association
    Column("server", Integer, nullable=False, default=1),  # the meter's logical device
    Column("token_encoding", String(5), nullable=False, default=TokenEncoding.BCD),
    Column("secret", LargeBinary, nullable=True),  # sealed LLS secret; NULL: public client, reading only
    _created(),
    Column("updated_at", DateTime, nullable=False),
    # dlms: host and port are the meter's; mqtt: the broker's (client, server and secret unused)
    Column("transport", String(4), nullable=False, default=Transport.DLMS, server_default=Transport.DLMS.value),
    CheckConstraint("port between 1 and 65535", name="port"),
    one_of("token_encoding", TokenEncoding),
    one_of("transport", Transport),
)

#: What the head-end is asked to do at a meter, and what came of it. Each command has one outbox row (channel
#: ``headend``, dedupe key ``command:<id>``) that carries its delivery: the claim, the lease, the retries.
meter_commands = Table(
    "meter_commands",
    metadata,
    _id(),
    Column("meter_id", ForeignKey("meters.id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("params", JSON, nullable=False),  # the tokens to deliver, the registers to read...
    Column("status", String(12), nullable=False, default=CommandStatus.QUEUED),
    Column("vend_id", ForeignKey("vends.id"), nullable=True, unique=True),  # the vend whose tokens it carries
    Column("actor", String(limits.NAME), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("result", JSON, nullable=True),  # what the meter answered (token statuses, readings)
    Column("error", String(200), nullable=True),  # the last failure's code and a short reason, never a secret
    _created(),
    Column("expires_at", DateTime, nullable=False),
    Column("sent_at", DateTime, nullable=True),  # the last try's start
    Column("finished_at", DateTime, nullable=True),
    one_of("status", CommandStatus),
    one_of("kind", CommandKind),
    CheckConstraint("attempts >= 0", name="attempts"),
    Index("ix_meter_commands_meter_created", "meter_id", "created_at"),
    Index("ix_meter_commands_status", "status"),
)

# Telemetry (issue 13): what meters report over MQTT (``mita.telemetry``), kept by the ingest workers
# (``mita worker ingest``); times from meters are UTC (timestamptz), the rest of the schema's are wall clock.
UtcTime = DateTime(timezone=True)

#: Interval readings. On PostgreSQL a table partitioned by month on ``read_at`` (migration 0008; the partitions,
#: ``readings_pYYYYMM``, are made ahead and dropped past the retention by the ingest, never listed here). The key
#: is the idempotency of a reading: (meter, seq) with its time, since a partitioned table's keys must hold the
#: partition column. No foreign key: a reading costs one index insert, and the ingest only writes known meters.
readings = Table(
    "readings",
    metadata,
    Column("meter_id", Id, primary_key=True),
    Column("read_at", UtcTime, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("received_at", UtcTime, nullable=False),  # the ingest's receipt: the meter's clock against it
    Column("register", BigInteger, nullable=False),  # Wh or L, cumulative (mita.telemetry.obis)
    Column("demand", BigInteger, nullable=False),  # W or L/h
    Column("credit", BigInteger, nullable=False),  # Wh or L
    Column("relay_closed", Boolean, nullable=False),
    Column("reverse", BigInteger, nullable=True),  # Wh exported, cumulative
    postgresql_partition_by="RANGE (read_at)",
)

#: A month's partition of ``readings`` on PostgreSQL (not a table of the models: ``mita db check`` skips them).
READINGS_PARTITION = re.compile(r"readings_p\d{6}")

#: Each meter's latest reading and status: what a meter's page, the detection's silence rule and the alarms read
#: without touching ``readings``. One row per meter, moved forward by the ingest (never back: a late reading
#: older than the one held changes nothing).
meter_state = Table(
    "meter_state",
    metadata,
    Column("meter_id", ForeignKey("meters.id"), primary_key=True),
    Column("medium", String(12), nullable=True),
    Column("seq", BigInteger, nullable=True),
    Column("read_at", UtcTime, nullable=True),
    Column("received_at", UtcTime, nullable=True),
    Column("register", BigInteger, nullable=True),
    Column("demand", BigInteger, nullable=True),
    Column("credit", BigInteger, nullable=True),
    Column("relay_closed", Boolean, nullable=True),
    Column("online", Boolean, nullable=True),  # the retained status (false: its last will)
    Column("status_at", UtcTime, nullable=True),
    Column("event_at", UtcTime, nullable=True),  # the last event's time
)

#: Events meters report (``mita.telemetry.events``), once each: the key is the event's idempotency, as for
#: readings.
meter_events = Table(
    "meter_events",
    metadata,
    Column("meter_id", Id, primary_key=True),
    Column("occurred_at", UtcTime, primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("event", String(40), nullable=False),
    Column("code", Integer, nullable=False),
    Column("received_at", UtcTime, nullable=False),
)

#: What the detection (``mita.headend.detect``) raised for a person to look at: tamper at once, bypass, leaks,
#: silent meters. At most one alarm per (meter, rule) is not closed (a partial unique index): a condition seen
#: again while its alarm is open counts an occurrence, not a new alarm.
alarms = Table(
    "alarms",
    metadata,
    _id(),
    Column("meter_id", ForeignKey("meters.id"), nullable=False),
    Column("rule", String(40), nullable=False),
    Column("severity", String(8), nullable=False),
    Column("status", String(12), nullable=False, default=AlarmStatus.OPEN),
    Column("summary", String(200), nullable=False),  # plain words: what was seen
    Column("evidence", JSON, nullable=False),  # the figures the rule decided on
    Column("occurrences", Integer, nullable=False, default=1),
    Column("opened_at", DateTime, nullable=False),
    Column("last_seen_at", DateTime, nullable=False),
    Column("acknowledged_at", DateTime, nullable=True),
    Column("acknowledged_by", String(limits.NAME), nullable=True),
    Column("closed_at", DateTime, nullable=True),
    Column("closed_by", String(limits.NAME), nullable=True),
    Column("note", String(limits.REASON), nullable=True),  # the person's words on closing
    one_of("status", AlarmStatus),
    one_of("severity", AlarmSeverity),
    CheckConstraint("occurrences >= 1", name="occurrences"),
    Index(
        "uq_alarms_meter_rule_open",
        "meter_id",
        "rule",
        unique=True,
        postgresql_where=text("status <> 'closed'"),
        sqlite_where=text("status <> 'closed'"),
    ),
    Index("ix_alarms_status_opened", "status", "opened_at"),
    Index("ix_alarms_meter_opened", "meter_id", "opened_at"),
)

# Channels (issue 14): money that arrives through a provider (M-Pesa, a retail till, USSD, SMS) and the messages
# that carry tokens back (``mita.channels``). One payment per provider transaction; its vend is an ordinary vend
# under the channel's own API key (idempotency key ``pay:<id>``), so the vending tables are written only by the
# vending service.

#: A payment through a channel, keyed by the provider's own reference: a C2B ``TransID``, or for an STK push Mita's
#: purchase code (the push's ``AccountReference``; the provider's ``CheckoutRequestID`` is ``checkout_id``).
payments = Table(
    "payments",
    metadata,
    _id(),
    Column("provider", String(20), nullable=False),  # mpesa, ...
    Column("kind", String(12), nullable=False),  # c2b, stk
    Column("provider_ref", String(64), nullable=False),
    Column("checkout_id", String(64), nullable=True, unique=True),  # STK: the provider's CheckoutRequestID
    Column("receipt", String(64), nullable=True),  # the provider's receipt number, once known
    Column("account_ref", String(40), nullable=False, default=""),  # what the payer typed or was shown
    Column("meter", String(limits.DRN), nullable=True),  # the meter it is for; NULL: none found
    Column("amount", BigInteger, nullable=False),  # minor units
    Column("currency", String(3), nullable=False),
    Column("payer", String(40), nullable=False, default=""),  # as the provider gives it (C2B masks it)
    Column("deliver_to", String(limits.PHONE), nullable=True),  # where the token goes (never a masked number)
    Column("status", String(16), nullable=False, default=PaymentStatus.RECEIVED),
    Column("verified", Boolean, nullable=False, default=False),  # seen in the provider's own records
    Column("vend_id", ForeignKey("vends.id"), nullable=True, unique=True),
    Column("api_key_id", ForeignKey("api_keys.id"), nullable=False),  # the channel's key: its vends' caller
    Column("detail", String(200), nullable=True),  # why it is where it is, in plain words
    Column("refund_ref", String(64), nullable=True),  # the provider's reference of the refund
    _created(),
    Column("updated_at", DateTime, nullable=False),
    UniqueConstraint("provider", "provider_ref"),
    UniqueConstraint("provider", "receipt", name="uq_payments_provider_receipt"),
    one_of("status", PaymentStatus),
    CheckConstraint("amount > 0", name="amount"),
    Index("ix_payments_status_updated", "status", "updated_at"),
    Index("ix_payments_meter_created", "meter", "created_at"),
)

#: Everything a provider said about a payment, as received (callbacks, query answers, pull rows, forged posts):
#: append-only, for audit and replay. Never holds a secret (the callback path's secret is not part of it).
payment_events = Table(
    "payment_events",
    metadata,
    _id(),
    Column("payment_id", ForeignKey("payments.id"), nullable=True),  # NULL: matched no payment (refused)
    Column("provider", String(20), nullable=False),
    Column("source", String(20), nullable=False),  # c2b_confirm, stk_callback, stk_query, pull, status, ...
    Column("body", JSON, nullable=False),
    Column("at", DateTime, nullable=False),
    Index("ix_payment_events_payment", "payment_id"),
)

#: Outbound SMS (one per outbox row of channel ``sms``: the same dedupe key) and what the gateway reported.
sms_messages = Table(
    "sms_messages",
    metadata,
    _id(),  # the delivery id Kannel's delivery reports carry back
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("phone", String(limits.PHONE), nullable=False),
    Column("kind", String(20), nullable=False),  # token, low_credit, key_change, reply
    Column("payment_id", ForeignKey("payments.id"), nullable=True),
    Column("status", String(10), nullable=False, default=SmsStatus.SUBMITTED),
    Column("submits", Integer, nullable=False, default=1),  # times handed to the gateway (a resend counts)
    Column("report", String(200), nullable=True),  # the last delivery report's text (the SMSC's receipt)
    _created(),
    Column("updated_at", DateTime, nullable=False),
    one_of("status", SmsStatus),
    Index("ix_sms_messages_status_updated", "status", "updated_at"),
)

#: Inbound SMS, once each: the gateway's message id (Kannel's ``%I``, the same on every retry) is the key.
sms_inbound = Table(
    "sms_inbound",
    metadata,
    _id(),
    Column("gateway_id", String(64), nullable=False, unique=True),
    Column("phone", String(limits.PHONE), nullable=False),
    Column("text", String(400), nullable=False),
    Column("answer", String(400), nullable=False),  # the reply (sent through the outbox)
    Column("at", DateTime, nullable=False),
)

#: A retail till's purchase (Electrum PUSI semantics): the client's purchase id is its idempotency key (the vend's
#: too); confirmation and reversal advices are recorded by their own ids, so a repeated advice answers the same.
pos_purchases = Table(
    "pos_purchases",
    metadata,
    Column("api_key_id", ForeignKey("api_keys.id"), primary_key=True),
    Column("purchase_id", String(limits.IDEMPOTENCY_KEY), primary_key=True),
    Column("vend_id", ForeignKey("vends.id"), nullable=False, unique=True),
    Column("status", String(10), nullable=False, default=PosStatus.ISSUED),
    Column("advice_id", String(limits.IDEMPOTENCY_KEY), nullable=True),  # the advice that made it final
    _created(),
    Column("settled_at", DateTime, nullable=True),
    one_of("status", PosStatus),
    Index("ix_pos_purchases_status_created", "status", "created_at"),
)

#: The console's operators: a person's name and password (scrypt), and the API key the console acts with for
#: them (made with the operator, its plaintext thrown away): the key carries the role, its audit entries name the
#: operator, and revoking it locks the person out. Repeated wrong passwords lock the name for a while.
operators = Table(
    "operators",
    metadata,
    _id(),
    Column("name", String(limits.NAME), nullable=False, unique=True),
    Column("password_hash", String(200), nullable=False),
    Column("api_key_id", ForeignKey("api_keys.id"), nullable=False, unique=True),
    Column("failures", Integer, nullable=False, default=0),
    Column("locked_until", DateTime, nullable=True),
    _created(),
    Column("last_login_at", DateTime, nullable=True),
)

#: Console sessions: the cookie's SHA-256 (never the cookie), its CSRF token and its life.
console_sessions = Table(
    "console_sessions",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("operator_id", ForeignKey("operators.id"), nullable=False),
    Column("csrf", String(64), nullable=False),
    _created(),
    Column("seen_at", DateTime, nullable=False),
    Column("expires_at", DateTime, nullable=False),
    Index("ix_console_sessions_operator", "operator_id"),
)
