"""What the log says when the database fails, and how other libraries' messages look in it.

A failure with no statement (the server refused, a pool with nothing free, a connection lost at a commit) names
what failed, never ``in: None``, and never the driver's text, which can quote a connection string's password.
psycopg's and SQLAlchemy's pool's records and Python's warnings come out in Mita's format (JSON lines under
``--log-format json``), not raw on standard error where a log collector cannot parse them.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import create_engine
from sqlalchemy.exc import DBAPIError

from conftest import empty_database
from mita.api import problems
from mita.vend.database import make_engine

PASSWORD = "s3cret-pw"
#: A password with a space, unquoted: libpq's error quotes the piece of the string it could not parse.
MALFORMED = f"host=127.0.0.1 port=1 password=two {PASSWORD}"


def _app(folder: Path) -> FastAPI:
    """Routes that fail as the database does, behind Mita's problem handlers."""
    app = FastAPI()
    problems.install(app)
    refused = make_engine(f"postgresql://mita:{PASSWORD}@127.0.0.1:1/mita")  # nothing listens on port 1
    busy = create_engine(f"sqlite:///{folder}/busy.db", pool_size=1, max_overflow=0, pool_timeout=0.1)
    held = busy.connect()  # the pool's one connection, never given back

    @app.get("/refused")
    def _refused() -> None:
        with refused.connect():
            pass

    @app.get("/busy")
    def _busy() -> None:
        assert not held.closed
        with busy.connect():
            pass

    @app.get("/malformed")
    def _malformed() -> None:
        psycopg.connect(MALFORMED)

    return app


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(_app(tmp_path), raise_server_exceptions=False) as c:
        yield c


def _database_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "mita.api" and "database error" in r.getMessage()]


