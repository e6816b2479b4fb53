"""The key leak scan: no vending key may show in clear in what the system puts out.

The requirement: no vending key ever appears in a log line, an API response, an exception message or a database
column in clear. Tests cannot check that one output at a time (a leak is where nobody looked), so this module,
installed for the whole pytest session by ``conftest.py``, *records* every output the suite makes the code
produce, and scans it all, at the end, for every vending key the suite used:

=============  ==============================================================================================
channel        how it is captured
=============  ==============================================================================================
log            a handler on the root logger (and the ``mita`` loggers set to DEBUG): each record's message,
               and the type and message of an attached exception (not its traceback's source lines: code)
exception      every :class:`mita.sts.StsError` (all of mita's errors) as it is made, and SQLAlchemy's
               statement errors (their text carries the statement's parameters)
http           every response ``httpx`` (so ``TestClient``) receives, headers and body, streamed or not;
               every body read through ``http.client`` (``urllib`` against a real ``mita serve``)
cli            ``mita`` run in-process by the tests (``cli_run.run``: stdout, stderr) and ``mita token batch``
               answers (``token_ops.handle``)
subprocess     stdout/stderr of subprocesses read with ``communicate`` (``subprocess.run``), and what a
               finished process left unread in its pipes (``mita serve``'s log, read at ``wait``)
database       every SQLite file opened (``sqlite3.connect``): raw pages of the file, its WAL and journal
               before each test's teardown and at the end (raw bytes and hex only, see below), and every
               column of every table at the end;
               every PostgreSQL database the suite creates: every column of every table just before its
               ``DROP DATABASE`` (intercepted in psycopg), or at the end if it is never dropped
meter-file     every virtual meter state written (``mita.meter.storage.dumps``)
http-out       every HTTP request Mita's own code sends (httpx or ``http.client``, made from a ``mita`` module:
               partners' webhooks, Kannel's sendsms with the SMS text in its query, Daraja): method, URL,
               headers and body; a test's own requests are inputs, not outputs
mqtt           every MQTT message published in the test process (paho's ``Client.publish``: commands, acks,
               readings, status), topic and payload
captured       stdout, stderr and log pytest captured for each test; warnings
=============  ==============================================================================================

The keys come from a fixed list (the test keys of the suite and of the conformance vectors) and are harvested as
the run goes: every key passing :func:`mita.keys.store.check_key` (every vending key entering the system goes
through it: software and PKCS#11 import, generation, supply group creation), every key file parsed by
:func:`mita.vend.keyring.parse_import`, every ``vending_key`` (or hex ``key``) in an HTTP request body or a
``mita`` run (``cli_run.run``). Tests may add their own: ``leak_scan.add_secret(key_bytes, "what it is")``.

Only outputs are scanned: the vectors and test files hold the keys, and so do requests.

Matching, for each key K (reported by fingerprint, sha256(K)[:8], never in clear):

* raw: the bytes of K anywhere in a binary blob, or as latin-1 characters or as Python's bytes repr
  (``\\xab\\xab...``) in text;
* hex: a maximal run of hex digits equal to K's hex, any case. A run, not a substring: that keeps a key made of
  decimal digits from matching inside a 20-digit token, and ``0123456789abcdef`` inside
  ``0123456789abcdefABCDEF``. The price: K's hex glued to other hex digits (no separator) is not seen; for a
  random key, such an accident is as unlikely as any 16-digit coincidence. In the raw pages of a database file,
  where values are packed side by side (a key's hex may touch the last digit of the value before), hex is a
  substring match (any case), and only raw bytes and hex are looked for: the column scan finds the rest;
* decimal: a maximal run of digits equal to ``int(K)`` (12 digits or more), base64: a maximal base64 run equal
  to K's base64 (standard or URL-safe, padding aside).

Keys with fewer than 8 bytes, or made of one repeated 0x00 or 0xFF byte, are not scanned (they occur everywhere
by themselves); the report counts them.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Content = str | bytes

# ---------------------------------------------------------------------------------------------------- the keys

#: The suite's test vending keys (hex), with where they come from. The conformance vectors' keys are added from
#: the vector files themselves (every field named ``*vending_key*``), see :func:`fixed_secrets`.
TEST_KEYS: dict[str, str] = {
    "abababababababab": "STS 531 test key: vend_fixtures.VENDING_KEY, sample.TEST_VENDING_KEY, test_api, ...",
    "cdcdcdcdcdcdcdcd": "vend_fixtures.SECOND_KEY",
    "0123456789abcdef": "test_api.OTHER_VENDING_KEY",
    "ab" * 20: "DKGA04 test key of test_batch / test_properties",
    "abababababababab949494949494949401234567": "DKGA04 vectors' key (test_errors.VK04)",
}


def fingerprint(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _weak(key: bytes) -> str | None:
    """Why a key cannot be scanned for (it would be found everywhere), or None."""
    if len(key) < 8:
        return "shorter than 8 bytes"
    if len(set(key)) == 1 and key[0] in (0x00, 0xFF):
        return "one repeated 0x00 or 0xFF byte"
    return None


class SecretSet:
    """Keys to look for, each with a label saying where it came from (never the key)."""

    def __init__(self) -> None:
        self._keys: dict[bytes, str] = {}
        self.skipped: dict[bytes, str] = {}
        self._lock = threading.Lock()
        self.version = 0
        self._matcher: Matcher | None = None

    def add(self, key: bytes | bytearray | memoryview | str, label: str) -> bool:
        """Add a key (bytes, or hex text); False if it was known already or is not scannable."""
        try:
            raw = bytes.fromhex(key) if isinstance(key, str) else bytes(key)
        except ValueError:
            return False
        with self._lock:
            if raw in self._keys or raw in self.skipped:
                return False
            why = _weak(raw)
            if why is not None:
                self.skipped[raw] = f"{label}: {why}"
                return False
            self._keys[raw] = label
            self.version += 1
            self._matcher = None
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._keys

    def __len__(self) -> int:
        return len(self._keys)

    def label(self, key: bytes) -> str:
        return self._keys.get(key, "?")

    def matcher(self) -> Matcher:
        with self._lock:
            if self._matcher is None:
                self._matcher = Matcher(list(self._keys))
            return self._matcher


class Matcher:
    """Every spelling of a set of keys, compiled for fast scanning of many blobs."""

    def __init__(self, keys: list[bytes]) -> None:
        self.keys = keys
        self.hex = {k.hex().encode(): k for k in keys}
        self.dec = {}
        for k in keys:
            text = str(int.from_bytes(k, "big")).encode()
            if len(text) >= 12:
                self.dec[text] = k
        self.b64 = {}
        for k in keys:
            self.b64[base64.b64encode(k).rstrip(b"=")] = k
            self.b64[base64.urlsafe_b64encode(k).rstrip(b"=")] = k
        self.raw = {k: k for k in keys}
        self.reprs = {repr(k)[2:-1].encode("ascii"): k for k in keys}
        self.reprs = {r: k for r, k in self.reprs.items() if r not in self.raw}
        longest_first = sorted(keys, key=len, reverse=True)
        self._raw_re = _alternation(longest_first)
        self._repr_re = _alternation(sorted(self.reprs, key=len, reverse=True))
        self._hex_run = _run(rb"[0-9A-Fa-f]", min((len(h) for h in self.hex), default=0))
        self._dec_run = _run(rb"[0-9]", min((len(d) for d in self.dec), default=0))
        self._b64_run = _run(rb"[A-Za-z0-9+/_-]", min((len(b) for b in self.b64), default=0))

    def find(self, content: Content, *, binary: bool = False) -> Iterator[tuple[str, bytes, bytes, int, int]]:
        """(form, key, blob, start, end) for every occurrence of a key in ``content``.

        A ``binary`` blob (a page of a database file: values packed side by side) is searched for the raw bytes
        and for the hex as a substring, any case: there a key's hex may well touch another value's last byte,
        which may be a hex digit. The other spellings, in a database, are the column scan's to find.
        """
        if not self.keys:
            return
        if binary:
            lowered = content.lower() if isinstance(content, bytes) else b""
            for spelled, key in self.hex.items():
                at = lowered.find(spelled)
                if at >= 0:
                    yield "hex", key, lowered, at, at + len(spelled)
            if self._raw_re is not None and isinstance(content, bytes):
                for m in self._raw_re.finditer(content):
                    yield "raw bytes", self.raw[m.group()], content, m.start(), m.end()
            return
        if isinstance(content, str):
            blob = content.encode("utf-8", "surrogateescape")
            views = [blob] if content.isascii() else [blob, content.encode("latin-1", "replace")]
        else:
            blob = content
            views = [blob]
        for form, pattern, table, fold in (
            ("hex", self._hex_run, self.hex, True),
            ("decimal", self._dec_run, self.dec, False),
            ("base64", self._b64_run, self.b64, False),
        ):
            if pattern is None:
                continue
            for m in pattern.finditer(blob):
                run = m.group()
                key = table.get(run.lower() if fold else run)
                if key is not None:
                    yield form, key, blob, m.start(), m.end()
        for view in views:
            if self._raw_re is not None:
                for m in self._raw_re.finditer(view):
                    yield "raw bytes", self.raw[m.group()], view, m.start(), m.end()
        if self._repr_re is not None:
            for m in self._repr_re.finditer(blob):
                yield "bytes repr", self.reprs[m.group()], blob, m.start(), m.end()

    def redact(self, text: str) -> str:
        """``text`` with every key spelling in it replaced by the key's fingerprint (for labels in reports)."""
        blob = text.encode("utf-8", "surrogateescape")
        spans = sorted({(s, e, fingerprint(k)) for _, k, view, s, e in self.find(text) if view == blob})
        if not spans:
            return text
        out, at = [], 0
        for s, e, fp in spans:
            if s < at:
                continue
            out.append(blob[at:s].decode("utf-8", "replace"))
            out.append(f"<key {fp}>")
            at = e
        out.append(blob[at:].decode("utf-8", "replace"))
        return "".join(out)


