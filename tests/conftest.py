"""Shared test helpers: where the STS conformance vectors are, and how to load them.

The vectors ship with the package, in ``src/mita/conformance/vectors`` (a copy of the shared STS vectors; its
README.md says where each file comes from), or wherever the environment variable ``MITA_VECTORS`` points. A
missing folder is a test *failure* with a message saying where we looked, never a silent skip: a green run without
the vectors would claim a conformance that was not checked.

Vector tests are parametrised at collection time, so a missing folder cannot raise there without hiding every
other test. Instead :func:`vector_params` turns a :class:`VectorsMissingError` into one parameter that fails
in setup (see the autouse fixture below) with the same clear message.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

import leak_scan
from mita.conformance import vectors as shipped_vectors
from mita.conformance.reading import expected_fields, hexint, make_token, vector_ea, vector_key
from mita.conformance.vectors import reproduced
from mita.sts import EA

# The vector files' spellings are read by the package's own reader (one place); the tests check the engine.
__all__ = ["expected_fields", "hexint", "make_token", "reproduced", "vector_ea", "vector_key"]

REPO_ROOT = Path(__file__).resolve().parent.parent
VECTORS_DIR = Path(str(shipped_vectors.folder()))  # the copy shipped in the package (mita conformance reads it)
ENV_VAR = "MITA_VECTORS"


class VectorsMissingError(AssertionError):
    """The conformance vectors (or one file of them) could not be found."""


def vectors_dir() -> Path:
    """``$MITA_VECTORS`` if set, else the package's ``mita/conformance/vectors``; fails if the folder is missing."""
    env = os.environ.get(ENV_VAR)
    path = Path(env) if env else VECTORS_DIR
    if not path.is_dir():
        source = f"${ENV_VAR}={env!r}" if env else f"the default location (${ENV_VAR} is not set)"
        raise VectorsMissingError(
            f"STS conformance vectors not found: {path} does not exist or is not a folder ({source}). "
            f"The package keeps them in src/mita/conformance/vectors (restore that folder from git), or set "
            f"{ENV_VAR} to a folder holding tokens.json, sta.json, misty1.json, ..."
        )
    return path


@functools.cache
def load_json(name: str) -> Any:
    """One vectors file, parsed (cached: several modules read the same files)."""
    path = vectors_dir() / name
    if not path.is_file():
        raise VectorsMissingError(
            f"STS conformance vector file {path} is missing "
            "(src/mita/conformance/vectors holds every file the tests read)"
        )
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def vector_params(build: Callable[[], Iterable[Any]]) -> list[Any]:
    """The parameters ``build()`` makes from the vectors, or one failing parameter if they are missing."""
    try:
        return list(build())
    except VectorsMissingError as exc:
        return [pytest.param(exc, id="vectors-missing")]


@pytest.fixture(autouse=True)
def _fail_when_vectors_missing(request: pytest.FixtureRequest) -> None:
    """A test parametrised with the 'vectors missing' marker parameter fails here, loudly."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return
    for value in callspec.params.values():
        if isinstance(value, VectorsMissingError):
            pytest.fail(str(value), pytrace=False)


@pytest.fixture(scope="session")
def vectors_path() -> Path:
    """The vectors folder (the test fails, with the message above, if it is missing)."""
    return vectors_dir()


def source_id(source: Any) -> str:
    """A short readable label for a vector's ``source``: compliance suite and test method where given."""
    if not isinstance(source, dict):
        return "vector"
    path = source.get("path") or ""
    test = source.get("test") or ""
    if not test and source.get("tests"):
        test = source["tests"][0]
    if "#" in test:
        path, test = test.split("#", 1)
    stem = Path(path).stem.replace("STSComplianceTests_STS_531_1_", "STS531-1-").replace("STSComplianceTests_", "")
    return ".".join(part for part in (stem.replace("_", "-"), test) if part) or "vector"


# ---------------------------------------------------------------- reading token vectors


def key_change_groups() -> list[dict[str, Any]]:
    """Sections of one key change: same compliance test file, same step, same old key; one per subclass."""
    groups: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for v in load_json("key_change.json")["vectors"]:
        if not reproduced(v):
            continue
        step = re.match(r"step\d+", v["source"]["test"])
        assert step is not None
        label = (source_id({"path": v["source"]["path"]}), step.group(0), v["decoder_key_hex"])
        assert v["subclass"] not in groups[label], f"two sections {v['subclass']} in {label}"
        groups[label][v["subclass"]] = v
    out = []
    for (suite, step, old), sections in groups.items():
        ea = vector_ea(sections[3])
        fields = {}
        for v in sections.values():
            fields |= {k: x for k, x in expected_fields(v).items() if k not in ("class", "subclass")}
        complete = set(sections) == ({3, 4} if ea is EA.STA else {3, 4, 8, 9})
        out.append(
            {
                "id": f"{suite}.{step}-{ea.name}-old{old[:8]}",
                "ea": ea,
                "old_key": old,
                "sections": sections,
                "fields": fields,
                "complete": complete,
            }
        )
    return out


