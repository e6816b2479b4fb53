"""No vending key ever appears in clear in a log line, an API response, an exception message or a database column.

``conftest.py`` records every output of the run and scans it at the end of the session (failing the session on a
find, whatever order the tests ran in); this module is named to run last, and asserts the same on what the tests
before it produced, so a leak also fails as a test. The other tests here make sure the scan can fail: a key put
into each channel on purpose, through the very hooks the session uses, is found there, and reported without
being shown.
"""

from __future__ import annotations

import base64
import http.server
import logging
import os
import secrets
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from fastapi.testclient import TestClient

import cli_run
import leak_scan
from mita.keys import store
from mita.meter import Meter, storage
from mita.vend.errors import VendError

PG_ADMIN = os.environ.get("MITA_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
PG_CONNINFO = PG_ADMIN.replace("postgresql+psycopg://", "postgresql://")


def test_no_vending_key_in_any_output_of_the_tests_before_this_one() -> None:
    if not leak_scan.installed():
        pytest.skip("the key leak scan is off (MITA_LEAK_SCAN=0)")
    recorder = leak_scan.SESSION
    assert leak_scan.active() is recorder
    assert len(recorder.secrets) >= len(leak_scan.TEST_KEYS)
    recorder.read_databases()
    leaks, _ = recorder.scan()
    assert not leaks, recorder.report(leaks)


# ---------------------------------------------------------------- the scan can fail


@pytest.fixture
def fresh() -> Iterator[tuple[leak_scan.Recorder, bytes]]:
    """A recorder of its own (the session's must not see this) and a random key harvested the usual way."""
    if not leak_scan.installed():
        pytest.skip("the key leak scan is off (MITA_LEAK_SCAN=0)")
    recorder = leak_scan.Recorder()
    key = secrets.token_bytes(8)
    with leak_scan.recording(recorder):
        store.check_key(2, key)  # every vending key entering the system passes here
        assert key in recorder.secrets
        yield recorder, key
    assert key not in leak_scan.SECRETS


def found(recorder: leak_scan.Recorder, key: bytes) -> dict[str, set[str]]:
    """channel -> forms the key was found in; and the report shows the fingerprint, never the key."""
    findings, planted = recorder.scan()
    assert not planted
    report = recorder.report(findings).lower()
    for spelling in (key.hex(), str(int.from_bytes(key, "big")), base64.b64encode(key).decode().lower()):
        assert spelling not in report
    assert all(f.fingerprint == leak_scan.fingerprint(key) for f in findings)
    out: dict[str, set[str]] = {}
    for f in findings:
        out.setdefault(f.channel, set()).add(f.form)
    return out


def test_a_key_in_a_log_line_or_an_exception_is_found(fresh: tuple[leak_scan.Recorder, bytes]) -> None:
    recorder, key = fresh
    logging.getLogger("mita.leak_scan_self_test").debug("opened vending key %s", key.hex())
    try:
        raise ValueError(f"bad key {base64.b64encode(key).decode()}")
    except ValueError:
        logging.getLogger("mita.leak_scan_self_test").exception("refused")
    VendError("bad_key", f"the key {key.hex().upper()} is refused")  # recorded as it is made
    assert found(recorder, key) == {"log": {"hex", "base64"}, "exception": {"hex"}}


def test_a_key_in_an_http_response_is_found(fresh: tuple[leak_scan.Recorder, bytes]) -> None:
    recorder, key = fresh
    app = FastAPI()
    app.get("/plain")(lambda: PlainTextResponse(f"decimal {int.from_bytes(key, 'big')}."))
    app.get("/header")(lambda: PlainTextResponse("ok", headers={"X-Key": key.hex()}))
    with TestClient(app) as client:
        assert client.get("/plain").status_code == 200
        assert client.get("/header").status_code == 200
    assert found(recorder, key) == {"http": {"decimal", "hex"}}


def test_a_key_in_a_streamed_or_urllib_response_is_found(fresh: tuple[leak_scan.Recorder, bytes]) -> None:
    recorder, key = fresh
    app = FastAPI()
    app.get("/stream")(lambda: PlainTextResponse(repr(key)))
    with TestClient(app) as client, client.stream("GET", "/stream") as r:
        assert b"".join(r.iter_bytes())

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"raw:" + key + b".")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/", timeout=10) as r:
            assert r.read().startswith(b"raw:")
    finally:
        server.shutdown()
        server.server_close()
    assert found(recorder, key) == {"http": {"bytes repr", "raw bytes"}}