def _alternation(literals: list[bytes]) -> re.Pattern[bytes] | None:
    return re.compile(b"|".join(re.escape(x) for x in literals)) if literals else None


def _run(char_class: bytes, shortest: int) -> re.Pattern[bytes] | None:
    """Maximal runs of the class, ``shortest`` long at least (finditer starts each at the start of its run)."""
    return re.compile(char_class + b"{%d,}" % shortest) if shortest else None


# ---------------------------------------------------------------------------------------------- recording


@dataclass(frozen=True)
class Finding:
    channel: str
    where: str
    form: str
    fingerprint: str
    label: str
    offset: int
    context: str
    tests: tuple[str, ...] = ()
    occurrences: int = 1

    def line(self) -> str:
        times = f" (and {self.occurrences - 1} more identical outputs)" if self.occurrences > 1 else ""
        during = ""
        if self.tests:
            more = f" and {len(self.tests) - 1} more" if len(self.tests) > 1 else ""
            during = f" during {self.tests[0] or 'the session (no test running)'}{more}"
        return (
            f"[{self.channel}] {self.where}{during}: key {self.fingerprint} ({self.label}) as {self.form} "
            f"at offset {self.offset}{times}: {self.context}"
        )


#: Tests that put a key into an output *on purpose*, and the channels where they do: findings there, in outputs
#: made only by these tests, are reported as planted (counted in the summary), not as leaks. Test ids without their
#: parameters. New tests can say so themselves: ``@pytest.mark.plants_key_leak("why", channels=(...))``.
PLANTED_BY_TESTS: dict[str, tuple[tuple[str, ...], str]] = {
    "tests/vend/test_vend_service.py::test_no_vending_key_in_any_column_of_any_table": (
        ("database",),
        "writes the test key into vends.receipt to show its own column scan finds it",
    ),
    "tests/sts/test_properties.py::test_batch_handle_never_raises": (
        ("exception", "cli"),
        "fuzzes every field, op and sgc included, with a vector key's hex; errors quote such fields' values "
        "('op must be one of ... (got ...)'): input given in a field that is not a key, echoed back",
    ),
}