# ---------------------------------------------------------------- the key leak scan (see leak_scan.py)
#
# Every output of the whole run (log lines, HTTP responses, exception messages, CLI and subprocess output, SQLite
# files and PostgreSQL databases, virtual meter files) is recorded, and scanned at the end for every vending key
# the run used. A key found anywhere fails the session with a report naming where (keys shown by fingerprint).
# tests/test_zz_no_key_leaks.py runs the same scan on what came before it, as a test.

LEAK_REPORT = pytest.StashKey[str]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "plants_key_leak(reason, channels=()): the test puts a vending key into an output on purpose (to show a "
        "check of its own can fail); the key leak scan reports what it finds in those channels as planted",
    )
    if os.environ.get("MITA_LEAK_SCAN") == "0":  # only to measure what the scan costs
        return
    try:
        vectors: Path | None = vectors_dir()
    except VectorsMissingError:
        vectors = None  # the vector tests fail, saying so
    leak_scan.install(vectors)


def pytest_unconfigure(config: pytest.Config) -> None:
    leak_scan.uninstall()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    marker = item.get_closest_marker("plants_key_leak")
    if marker is not None:
        reason = marker.args[0] if marker.args else marker.kwargs.get("reason", "")
        leak_scan.SESSION.plants(item.nodeid, reason, tuple(marker.kwargs.get("channels", ())))
    leak_scan.set_current_test(item.nodeid)
    try:
        return (yield)
    finally:
        leak_scan.set_current_test("")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    if leak_scan.installed():
        leak_scan.active().read_sqlite_files(only_dirty=True)  # before fixtures delete their databases
    return (yield)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if leak_scan.installed():
        leak_scan.record_report_sections(report)


def pytest_warning_recorded(warning_message: Any, when: str, nodeid: str, location: Any) -> None:
    if leak_scan.installed():
        leak_scan.record_warning(warning_message, nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.option.collectonly or not leak_scan.installed():
        return
    recorder = leak_scan.SESSION
    recorder.read_databases()
    leaks, planted = recorder.scan()
    lines = [recorder.summary(planted)]
    if leaks:
        lines.append(recorder.report(leaks))
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    lines += [f"  note: {n}" for n in recorder.notes]
    session.config.stash[LEAK_REPORT] = "\n".join(lines)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    report = config.stash.get(LEAK_REPORT, None)
    if report is None:
        return
    if "key leak(s)" in report:
        terminalreporter.write_sep("=", "KEY LEAK SCAN FAILED", red=True, bold=True)
    terminalreporter.write_line(report)


# ---------------------------------------------------------------- markers and order

PG_FIXTURES = {"pg_template", "missing_pg_database", "pg_url"}
SLOW_MODULES = {"test_fleet_rehearsal", "test_vend_concurrency", "test_architecture", "test_outbox"}
SLOW_WORDS = ("serve", "server", "sigkill", "worker", "subprocess")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark what needs PostgreSQL, SoftHSM2 or seconds (``-m "not postgres"`` runs without a server), and run the
    leak tests last: they assert on what every test before them produced."""
    for item in items:
        ids = item.nodeid.lower()
        fixtures = set(getattr(item, "fixturenames", ()))
        source = getattr(item.module, "__file__", "") or ""
        if "postgresql" in ids or fixtures & PG_FIXTURES or ("sqlite" not in ids and "PG_" in _module_text(source)):
            item.add_marker(pytest.mark.postgres)
        if "pkcs11" in ids or "hsm" in ids or "softhsm" in fixtures:
            item.add_marker(pytest.mark.hsm)
        if item.module.__name__ in SLOW_MODULES or any(w in item.name.lower() for w in SLOW_WORDS):
            item.add_marker(pytest.mark.slow)
    items.sort(key=lambda item: item.module.__name__ == "test_zz_no_key_leaks")


@functools.cache
def _module_text(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError:
        return ""


# ---------------------------------------------------------------- an empty database of each kind

PG_SERVER = os.environ.get("MITA_TEST_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")


@contextlib.contextmanager
def zone_kept() -> Iterator[None]:
    """The process's time zone (``TZ``, and the C library's reading of it) as it was before the block."""
    before = os.environ.get("TZ")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


@contextlib.contextmanager
def empty_database(kind: str, folder: Path) -> Iterator[str]:
    """The URL of an empty database: a SQLite file in ``folder``, or a PostgreSQL database made here and dropped
    after (a PostgreSQL server that does not answer fails the test: these tests never skip)."""
    if kind == "sqlite":
        yield f"sqlite:///{folder}/empty.db"
        return
    import psycopg

    name = f"mita_test_{secrets.token_hex(6)}"
    try:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_SERVER} is required by these tests and is not reachable: {exc}")
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test."""
    with empty_database(request.param, tmp_path) as empty:
        yield empty


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database for a whole module (the API suites set one utility up and run many requests on it)."""
    with empty_database(request.param, tmp_path_factory.mktemp("db")) as empty:
        yield empty


@pytest.fixture
def mqtt_broker(tmp_path: Path) -> Iterator[Any]:
    """A Mosquitto of the test's own (tests/mqtt_broker.py), stopped with the test."""
    from mqtt_broker import broker

    with broker(tmp_path / "mosquitto") as started:
        yield started
