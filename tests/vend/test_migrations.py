"""Migrations move what a database already holds: 0001 → 0002 keeps every key's expiry, and back."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from alembic import command
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DataError, DBAPIError

from mita.vend import database, registry, sample

EXPIRY = dt.datetime(2026, 12, 31, 23, 59)
#: A key hash as the registry stores one (SHA-256 of a key), not a pattern such as ``"ab" * 32``: that one holds
#: the suite's test vending keys' hex (``abab...``) and the leak scan finds it in the file's raw pages.
OLD_KEY_HASH = hashlib.sha256(b"an API key made before 0006").hexdigest()


def populate_0001(engine: Engine) -> None:
    """A supply group on KRN 2 (KEN 200, issued until EXPIRY) that kept its KRN 1 key, as 0001 stored them."""
    now = dt.datetime(2026, 1, 1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO supply_groups (id, sgc, name, krn, kt, ea, dkga, base_date, ken, key_expiry, created_at) "
                "VALUES (1, '123456', 'Old town', 2, 2, 7, 2, 2014, 200, :exp, :now)"
            ),
            {"exp": EXPIRY, "now": now},
        )
        for kid, krn in ((1, 1), (2, 2)):
            conn.execute(
                text(
                    "INSERT INTO vending_keys (id, supply_group_id, krn, dkga, sealed, kcv, created_at) "
                    "VALUES (:id, 1, :krn, 2, :blob, 'abcdef', :now)"
                ),
                {"id": kid, "krn": krn, "blob": b"sealed", "now": now},
            )
        conn.execute(text("UPDATE supply_groups SET vending_key_id = 2"))


def test_upgrade_keeps_expiry_and_ken_and_retires_old_krns(url: str) -> None:
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0001")
    engine = database.make_engine(url)
    populate_0001(engine)
    command.upgrade(cfg, "head")
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT krn, ken, issued_until, status FROM vending_keys ORDER BY krn")).all()
    assert [(r.krn, r.ken, r.status) for r in rows] == [(1, 255, "retired"), (2, 200, "active")]
    assert rows[0].issued_until is None and str(rows[1].issued_until)[:16] == str(EXPIRY)[:16]

    with engine.begin() as conn:  # a campaign's SMS has no vend: 0001 cannot hold it
        conn.execute(
            text(
                "INSERT INTO outbox (vend_id, channel, recipient, dedupe_key, payload, status, attempts, "
                "next_attempt_at, created_at) VALUES (NULL, 'sms', '', 'sms:test', '{}', 'pending', 0, :t, :t)"
            ),
            {"t": EXPIRY},
        )
    command.downgrade(cfg, "0001")
    with engine.connect() as conn:
        back = conn.execute(text("SELECT key_expiry FROM supply_groups")).scalar()
        left = conn.execute(text("SELECT count(*) FROM outbox")).scalar()
    assert str(back)[:16] == str(EXPIRY)[:16] and left == 0
    engine.dispose()


def test_0003_widens_audit_entity_ids_and_keeps_the_log_append_only(url: str) -> None:
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0002")
    engine = database.make_engine(url)
    entry = (
        "INSERT INTO audit (at, actor, action, entity, entity_id, detail) VALUES (:t, 'a', 'x', 'tariff', :id, '{}')"
    )
    with engine.begin() as conn:
        conn.execute(text(entry), {"t": EXPIRY, "id": "short"})
    command.upgrade(cfg, "0003")
    with engine.begin() as conn:  # a 100-character tariff name is an entity id now (PostgreSQL refused it)
        conn.execute(text(entry), {"t": EXPIRY, "id": "T" * 100})
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT entity_id FROM audit")).scalars()) == ["T" * 100, "short"]
    for change in ("UPDATE audit SET actor = 'b'", "DELETE FROM audit"):
        with pytest.raises(Exception, match="append-only"), engine.begin() as conn:
            conn.execute(text(change))
    if engine.dialect.name == "postgresql":  # going back refuses while a longer id is kept: nothing is cut short
        with pytest.raises(DataError):
            command.downgrade(cfg, "0002")
    else:
        command.downgrade(cfg, "0002")
    engine.dispose()


def test_0006_adds_the_listing_indexes_and_the_keys_last_characters_and_back(url: str) -> None:
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0005")
    engine = database.make_engine(url)
    with engine.begin() as conn:  # a key made before 0006
        conn.execute(
            text("INSERT INTO api_keys (name, role, key_hash, created_at) VALUES ('old', 'admin', :h, :t)"),
            {"h": OLD_KEY_HASH, "t": EXPIRY},
        )
    command.upgrade(cfg, "0006")
    with engine.connect() as conn:
        indexes = {i["name"]: i["column_names"] for i in inspect(conn).get_indexes("vends")}
        row = conn.execute(text("SELECT name, key_last4 FROM api_keys")).one()
    assert indexes["ix_vends_created"] == ["created_at", "id"]
    assert indexes["ix_vends_vendor_created"] == ["vendor_id", "created_at"]
    assert indexes["ix_vends_customer_created"] == ["customer_id", "created_at"]
    assert indexes["ix_vends_reversed"] == ["reversed_at"]
    assert tuple(row) == ("old", None)
    command.downgrade(cfg, "0005")
    with engine.connect() as conn:
        left = {i["name"] for i in inspect(conn).get_indexes("vends")}
        columns = {c["name"] for c in inspect(conn).get_columns("api_keys")}
        assert conn.execute(text("SELECT name FROM api_keys")).scalar_one() == "old"
    assert left == {"ix_vends_meter_created"} and "key_last4" not in columns
    engine.dispose()


def _foreign_keys(engine: Engine, table: str) -> set[str]:
    with engine.connect() as conn:
        return {
            fk["referred_table"] + "." + fk["constrained_columns"][0] for fk in inspect(conn).get_foreign_keys(table)
        }


def test_0012_drops_the_hot_rows_foreign_keys_keeps_the_rows_for_ever_and_back(url: str) -> None:
    """Vendors and API keys lose the vends' and answers' foreign keys and gain triggers that refuse deleting them
    (or changing their id), on both dialects; the reversal index holds only reversed vends; and back again."""
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0011")
    engine = database.make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text("INSERT INTO vendors (id, name, balance, created_at) VALUES (7, 'shop', 0, :t)"), {"t": EXPIRY}
        )
        conn.execute(
            text(
                "INSERT INTO api_keys (id, name, role, key_hash, vendor_id, created_at) "
                "VALUES (3, 'till', 'vendor', :h, 7, :t)"
            ),
            {"h": OLD_KEY_HASH, "t": EXPIRY},
        )
    assert {"vendors.vendor_id", "api_keys.api_key_id"} <= _foreign_keys(engine, "vends")
    command.upgrade(cfg, "0012")
    assert _foreign_keys(engine, "vends") == {"meters.meter_id", "customers.customer_id"}
    assert _foreign_keys(engine, "idempotency") == {"vends.vend_id"}
    refusals = [
        "DELETE FROM vendors",
        "DELETE FROM api_keys WHERE id = 3",
        "UPDATE vendors SET id = 8",
        "UPDATE api_keys SET id = 4",
    ]
    if engine.dialect.name == "postgresql":
        refusals += ["TRUNCATE vendors CASCADE", "TRUNCATE api_keys CASCADE"]
    for statement in refusals:
        with pytest.raises(DBAPIError, match="never deleted"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.begin() as conn:  # anything else about them changes as before
        conn.execute(text("UPDATE api_keys SET revoked_at = :t WHERE id = 3"), {"t": EXPIRY})
        conn.execute(text("UPDATE vendors SET name = 'the shop' WHERE id = 7"))
        assert conn.execute(text("SELECT count(*) FROM api_keys WHERE revoked_at IS NOT NULL")).scalar_one() == 1
    with engine.connect() as conn:
        index = next(i for i in inspect(conn).get_indexes("vends") if i["name"] == "ix_vends_reversed")
    where = index.get("dialect_options", {}).get(f"{engine.dialect.name}_where")
    assert index["column_names"] == ["reversed_at"] and "reversed_at IS NOT NULL" in str(where)
    command.downgrade(cfg, "0011")
    assert {"vendors.vendor_id", "api_keys.api_key_id"} <= _foreign_keys(engine, "vends")
    assert "api_keys.api_key_id" in _foreign_keys(engine, "idempotency")
    with engine.begin() as conn:  # the triggers went with it
        conn.execute(text("DELETE FROM api_keys"))
        conn.execute(text("DELETE FROM vendors"))
    engine.dispose()


NAMING_A_VEND = ("tokens", "ledger", "outbox", "idempotency")


def test_0013_drops_the_foreign_keys_to_vends_keeps_vends_for_ever_and_back(url: str) -> None:
    """A vend's tokens, ledger lines, outbox rows and answers lose their foreign keys to it, and vends gain the
    triggers that refuse deleting one (or changing its id), on both dialects; the schema is the models'; and back."""
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0013")
    engine = database.make_engine(url)
    sample.create_group_and_tariff(engine, "T")
    meter = registry.Registry(engine).create_meter(
        registry.SYSTEM, drn=sample.meter_number("4700000001"), sgc=sample.SGC, tariff="domestic"
    )
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO vends (id, meter_id, kind, amount, units, receipt, status, created_at) "
                "VALUES ('v1', :m, 'purchase', 0, 0, '{}', 'completed', :t)"
            ),
            {"m": meter["id"], "t": EXPIRY},
        )
        conn.execute(
            text("INSERT INTO ledger (vend_id, account, debit, credit, created_at) VALUES ('v1', 'x', 0, 0, :t)"),
            {"t": EXPIRY},
        )
    for table in NAMING_A_VEND:
        assert "vends.vend_id" not in _foreign_keys(engine, table)
    assert _foreign_keys(engine, "vends") == {"meters.meter_id", "customers.customer_id"}
    refusals = ["DELETE FROM vends", "UPDATE vends SET id = 'v2'"]
    if engine.dialect.name == "postgresql":
        refusals += ["TRUNCATE vends CASCADE"]
    for statement in refusals:
        with pytest.raises(DBAPIError, match="never deleted"), engine.begin() as conn:
            conn.execute(text(statement))
    with engine.begin() as conn:  # a reversal changes it as before
        conn.execute(text("UPDATE vends SET status = 'reversed', reversed_at = :t"), {"t": EXPIRY})
    assert database.schema_drift(engine) == []
    command.downgrade(cfg, "0012")
    for table in NAMING_A_VEND:
        assert "vends.vend_id" in _foreign_keys(engine, table)
    with engine.begin() as conn:  # the triggers went with it
        conn.execute(text("DELETE FROM ledger"))
        conn.execute(text("DELETE FROM vends"))
    engine.dispose()


