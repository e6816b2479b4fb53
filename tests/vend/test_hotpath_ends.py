"""The event loop's vend meets a session PostgreSQL has ended (a restart, a terminated backend) and says so at
once, on both loops the server can run: asyncio's own and uvloop, which uvicorn picks when it is installed.

Under uvloop a reader left on while libpq read the end of the session was never called again, and each vend on
such a connection waited out its whole deadline (15 s) before answering 503: after a database restart, the pool's
connections held a worker's vends for a minute (the reliability suite's recovery check found it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import uvloop

from conftest import empty_database
from mita.vend import hotpath

RUNNERS: dict[str, Callable[[Coroutine[Any, Any, None]], None]] = {"asyncio": asyncio.run, "uvloop": uvloop.run}


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    with empty_database("postgresql", tmp_path) as empty:
        yield empty


@pytest.mark.parametrize("loop", sorted(RUNNERS))
@pytest.mark.parametrize("sessions", [1, 4])
def test_a_session_the_server_ended_fails_at_once(
    url: str, loop: str, sessions: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hotpath, "ROUND_TRIP_DEADLINE_S", 10.0)
    outcomes: list[tuple[str, float]] = []

    async def run() -> None:
        conns = [await psycopg.AsyncConnection.connect(url, autocommit=True) for _ in range(sessions)]
        for conn in conns:  # each used once first, as a pooled connection has been
            await hotpath._pipeline(conn, [("BEGIN", None), ("COMMIT", None)])
        with psycopg.connect(url, autocommit=True) as admin:
            for conn in conns:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        await asyncio.sleep(0.2)  # the server's last message and the end of the session are in each socket

        async def one(conn: psycopg.AsyncConnection[Any]) -> None:
            started = time.monotonic()
            try:
                await hotpath._pipeline(conn, [("BEGIN", None), ("COMMIT", None)])
                outcomes.append(("answered", time.monotonic() - started))
            except Exception as exc:
                outcomes.append((type(exc).__name__, time.monotonic() - started))

        await asyncio.gather(*(one(conn) for conn in conns))
        for conn in conns:
            await conn.close()

    RUNNERS[loop](run())
    assert [kind for kind, _ in outcomes] == ["OperationalError"] * sessions  # not the deadline's VendError
    assert max(seconds for _, seconds in outcomes) < 2.0
