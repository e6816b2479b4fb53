"""``mita sim fleet --from-database [--limit N] --register``: a fleet made from the vending database's meters, each
connected in the head-end's registry, so that a vend for one of them is delivered remotely by ``mita worker``.

The fleet runs as the real command in its own process, on a SQLite vending database the test set up
(vend_fixtures' utility and a few more meters); the registry's bulk registration runs on both backends."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import secrets
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cli_run import run
from headend_pass import run_headend
from mita.headend import commands, registry
from mita.meter import storage
from mita.vend import database, sample
from mita.vend import registry as vend_registry
from mita.vend.schema import audit, meter_endpoints, meters
from vend_fixtures import DRN, SGC, World, build_world, decoder_key

from .sim_fixtures import drn_of, make_meter

#: The meters the test utility gets besides vend_fixtures' DRN (made after it: higher ids).
MORE = [sample.meter_number(f"4750099{i:03d}") for i in range(3)]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The test utility on a SQLite file, its master key in the environment the fleet process inherits."""
    yield from _utility(f"sqlite:///{tmp_path}/mita.db", monkeypatch)


def _utility(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The test utility with the meters of :data:`MORE` too, its master key in the environment the fleet process
    inherits."""
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    try:
        built = build_world(engine)
        for drn in MORE:
            vend_registry.Registry(engine).create_meter(vend_registry.SYSTEM, drn=drn, sgc=SGC, tariff="domestic")
        yield built
    finally:
        engine.dispose()


def url_of(world: World) -> str:
    return str(world.engine.url)


@contextlib.contextmanager
def fleet(folder: Path, secrets_file: Path, *options: str) -> Iterator[dict[str, Any]]:
    """``mita sim fleet`` in its own process: its JSON line while it serves; SIGTERM after, exit 0 expected, and no
    LLS secret on its standard error."""
    argv = [sys.executable, "-m", "mita.cli.main", "sim", "fleet", str(folder), "--secrets", str(secrets_file),
            *options]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        if not first:
            _, err = proc.communicate(timeout=10)
            pytest.fail(f"mita sim fleet did not start (exit {proc.returncode}): {err}")
        yield json.loads(first)
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)  # the process this test started, by its handle
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    if secrets_file.exists():
        assert not any(value in err for value in json.loads(secrets_file.read_text()).values())


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_worker(world: World) -> None:
    """One ``mita worker`` pass over the head-end channel (as tests/headend/test_remote_vending.py runs it)."""
    run_headend(world.engine, world.svc, world.admin, lambda: world.now[0])


# ---------------------------------------------------------------------- --from-database


@pytest.mark.slow
def test_from_database_makes_a_file_and_a_secret_per_meter_and_a_second_start_serves_the_same(
    world: World, tmp_path: Path
) -> None:
    folder, secrets_file = tmp_path / "fleet" / "meters", tmp_path / "fleet" / "meters" / "secrets.json"
    with fleet(folder, secrets_file, "--from-database", "--database-url", url_of(world)) as line:
        assert (line["meters"], line["made"], "registered" in line) == (4, 4, False)
        assert sorted(line["endpoints"]) == sorted([DRN, *MORE])
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    lls = json.loads(secrets_file.read_text())
    assert sorted(lls) == sorted([DRN, *MORE]) and {len(bytes.fromhex(v)) for v in lls.values()} == {16}
    assert len(set(lls.values())) == 4  # one each
    made = storage.load(folder / f"{DRN}.json")
    assert (made.state.drn, made.profile.name, made.state.krn) == (DRN, "legacy-ea07", 1)
    assert made.enter(world.vend(5000)["tokens"][0]["digits"], world.now[0]).result == "accept"  # the database's key
    assert f"{decoder_key():016x}" not in (folder / f"{DRN}.json").read_text().lower()  # sealed, not in clear
    before = {p.name: digest(p) for p in folder.iterdir()}

    with fleet(folder, secrets_file, "--from-database", "--database-url", url_of(world)) as again:
        assert (again["meters"], again["made"]) == (4, 0)
        assert sorted(again["endpoints"]) == sorted(line["endpoints"])
    assert {p.name: digest(p) for p in folder.iterdir()} == before  # files and secrets as they were


@pytest.mark.slow
def test_existing_files_and_secrets_are_kept_and_a_file_only_meter_is_served_without_a_new_secret(
    world: World, tmp_path: Path
) -> None:
    folder = tmp_path / "meters"
    folder.mkdir()
    storage.save(make_meter(drn=drn_of(7)), folder / f"{drn_of(7)}.json")  # not in the database
    kept = folder / f"{MORE[0]}.json"
    storage.save(make_meter(profile="edition2-ea11", drn=MORE[0]), kept)  # the database's meter, as its owner made it
    kept_digest = digest(kept)
    secrets_file = tmp_path / "lls.json"
    secrets_file.write_text(json.dumps({MORE[1]: "6d676d74"}))
    secrets_file.chmod(0o600)
    with fleet(folder, secrets_file, "--from-database", "--database-url", url_of(world)) as line:
        assert (line["meters"], line["made"]) == (5, 3)
    assert digest(kept) == kept_digest
    lls = json.loads(secrets_file.read_text())
    assert lls[MORE[1]] == "6d676d74" and drn_of(7) not in lls and sorted(lls) == sorted([DRN, *MORE])
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the atomic rewrite left nothing


@pytest.mark.slow
def test_limit_takes_the_first_meters_by_id_and_retired_meters_are_left_out(world: World, tmp_path: Path) -> None:
    vend_registry.Registry(world.engine).set_meter_status(vend_registry.SYSTEM, MORE[0], "retired")
    folder, secrets_file = tmp_path / "meters", tmp_path / "lls.json"
    with fleet(folder, secrets_file, "--from-database", "--limit", "2", "--database-url", url_of(world)) as line:
        assert sorted(line["endpoints"]) == sorted([DRN, MORE[1]]) and line["made"] == 2
    assert sorted(json.loads(secrets_file.read_text())) == sorted([DRN, MORE[1]])


# ---------------------------------------------------------------------- --register


@pytest.mark.slow
def test_register_connects_the_database_meters_and_a_vend_is_delivered_by_one_worker_pass(
    world: World, tmp_path: Path
) -> None:
    folder, secrets_file = tmp_path / "meters", tmp_path / "lls.json"
    folder.mkdir()
    storage.save(make_meter(drn=drn_of(7)), folder / f"{drn_of(7)}.json")  # served, unknown to the database
    options = ("--from-database", "--register", "--database-url", url_of(world))
    with fleet(folder, secrets_file, *options) as line:
        assert (line["meters"], line["made"], line["registered"]) == (5, 4, 4)
        for drn in (DRN, *MORE):
            shown = registry.describe(world.engine, drn)
            assert shown is not None
            assert (shown["host"], shown["port"]) == (line["endpoints"][drn]["host"], line["endpoints"][drn]["port"])
            assert (shown["secret"], shown["token_encoding"], shown["client"]) == (True, "bcd", 1)
        vend = world.vend(10_000)
        queued = commands.for_vend(world.engine, vend["id"])
        assert queued is not None and queued["status"] == "queued"
        run_worker(world)
        done = commands.get(world.engine, queued["id"])
        assert done["status"] == "acknowledged", done
        assert [t["result"] for t in done["result"]["tokens"]] == ["accept"] * len(vend["tokens"])
        units = sum(t["units"] for t in vend["tokens"])
        assert done["result"]["credit"] == units * 100  # base units of 0.1 kWh, read back in Wh
    assert storage.load(folder / f"{DRN}.json").registers()["electricity"] == units  # saved by the fleet
    assert registry.describe(world.engine, DRN) is not None  # stopping is going offline, not unregistering
    with world.engine.connect() as conn:
        actions = conn.execute(select(audit.c.action).where(audit.c.entity == "meter")).scalars().all()
    assert actions.count("meter_connected") == 4


@pytest.mark.slow
def test_a_second_start_moves_the_endpoints_and_the_queued_vend_reaches_the_meter(world: World, tmp_path: Path) -> None:
    """An offline fleet's vend waits; the fleet starting again re-registers (new ports) and the worker delivers."""
    folder, secrets_file = tmp_path / "meters", tmp_path / "lls.json"
    options = ("--from-database", "--register", "--limit", "1", "--database-url", url_of(world))
    with fleet(folder, secrets_file, *options) as line:
        assert line["registered"] == 1
    vend = world.vend(5000)  # the fleet is stopped: the meter is offline
    run_worker(world)
    waiting = commands.for_vend(world.engine, vend["id"])
    assert waiting is not None and waiting["status"] == "queued" and waiting["error"].startswith("unreachable")
    with fleet(folder, secrets_file, *options) as again:
        assert (again["made"], again["registered"]) == (0, 1)
        moved = registry.describe(world.engine, DRN)
        assert moved is not None and moved["port"] == again["endpoints"][DRN]["port"]
        world.advance(seconds=1)
        run_worker(world)
        assert commands.get(world.engine, waiting["id"])["status"] == "acknowledged"
    with world.engine.connect() as conn:
        actions = conn.execute(select(audit.c.action).where(audit.c.entity == "meter")).scalars().all()
    assert (actions.count("meter_connected"), actions.count("meter_endpoint_changed")) == (1, 1)


# ---------------------------------------------------------------------- refusals


def test_a_missing_or_unmigrated_database_is_refused_and_nothing_is_made(tmp_path: Path) -> None:
    folder, secrets_file = tmp_path / "meters", tmp_path / "lls.json"
    for flag in ("--from-database", "--register"):
        missing = run(["sim", "fleet", str(folder), "--secrets", str(secrets_file), flag,
                       "--database-url", f"sqlite:///{tmp_path}/forgotten.db"])  # fmt: skip
        assert (missing.exit_code, missing.stderr.split("]")[0]) == (3, "error[database_missing"), missing.stderr
        assert "forgotten.db" in missing.stderr and not (tmp_path / "forgotten.db").exists()
    sqlite3.connect(tmp_path / "empty.db").close()
    empty = run(["sim", "fleet", str(folder), "--secrets", str(secrets_file), "--from-database",
                 "--database-url", f"sqlite:///{tmp_path}/empty.db"])  # fmt: skip
    assert (empty.exit_code, empty.stderr.split("]")[0]) == (3, "error[schema_outdated"), empty.stderr
    assert not folder.exists() and not secrets_file.exists()


def test_limit_without_from_database_and_register_on_a_wildcard_address_are_usage_errors(tmp_path: Path) -> None:
    secrets_file = tmp_path / "lls.json"
    secrets_file.write_text("{}")
    secrets_file.chmod(0o600)
    result = run(["sim", "fleet", str(tmp_path), "--secrets", str(secrets_file), "--limit", "3"])
    assert (result.exit_code, result.stderr.split("]")[0]) == (2, "error[usage")
    result = run(["sim", "fleet", str(tmp_path), "--secrets", str(secrets_file), "--register", "--host", "0.0.0.0"])
    assert (result.exit_code, result.stderr.split("]")[0]) == (2, "error[usage") and "0.0.0.0" in result.stderr
    result = run(["sim", "fleet", str(tmp_path), "--secrets", str(secrets_file), "--from-database", "--limit", "0"])
    assert result.exit_code == 2


def test_the_help_says_stopping_does_not_unregister() -> None:
    result = run(["sim", "fleet", "--help"])
    assert result.exit_code == 0 and "--from-database" in result.stdout and "--register" in result.stdout
    assert "does not unregister" in " ".join(result.stdout.split())


# ---------------------------------------------------------------------- the registry's bulk registration


@pytest.fixture
def utility(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The test utility on each backend (no fleet: the registry alone)."""
    yield from _utility(url, monkeypatch)


def test_register_many_is_register_for_each_in_one_transaction(utility: World) -> None:
    engine, at = utility.engine, utility.now[0]
    many = [
        {"drn": drn, "host": "127.0.0.1", "port": 5000 + i, "secret": bytes([i + 1]) * 16, "token_encoding": "bcd"}
        for i, drn in enumerate([DRN, *MORE])
    ]
    many[1].update(secret=None, token_encoding="ascii")
    assert registry.register_many(engine, vend_registry.SYSTEM, many, at) == 4
    one = {"meter": DRN, "host": "127.0.0.1", "port": 5000, "client": 1, "server": 1, "token_encoding": "bcd",
           "secret": True, "created_at": at, "updated_at": at, "transport": "dlms"}  # fmt: skip
    assert registry.describe(engine, DRN) == one
    assert registry.describe(engine, MORE[0]) == {**one, "meter": MORE[0], "port": 5001, "secret": False,
                                                  "token_encoding": "ascii"}  # fmt: skip
    with engine.connect() as conn:
        row = conn.execute(select(meter_endpoints).join(meters).where(meters.c.drn == MORE[1])).one()
        reach = registry.endpoint(conn, row.meter_id, MORE[1], 1.0)
    assert reach is not None and reach[0].secret == bytes([3]) * 16  # sealed, bound to its meter, opens
    later = at + dt.timedelta(minutes=1)
    assert registry.register_many(engine, vend_registry.SYSTEM, [{**many[0], "port": 6000}], later) == 1
    assert registry.describe(engine, DRN) == {**one, "port": 6000, "updated_at": later}
    with engine.connect() as conn:
        details = conn.execute(
            select(audit.c.action, audit.c.detail)
            .where(audit.c.action.in_(["meter_connected", "meter_endpoint_changed"]))
            .order_by(audit.c.id)
        ).all()
    assert [a for a, _ in details] == ["meter_connected"] * 4 + ["meter_endpoint_changed"]
    assert [d["secret"] for _, d in details] == [True, False, True, True, True]  # whether, never the secret


def test_register_many_is_all_or_none(utility: World) -> None:
    engine, at = utility.engine, utility.now[0]
    good = {"drn": DRN, "host": "127.0.0.1", "port": 5000, "secret": b"s" * 16}
    with pytest.raises(Exception) as refused:
        registry.register_many(engine, vend_registry.SYSTEM, [good, {**good, "drn": drn_of(7)}], at)
    assert getattr(refused.value, "code", None) == "not_found"
    with pytest.raises(Exception) as invalid:
        registry.register_many(engine, vend_registry.SYSTEM, [good, {**good, "drn": MORE[0], "port": 0}], at)
    assert getattr(invalid.value, "code", None) == "invalid_request"
    assert registry.describe(engine, DRN) is None
    with engine.connect() as conn:
        assert conn.execute(select(meter_endpoints)).first() is None
