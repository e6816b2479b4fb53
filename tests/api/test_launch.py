"""``mita.api.launch.run``, as ``mita serve`` calls it, in a real process: its first line says where it listens,
on which database (password hidden), with how many workers and which version; each request then writes one access
line; with two workers a scrape of ``/metrics`` adds up both workers' counts, and the counting folder is gone
after the server stops."""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from mita import __version__
from mita.api import logs
from mita.api.launch import Announce, shown_url
from mita.vend import database

START_TIMEOUT_S = 60  # several helpers share two CPUs: a cold worker can take a while to import


@dataclass
class Server:
    process: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)

    def line(self, timeout: float = START_TIMEOUT_S) -> str:
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no log line within {timeout} s") from None

    def drain(self, settle: float = 1.0) -> list[str]:
        """The lines written so far (waiting ``settle`` seconds for the last ones)."""
        out = []
        deadline = time.monotonic() + settle
        while True:
            try:
                out.append(self.lines.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                return out


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[object]:
    started: list[Server] = []

    def start(database_url: str, *, workers: int = 1, log_format: str = "text") -> Server:
        code = (
            "from mita.api import launch; "
            f"launch.run(host='127.0.0.1', port=0, workers={workers}, log_format={log_format!r}, "
            f"database_url={database_url!r})"
        )
        env = {**os.environ, "MITA_MASTER_KEY": secrets.token_hex(32), "TMPDIR": str(tmp_path)}
        env.pop("MITA_DATABASE_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        server = Server(process)
        for stream in (process.stdout, process.stderr):
            threading.Thread(target=lambda s=stream: [server.lines.put(x.rstrip("\n")) for x in s], daemon=True).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.terminate()
        try:
            server.process.wait(20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(5)


def migrated(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/served.db"
    database.upgrade(url)
    return url


def test_server_start_up_line_and_access_lines_as_text(launch: object, tmp_path: Path) -> None:
    url = migrated(tmp_path)
    server = launch(url)  # type: ignore[operator]
    first = server.line()
    match = re.fullmatch(
        r"\S+Z INFO mita\.server listening on (http://127\.0\.0\.1:\d+) "
        rf"\(database {re.escape(url)}, 1 worker, mita {re.escape(__version__)}\)",
        first,
    )
    assert match, first
    base = match.group(1)
    r = httpx.get(f"{base}/readyz", headers={"X-Request-ID": "launch-1"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-request-id"] == "launch-1"
    access = server.line()
    assert re.fullmatch(r"\S+Z INFO mita\.access GET /readyz 200 \d+\.\dms rid=launch-1 key=-", access), access
    assert httpx.get(f"{base}/metrics", timeout=30).status_code == 200
    assert " GET /metrics 200 " in server.line()
    server.process.terminate()
    server.process.wait(20)
    assert not [x for x in server.drain() if "Traceback" in x or "uvicorn" in x.lower()]


def test_server_start_up_line_as_json_hides_the_password(launch: object) -> None:
    # nothing listens on port 1: the server starts anyway, and answers 503 until the database is there
    url = "postgresql://mita:s3cret-pw@127.0.0.1:1/mita"
    server = launch(url, workers=1, log_format="json")  # type: ignore[operator]
    before = [json.loads(server.line())]  # the warning that the database is not there yet comes first
    while before[-1]["logger"] != "mita.server" and len(before) < 5:
        before.append(json.loads(server.line()))
    assert "s3cret-pw" not in json.dumps(before)
    *warnings, started = before
    assert [(w["logger"], w["level"]) for w in warnings] == [("mita.api", "warning")], warnings
    assert started["logger"] == "mita.server" and started["level"] == "info"
    assert started["database"] == "postgresql://mita:***@127.0.0.1:1/mita"
    assert (started["workers"], started["version"]) == (1, __version__)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", started["url"])
    r = httpx.get(f"{started['url']}/readyz", timeout=30)
    assert r.status_code == 503
    lines = [json.loads(x) for x in server.drain(2.0) if x.startswith("{")]
    access = [x for x in lines if x["logger"] == "mita.access"]
    assert access and access[-1]["status"] == 503 and access[-1]["code"] == "database_unavailable"
    assert not [x for x in server.drain() if "s3cret-pw" in x]


def test_the_start_up_line_waits_until_the_address_takes_connections() -> None:
    """uvicorn names its address once bound; with several workers none listens yet: the line waits for one."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logs.JsonFormatter())
    server_log = logging.getLogger("mita.server")
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    announce = Announce(database="sqlite:///x.db", workers=2)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        record = logging.makeLogRecord({
            "name": "uvicorn.error", "levelno": logging.INFO, "levelname": "INFO",
            "msg": "Uvicorn running on %s://%s:%d (Press CTRL+C to quit)", "args": ("http", "0.0.0.0", port),
        })  # fmt: skip
        try:
            assert announce.filter(record) is False  # uvicorn's own line is not written
            assert announce.filter(logging.makeLogRecord({"msg": "Started server process"})) is True
            time.sleep(0.5)
            assert out.getvalue() == ""  # bound, not listening: no start-up line yet
            sock.listen()
            deadline = time.monotonic() + 10
            while not out.getvalue() and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            server_log.removeHandler(handler)
            server_log.setLevel(logging.NOTSET)
    started = json.loads(out.getvalue())
    assert started["url"] == f"http://0.0.0.0:{port}" and started["workers"] == 2
    assert (
        started["message"]
        == f"listening on http://0.0.0.0:{port} (database sqlite:///x.db, 2 workers, mita {__version__})"
    )


def test_shown_url_hides_passwords() -> None:
    assert shown_url("postgresql+psycopg://u:pw@h:5432/d") == "postgresql+psycopg://u:***@h:5432/d"
    assert shown_url("sqlite:///mita.db") == "sqlite:///mita.db"
    assert "pw" not in shown_url("not a url :pw@")


def test_server_with_two_workers_adds_up_their_counts(launch: object, tmp_path: Path) -> None:
    url = migrated(tmp_path)
    server = launch(url, workers=2, log_format="json")  # type: ignore[operator]
    started = json.loads(server.line())
    while started["logger"] != "mita.server":  # uvicorn may say first that a worker died (and was replaced)
        assert started["logger"] == "uvicorn.error", started
        started = json.loads(server.line())
    assert started["workers"] == 2
    base = started["url"]
    assert [p.name for p in tmp_path.glob("mita-metrics-*")], "launch.run made no counting folder"
    pids: set[int] = set()
    others: list[str] = []
    sent = 0

    def one(_: int) -> int:
        with httpx.Client(timeout=30) as c:  # a connection each: either worker may take it
            return c.get(f"{base}/healthz").status_code

    deadline = time.monotonic() + 2 * START_TIMEOUT_S  # the second worker may still be starting (shared CPUs)
    with ThreadPoolExecutor(8) as pool:
        while len(pids) < 2 and time.monotonic() < deadline:
            assert set(pool.map(one, range(20))) == {200}
            sent += 20
            for line in server.drain(0.5):
                record = json.loads(line)
                if record["logger"] == "mita.access" and record["path"] == "/healthz":
                    pids.add(record["pid"])
                else:
                    others.append(line)
    assert len(pids) == 2, f"one worker answered all {sent} requests; other lines: {others}"
    for _ in range(4):  # whichever worker answers the scrape, it counts both workers' requests
        text = httpx.get(f"{base}/metrics", timeout=30).text
        match = re.search(r'^mita_http_requests_total\{method="GET",route="/healthz",status="200"\} (\S+)$', text, re.M)
        assert match, text
        assert float(match.group(1)) == sent
    server.process.terminate()
    server.process.wait(30)
    assert not list(tmp_path.glob("mita-metrics-*")), "the counting folder outlived the server"
