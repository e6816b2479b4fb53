"""Defects an outside test found in the HTTP API (issue 9), each with the test that failed before the fix.

- Text as long as the API allows fits its column (a 41..100 character tariff name was a 500 on PostgreSQL).
- Bodies: a limit checked before the body is read (413), the API key checked before the body is read (401),
  JSON only (415), a client that hangs up mid-body is one line in the log.
- Every answer a route gives is in its OpenAPI entry.
- A worker starts while the database is away and says so on ``/readyz``; pooled connections a restart cut
  are replaced before use.
- Engineering tokens are idempotent by ``Idempotency-Key``, as vends are.

The fixtures (one database per backend, SQLite and PostgreSQL, set up through the registry) are test_api's.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from test_api import PG_ADMIN_URL, PG_CONNINFO, World, is_problem, master_key, world

from mita.api import create_app
from mita.api.app import MAX_BODY
from mita.vend import database, limits, registry
from mita.vend.schema import audit, tokens

__all__ = ["master_key", "world"]  # fixtures shared with test_api

ROOT = Path(__file__).resolve().parents[2]
MITA = Path(sys.executable).with_name("mita")


# ---------------------------------------------------------------------- sizes from one definition


def test_text_as_long_as_the_api_allows_fits_its_column(world: World) -> None:
    c, admin = world.client, world.admin
    name = "T" * limits.NAME
    spec = {"blocks": [{"up_to": None, "price": "1.00"}]}
    r = c.post("/v1/tariffs", json={"name": name, "currency": "ZAR", "spec": spec}, headers=admin)
    assert r.status_code == 201, r.text
    assert c.get(f"/v1/tariffs/{name}", headers=admin).status_code == 200
    r = c.post("/v1/vendors", json={"name": "V" * limits.NAME}, headers=admin)
    assert r.status_code == 201, r.text
    account = uuid.uuid4().hex.upper()[: limits.ACCOUNT].ljust(limits.ACCOUNT, "A")
    customer = {"account": account, "name": "N" * limits.PERSON, "phone": "1" * limits.PHONE}
    assert c.post("/v1/customers", json=customer, headers=admin).status_code == 201
    number = world.add_meter(customer=False, manufacturer="M" * limits.LABEL, area="A" * limits.LABEL)
    assert c.get(f"/v1/meters/{number}", headers=admin).json()["area"] == "A" * limits.LABEL
    with world.engine.connect() as conn:
        ids = set(conn.execute(select(audit.c.entity_id).where(audit.c.entity_id.in_([name, account]))).scalars())
    assert ids == {name, account}  # each audited under its full identifier
    r = c.post("/v1/tariffs", json={"name": name + "x", "currency": "ZAR", "spec": spec}, headers=admin)
    is_problem(r, 422, "invalid_request")  # one longer is the API's refusal, not the database's


# ---------------------------------------------------------------------- bodies


def test_a_body_over_the_limit_is_refused_before_it_is_read(world: World) -> None:
    c = world.client
    big = b"{" + b" " * MAX_BODY + b"}"
    h = {**world.admin, "Content-Type": "application/json"}
    body = is_problem(c.post("/v1/customers", content=big, headers=h), 413, "payload_too_large")
    assert str(MAX_BODY) in body["detail"]
    # without a length (chunked), counted as it is read
    chunks = (b" " * 65536 for _ in range(MAX_BODY // 65536 + 2))
    is_problem(c.post("/v1/customers", content=chunks, headers=h), 413, "payload_too_large")
    vend = {**world.vendor, "Content-Type": "application/json", "Idempotency-Key": str(uuid.uuid4())}
    chunks = (b" " * 65536 for _ in range(MAX_BODY // 65536 + 2))
    is_problem(c.post("/v1/vends", content=chunks, headers=vend), 413, "payload_too_large")
    # no key: the answer is 401 whatever the body, and nothing of it is read
    is_problem(c.post("/v1/customers", content=big, headers={"Content-Type": "application/json"}), 401)


@pytest.mark.parametrize(
    "method,path,body",
    [
        ("post", "/v1/customers", b'{"account": "X-415", "name": "X"}'),
        ("post", "/v1/vends", b'{"meter": "47500150231", "amount": 100}'),
        ("patch", "/v1/meters/47500150231", b'{"status": "blocked"}'),
        ("post", "/v1/quotes", b'{"meter": "47500150231", "amount": 100}'),
    ],
)
def test_a_body_must_be_json(world: World, method: str, path: str, body: bytes) -> None:
    before = world.counts()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        h = {**world.admin, "Idempotency-Key": str(uuid.uuid4())}
        if content_type:
            h["Content-Type"] = content_type
        r = world.client.request(method, path, content=body, headers=h)
        is_problem(r, 415, "unsupported_media_type")
    assert world.counts() == before
    h = {**world.admin, "Content-Type": "application/problem+json; charset=utf-8"}  # any +json type is JSON
    r = world.client.post("/v1/quotes", content=b'{"meter": "47500150231", "amount": 5000}', headers=h)
    assert r.status_code == 200, r.text


def test_a_client_that_hangs_up_mid_body_is_one_line_in_the_log(world: World, caplog: pytest.LogCaptureFixture) -> None:
    app = world.client.app
    key = world.vendor["X-API-Key"]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/v1/vends", "raw_path": b"/v1/vends", "query_string": b"", "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"200"), (b"x-api-key", key.encode()),
                    (b"idempotency-key", b"hang-up-1")],
        "client": ("127.0.0.1", 5000), "server": ("testserver", 80),
    }  # fmt: skip
    messages = iter(
        [{"type": "http.request", "body": b'{"meter": "4750', "more_body": True}, {"type": "http.disconnect"}]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    before = world.counts()
    with caplog.at_level(logging.INFO):
        anyio.run(app, scope, receive, send)
    lines = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert [r.getMessage() for r in lines] == ["client disconnected during the request body: POST /v1/vends"]
    assert not any(r.exc_info for r in caplog.records) and "Traceback" not in caplog.text
    assert world.counts() == before


def test_a_large_unauthenticated_body_does_not_grow_the_server(tmp_path: Path, master_key: str) -> None:
    """A real server process: 300 MB offered without a key; it answers 401 and its memory stays put."""
    port = _free_port()
    env = {**os.environ, "MITA_MASTER_KEY": master_key}
    url = f"sqlite:///{tmp_path}/big.db"
    server = subprocess.Popen(
        [str(MITA), "serve", "--database-url", url, "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_for(port, "/readyz")
        before = _rss_mb(server.pid)
        status, sent = _offer_body(port, 300 * 1024 * 1024, {"Content-Type": "application/json"})
        after = _rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(10)
    assert status == 401
    assert sent < 64 * 1024 * 1024  # it stopped taking the body long before its end
    assert after - before < 30, (before, after)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for(port: int, path: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"the server did not answer {path} on port {port}")


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def _offer_body(port: int, size: int, headers: dict[str, str]) -> tuple[int, int]:
    """Send a POST announcing ``size`` bytes and keep sending until the server answers; (status, bytes sent)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"POST /v1/customers HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {size}\r\n\r\n".encode()
    chunk = b" " * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        s.setblocking(False)
        deadline = time.monotonic() + 60
        answer = b""
        while time.monotonic() < deadline and b"\r\n" not in answer:
            try:
                answer += s.recv(4096)
                continue
            except BlockingIOError:
                pass
            except ConnectionError:
                break
            if sent < size:
                try:
                    sent += s.send(chunk)
                except (BlockingIOError, InterruptedError):
                    time.sleep(0.01)
                except ConnectionError:
                    time.sleep(0.05)
            else:
                time.sleep(0.01)
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split()[1]), sent


