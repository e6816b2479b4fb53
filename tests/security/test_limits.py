"""Limits on the routes anyone can reach without a key: providers' callbacks (``/hooks/``) and the console's
sign-in (``/console/login``), and a client that hangs up mid-request.

* Bodies: the gate (:mod:`mita.api.gate`) holds both to ``MITA_MAX_BODY_BYTES`` before anything reads them,
  announced (``Content-Length``: 413 at once) or not (chunked: counted as read, 413 at the limit).
* Rate limits: there are none in Mita today (see the report of issue 16); nothing here pretends otherwise.
* A client that sends half a body and closes its socket leaves no traceback in ``mita serve``'s log, on a route
  behind a key, on a callback and on the sign-in form, and the server keeps serving.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mita.vend import database, registry

from .world import HOOK_SECRET, World, world

LIMIT = 4096
MITA = Path(sys.executable).with_name("mita")

#: unauthenticated routes that take a body, and the media type their senders use
OPEN_BODIES = {
    f"/hooks/ke1/c2b/confirm/{HOOK_SECRET}": "application/json",
    f"/hooks/ke1/stk/{HOOK_SECRET}": "application/json",
    f"/hooks/at/ussd/{HOOK_SECRET}": "application/x-www-form-urlencoded",
    "/hooks/ke1/stk/not-the-secret": "application/json",  # refused by size before the secret is even looked at
    "/console/login": "application/x-www-form-urlencoded",
}


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("limits"), max_body_bytes=str(LIMIT)) as w:
        yield w


@pytest.mark.parametrize("path", sorted(OPEN_BODIES))
def test_an_announced_oversize_body_is_refused_unread(sec: World, path: str) -> None:
    body = b"x" * (LIMIT + 1)
    r = sec.client.post(path, content=body, headers={"Content-Type": OPEN_BODIES[path]})
    assert r.status_code == 413, (path, r.status_code, r.text[:200])
    assert r.json()["code"] == "payload_too_large"


@pytest.mark.parametrize("path", sorted(OPEN_BODIES))
def test_a_chunked_oversize_body_is_refused_at_the_limit(sec: World, path: str) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: httpx sends it chunked (TestClient buffers it whole,
        for _ in range(64):  # so what is read is tests/api/test_api_hardening.py's to show, on a real server)
            yield b"x" * 1024

    r = sec.client.post(path, content=chunks(), headers={"Content-Type": OPEN_BODIES[path]})
    if "not-the-secret" in path:  # the route looks at its secret before it reads: a 404, nothing read
        assert r.status_code == 404, r.status_code
    else:
        assert r.status_code == 413, (path, r.status_code, r.text[:200])


def test_a_body_within_the_limit_reaches_the_route(sec: World) -> None:
    """The control: the same routes take a body under the limit (the 413s above are the size's)."""
    r = sec.client.post(f"/hooks/ke1/stk/{HOOK_SECRET}", json={"Body": {}})
    assert r.status_code not in (404, 413), r.text
    r = sec.client.post("/console/login", data={"name": "x", "password": "y", "csrf": "z"})
    assert r.status_code == 403  # the sign-in form's own CSRF, so the body was read


# ---------------------------------------------------------------------- hanging up mid-request, on a real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _status(port: int, request: bytes) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request)
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 "), answer[:100]
    return int(answer.split()[1])


def _half(port: int, path: str, headers: dict[str, str], declared: int = 2000) -> None:
    """Announce ``declared`` bytes, send a part, and close the socket without reading an answer."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\n{head}Content-Length: {declared}\r\n\r\n".encode())
        s.sendall(b'{"meter": "4750015')
        time.sleep(0.2)  # the server is waiting for the rest
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST, not FIN


@dataclass
class Served:
    port: int
    key: str
    log: Path

    def tracebacks_since(self, offset: int) -> str:
        text = self.log.read_bytes()[offset:].decode(errors="replace")
        return text if "Traceback" in text or "Exception in ASGI application" in text else ""


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``mita serve`` as a process over a fresh SQLite file, its log in a file; a vendor's key."""
    folder = tmp_path_factory.mktemp("serve")
    master = secrets.token_hex(32)
    url = f"sqlite:///{folder}/serve.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", master)
        database.upgrade(url)
        engine = database.make_engine(url)
        reg = registry.Registry(engine)
        vendor = reg.create_vendor(registry.SYSTEM, "Corner shop")
        key = reg.create_api_key("till", "vendor", vendor["id"])[1]
        engine.dispose()
    port = _free_port()
    env = {**os.environ, "MITA_MASTER_KEY": master, "MITA_HOOK_SECRET": HOOK_SECRET}
    log = folder / "serve.log"
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(MITA), "serve", "--database-url", url, "--port", str(port)],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if _status(port, READY) == 200:
                        break
                except (OSError, AssertionError):
                    pass
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            yield Served(port, key, log)
        finally:
            server.terminate()
            server.wait(15)


READY = b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
JSON = {"Content-Type": "application/json"}
HANG_UPS = {
    "a vend (behind a key)": ("/v1/vends", JSON),
    "a callback": (f"/hooks/ke1/stk/{HOOK_SECRET}", JSON),
    "the console's sign-in": ("/console/login", {"Content-Type": "application/x-www-form-urlencoded"}),
}


@pytest.mark.slow
@pytest.mark.parametrize("what", list(HANG_UPS))
def test_a_client_that_hangs_up_mid_body_leaves_no_traceback(served: Served, what: str) -> None:
    path, headers = HANG_UPS[what]
    if path == "/v1/vends":
        headers = {**headers, "X-API-Key": served.key, "Idempotency-Key": secrets.token_hex(8)}
    offset = served.log.stat().st_size
    for _ in range(3):
        _half(served.port, path, headers)
    deadline = time.monotonic() + 15
    while b"client disconnected during the request body" not in served.log.read_bytes()[offset:]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    time.sleep(0.3)  # a traceback after the line would follow it at once
    assert _status(served.port, READY) == 200  # still serving
    log = served.log.read_bytes()[offset:].decode(errors="replace")
    assert "client disconnected during the request body" in log, log  # seen, as one line
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log
