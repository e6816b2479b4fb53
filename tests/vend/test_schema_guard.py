"""The schema guard: ``mita db check`` compares the migrated database with the models, on SQLite and PostgreSQL.

Migration 0004 adds what PostgreSQL lacked (the supply group's foreign key to its vending key) and a CHECK on
every status and kind column, built from the enumerations the code uses (:mod:`mita.vend.lifecycles`).
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

import psycopg
import pytest
from alembic import command
from sqlalchemy import Column, MetaData, String, Table, inspect, text
from sqlalchemy.exc import IntegrityError

from cli_run import run
from mita.vend import database, lifecycles
from mita.vend.schema import one_of

PG = "postgresql://postgres@127.0.0.1:5432"


def check(url: str) -> tuple[int, str, str]:
    result = run(["db", "check", "--database-url", url])
    return result.exit_code, result.stdout, result.stderr


def test_db_check_passes_on_a_migrated_database(url: str) -> None:
    assert run(["db", "upgrade", "--database-url", url]).exit_code == 0
    code, out, err = check(url)
    assert code == 0, err
    assert "schema matches the models" in out


def test_db_check_names_what_differs(url: str) -> None:
    database.upgrade(url)
    engine = database.make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE customers ADD COLUMN nickname VARCHAR(20)"))
        conn.execute(text("CREATE INDEX ix_planted ON vendors (name)"))
    engine.dispose()
    code, _, err = check(url)
    assert code == 4  # mita.cli.exits.CHECK_FAILED
    assert "error[schema_drift]: " in err and "nickname" in err and "ix_planted" in err


def test_db_check_refuses_an_unmigrated_database(url: str) -> None:
    command.upgrade(database.alembic_config(url), "0003")
    code, _, err = check(url)
    assert code == 3 and "error[schema_outdated]: " in err and "0003" in err


def test_the_supply_groups_foreign_key_exists_on_postgresql() -> None:
    name = f"mita_guard_{secrets.token_hex(5)}"
    with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        database.upgrade(f"{PG}/{name}")
        with psycopg.connect(f"{PG}/{name}") as conn:
            row = conn.execute(
                "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
                "WHERE contype = 'f' AND conname = 'fk_supply_groups_vending_key_id_vending_keys'"
            ).fetchone()
        assert row == ("supply_groups", "vending_keys")
    finally:
        with psycopg.connect(f"{PG}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_0004_refuses_a_dangling_vending_key_id_on_postgresql(url: str) -> None:
    cfg = database.alembic_config(url)
    command.upgrade(cfg, "0003")
    engine = database.make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO supply_groups (sgc, name, krn, kt, ea, dkga, base_date, ken, vending_key_id, created_at) "
                "VALUES ('123456', 'x', 1, 2, 7, 2, 2014, 255, NULL, :t)"
            ),
            {"t": dt.datetime(2026, 1, 1)},
        )
        if engine.dialect.name == "postgresql":  # SQLite has the key already: it would refuse this row
            conn.execute(text("UPDATE supply_groups SET vending_key_id = 999"))
    engine.dispose()
    if url.startswith("postgresql"):
        with pytest.raises(RuntimeError, match="name a vending key that does not exist"):
            command.upgrade(cfg, "0004")
    else:
        command.upgrade(cfg, "0004")


@pytest.mark.parametrize(
    "table,column,enum",
    [
        ("vends", "kind", lifecycles.VendKind),
        ("tokens", "kind", lifecycles.TokenKind),
        ("outbox", "status", lifecycles.OutboxStatus),
        ("key_changes", "via", lifecycles.Via),
        ("vending_keys", "keystore", lifecycles.Keystore),
        ("meters", "status", lifecycles.MeterStatus),
        ("campaigns", "status", lifecycles.CampaignStatus),
    ],
)
def test_every_status_and_kind_column_refuses_a_value_the_code_does_not_know(
    url: str, table: str, column: str, enum: type[lifecycles.StrEnum]
) -> None:
    database.upgrade(url)
    engine = database.make_engine(url)
    with engine.connect() as conn:
        checks = {c["name"]: c["sqltext"] for c in inspect(conn).get_check_constraints(table)}
    body = checks[f"ck_{table}_{column}"]
    assert set(enum) <= set(re.findall(r"\w+", body)), body  # the migrated CHECK lists every value the code has
    scratch = Table(f"scratch_{table}", MetaData(), Column(column, String(20)), one_of(column, enum))
    with engine.begin() as conn:  # and the same definition refuses any other value, on this database
        scratch.create(conn)
        conn.execute(scratch.insert().values({column: next(iter(enum)).value}))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(scratch.insert().values({column: "zz"}))
    engine.dispose()


def test_a_lifecycle_refuses_a_move_its_table_does_not_allow() -> None:
    lifecycles.VENDING_KEY.check("pending", "active")
    with pytest.raises(lifecycles.VendError) as err:
        lifecycles.VENDING_KEY.check("destroyed", "active")
    assert err.value.code == "invalid_transition"
    assert lifecycles.KEY_CHANGE.open == ("planned", "issued", "delivered")
    assert lifecycles.CAMPAIGN.open == ("planned", "generating", "generated")


def test_a_meter_moves_only_as_its_lifecycle_allows(url: str) -> None:
    from mita.vend import registry, sample

    database.upgrade(url)
    engine = database.make_engine(url)
    sample.create_group_and_tariff(engine, "Lifecycle town")
    reg = registry.Registry(engine)
    drn = sample.meter_number("4750099001")
    reg.create_meter(registry.SYSTEM, drn=drn, sgc=sample.SGC)
    assert reg.set_meter_status(registry.SYSTEM, drn, "blocked")["status"] == "blocked"
    assert reg.set_meter_status(registry.SYSTEM, drn, "retired")["status"] == "retired"
    with pytest.raises(lifecycles.VendError) as err:
        reg.set_meter_status(registry.SYSTEM, drn, "blocked")  # a retired meter is re-commissioned, not blocked
    assert err.value.code == "conflict"
    assert reg.set_meter_status(registry.SYSTEM, drn, "active")["status"] == "active"
    engine.dispose()