# ---------------------------------------------------------------------- OpenAPI lists every answer


def test_every_answer_seen_is_documented(world: World) -> None:
    c, op = world.client, world.operator
    paths = c.get("/openapi.json").json()["paths"]
    meter = "/v1/meters/47500150231"
    json_h, text_h = {**op, "Content-Type": "application/json"}, {**op, "Content-Type": "text/plain"}
    vend_h = {**world.vendor, "Idempotency-Key": "x", "Content-Type": "application/json"}
    seen = [
        ("/v1/meters/{drn}/confirm-key-change", "post", c.post(f"{meter}/confirm-key-change", headers=op)),
        ("/v1/meters/{drn}/key-change", "delete", c.delete(f"{meter}/key-change", headers=op)),
        ("/v1/customers", "post", c.post("/v1/customers", content=b"{", headers=json_h)),
        ("/v1/customers", "post", c.post("/v1/customers", content=b"x", headers=text_h)),
        ("/v1/vends", "post", c.post("/v1/vends", content=b"[", headers=vend_h)),
        ("/v1/meters", "get", c.get("/v1/meters", headers={"X-API-Key": "mita_nope"})),
    ]
    codes = [(path, method, r.status_code, r.json()["code"]) for path, method, r in seen]
    assert [x[2:] for x in codes] == [
        (409, "no_pending_key"), (409, "no_pending_key"), (400, "invalid_json"), (415, "unsupported_media_type"),
        (400, "invalid_json"), (401, "unauthorized"),
    ]  # fmt: skip
    for path, method, status, _ in codes:
        assert str(status) in paths[path][method]["responses"], (path, method, status)
    for path, ops in paths.items():
        for method, entry in ops.items():
            if entry.get("security"):
                assert {"500", "503"} <= entry["responses"].keys(), (path, method)
            if "requestBody" in entry:
                assert {"400", "413", "415", "422"} <= entry["responses"].keys(), (path, method)


