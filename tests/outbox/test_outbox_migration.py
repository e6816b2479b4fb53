"""Migration 0005 (the outbox becomes a queue) on SQLite and PostgreSQL: rows already queued keep their place and
get the dedupe key their writer uses now; going back removes the new columns and keeps the rows.

At revision 0005 the database is compared with an empty database migrated to 0005, not with the models: the
models are the newest revision's, and what later revisions add (0006: listing indexes, ``api_keys.key_last4``)
is rightly missing at 0005. Both differ from the models by exactly those additions, and in the outbox by one
only: 0011's index of the pending rows by channel, recipient and id.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from alembic import command
from sqlalchemy import inspect, make_url, text

from mita import outbox
from mita.vend import database

AT = dt.datetime(2026, 11, 30, 8, 15)
NEW = {"recipient", "dedupe_key", "attempts", "next_attempt_at", "last_error", "sent_at"}


@contextmanager
def sibling(url: str) -> Iterator[str]:
    """Another empty database of the same kind as ``url``'s: a SQLite file beside it, or a PostgreSQL database
    on the same server (dropped after)."""
    parsed = make_url(database.normalise_url(url))
    if parsed.get_backend_name() == "sqlite":
        yield url.removesuffix(".db") + "-reference.db"
        return
    name = f"mita_test_{secrets.token_hex(6)}"
    server = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield parsed.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def drift_at(url: str, revision: str) -> list[str]:
    """How an empty database migrated to ``revision`` differs from the (newest) models: what later revisions add."""
    with sibling(url) as other:
        command.upgrade(database.alembic_config(database.normalise_url(other)), revision)
        engine = database.make_engine(other)
        try:
            return sorted(database.schema_drift(engine))
        finally:
            engine.dispose()


def test_0005_keys_queued_rows_as_their_writers_do_and_goes_back(url: str) -> None:
    cfg = database.alembic_config(database.normalise_url(url))
    command.upgrade(cfg, "0004")
    engine = database.make_engine(url)
    with engine.begin() as conn:  # a vend and its receipt, a campaign's SMS (twice, by a race), another row
        conn.execute(
            text(
                "INSERT INTO supply_groups (id, sgc, name, krn, kt, ea, dkga, base_date, ken, created_at) "
                "VALUES (1, '123456', 'Town', 1, 2, 7, 2, 2014, 255, :t)"
            ),
            {"t": AT},
        )
        conn.execute(
            text(
                "INSERT INTO meters (id, drn, iin, manufacturer, area, supply_group_id, utility, ti, kt, krn, ea, "
                "base_date, ken, status, last_tid, created_at) "
                "VALUES (1, '47500150231', '600727', '', '', 1, 'electricity', 1, 2, 1, 7, 2014, 255, 'active', -1, :t)"
            ),
            {"t": AT},
        )
        conn.execute(
            text(
                "INSERT INTO vends (id, meter_id, kind, amount, units, receipt, status, created_at) "
                "VALUES ('v-1', 1, 'purchase', 100, 10, '{}', 'completed', :t)"
            ),
            {"t": AT},
        )
        for vend, channel, payload in (
            ("v-1", "receipt", '{"meter": "47500150231", "tokens": ["1"]}'),
            (None, "sms", '{"campaign": 3, "key_change_id": 7, "meter": "47500150231", "phone": "+27820000001"}'),
            (None, "sms", '{"campaign": 3, "key_change_id": 7, "meter": "47500150231", "phone": "+27820000001"}'),
            (None, "sms", "{}"),
        ):
            conn.execute(
                text(
                    "INSERT INTO outbox (vend_id, channel, payload, status, created_at) "
                    "VALUES (:v, :c, :p, 'pending', :t)"
                ),
                {"v": vend, "c": channel, "p": payload, "t": AT},
            )
        ids = list(conn.execute(text("SELECT id FROM outbox ORDER BY id")).scalars())

    command.upgrade(cfg, "0005")
    drift = sorted(database.schema_drift(engine))
    assert drift == drift_at(url, "0005")  # what later revisions add, and nothing else
    # the outbox is as the models want it, but for the index of a later revision (0011: a meter's commands in order)
    # and the foreign key to vends a later one drops (0013: vends are never deleted instead)
    assert [line for line in drift if "outbox" in line] == [
        "add_index: ix_outbox_open",
        "remove_fk: fk_outbox_vend_id_vends",
    ]
    with engine.connect() as conn:
        got = conn.execute(
            text("SELECT id, recipient, dedupe_key, attempts, next_attempt_at, status FROM outbox ORDER BY id")
        ).all()
    assert [(r.recipient, r.dedupe_key) for r in got] == [
        ("47500150231", "receipt:v-1"),
        ("+27820000001", "sms:campaign:3:kc:7"),
        ("+27820000001", f"outbox:{ids[2]}"),  # the repeat keeps a key of its own: nothing is dropped
        ("", f"outbox:{ids[3]}"),
    ]
    assert all(r.attempts == 0 and str(r.next_attempt_at)[:16] == str(AT)[:16] and r.status == "pending" for r in got)
    with engine.begin() as conn:  # queuing the campaign's SMS again after the upgrade is still refused
        assert not outbox.enqueue(conn, "sms", "+27820000001", "sms:campaign:3:kc:7", {}, AT)
        assert outbox.enqueue(conn, "sms", "+27820000001", "sms:campaign:3:kc:8", {}, AT)

    command.downgrade(cfg, "0004")
    with engine.connect() as conn:
        columns = {c["name"] for c in inspect(conn).get_columns("outbox")}
        indexes = {i["name"] for i in inspect(conn).get_indexes("outbox")}
        assert conn.execute(text("SELECT count(*) FROM outbox")).scalar() == 5
    assert not columns & NEW and "ix_outbox_dispatch" not in indexes
    command.upgrade(cfg, "head")  # and forward again
    assert database.schema_drift(engine) == []
    engine.dispose()