#: The test running now (pytest's node id), set by conftest; outputs are attributed to it.
current_test = ""


def set_current_test(nodeid: str) -> None:
    global current_test
    current_test = nodeid


def _bare(nodeid: str) -> str:
    return nodeid.split("[", 1)[0]


class Recorder:
    """Outputs captured during a run (each with the tests during which it was made), and the keys to look for."""

    def __init__(self, secrets: SecretSet | None = None) -> None:
        self.secrets = secrets if secrets is not None else SecretSet()
        # content -> [channel, where, count, binary, tests]; identical outputs are kept once
        self._items: dict[Content, list[Any]] = {}
        self._lock = threading.Lock()
        self.notes: list[str] = []
        self.sqlite_files: dict[str, list[Any]] = {}  # path -> [opened since last read, test that opened it]
        self._file_signatures: dict[str, tuple[int, int]] = {}
        self.postgres: dict[str, tuple[dict[str, Any], str]] = {}  # database -> (connection parameters, test)
        self.planted: dict[str, tuple[tuple[str, ...], str]] = {}  # test id -> (channels or all, why)
        self._scanned: dict[Content, tuple[int, list[Finding]]] = {}
        self.scan_seconds = 0.0
        self.read_seconds = 0.0

    def record(
        self, channel: str, where: str, content: Content | None, *, binary: bool = False, test: str | None = None
    ) -> None:
        """One output; ``binary``: raw bytes of a file, where a hex spelling may touch unrelated bytes."""
        if not content:
            return
        if isinstance(content, bytearray | memoryview):
            content = bytes(content)
        test = current_test if test is None else test
        with self._lock:
            item = self._items.get(content)
            if item is None:
                self._items[content] = [channel, where, 1, binary, {test}]
            else:
                item[2] += 1
                item[4].add(test)

    def note(self, text: str) -> None:
        with self._lock:
            if text not in self.notes:
                self.notes.append(text)

    def channels(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        with self._lock:
            for channel, *_ in self._items.values():
                counts[channel] = counts.get(channel, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._items)

    # ------------------------------------------------------------------ databases

    def sqlite_opened(self, path: str) -> None:
        with self._lock:
            entry = self.sqlite_files.get(path)
            if entry is None:
                self.sqlite_files[path] = [True, current_test]
            else:
                entry[0] = True

    def read_sqlite_files(self, *, only_dirty: bool, columns: bool = False) -> None:
        """Record the raw bytes of the SQLite files (and their WAL and journal) that changed since last read."""
        with self._lock:
            paths = [(p, e[1]) for p, e in self.sqlite_files.items() if e[0] or not only_dirty]
            for p, _ in paths:
                self.sqlite_files[p][0] = False
        for path, owner in paths:
            for suffix in ("", "-wal", "-journal"):
                file = path + suffix
                try:
                    st = os.stat(file)
                    signature = (st.st_size, st.st_mtime_ns)
                    if self._file_signatures.get(file) == signature:
                        continue
                    data = Path(file).read_bytes()
                except FileNotFoundError:
                    if not suffix and file not in self._file_signatures:
                        self.note(f"SQLite file {file} was gone before it could be read")
                    continue
                except OSError as exc:
                    self.note(f"SQLite file {file} could not be read: {exc}")
                    continue
                self._file_signatures[file] = signature
                for offset, page in _pages(data, suffix):  # pages repeat (the template, the WAL): read once
                    self.record("database", f"SQLite file {file} @{offset}", page, binary=True, test=owner)
            if columns and os.path.exists(path):
                self._sqlite_columns(path, owner)

    def _sqlite_columns(self, path: str, owner: str) -> None:
        try:
            conn = _originals.get("sqlite3.connect", sqlite3.connect)(path, timeout=2)
        except Exception as exc:
            self.note(f"SQLite file {path} could not be opened: {exc}")
            return
        try:
            names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            for name in names:
                cur = conn.execute(f'SELECT * FROM "{name}"')
                self._columns(f"SQLite {path} {name}", [d[0] for d in cur.description], cur, owner)
        except Exception as exc:
            self.note(f"SQLite file {path} could not be read by table: {exc}")
        finally:
            conn.close()

    def postgres_created(self, name: str, params: dict[str, Any]) -> None:
        with self._lock:
            self.postgres[name] = (params, current_test)

    def read_postgres(self, name: str, params: dict[str, Any], *, dropping: bool) -> None:
        """Record every column of every table of a PostgreSQL database (the suite's own: it is about to go)."""
        import psycopg

        with self._lock:
            owner = (self.postgres.pop(name, None) if dropping else self.postgres.get(name)) or ({}, current_test)
        try:
            conn = psycopg.connect(**{**params, "dbname": name, "connect_timeout": 5}, autocommit=True)
        except psycopg.OperationalError as exc:
            if "does not exist" not in str(exc):
                self.note(f"PostgreSQL database {name} could not be opened to be scanned: {exc}")
            return
        try:
            tables = conn.execute(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
            ).fetchall()
            for schema, table in tables:
                cur = conn.execute(f'SELECT * FROM "{schema}"."{table}"')
                columns = [d.name for d in cur.description or ()]
                self._columns(f"PostgreSQL {name} {schema}.{table}", columns, cur, owner[1])
        except Exception as exc:
            self.note(f"PostgreSQL database {name} could not be read by table: {exc}")
        finally:
            conn.close()

    def _columns(self, where: str, columns: list[str], rows: Iterable[Any], owner: str) -> None:
        values: list[list[bytes]] = [[] for _ in columns]
        for row in rows:
            for i, value in enumerate(row):
                if value is not None:
                    values[i].append(_as_bytes(value))
        for column, got in zip(columns, values, strict=True):
            if got:
                self.record("database", f"{where}.{column}", b"\n".join(got), test=owner)

    def read_databases(self) -> None:
        """The end of a run (or of a part of it): every SQLite file still there, every PostgreSQL database left."""
        started = time.perf_counter()
        self.read_sqlite_files(only_dirty=False, columns=True)
        with self._lock:
            left = [(name, params) for name, (params, _) in self.postgres.items()]
        for name, params in left:
            self.read_postgres(name, params, dropping=False)
        self.read_seconds += time.perf_counter() - started

    # ------------------------------------------------------------------ scanning

    def plants(self, nodeid: str, why: str, channels: tuple[str, ...] = ()) -> None:
        """Test ``nodeid`` puts keys into outputs on purpose (in ``channels``, or in any)."""
        self.planted[_bare(nodeid)] = (channels, why)

    def _is_planted(self, finding: Finding) -> bool:
        known = {**PLANTED_BY_TESTS, **self.planted}
        for test in finding.tests:
            entry = known.get(_bare(test))
            if entry is None:
                return False
            channels = set(entry[0]) | ({"captured"} if "log" in entry[0] else set())  # pytest's copy of the log
            if channels and finding.channel not in channels:
                return False
        return bool(finding.tests)

    def scan(self) -> tuple[list[Finding], list[Finding]]:
        """(leaks, planted): every key found in the outputs; planted ones were put there on purpose by tests."""
        started = time.perf_counter()
        matcher = self.secrets.matcher()
        version = self.secrets.version
        with self._lock:
            items = [(content, *item[:4], tuple(sorted(item[4]))) for content, item in self._items.items()]
        findings: list[Finding] = []
        for content, channel, where, count, binary, tests in items:
            cached = self._scanned.get(content)
            if cached is not None and cached[0] == version:
                found = cached[1]
            else:
                found = self._scan_one(matcher, channel, where, content, binary)
                self._scanned[content] = (version, found)
            findings += [dataclasses.replace(f, occurrences=count, tests=tests) for f in found]
        self.scan_seconds += time.perf_counter() - started
        leaks = [f for f in findings if not self._is_planted(f)]
        return leaks, [f for f in findings if self._is_planted(f)]

    def _scan_one(self, matcher: Matcher, channel: str, where: str, content: Content, binary: bool) -> list[Finding]:
        out: dict[tuple[str, str], Finding] = {}
        for form, key, blob, start, end in matcher.find(content, binary=binary):
            fp = fingerprint(key)
            if (fp, form) in out:
                continue
            before, after = blob[max(0, start - 40) : start], blob[end : end + 40]
            context = matcher.redact(_show(before) + f"<key {fp}>" + _show(after))
            label = self.secrets.label(key)
            out[(fp, form)] = Finding(channel, matcher.redact(where), form, fp, label, start, context)
        return list(out.values())

    def report(self, leaks: list[Finding]) -> str:
        lines = [
            f"{len(leaks)} key leak(s): vending key material in clear in the outputs of this run "
            f"({len(self.secrets)} keys looked for, by fingerprint sha256(key)[:8]; the keys are never printed)"
        ]
        lines += ["  " + f.line() for f in leaks]
        return "\n".join(lines)

    def summary(self, planted: list[Finding] | None = None) -> str:
        channels = ", ".join(f"{n} {c}" for c, n in sorted(self.channels().items()))
        text = (
            f"key leak scan: {len(self.secrets)} vending keys looked for in {len(self)} distinct outputs "
            f"({channels or 'none'}); databases read at the end in {self.read_seconds:.1f}s, scanned in "
            f"{self.scan_seconds:.1f}s"
        )
        if self.secrets.skipped:
            text += f"; {len(self.secrets.skipped)} key(s) too weak to scan for"
        if planted:
            tests = sorted({_bare(t) for f in planted for t in f.tests})
            text += f"; {len(planted)} finding(s) planted on purpose by {', '.join(tests)} (not leaks)"
        return text


#: What a page is read with of the next one: a key's longest spelling (hex, decimal, repr of 20 bytes) fits in it.
PAGE_OVERLAP = 128


def _pages(data: bytes, suffix: str) -> Iterator[tuple[int, bytes]]:
    """A SQLite file cut into its pages (a WAL into its frames' pages), each with the start of the next."""
    start, step, size = 0, 4096, 4096
    try:
        if suffix == "-wal" and len(data) >= 32:
            size = int.from_bytes(data[8:12], "big")  # WAL header: page size; frames are a 24-byte header + page
            start, step = 32 + 24, size + 24
        elif not suffix and data[:16] == b"SQLite format 3\x00":
            size = int.from_bytes(data[16:18], "big")
            size = 65536 if size == 1 else size
            step = size
    except (IndexError, ValueError):
        start, step, size = 0, 4096, 4096
    if not 512 <= size <= 65536:
        start, step, size = 0, 4096, 4096
    if start:
        yield 0, data[:start]
    for offset in range(start, len(data), step):
        yield offset, data[offset : offset + size + PAGE_OVERLAP]


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, dict | list):
        return json.dumps(value, default=str).encode()
    return str(value).encode("utf-8", "backslashreplace")