def test_0014_stores_the_hot_tables_status_checks_with_one_array_constant_and_back(url: str) -> None:
    """On PostgreSQL the status and kind checks of the rows a vend writes compare with one ``text[]`` constant,
    allowing and refusing what they did; SQLite's stay as they were; and back."""
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0013")
    engine = database.make_engine(url)

    def check() -> str:
        with engine.connect() as conn:
            found = {c["name"]: c["sqltext"] for c in inspect(conn).get_check_constraints("vends")}
        return str(found["ck_vends_status"])

    before = check()
    command.upgrade(cfg, "0014")
    if engine.dialect.name == "postgresql":
        assert "ANY ('{completed,reversed}'::text[])" in check() and "ARRAY" not in check()
    else:
        assert check() == before
    sample.create_group_and_tariff(engine, "T")
    meter = registry.Registry(engine).create_meter(
        registry.SYSTEM, drn=sample.meter_number("4700000001"), sgc=sample.SGC, tariff="domestic"
    )
    insert = text(
        "INSERT INTO vends (id, meter_id, kind, amount, units, receipt, status, created_at) "
        "VALUES (:id, :m, 'purchase', 0, 0, '{}', :status, :t)"
    )
    with engine.begin() as conn:
        conn.execute(insert, {"id": "v1", "m": meter["id"], "status": "reversed", "t": EXPIRY})
    with pytest.raises(DBAPIError, match="ck_vends_status"), engine.begin() as conn:
        conn.execute(insert, {"id": "v2", "m": meter["id"], "status": "refunded", "t": EXPIRY})
    assert database.schema_drift(engine) == []
    command.downgrade(cfg, "0013")
    assert check() == before
    engine.dispose()
