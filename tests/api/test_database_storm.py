"""Database connections killed under the server's feet: typed 503s, never a 500, and a detail that says what failed.

The gate (``mita.api.gate``) runs outside the application's exception handlers: a driver error it let through (the
readiness check's ``SHOW fsync`` on a connection terminated mid-check) was a 500 ``internal_error`` with a
traceback from the server. Here a real PostgreSQL has every backend of the test's database terminated every few
milliseconds while ``/readyz`` and vends are asked, the gate's readiness and its API key lookups made to ask the
database each time.
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import logging
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from conftest import PG_SERVER, empty_database
from mita.api import create_app
from mita.api.gate import Readiness
from mita.vend import database, registry
from mita.vend.apikeys import auth_cache
from mita.vend.database import make_engine
from mita.vend.errors import database_failure

DRN = "47500150231"
SPEC = {"blocks": [{"up_to": None, "price": "2.50"}], "vat_rate": "0.15", "fixed_monthly": 0, "fbe_kwh": "0"}
ROUNDS, LONGEST_S = 200, 15.0  # without the fix, about one round in twelve answered 500


class Storm:
    """A thread terminating every backend of one database (but its own) every ``pause`` seconds."""

    def __init__(self, name: str, pause: float = 0.005) -> None:
        self.name, self.pause, self.killed = name, pause, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as admin:
            while not self._stop.is_set():
                row = admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.name,),
                ).fetchone()
                self.killed += row[0] if row else 0
                time.sleep(self.pause)

    def __enter__(self) -> Storm:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str, str]]:
    """The API on a fresh PostgreSQL database with one meter: (app, the database's name, a vendor's key)."""
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    with empty_database("postgresql", tmp_path) as url:
        database.upgrade(url)
        app = create_app(url)
        engine: Engine = app.state.engine
        reg, system = registry.Registry(engine), registry.SYSTEM
        shop = reg.create_vendor(system, "Corner shop")
        _, key = reg.create_api_key("shop till", "vendor", shop["id"])
        reg.create_supply_group(system, sgc="123456", name="Test utility", vending_key="ab" * 8, base_date=2014)
        reg.create_tariff(system, name="domestic", currency="ZAR", spec=SPEC, effective_from=dt.datetime(2020, 1, 1))
        reg.create_meter(system, drn=DRN, sgc="123456", tariff="domestic")
        try:
            yield app, url.rsplit("/", 1)[1], key
        finally:
            engine.dispose()


def exercised(seen: collections.Counter[tuple[str, int, str | None]]) -> bool:
    """Both of /readyz's answers and the gate's own refusal of a vend were seen."""
    wanted = {("readyz", 200, None), ("readyz", 503, "database_unavailable"), ("vend", 503, "database_unavailable")}
    return wanted <= set(seen)


def test_readyz_and_vends_while_postgresql_backends_are_terminated_are_never_500(
    served: tuple[Any, str, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, name, key = served
    [gate] = [m for m in app.user_middleware if m.cls.__name__ == "Gate"]
    readiness: Readiness = gate.kwargs["readiness"]
    engine: Engine = app.state.engine
    caplog.set_level(logging.ERROR, logger="mita.api")
    seen: collections.Counter[tuple[str, int, str | None]] = collections.Counter()
    details: set[str] = set()
    with TestClient(app, raise_server_exceptions=False) as client, Storm(name) as storm:
        deadline, cap = time.monotonic() + LONGEST_S, time.monotonic() + 4 * LONGEST_S
        for n in itertools.count():
            if (n >= ROUNDS or time.monotonic() > deadline) and (exercised(seen) or time.monotonic() > cap):
                break  # a loaded machine: on until every answer below was seen (or the cap)
            readiness.ready, readiness._next_check = False, 0.0  # the gate asks the database again
            auth_cache(engine).forget()  # and looks the key up again
            r = client.get("/readyz")
            seen["readyz", r.status_code, r.json().get("code")] += 1
            headers = {"X-API-Key": key, "Idempotency-Key": str(uuid.uuid4())}
            r = client.post("/v1/vends", json={"meter": DRN, "amount": 100}, headers=headers)
            seen["vend", r.status_code, r.json().get("code")] += 1
            if r.status_code >= 500:
                details.add(r.json()["detail"])
    assert storm.killed > 0
    assert not [k for k in seen if k[1] == 500], seen
    assert {code for (_, status, code) in seen if status >= 500} <= {"database_unavailable", "retry"}, seen
    assert exercised(seen), seen  # both readiness answers, and the gate's own refusals
    assert not [r for r in caplog.records if r.getMessage().startswith("unhandled")]
    assert not [d for d in details if "None" in d or "in: " in d], details


# ---------------------------------------------------------------- what the detail says, by what failed


def test_a_connection_lost_at_the_commit_is_not_a_failure_to_connect(tmp_path: Path) -> None:
    with empty_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        try:
            with (
                psycopg.connect(url, autocommit=True) as admin,
                pytest.raises(DBAPIError) as lost,
                engine.begin() as conn,
            ):
                pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                time.sleep(0.2)  # the commit finds the connection gone
        finally:
            engine.dispose()
    assert lost.value.statement is None and lost.value.connection_invalidated
    failure = database_failure(lost.value, "retry", "retry with the same Idempotency-Key")
    assert (failure.code, failure.message) == (
        "retry",
        "the connection to the database was lost before it confirmed (AdminShutdown); "
        "retry with the same Idempotency-Key",
    )
    refused = make_engine("postgresql://mita@127.0.0.1:1/mita")  # nothing listens on port 1
    with pytest.raises(DBAPIError) as unreachable:
        refused.connect()
    failure = database_failure(unreachable.value)
    assert (failure.code, failure.message) == (
        "database_unavailable",
        "could not connect to the database (OperationalError); retry later",
    )


def test_a_pool_with_no_connection_free_is_unavailable_not_refused(tmp_path: Path) -> None:
    busy = create_engine(f"sqlite:///{tmp_path}/busy.db", pool_size=1, max_overflow=0, pool_timeout=0.05)
    with busy.connect(), pytest.raises(PoolTimeout) as waited:
        busy.connect()
    busy.dispose()
    failure = database_failure(waited.value)
    assert (failure.code, failure.message) == (
        "database_unavailable",
        "no database connection was free in time; retry later",
    )


def test_the_gate_answers_a_pool_with_no_connection_free_with_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    url = f"sqlite:///{tmp_path}/gate.db"
    database.upgrade(url)
    app = create_app(url)

    def exhausted(*_: object) -> None:
        raise PoolTimeout("QueuePool limit of size 1 overflow 0 reached")

    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            monkeypatch.setattr(registry, "authenticate", exhausted)  # the gate's API key lookup
            r = client.get("/v1/meters", headers={"X-API-Key": "mita_" + "x" * 40})
            assert (r.status_code, r.json()["code"]) == (503, "database_unavailable"), r.text
            assert r.json()["detail"] == "no database connection was free in time; retry later"
            monkeypatch.setattr(database, "check_ready", exhausted)  # the gate's readiness check
            [gate] = [m for m in app.user_middleware if m.cls.__name__ == "Gate"]
            gate.kwargs["readiness"].ready = False
            r = client.get("/v1/meters", headers={"X-API-Key": "mita_" + "x" * 40})
            assert (r.status_code, r.json()["code"]) == (503, "database_unavailable"), r.text
    finally:
        app.state.engine.dispose()