def test_a_refused_connection_is_a_503_whose_log_line_says_so_without_the_password(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mita.api")
    r = client.get("/refused")
    assert r.status_code == 503 and r.json()["code"] == "database_unavailable"
    [line] = _database_lines(caplog)
    assert line.endswith("connecting: no connection could be made (OperationalError)"), line
    assert "in: " not in line and "None" not in line
    assert PASSWORD not in caplog.text and PASSWORD not in r.text


def test_a_connection_string_libpq_quotes_stays_out_of_the_log(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(psycopg.Error) as raised:  # what the driver itself would have logged
        psycopg.connect(MALFORMED)
    assert PASSWORD in str(raised.value)
    caplog.set_level(logging.INFO, logger="mita.api")
    r = client.get("/malformed")
    assert r.status_code == 500 and r.json()["code"] == "database_refused"
    [line] = _database_lines(caplog)
    assert "no statement recorded (ProgrammingError)" in line, line
    assert PASSWORD not in caplog.text and PASSWORD not in r.text


def test_a_pool_with_no_free_connection_is_a_503_that_says_so(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mita.api")
    r = client.get("/busy")
    assert r.status_code == 503 and r.json()["code"] == "database_unavailable", r.text
    assert r.headers["retry-after"] == "1"
    [line] = _database_lines(caplog)
    assert "waiting for a connection: none was free in the pool within its timeout (TimeoutError)" in line, line


def test_a_connection_lost_with_or_without_a_statement_says_which(tmp_path: Path) -> None:
    with empty_database("postgresql", tmp_path) as url:
        engine = make_engine(url)
        admin = psycopg.connect(url, autocommit=True)
        try:
            sites = []
            for commit in (False, True):  # killed before a statement, or before the commit
                try:
                    with engine.begin() as conn:
                        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
                        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
                        time.sleep(0.2)
                        if not commit:
                            conn.exec_driver_sql("SELECT 1")
                except DBAPIError as exc:  # the failure under test
                    sites.append(problems.failure_site(exc))
        finally:
            admin.close()
            engine.dispose()
    assert sites == [
        "in: SELECT 1 (the connection was lost: AdminShutdown, SQLSTATE 57P01)",
        "outside any statement (a commit, a rollback): the connection was lost (AdminShutdown, SQLSTATE 57P01)",
    ]


# ---------------------------------------------------------------- other libraries' records, in Mita's format

_EMIT = """
import logging, logging.config, warnings
import psycopg
from sqlalchemy.exc import OperationalError
from mita.api import logs

logging.config.dictConfig(logs.config({fmt!r}))
logging.getLogger("mita.api").warning("a line of Mita's own")
logging.getLogger("psycopg").warning("error ignored in rollback on %s: %s", "<psycopg.Connection [BAD]>",
                                     "consuming input failed:\\nserver closed the connection unexpectedly")
try:
    try:
        raise psycopg.errors.AdminShutdown("terminating connection due to administrator command")
    except psycopg.Error as orig:
        raise OperationalError("SELECT %(pin)s", {{"pin": {password!r}}}, orig) from orig
except OperationalError:
    logging.getLogger("sqlalchemy.pool.impl.QueuePool").error("Exception during reset or similar", exc_info=True)
warnings.warn("a connection was deleted while still open", ResourceWarning)
"""


def _emit(fmt: str) -> list[str]:
    code = _EMIT.format(fmt=fmt, password=PASSWORD)
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout == ""
    return done.stderr.splitlines()


def test_psycopg_pool_and_python_warnings_are_json_lines() -> None:
    lines = _emit("json")
    records = [json.loads(line) for line in lines]  # every line is one JSON object: nothing raw
    assert [(r["logger"], r["level"]) for r in records] == [
        ("mita.api", "warning"),
        ("psycopg", "warning"),
        ("sqlalchemy.pool.impl.QueuePool", "warning"),  # the pool dealt with it: a warning, not an error
        ("py.warnings", "warning"),
    ], records
    assert all({"time", "pid", "message"} <= r.keys() for r in records)
    assert records[1]["message"] == (
        "error ignored in rollback on <psycopg.Connection [BAD]>: consuming input failed: | "
        "server closed the connection unexpectedly"
    )
    assert records[2]["message"] == "Exception during reset or similar (OperationalError from AdminShutdown)"
    assert "exception" not in records[2]  # a traceback's text holds the statement's parameters
    assert re.fullmatch(
        r"ResourceWarning: a connection was deleted while still open \(<string>:\d+\)", records[3]["message"]
    ), records[3]
    assert PASSWORD not in "\n".join(lines)


def test_the_same_records_as_text_are_one_line_each() -> None:
    lines = _emit("text")
    assert len(lines) == 4, lines
    for line in lines:
        assert re.fullmatch(r"\S+Z (INFO|WARNING) \S+ .+", line), line
    assert lines[2].endswith("WARNING sqlalchemy.pool.impl.QueuePool Exception during reset or similar "
                             "(OperationalError from AdminShutdown)")  # fmt: skip
    assert PASSWORD not in "\n".join(lines)


_WORKER = """
import sys, warnings
from mita.cli import main
from mita.outbox import Worker

def run(self, **kwargs):  # a library warning while the worker runs
    warnings.warn("a connection was deleted while still open", ResourceWarning)
    return run_once(self, **kwargs)

run_once, Worker.run = Worker.run, run
sys.exit(main.main(["worker", "--once", "--database-url", {url!r}]))
"""


_INGEST = """
import sys, warnings
from mita.cli import main
from mita.headend.ingest import Counts, IngestWorker

def run(self):  # a library warning while the worker runs; no broker needed
    warnings.warn("a connection was deleted while still open", ResourceWarning)
    return Counts()

IngestWorker.run = run
sys.exit(main.main(["worker", "ingest", "--database-url", {url!r}, "--mqtt-url", "mqtt://127.0.0.1:1"]))
"""


@pytest.mark.parametrize("program", [_WORKER, _INGEST], ids=["worker", "ingest"])
def test_a_worker_logs_a_warning_as_one_line_of_its_format(program: str, tmp_path: Path) -> None:
    from mita.vend import database

    url = f"sqlite:///{tmp_path}/worker.db"
    database.upgrade(url)
    done = subprocess.run(
        [sys.executable, "-W", "default", "-c", program.format(url=url)],
        capture_output=True, text=True, timeout=120, env={**os.environ, "MITA_MASTER_KEY": "00" * 32},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    warned = [line for line in done.stderr.splitlines() if "ResourceWarning" in line]
    assert len(warned) == 1, done.stderr
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d [\d:,]+ WARNING py\.warnings: ResourceWarning: a connection was deleted while still open "
        r"\(<string>:\d+\)",
        warned[0],
    ), warned
    assert "warnings.warn(" not in done.stderr  # Python's second line, the warning's source