def _show(blob: bytes) -> str:
    return blob.decode("utf-8", "backslashreplace").encode("unicode_escape").decode("ascii")


# --------------------------------------------------------------------- the session's recorder, and swapping

SECRETS = SecretSet()
SESSION = Recorder(SECRETS)
_active = SESSION


def active() -> Recorder:
    return _active


@contextlib.contextmanager
def recording(recorder: Recorder) -> Iterator[Recorder]:
    """Send everything captured to ``recorder`` for a while (the scanner's own tests use it)."""
    global _active
    previous, _active = _active, recorder
    try:
        yield recorder
    finally:
        _active = previous


def add_secret(key: bytes | str, label: str) -> bool:
    """A key the scan must look for (bytes, or hex): for tests with keys that never pass ``check_key``."""
    return _active.secrets.add(key, label)


def fixed_secrets(secrets: SecretSet, vectors: Path | None) -> None:
    """The suite's test keys, the sample and demo keys of the code, and every vending key of the vectors."""
    for hex_key, label in TEST_KEYS.items():
        secrets.add(hex_key, label)
    with contextlib.suppress(Exception):
        from mita.vend import sample

        secrets.add(sample.TEST_VENDING_KEY, "mita.vend.sample.TEST_VENDING_KEY")
    with contextlib.suppress(Exception):
        from mita.cli import tour

        secrets.add(tour.DEMO_VENDING_KEY, "mita.cli.tour.DEMO_VENDING_KEY")
    if vectors is None or not vectors.is_dir():
        return  # the vector tests fail loudly about it
    for file in sorted(vectors.glob("*.json")):
        try:
            text = file.read_text(encoding="utf-8")
        except OSError:
            continue
        for field, value in re.findall(r'"(\w*vending_key\w*)"\s*:\s*"([0-9A-Fa-f]{16,})"', text):
            secrets.add(value, f"vectors {file.name} {field}")


