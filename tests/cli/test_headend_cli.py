"""``mita headend``: register, unregister, show, command (with ``--wait``) and commands, on SQLite (and the round
trip on PostgreSQL too).

``mita`` runs in-process (tests/cli_run.py) beside the HTTP API on the same database: every ``--json`` answer must
equal the API's answer to the same question, every refusal is one line ``error[<code>]: <message>`` with its exit
code, and no output holds the meter's LLS secret, an API key or the vending key. No worker runs: ``--wait`` is
watched against a stand-in that settles the command from another thread, as ``mita worker`` would.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select, update

from cli_run import Result, run
from mita.api import create_app
from mita.cli import headend as cli
from mita.headend import commands
from mita.vend import database, registry, sample
from mita.vend.lifecycles import CommandStatus
from mita.vend.remote import CHANNEL
from mita.vend.schema import audit, meter_commands, outbox, vends

CONNECTED = sample.meter_number("4750015041")
KEYPAD = sample.meter_number("4750015042")
UNKNOWN = sample.meter_number("4750015049")


@dataclass
class Utility:
    url: str
    engine: Engine
    client: TestClient
    admin: dict[str, str]
    secret: str  # the connected meter's LLS secret, hex
    folder: Path
    hidden: list[str]

    def mita(self, *args: str, code: int = 0, env: dict[str, str | None] | None = None) -> Result:
        result = run([*args, "--database-url", self.url], env=env)
        for secret in self.hidden:
            assert secret.lower() not in result.output.lower(), args
        assert "Traceback" not in result.output and "internal_error" not in result.output
        assert result.exit_code == code, result
        return result

    def json(self, *args: str, code: int = 0, env: dict[str, str | None] | None = None) -> Any:
        return json.loads(self.mita(*args, "--json", code=code, env=env).stdout)

    def refused(self, code: str, exit_code: int, *args: str, env: dict[str, str | None] | None = None) -> str:
        result = self.mita(*args, code=exit_code, env=env)
        assert result.stderr.startswith(f"error[{code}]: ") and result.stderr.count("\n") == 1, result.stderr
        return result.stderr

    def api(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params, headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def secret_file(self, text: str, name: str = "lls.hex") -> str:
        path = self.folder / name
        path.write_text(text + "\n")
        return str(path)

    def count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def set_up(url: str, folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Utility]:
    master = secrets.token_hex(32)
    monkeypatch.setenv("MITA_MASTER_KEY", master)
    monkeypatch.delenv("MITA_DATABASE_URL", raising=False)
    monkeypatch.chdir(folder)
    database.upgrade(url)
    app = create_app(url)
    engine: Engine = app.state.engine
    reg, system = registry.Registry(engine), registry.SYSTEM
    sample.create_group_and_tariff(engine, "Test town")
    admin = reg.create_api_key("head office", "admin")[1]
    for drn in (CONNECTED, KEYPAD):
        reg.create_meter(system, drn=drn, sgc=sample.SGC, tariff="domestic")
    secret = secrets.token_hex(16)
    with TestClient(app) as client:
        yield Utility(url, engine, client, {"Authorization": f"Bearer {admin}"}, secret, folder,
                      [secret, master, admin, sample.TEST_VENDING_KEY])  # fmt: skip
    engine.dispose()


@pytest.fixture
def utility(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Utility]:
    yield from set_up(f"sqlite:///{tmp_path}/mita.db", tmp_path, monkeypatch)


@pytest.fixture
def connected(utility: Utility) -> Utility:
    utility.mita("headend", "register", CONNECTED, "--host", "127.0.0.1", "--port", "4059",
                 "--secret-file", utility.secret_file(utility.secret))  # fmt: skip
    return utility


def settle(engine: Engine, command_id: int, status: CommandStatus, after: float, error: str | None = None) -> None:
    """What ``mita worker`` does when the meter answered, ``after`` seconds after the command is queued (from
    another thread)."""

    def later() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # the command is queued first (a busy machine may take a while)
            with engine.connect() as conn:
                if conn.execute(select(meter_commands.c.id).where(meter_commands.c.id == command_id)).first():
                    break
            time.sleep(0.05)
        time.sleep(after)
        with engine.begin() as conn:
            conn.execute(
                update(meter_commands)
                .where(meter_commands.c.id == command_id)
                .values(status=status.value, attempts=1, error=error, result={"switch": {"connected": False}})
            )

    threading.Thread(target=later, daemon=True).start()


# ---------------------------------------------------------------------- the choices


def test_the_choices_are_the_services() -> None:
    assert tuple(k.value for k in commands.OPERATOR_KINDS) == cli.KINDS
    assert cli.LOGS == commands.LOGS and tuple(CommandStatus) == cli.STATUSES
    shown = " ".join(run(["headend", "command", "--help"], env={"COLUMNS": "200"}).stdout.split())
    assert "disconnect, reconnect, set_power_limit" in shown
    assert "{queued,sent,acknowledged,failed,expired}" in run(["headend", "commands", "--help"]).stdout


# ---------------------------------------------------------------------- register, show, unregister


def test_register_show_and_unregister_as_the_api_does(utility: Utility) -> None:
    before = utility.api(f"/v1/meters/{CONNECTED}")
    out = utility.json("headend", "register", CONNECTED, "--host", "meter-1.example.net", "--port", "4059",
                       "--secret-env", "LLS_SECRET", "--token-encoding", "ascii", "--server", "17",
                       env={"LLS_SECRET": utility.secret})  # fmt: skip
    assert out == utility.api(f"/v1/meters/{CONNECTED}/connection")
    assert (out["host"], out["token_encoding"], out["server"], out["secret"]) == ("meter-1.example.net", "ascii",
                                                                                  17, True)  # fmt: skip
    text = utility.mita("headend", "show", CONNECTED).stdout
    assert f"meter {CONNECTED}: connected" in text and "kept (sealed)" in text and "no commands" in text
    # changed: without a secret, reading only
    out = utility.json("headend", "register", CONNECTED, "--host", "10.0.0.9", "--port", "4060")
    assert out["secret"] is False and out["token_encoding"] == "bcd"
    assert "reading only" in utility.mita("headend", "register", CONNECTED, "--host", "h", "--port", "1").stdout
    assert utility.api(f"/v1/meters/{CONNECTED}") == before  # keys, TIDs, history: unchanged
    shown = utility.json("headend", "show", CONNECTED)
    assert shown == {"connection": utility.api(f"/v1/meters/{CONNECTED}/connection"), "commands": []}

    assert utility.mita("headend", "unregister", CONNECTED).stdout == f"meter {CONNECTED}: keypad only\n"
    assert utility.json("headend", "show", CONNECTED) == {"connection": None, "commands": []}
    assert "keypad only" in utility.mita("headend", "show", CONNECTED).stdout
    utility.refused("not_connected", 1, "headend", "unregister", CONNECTED)
    with utility.engine.connect() as conn:
        actions = [r.action for r in conn.execute(select(audit.c.action, audit.c.detail).where(
            audit.c.entity_id == CONNECTED, audit.c.action.like("meter_%")).order_by(audit.c.id))]  # fmt: skip
        details = " ".join(json.dumps(r.detail) for r in conn.execute(select(audit.c.detail)))
    assert actions == ["meter_connected", "meter_endpoint_changed", "meter_endpoint_changed", "meter_disconnected"]
    assert utility.secret not in details


def test_register_refusals(utility: Utility) -> None:
    register = ("headend", "register", CONNECTED, "--host", "h", "--port", "4059")
    message = utility.refused("secret_on_command_line", 1, *register, "--secret", utility.secret)
    assert "--secret-file" in message
    utility.refused("invalid_key", 1, *register, "--secret-file", utility.secret_file(utility.secret[:-1]))
    utility.refused("invalid_key", 1, *register, "--secret-file", utility.secret_file("zz" * 8))
    utility.refused("invalid_key", 1, *register, "--secret-file", utility.secret_file(utility.secret * 3))
    utility.refused("secret_missing", 1, *register, "--secret-env", "NO_SUCH_VARIABLE", env={"NO_SUCH_VARIABLE": None})
    utility.refused("secret_unreadable", 1, *register, "--secret-file", "missing.hex")
    utility.refused("invalid_request", 1, "headend", "register", CONNECTED, "--host", "h", "--port", "0")
    utility.refused("invalid_request", 1, *register, "--client", "200")
    utility.refused("not_found", 1, "headend", "register", UNKNOWN, "--host", "h", "--port", "1")
    utility.refused("check_digit_error", 1, "headend", "register", UNKNOWN[:-1] + "0", "--host", "h", "--port", "1")
    utility.refused("usage", 2, "headend", "register", CONNECTED, "--port", "4059")
    utility.refused("usage", 2, *register, "--token-encoding", "ebcdic")
    assert utility.json("headend", "show", CONNECTED)["connection"] is None


def test_a_missing_database_is_named() -> None:
    result = run(["headend", "show", CONNECTED, "--database-url", "sqlite:///forgotten.db"])
    assert result.exit_code == 3 and result.stderr.startswith("error[database_missing]: ")
    assert "forgotten.db" in result.stderr and not Path("forgotten.db").exists()


# ---------------------------------------------------------------------- commands


def test_commands_are_queued_and_listed_as_the_api_does(connected: Utility) -> None:
    u = connected
    made = json.loads(u.mita("headend", "command", CONNECTED, "disconnect", "--expires-in", "600").stdout)
    assert made == u.api(f"/v1/commands/{made['id']}")
    assert (made["kind"], made["status"], made["actor"], made["params"]) == ("disconnect", "queued", "system", {})
    with u.engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.dedupe_key == f"command:{made['id']}")).one()
    assert row.channel == CHANNEL and row.recipient == CONNECTED
    logs = json.loads(u.mita("headend", "command", CONNECTED, "read_events", "--logs", "token,fraud").stdout)
    assert logs["params"] == {"logs": ["token", "fraud"]}
    vends_before = u.count(vends)
    token = u.json("headend", "command", CONNECTED, "set_power_limit", "--value", "2500")
    assert token["kind"] == "set_power_limit" and token["vend_id"] is not None and u.count(vends) == vends_before + 1
    assert token["params"]["tokens"] == [t["digits"] for t in u.api(f"/v1/vends/{token['vend_id']}")["tokens"]]

    listed = u.json("headend", "commands", CONNECTED)
    assert listed == u.api(f"/v1/meters/{CONNECTED}/commands") and len(listed) == 3
    assert {c["id"] for c in listed} == {made["id"], logs["id"], token["id"]}
    assert u.json("headend", "commands", CONNECTED, "--limit", "1") == u.api(f"/v1/meters/{CONNECTED}/commands",
                                                                             limit=1)  # fmt: skip
    assert u.json("headend", "commands", CONNECTED, "--status", "failed") == []
    table = u.mita("headend", "commands", CONNECTED).stdout.splitlines()
    assert table[0].split() == list(cli.COLUMNS) and len(table) == 4
    shown = u.json("headend", "show", CONNECTED)
    assert shown["commands"] == listed and shown["connection"]["secret"] is True
    assert "set_power_limit" in u.mita("headend", "show", CONNECTED).stdout


def test_command_refusals(connected: Utility) -> None:
    u, before = connected, (connected.count(meter_commands), connected.count(vends))
    u.refused("not_connected", 1, "headend", "command", KEYPAD, "disconnect")
    u.refused("not_connected", 1, "headend", "command", KEYPAD, "set_power_limit", "--value", "100")
    u.refused("not_found", 1, "headend", "command", UNKNOWN, "disconnect")
    u.refused("usage", 2, "headend", "command", CONNECTED, "explode")
    u.refused("usage", 2, "headend", "command", CONNECTED, "read_events", "--logs", "token,bogus")
    u.refused("usage", 2, "headend", "command", CONNECTED, "disconnect", "--expires-in", "0")
    u.refused("invalid_request", 1, "headend", "command", CONNECTED, "set_power_limit")
    u.refused("invalid_request", 1, "headend", "command", CONNECTED, "set_power_limit", "--value", "70000")
    u.refused("invalid_request", 1, "headend", "command", CONNECTED, "disconnect", "--value", "1")
    u.refused("invalid_request", 1, "headend", "command", CONNECTED, "disconnect", "--expires-in", str(31 * 86400))
    u.refused("invalid_request", 1, "headend", "command", CONNECTED, "set_tariff_rate", "--value", "1",
              "--expires-in", "60")  # fmt: skip
    result = u.mita("headend", "command", KEYPAD, "disconnect", code=1)
    assert json.loads(result.stdout)["error"]["code"] == "not_connected"  # a JSON command answers errors in JSON
    u.refused("usage", 2, "headend", "commands", CONNECTED, "--status", "lost")
    u.refused("not_found", 1, "headend", "commands", UNKNOWN)
    assert (u.count(meter_commands), u.count(vends)) == before


@pytest.mark.parametrize(
    ("status", "exit_code"),
    [(CommandStatus.ACKNOWLEDGED, 0), (CommandStatus.FAILED, 1), (CommandStatus.EXPIRED, 1)],
)
def test_wait_until_the_meter_answered(connected: Utility, status: CommandStatus, exit_code: int) -> None:
    next_id = connected.count(meter_commands) + 1
    error = None if status is CommandStatus.ACKNOWLEDGED else f"{status.value}: the stand-in said so"
    settle(connected.engine, next_id, status, after=0.5, error=error)
    started = time.monotonic()
    result = connected.mita("headend", "command", CONNECTED, "disconnect", "--wait", "30", code=exit_code)
    assert time.monotonic() - started < 10
    out = json.loads(result.stdout)
    assert out["id"] == next_id and out["status"] == status.value and out["attempts"] == 1
    if status is CommandStatus.ACKNOWLEDGED:
        assert result.stderr == "" and out["result"] == {"switch": {"connected": False}}
    else:
        assert result.stderr == f"command {next_id} {status.value}: {error}\n"


def test_a_wait_that_ends_first_says_so(connected: Utility) -> None:
    started = time.monotonic()
    result = connected.mita("headend", "command", CONNECTED, "reconnect", "--wait", "0.5", code=1)
    assert 0.5 <= time.monotonic() - started < 10
    out = json.loads(result.stdout)
    assert out["status"] == "queued"
    assert result.stderr == f"command {out['id']} still queued after 0.5 s (is mita worker running?)\n"


# ---------------------------------------------------------------------- on each database


def test_the_round_trip_on_each_database(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for u in set_up(url, tmp_path, monkeypatch):
        registered = u.json("headend", "register", CONNECTED, "--host", "127.0.0.1", "--port", "4059",
                            "--secret-file", u.secret_file(u.secret))  # fmt: skip
        assert registered == u.api(f"/v1/meters/{CONNECTED}/connection")
        token = u.json("headend", "command", CONNECTED, "set_tariff_rate", "--value", "120")
        clock = u.json("headend", "command", CONNECTED, "set_clock")
        assert u.json("headend", "commands", CONNECTED) == u.api(f"/v1/meters/{CONNECTED}/commands")
        assert {c["id"] for c in u.json("headend", "show", CONNECTED)["commands"]} == {token["id"], clock["id"]}
        u.mita("headend", "unregister", CONNECTED)
        u.refused("not_connected", 1, "headend", "command", CONNECTED, "set_clock")