def test_a_key_in_cli_or_subprocess_output_is_found(
    fresh: tuple[leak_scan.Recorder, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, key = fresh

    def leaky(argv: list[str]) -> int:  # a command that prints a key, run the way the CLI tests run mita
        sys.stdout.write(f"key={key.hex()}\n")
        return 0

    monkeypatch.setattr(cli_run, "main", leaky)
    assert cli_run.run(["show"]).exit_code == 0
    run = subprocess.run([sys.executable, "-c", f"print('{key.hex().upper()}')"], capture_output=True, check=True)
    assert run.stdout
    with subprocess.Popen([sys.executable, "-c", f"import sys; sys.stderr.write('{key.hex()}')"], stderr=-1) as proc:
        proc.wait(timeout=30)  # what it left in the pipe is read here, and stays there for the test:
        assert proc.stderr is not None and proc.stderr.read() == key.hex().encode()
    assert found(recorder, key) == {"cli": {"hex"}, "subprocess": {"hex"}}


def test_a_key_in_a_sqlite_file_is_found(fresh: tuple[leak_scan.Recorder, bytes], tmp_path: Path) -> None:
    import sqlite3

    recorder, key = fresh
    db = sqlite3.connect(tmp_path / "leaky.db")
    db.execute("CREATE TABLE keys (raw BLOB, spelled TEXT)")
    db.execute("INSERT INTO keys VALUES (?, ?)", (key, key.hex()))
    db.commit()
    db.close()
    recorder.read_sqlite_files(only_dirty=True)
    assert found(recorder, key) == {"database": {"raw bytes", "hex"}}
    recorder.read_databases()
    wheres = {f.where for f in recorder.scan()[0]}
    assert any(w.endswith("keys.raw") for w in wheres) and any(w.endswith("keys.spelled") for w in wheres)


def test_a_key_in_a_postgresql_database_is_found_before_it_is_dropped(
    fresh: tuple[leak_scan.Recorder, bytes],
) -> None:
    recorder, key = fresh
    name = f"mita_leak_scan_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_CONNINFO, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_ADMIN} is required by these tests and is not reachable: {exc}")
    try:
        assert name in recorder.postgres
        with psycopg.connect(PG_CONNINFO.rsplit("/", 1)[0] + "/" + name, autocommit=True) as conn:
            conn.execute("CREATE TABLE vault (note jsonb, raw bytea)")
            conn.execute("INSERT INTO vault VALUES (%s, %s)", (f'{{"k": "{key.hex()}"}}', key))
    finally:
        with psycopg.connect(PG_CONNINFO, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    assert name not in recorder.postgres
    assert found(recorder, key) == {"database": {"hex", "raw bytes"}}
    assert {f.where for f in recorder.scan()[0]} == {
        f"PostgreSQL {name} public.vault.note",
        f"PostgreSQL {name} public.vault.raw",
    }


def test_meter_files_and_captured_output_are_recorded(
    fresh: tuple[leak_scan.Recorder, bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder, key = fresh
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    meter = Meter.create(
        drn="47500150231", ea=7, decoder_key=0x1234, sgc="123456", ti=1, krn=1, kt=2, profile="legacy-ea07"
    )
    storage.dumps(meter)
    assert recorder.channels().get("meter-file") == 1
    leak_scan.record_report_sections(
        SimpleNamespace(nodeid="t::x", sections=[("Captured stdout call", f"printed {key.hex()}\n")])
    )
    assert found(recorder, key) == {"captured": {"hex"}}


def test_a_failing_scan_fails_the_session(tmp_path: Path) -> None:
    """The session hook, in a pytest run of its own: a key in a log line of a passing test fails the run."""
    here = Path(__file__).parent
    for name in ("conftest.py", "leak_scan.py"):
        shutil.copy(here / name, tmp_path / name)
    (tmp_path / "test_leaky.py").write_text(
        "import logging\n\nimport pytest\n\n\ndef test_passes_but_logs_a_key():\n"
        "    logging.getLogger('mita.anything').info('vending key %s', 'cdcdcdcdcdcdcdcd')\n\n\n"
        "@pytest.mark.plants_key_leak('shows it', channels=('log',))\n"
        "def test_plants_a_key_on_purpose():\n"
        "    logging.getLogger('mita.other').info('vending key %s', 'abababababababab')\n"
    )
    env = {**os.environ, "MITA_VECTORS": str(tmp_path), "MITA_LEAK_SCAN": "1"}
    args = ["-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "basetemp")]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", *args, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout + run.stderr
    assert "2 passed" in run.stdout and "KEY LEAK SCAN FAILED" in run.stdout, run.stdout
    leaks = [line for line in run.stdout.splitlines() if line.startswith("  [")]
    assert [line.split()[0] for line in leaks] == ["[log]", "[captured]"], run.stdout  # pytest's copy of the log
    assert all(f"key {leak_scan.fingerprint(bytes.fromhex('cd' * 8))}" in line for line in leaks)
    assert "[log] logger mita.anything" in run.stdout
    assert "planted on purpose by test_leaky.py::test_plants_a_key_on_purpose (not leaks)" in run.stdout
    assert "cdcdcdcdcdcdcdcd" not in run.stdout.lower() and "abababababababab" not in run.stdout.lower()


# ---------------------------------------------------------------- what is and is not a match


def test_hex_must_be_a_whole_run_of_hex_digits() -> None:
    digits_only = bytes.fromhex("0123456789012345")  # its hex is all decimal digits
    sequence = bytes.fromhex("0123456789abcdef")
    m = leak_scan.Matcher([digits_only, sequence])
    assert not list(m.find("token 99990123456789012345 issued"))  # inside a 20-digit token
    assert not list(m.find("string.hexdigits is 0123456789abcdefABCDEF"))
    assert not list(m.find(b"sealed 000123456789abcdef00"))
    assert [f[0] for f in m.find("vk=0123456789012345;")] == ["hex"]
    assert [f[0] for f in m.find('{"k": "0x0123456789ABCDEF"}')] == ["hex"]
    assert [f[0] for f in m.find("\\x0123456789abcdef")] == ["hex"]


def test_weak_keys_are_not_scanned_for() -> None:
    keys = leak_scan.SecretSet()
    assert not keys.add(bytes(8), "zeros")
    assert not keys.add(b"\xff" * 20, "ones")
    assert not keys.add(b"\x01\x02\x03", "short")
    assert not keys.add("not hex", "text")
    assert keys.add("abababababababab", "the test key") and not keys.add(b"\xab" * 8, "again")
    assert len(keys) == 1 and len(keys.skipped) == 3


def test_a_key_a_test_plants_on_purpose_is_not_a_leak_unless_another_test_puts_it_out_too() -> None:
    recorder = leak_scan.Recorder()
    key = secrets.token_bytes(20)
    recorder.secrets.add(key, "planted")
    recorder.plants("tests/test_x.py::test_plants[sqlite]", "proves its own check", ("log",))
    leak_scan.set_current_test("tests/test_x.py::test_plants[postgresql]")  # the same test, other parameters
    try:
        recorder.record("log", "logger x", f"k={key.hex()}")
        recorder.record("http", "GET /", f"k={key.hex()}!")
        assert [(f.channel, f.tests) for f in recorder.scan()[0]] == [
            ("http", ("tests/test_x.py::test_plants[postgresql]",))
        ]
        assert [f.channel for f in recorder.scan()[1]] == ["log"]
        leak_scan.set_current_test("tests/test_y.py::test_other")
        recorder.record("log", "logger x", f"k={key.hex()}")
        assert sorted(f.channel for f in recorder.scan()[0]) == ["http", "log"]
    finally:
        leak_scan.set_current_test(os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0])
