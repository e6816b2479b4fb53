"""The head-end sender's two writes per command run by psycopg itself on PostgreSQL (``runner._Direct``): the same
rows as through SQLAlchemy, each statement committed alone, and failures raised as SQLAlchemy raises them (a
``DBAPIError``, a lost connection invalidated), which the outbox worker's retries and back-off rely on."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.pq import TransactionStatus
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from conftest import empty_database
from mita.headend import runner
from mita.vend import database
from mita.vend.schema import meter_commands

AT = dt.datetime(2026, 6, 1, 12, 0)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with empty_database("postgresql", tmp_path) as url:
        database.upgrade(url)
        built = database.make_engine(url, pool_size=1)
        try:
            yield built
        finally:
            built.dispose()


def test_a_statement_commits_alone(engine: Engine) -> None:
    end = runner._Direct(engine, runner._END, ("command", "was", "status", "result", "error", "at"))
    assert (
        end.run({"command": 1, "was": "sent", "status": "failed", "result": {"a": [1]}, "error": None, "at": AT}) == 0
    )
    take = runner._Direct(engine, runner._TAKE, ("command", "at"))
    assert take.first({"command": 1, "at": AT}) is None  # no such command: nothing moved, no row
    with engine.connect() as conn:  # the pool's one connection, the statements' own: no transaction left open
        driver = conn.connection.driver_connection
        assert driver.info.transaction_status == TransactionStatus.IDLE and driver.autocommit is False
        assert conn.execute(select(meter_commands.c.id)).first() is None


def test_a_failing_statement_is_a_dbapi_error_and_the_connection_is_reusable(engine: Engine) -> None:
    end = runner._Direct(engine, runner._END, ("command", "was", "status", "result", "error", "at"))
    with pytest.raises(DBAPIError) as raised:  # status is varchar(12)
        end.run({"command": 1, "was": "sent", "status": "x" * 200, "result": None, "error": None, "at": AT})
    assert not raised.value.connection_invalidated
    assert end.run({"command": 1, "was": "sent", "status": "failed", "result": None, "error": None, "at": AT}) == 0


def test_a_lost_connection_is_invalidated_and_the_next_statement_gets_a_new_one(engine: Engine) -> None:
    take = runner._Direct(engine, runner._TAKE, ("command", "at"))
    with engine.connect() as conn:  # the pool's one connection
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
    admin = database.make_engine(engine.url.render_as_string(hide_password=False), pool_size=1)
    with admin.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    admin.dispose()
    with pytest.raises(DBAPIError) as raised:
        take.first({"command": 1, "at": AT})
    assert raised.value.connection_invalidated
    assert take.first({"command": 1, "at": AT}) is None  # on a new connection