_JSON_VENDING_KEY = re.compile(rb'"vending_key\w*"\s*:\s*"([0-9A-Fa-f]{16,})"')
_JSON_IMPORT_KEY = re.compile(rb'"key"\s*:\s*"([0-9A-Fa-f]{16,})"')


def harvest_text(content: Content | None, label: str) -> None:
    """Vending keys given in a request: JSON ``vending_key`` fields, and ``key`` fields holding hex (a key file,
    the API's key import ``{"krn": 2, "key": ...}``, a campaign's target): a key refused before ``check_key``
    (too long, say) must not be echoed either."""
    if not content:
        return
    blob = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else bytes(content)
    if b"vending_key" in blob:
        for m in _JSON_VENDING_KEY.finditer(blob):
            add_secret(m.group(1).decode(), label)
    if b'"key"' in blob:
        for m in _JSON_IMPORT_KEY.finditer(blob):
            add_secret(m.group(1).decode(), label)


def exception_text(exc: BaseException) -> str:
    """Type and message of an exception and of its causes; not the source lines of its traceback (code)."""
    out: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        out += traceback.format_exception_only(type(current), current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return "".join(out)


def _words(args: Any) -> str:
    """The leading plain words of a command line (program, subcommands), never its option values."""
    if isinstance(args, str | bytes | os.PathLike):
        args = [args]
    words = []
    for i, arg in enumerate(list(args or ())):
        text = os.fsdecode(arg) if isinstance(arg, str | bytes | os.PathLike) else str(arg)
        if i == 0 and os.sep in text:
            text = os.path.basename(text)
        if not re.fullmatch(r"[A-Za-z][\w.-]*", text):
            break
        words.append(text)
    return " ".join(words) or "?"


# ------------------------------------------------------------------------------------ installing the hooks

_originals: dict[str, Any] = {}
_undo: list[Callable[[], None]] = []
_installed = False


def _patch(owner: Any, name: str, make: Callable[[Any], Any], key: str) -> None:
    original = getattr(owner, name)
    _originals[key] = original
    wrapped = make(original)
    functools.update_wrapper(wrapped, original)
    setattr(owner, name, wrapped)
    _undo.append(lambda: setattr(owner, name, original))


def _rebind(original: Any, replacement: Any) -> None:
    """Where a mita module imported ``original`` by name (``from x import f``), point it at ``replacement``."""
    import sys

    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("mita") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)
                _undo.append(lambda m=module, a=attr: setattr(m, a, original))