# ---------------------------------------------------------------------- readiness and pooled connections


@pytest.fixture
def missing_pg_database() -> Iterator[str]:
    """The URL of a PostgreSQL database that does not exist yet (dropped after the test if it was made)."""
    name = f"mita_ready_{secrets.token_hex(5)}"
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_worker_starts_without_its_database_and_serves_once_it_is_there(missing_pg_database: str) -> None:
    url = missing_pg_database
    app = create_app(url)  # the database does not exist: no exception, the process serves 503s
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "alive"}
        is_problem(client.get("/readyz"), 503, "database_unavailable")
        is_problem(client.get("/v1/meters", headers={"X-API-Key": "mita_x"}), 503, "database_unavailable")
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{url.rsplit("/", 1)[1]}"')
        is_problem(client.get("/readyz"), 503, "schema_outdated")
        database.upgrade(url)
        _, key = registry.Registry(app.state.engine).create_api_key("ops", "admin")
        assert client.get("/readyz").json() == {"status": "ready", "database": "postgresql"}
        time.sleep(1.1)  # the gate asks a database that was not ready at most once a second
        r = client.get("/v1/meters", headers={"X-API-Key": key})
        assert r.status_code == 200, r.text
    app.state.engine.dispose()


def test_a_worker_starts_when_postgresql_is_unreachable() -> None:
    app = create_app(f"postgresql://postgres@127.0.0.1:{_free_port()}/mita")  # nothing listens there
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200
        body = is_problem(client.get("/readyz"), 503, "database_unavailable")
        assert "postgres@" not in body["detail"]
    app.state.engine.dispose()


def test_pooled_connections_cut_by_a_restart_are_replaced_before_use(world: World) -> None:
    c = world.client
    assert c.get("/v1/meters", headers=world.admin).status_code == 200  # the pool holds a connection now
    if world.url.startswith("postgresql"):
        name = world.engine.url.database
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:  # what a server restart does to them
            cut = conn.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
        assert cut is not None and cut[0] >= 1
        time.sleep(database.PING_AFTER_IDLE_S + 0.1)  # a restart takes longer: the idle connections are pinged
    else:  # SQLite has no server to restart: the pool is emptied as a process restart would
        world.engine.pool.dispose()
    for _ in range(3):
        assert c.get("/v1/meters", headers=world.admin).status_code == 200
        assert world.vend().status_code == 201


# ---------------------------------------------------------------------- engineering tokens


def test_engineering_tokens_are_idempotent(world: World) -> None:
    c = world.client
    number = world.add_meter(customer=False)
    h = {**world.operator, "Idempotency-Key": f"eng-{uuid.uuid4()}"}
    url = f"/v1/meters/{number}/engineering-tokens"
    first = c.post(url, json={"kind": "clear_tamper"}, headers=h)
    assert first.status_code == 201, first.text
    again = c.post(url, json={"kind": "clear_tamper"}, headers=h)
    assert again.status_code == 200 and again.json() == first.json()
    is_problem(c.post(url, json={"kind": "clear_credit"}, headers=h), 422, "idempotency_conflict")
    with world.engine.connect() as conn:
        made = conn.execute(select(func.count()).select_from(tokens).where(tokens.c.vend_id == first.json()["id"]))
        assert made.scalar_one() == 1
    other = c.post(url, json={"kind": "clear_tamper"}, headers={**h, "Idempotency-Key": f"eng-{uuid.uuid4()}"})
    assert other.status_code == 201 and other.json()["tokens"][0]["tid"] > first.json()["tokens"][0]["tid"]
    no_key = c.post(url, json={"kind": "clear_tamper"}, headers=world.operator)
    assert no_key.status_code == 201  # without a key, each call is a new token (as before)


def test_mita_serve_starts_before_its_database_and_migrates_it_when_it_comes(
    missing_pg_database: str, tmp_path: Path, master_key: str
) -> None:
    port = _free_port()
    env = {**os.environ, "MITA_MASTER_KEY": master_key}
    server = subprocess.Popen(
        [str(MITA), "serve", "--database-url", missing_pg_database, "--port", str(port), "--workers", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _wait_for(port, "/healthz")
        assert _status(port, "/readyz") == 503
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{missing_pg_database.rsplit("/", 1)[1]}"')
        _wait_for(port, "/readyz", timeout=60)  # migrated by mita serve, then every worker is ready
        assert {_status(port, "/readyz") for _ in range(6)} == {200}
    finally:
        server.terminate()
        out, _ = server.communicate(timeout=20)
    assert "not reachable" in out and "schema up to date" in out
    assert "Traceback" not in out


def _status(port: int, path: str) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        return int(s.recv(64).split()[1])