class _LogCapture(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            try:
                message = record.getMessage()
            except Exception:
                message = f"{record.msg!r} % {record.args!r}"
            text = f"{record.levelname} {record.name}: {message}"
            if record.exc_info and record.exc_info[1] is not None:
                text += "\n" + exception_text(record.exc_info[1])
            _active.record("log", f"logger {record.name} ({record.pathname}:{record.lineno})", text)
        except Exception:
            self.handleError(record)


def installed() -> bool:
    return _installed


def install(vectors: Path | None = None) -> None:
    """Start recording (idempotent): wrap the places outputs leave and keys enter; see the module docstring."""
    global _installed
    if _installed:
        return
    _installed = True
    fixed_secrets(SECRETS, vectors)
    _install_logging()
    _install_keys()
    _install_exceptions()
    _install_http()
    _install_cli()
    _install_subprocess()
    _install_databases()
    _install_meter_files()
    _install_outgoing()


def uninstall() -> None:
    global _installed
    while _undo:
        _undo.pop()()
    _installed = False


def _install_logging() -> None:
    handler = _LogCapture(logging.DEBUG)
    root = logging.getLogger()
    root.addHandler(handler)
    _undo.append(lambda: root.removeHandler(handler))
    mita = logging.getLogger("mita")
    if mita.level == logging.NOTSET or mita.level > logging.DEBUG:
        previous = mita.level
        mita.setLevel(logging.DEBUG)  # a line only a debug configuration would print is a leak all the same
        _undo.append(lambda: mita.setLevel(previous))


def _install_keys() -> None:
    import mita.keys.store as store

    def make_check_key(original: Any) -> Any:
        def check_key(dkga: int, key: bytes) -> None:
            with contextlib.suppress(Exception):
                if isinstance(key, bytes | bytearray | memoryview) and len(key) >= 8:
                    add_secret(bytes(key), f"harvested: check_key (DKGA0{dkga}, {len(key)} bytes)")
            return original(dkga, key)  # type: ignore[no-any-return]

        return check_key

    _patch(store, "check_key", make_check_key, "check_key")
    import mita.keys.software  # noqa: F401  (imports check_key by name: rebound below)
    import mita.vend.keyring as keyring

    _rebind(_originals["check_key"], store.check_key)

    def make_parse_import(original: Any) -> Any:
        def parse_import(text: str) -> dict[str, Any]:
            doc = original(text)
            with contextlib.suppress(Exception):
                if isinstance(doc.get("key"), str):
                    add_secret(doc["key"], "harvested: key file (keyring.parse_import)")
            return doc  # type: ignore[no-any-return]

        return parse_import

    if hasattr(keyring, "parse_import"):
        _patch(keyring, "parse_import", make_parse_import, "parse_import")
        _rebind(_originals["parse_import"], keyring.parse_import)


def _install_exceptions() -> None:
    from sqlalchemy import exc as sa_exc

    from mita.sts.errors import StsError

    def make_init(original: Any) -> Any:
        def __init__(self: BaseException, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            with contextlib.suppress(Exception):
                _active.record("exception", f"{type(self).__module__}.{type(self).__qualname__}", str(self))

        return __init__

    _patch(StsError, "__init__", make_init, "StsError.__init__")
    _patch(sa_exc.StatementError, "__init__", make_init, "StatementError.__init__")


def _recording_stream(stream: Any, where: Callable[[], str], is_async: bool) -> Any:
    """A response stream (httpx) that records what was read once it is exhausted or closed."""
    import httpx

    chunks: list[bytes] = []
    done: list[bool] = []

    def finish() -> None:
        if not done:
            done.append(True)
            _active.record("http", where(), b"".join(chunks))

    class Sync(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for chunk in stream:
                chunks.append(chunk)
                yield chunk
            finish()

        def close(self) -> None:
            finish()
            stream.close()

    class Async(httpx.AsyncByteStream):
        async def __aiter__(self) -> Any:
            async for chunk in stream:
                chunks.append(chunk)
                yield chunk
            finish()

        async def aclose(self) -> None:
            finish()
            await stream.aclose()

    if is_async and isinstance(stream, httpx.AsyncByteStream):
        return Async()
    if not is_async and isinstance(stream, httpx.SyncByteStream):
        return Sync()
    return stream


def _http_where(response: Any) -> str:
    try:
        request = response.request
        return f"{request.method} {request.url} -> {response.status_code}"
    except Exception:
        return f"response {getattr(response, 'status_code', '?')}"


def _http_head(response: Any) -> bytes:
    return ("\n".join(f"{k}: {v}" for k, v in response.headers.multi_items()) + "\n\n").encode(
        "utf-8", "backslashreplace"
    )


def _record_response(response: Any) -> None:
    for r in [*getattr(response, "history", ()), response]:
        with contextlib.suppress(Exception):
            _active.record("http", _http_where(r), _http_head(r) + r.content)


def _install_http() -> None:
    import http.client

    import httpx

    def harvest(request: Any) -> None:
        with contextlib.suppress(Exception):
            harvest_text(request.content, f"harvested: HTTP request {request.method} {request.url.path}")

    def make_send(original: Any) -> Any:
        def send(self: Any, request: Any, *args: Any, stream: bool = False, **kwargs: Any) -> Any:
            harvest(request)
            response = original(self, request, *args, stream=stream, **kwargs)
            if stream:
                with contextlib.suppress(Exception):
                    _active.record("http", _http_where(response) + " (headers)", _http_head(response))
                    response.stream = _recording_stream(response.stream, lambda: _http_where(response), False)
            else:
                _record_response(response)
            return response

        return send

    def make_async_send(original: Any) -> Any:
        async def send(self: Any, request: Any, *args: Any, stream: bool = False, **kwargs: Any) -> Any:
            harvest(request)
            response = await original(self, request, *args, stream=stream, **kwargs)
            if stream:
                with contextlib.suppress(Exception):
                    _active.record("http", _http_where(response) + " (headers)", _http_head(response))
                    response.stream = _recording_stream(response.stream, lambda: _http_where(response), True)
            else:
                _record_response(response)
            return response

        return send

    _patch(httpx.Client, "send", make_send, "httpx.Client.send")
    _patch(httpx.AsyncClient, "send", make_async_send, "httpx.AsyncClient.send")

    def make_read(original: Any) -> Any:
        def read(self: Any, amt: int | None = None) -> bytes:
            data: bytes = original(self, amt)
            with contextlib.suppress(Exception):
                where = f"{getattr(self, 'url', None) or 'http.client'} -> {self.status}"
                _active.record("http", where, data)
            return data

        return read

    _patch(http.client.HTTPResponse, "read", make_read, "HTTPResponse.read")


def _install_cli() -> None:
    from mita.cli import token_ops

    try:
        import cli_run  # the tests' way of running mita in-process (absent where leak_scan is copied alone)
    except ImportError:
        cli_run = None

    def observe(argv: Any, input: Any, result: Any) -> None:
        with contextlib.suppress(Exception):
            words = [str(arg) for arg in argv]
            for i, arg in enumerate(words):  # a key given on the command line (refused, but given)
                if arg.startswith("--vending-key="):
                    add_secret(arg.split("=", 1)[1], "harvested: mita --vending-key")
                elif arg == "--vending-key" and i + 1 < len(words):
                    add_secret(words[i + 1], "harvested: mita --vending-key")
            if isinstance(input, str | bytes):
                harvest_text(input, "harvested: mita standard input")
        with contextlib.suppress(Exception):
            where = f"mita {_words(argv)}"
            _active.record("cli", where, result.stdout)
            _active.record("cli", where + " (stderr)", result.stderr)

    if cli_run is not None:
        observers = cli_run.OBSERVERS
        observers.append(observe)
        _undo.append(lambda: observers.remove(observe))

    def make_handle(original: Any) -> Any:
        def handle(req: object) -> dict[str, Any]:
            answer: dict[str, Any] = original(req)
            with contextlib.suppress(Exception):
                _active.record("cli", "mita token batch answer (token_ops.handle)", json.dumps(answer, default=str))
            return answer

        return handle

    _patch(token_ops, "handle", make_handle, "token_ops.handle")
    _rebind(_originals["token_ops.handle"], token_ops.handle)


def _install_subprocess() -> None:
    def make_communicate(original: Any) -> Any:
        def communicate(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> Any:
            out, err = original(self, *args, **kwargs)
            with contextlib.suppress(Exception):
                for name, data in (("stdout", out), ("stderr", err)):
                    _active.record("subprocess", f"{_words(self.args)} ({name})", data)
            return out, err

        return communicate

    def make_wait(original: Any) -> Any:
        def wait(self: subprocess.Popen[Any], *args: Any, **kwargs: Any) -> int:
            code: int = original(self, *args, **kwargs)
            with contextlib.suppress(Exception):
                _drain(self)
            return code

        return wait

    _patch(subprocess.Popen, "communicate", make_communicate, "Popen.communicate")
    _patch(subprocess.Popen, "wait", make_wait, "Popen.wait")


def _drain(proc: subprocess.Popen[Any]) -> None:
    """What an exited process left in its pipes, recorded and put back (in a file) for the test to read."""
    if proc.returncode is None:
        return
    for name in ("stdout", "stderr"):
        stream = getattr(proc, name)
        if stream is None or stream.closed or getattr(stream, "_leak_scan_drained", False):
            continue
        text = isinstance(stream, io.TextIOBase)
        raw = stream.buffer if text else stream
        fd = raw.fileno()
        if not _is_pipe(fd):
            continue
        os.set_blocking(fd, False)
        try:
            data = raw.read() or b""
        except BlockingIOError:
            data = b""
        finally:
            with contextlib.suppress(OSError):
                os.set_blocking(fd, True)
        _active.record("subprocess", f"{_words(proc.args)} ({name}, left unread)", data)
        replacement: Any = _spooled(data)
        if text:
            replacement = io.TextIOWrapper(replacement, encoding=getattr(stream, "encoding", None) or "utf-8")
        replacement._leak_scan_drained = True
        setattr(proc, name, replacement)
        stream.close()


def _is_pipe(fd: int) -> bool:
    import stat

    return stat.S_ISFIFO(os.fstat(fd).st_mode)


def _spooled(data: bytes) -> Any:
    import tempfile

    f = tempfile.TemporaryFile()  # noqa: SIM115  (handed to the test as the pipe it replaces)
    f.write(data)
    f.seek(0)
    return f


_DATABASE_DDL = re.compile(
    r'^\s*(CREATE|DROP)\s+DATABASE\s+(?:IF\s+EXISTS\s+)?(?:"((?:[^"]|"")+)"|([A-Za-z_][\w$]*))', re.IGNORECASE
)


def _install_databases() -> None:
    import sqlite3.dbapi2

    def make_connect(original: Any) -> Any:
        def connect(database: Any, *args: Any, **kwargs: Any) -> Any:
            conn = original(database, *args, **kwargs)
            with contextlib.suppress(Exception):
                uri = kwargs.get("uri", args[6] if len(args) > 6 else False)
                path = os.fsdecode(database)
                if uri and path.startswith("file:"):
                    path, _, query = path[5:].partition("?")
                    path = path[2:] if path.startswith("//") else path
                    if "mode=memory" in query:
                        path = ""
                if path and path != ":memory:":
                    _active.sqlite_opened(os.path.abspath(path))
            return conn

        return connect

    _patch(sqlite3, "connect", make_connect, "sqlite3.connect")
    if sqlite3.dbapi2.connect is _originals["sqlite3.connect"]:
        sqlite3.dbapi2.connect = sqlite3.connect
        _undo.append(lambda: setattr(sqlite3.dbapi2, "connect", _originals["sqlite3.connect"]))

    try:
        import psycopg
        import psycopg.sql
    except ImportError:
        return

    def make_execute(original: Any) -> Any:
        def execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(query, str):
                if "DATABASE" in query[:40].upper():
                    with contextlib.suppress(Exception):
                        _database_ddl(self, query)
            elif isinstance(query, bytes | psycopg.sql.Composable):  # rare: psycopg.sql, or bytes
                with contextlib.suppress(Exception):
                    text = query.decode() if isinstance(query, bytes) else query.as_string(self)
                    if "DATABASE" in text[:40].upper():
                        _database_ddl(self, text)
            return original(self, query, *args, **kwargs)

        return execute

    _patch(psycopg.Cursor, "execute", make_execute, "psycopg.Cursor.execute")


def _database_ddl(cursor: Any, query: str) -> None:
    m = _DATABASE_DDL.match(query)
    if m is None:
        return
    verb, quoted, bare = m.groups()
    name = quoted.replace('""', '"') if quoted else bare
    info = cursor.connection.info
    params = dict(info.get_parameters())
    params.pop("dbname", None)
    if info.password:
        params["password"] = info.password
    if verb.upper() == "CREATE":
        _active.postgres_created(name, params)
    else:
        _active.read_postgres(name, params, dropping=True)


def _install_meter_files() -> None:
    from mita.meter import storage

    def make_dumps(original: Any) -> Any:
        def dumps(meter: Any) -> str:
            text: str = original(meter)
            with contextlib.suppress(Exception):
                _active.record("meter-file", f"meter state of {meter.state.drn}", text)
            return text

        return dumps

    _patch(storage, "dumps", make_dumps, "storage.dumps")
    _rebind(_originals["storage.dumps"], storage.dumps)


# ----------------------------------------------------------------------------------------- pytest's own


def record_report_sections(report: Any) -> None:
    """What pytest captured of a test (stdout, stderr, log), passing or not; not the failure's traceback."""
    for title, content in getattr(report, "sections", ()):
        if title.startswith("Captured"):
            _active.record("captured", f"{title} of {report.nodeid}", content)


def record_warning(message: Any, nodeid: str) -> None:
    with contextlib.suppress(Exception):
        _active.record("captured", f"warning in {nodeid or 'the session'}", str(message.message))


# ------------------------------------------------------------------ what Mita sends out: HTTP requests, MQTT

#: Modules a request passes through on its way out; the first caller outside them says who sent it.
_SENDING_LIBRARIES = ("httpx", "httpcore", "http.", "urllib", "leak_scan", "contextlib", "functools", "anyio")


def _sent_by_mita(depth: int = 2) -> bool:
    """Whether the request being sent was made by Mita's own code (a sender, a client): the first caller outside
    the HTTP libraries is a module of the ``mita`` package, not a test."""
    import sys

    frame: Any = sys._getframe(depth)
    while frame is not None:
        name = str(frame.f_globals.get("__name__", ""))
        if not name.startswith(_SENDING_LIBRARIES):
            return name == "mita" or name.startswith("mita.")
        frame = frame.f_back
    return False


def _install_outgoing() -> None:
    """Requests Mita sends (channel ``http-out``) and MQTT messages published (``mqtt``)."""
    import http.client

    import httpx

    def make_send(original: Any) -> Any:
        def send(self: Any, request: Any, *args: Any, **kwargs: Any) -> Any:
            with contextlib.suppress(Exception):
                if _sent_by_mita():
                    head = f"{request.method} {request.url}\n" + "\n".join(
                        f"{k}: {v}" for k, v in request.headers.multi_items()
                    )
                    where = f"{request.method} {request.url.scheme}://{request.url.host}{request.url.path}"
                    _active.record(
                        "http-out", where, head.encode("utf-8", "backslashreplace") + b"\n\n" + request.content
                    )
            return original(self, request, *args, **kwargs)

        return send

    _patch(httpx.Client, "send", make_send, "httpx.Client.send (out)")
    _patch(httpx.AsyncClient, "send", make_send, "httpx.AsyncClient.send (out)")

    def make_request(original: Any) -> Any:
        def request(self: Any, method: str, url: str, body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
            with contextlib.suppress(Exception):
                if _sent_by_mita():
                    head = f"{method} {self.host}:{self.port}{url}\n" + "\n".join(
                        f"{k}: {v}" for k, v in dict(headers or {}).items()
                    )
                    data = body.encode() if isinstance(body, str) else body if isinstance(body, bytes) else b""
                    where = f"{method} {self.host}:{self.port}{url.split('?', 1)[0]}"
                    _active.record("http-out", where, head.encode("utf-8", "backslashreplace") + b"\n\n" + data)
            return original(self, method, url, body, headers or {}, **kwargs)

        return request

    _patch(http.client.HTTPConnection, "request", make_request, "HTTPConnection.request")
    try:
        from paho.mqtt import client as mqtt
    except ImportError:
        return

    def make_publish(original: Any) -> Any:
        def publish(self: Any, topic: str, payload: Any = None, *args: Any, **kwargs: Any) -> Any:
            with contextlib.suppress(Exception):
                data = payload.encode() if isinstance(payload, str) else bytes(payload or b"")
                _active.record("mqtt", f"MQTT publish {topic}", f"{topic}\n".encode() + data)
            return original(self, topic, payload, *args, **kwargs)

        return publish

    _patch(mqtt.Client, "publish", make_publish, "paho Client.publish")
