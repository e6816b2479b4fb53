"""``mita keys``: vending keys, key changes and campaigns from the command line, on a SQLite file.

Each test gets its own database in a temporary folder (supply group 123456 with the compliance-suite key as
KRN 1, tariff ``domestic``, a few meters made with the registry). JSON goes to standard output, messages to
standard error; no output ever holds the vending key imported; refusals exit 1 with the service's code (3 for the
database's) in one line ``error[<code>]: <message>``, and no traceback.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import secrets
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from cli_run import Result, run
from mita import sts
from mita.keys.software import key_check_value
from mita.meter import Meter
from mita.vend import database, registry, sample
from mita.vend.schema import meters, outbox

SGC = sample.SGC
NEW_KEY = "fedcba9876543210"  # KRN 2, DKGA02
NEW_KCV = key_check_value(2, bytes.fromhex(NEW_KEY))


class Db:
    def __init__(self, url: str, folder: Path) -> None:
        self.url = url
        self.folder = folder
        self.engine = database.make_engine(url)
        self.meters: list[str] = []

    def run(self, *args: str, ok: bool = True, status: int = 1) -> Result:
        result = run([*args, "--database-url", self.url])
        output = result.stdout + result.stderr
        assert NEW_KEY not in output.lower() and sample.TEST_VENDING_KEY not in output.lower()
        assert "Traceback" not in output and "error[internal_error]" not in output
        if ok:
            assert result.exit_code == 0, output
        else:
            assert result.exit_code == status, output
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args).stdout)

    def refused(self, code: str, *args: str) -> str:
        stderr = self.run(*args, ok=False, status=2 if code == "usage" else 1).stderr
        assert stderr.startswith(f"error[{code}]: ") and stderr.endswith("\n") and stderr.count("\n") == 1, stderr
        return stderr

    def key_file(self, name: str = "key.json", **fields: Any) -> Path:
        doc = {"format": "mita.vending-key.v1", "sgc": SGC, "krn": 2, "dkga": 2, "key": NEW_KEY, **fields}
        path = self.folder / name
        path.write_text(json.dumps({k: v for k, v in doc.items() if v is not None}))
        return path


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Db:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    monkeypatch.delenv("MITA_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path}/mita.db"
    database.upgrade(url)
    out = Db(url, tmp_path)
    sample.create_group_and_tariff(out.engine, "Test town")
    for n in range(4):
        number = sample.meter_number(f"475002{n:04d}")
        registry.Registry(out.engine).create_meter(
            registry.SYSTEM, drn=number, sgc=SGC, tariff="domestic", manufacturer="acme" if n else "bolt"
        )
        out.meters.append(number)
    return out


def virtual(number: str, key: str = sample.TEST_VENDING_KEY, krn: int = 1, ti: int = 1) -> Meter:
    decoder = sts.dkga02(bytes.fromhex(key), sts.MeterNumber.parse(number), 2, SGC, ti, krn)
    return Meter.create(drn=number, ea=7, decoder_key=decoder, sgc=SGC, ti=ti, krn=krn, kt=2, profile="legacy-ea07")


# ---------------------------------------------------------------------- keys


def test_import_list_activate_history(db: Db) -> None:
    path = db.key_file(kcv=NEW_KCV, ken=200, issued_until="2099-01-01T00:00", credit_limit=100_000)
    result = db.run("keys", "import", str(path), "--delete")
    imported = json.loads(result.stdout)
    assert imported == {"id": imported["id"], "sgc": SGC, "krn": 2, "dkga": 2, "kcv": NEW_KCV, "keystore": "software"}
    assert not path.exists() and "deleted" in result.stderr and "pending" in result.stderr

    listed = {k["krn"]: k for k in db.json("keys", "list")}
    assert listed[2]["kcv"] == NEW_KCV and listed[2]["status"] == "pending" and listed[2]["ken"] == 200
    assert listed[2]["issued_until"] == "2099-01-01T00:00:00" and listed[2]["credit_limit"] == 100_000
    assert listed[1]["current"] and listed[1]["status"] == "active"
    assert [k["krn"] for k in db.json("keys", "list", "--sgc", SGC)] == [2, 1]

    active = db.json("keys", "activate", "--sgc", SGC, "--krn", "2")
    assert active["krn"] == 2 and active["status"] == "active" and active["current"] is True
    assert {k["krn"]: k["status"] for k in db.json("keys", "list")} == {2: "active", 1: "retired"}
    history = db.json("keys", "history", "--sgc", SGC)
    assert [h["action"] for h in history] == ["add_vending_key", "activate_vending_key"]
    assert history[0]["kcv"] == NEW_KCV and history[0]["actor"] == "system" and history[1]["previous_krn"] == 1

    retired = db.json("keys", "retire", "--sgc", SGC, "--krn", "1", "--destroy")
    assert retired["krn"] == 1 and retired["status"] == "destroyed"
    db.refused("conflict", "keys", "retire", "--sgc", SGC, "--krn", "2")


def test_import_keeps_the_file_unless_asked(db: Db) -> None:
    path = db.key_file()
    result = db.run("keys", "import", str(path))
    assert path.exists() and "still holds the key" in result.stderr
    assert json.loads(result.stdout)["kcv"] == NEW_KCV


def test_the_default_database_is_in_the_current_folder(db: Db) -> None:
    result = run(["keys", "list", "--sgc", SGC])  # no --database-url: ./mita.db, the fixture's
    assert result.exit_code == 0, result.output
    assert [k["krn"] for k in json.loads(result.stdout)] == [1]


def test_generate_key(db: Db) -> None:
    made = db.json("keys", "generate", "--sgc", SGC, "--krn", "3", "--dkga", "4", "--ken", "100")
    assert made["krn"] == 3 and made["dkga"] == 4 and len(made["kcv"]) == 6 and made["keystore"] == "software"
    listed = {k["krn"]: k for k in db.json("keys", "list", "--sgc", SGC)}
    assert listed[3]["status"] == "pending" and listed[3]["ken"] == 100
    active = db.json("keys", "activate", "--sgc", SGC, "--krn", "3", "--ea", "11", "--base-date", "2035")
    assert active["krn"] == 3 and active["current"]
    db.refused("conflict", "keys", "generate", "--sgc", SGC, "--krn", "3", "--dkga", "2")
    db.refused("range_error", "keys", "generate", "--sgc", SGC, "--krn", "10", "--dkga", "2")
    db.refused("not_found", "keys", "generate", "--sgc", "999990", "--krn", "4", "--dkga", "2")
    db.refused("usage", "keys", "generate", "--sgc", SGC, "--krn", "4", "--dkga", "3")  # a choice: 2 or 4
    db.refused("usage", "keys", "generate", "--sgc", SGC, "--krn", "4", "--dkga", "2", "--keystore", "x")
    db.refused("invalid_request", "keys", "generate", "--sgc", SGC, "--krn", "4", "--dkga", "2", "--issued-until", "x")


@pytest.mark.parametrize(
    "content,code",
    [
        ("not json", "invalid_key_file"),
        ("[1, 2]", "invalid_key_file"),
        ('{"format": "other", "sgc": "123456", "krn": 2, "dkga": 2, "key": "00"}', "invalid_key_file"),
        ('{"format": "mita.vending-key.v1", "sgc": "123456", "krn": 2, "dkga": 2}', "invalid_key_file"),
        (
            f'{{"format": "mita.vending-key.v1", "sgc": "123456", "krn": "2", "dkga": 2, "key": "{NEW_KEY}"}}',
            "invalid_key_file",
        ),
        (
            f'{{"format": "mita.vending-key.v1", "sgc": 123456, "krn": 2, "dkga": 2, "key": "{NEW_KEY}"}}',
            "invalid_key_file",
        ),
        (
            f'{{"format": "mita.vending-key.v1", "sgc": "123456", "krn": 2, "dkga": 2, "key": "{NEW_KEY}", '
            '"kcv": "000000"}',
            "kcv_mismatch",
        ),
        (f'{{"format": "mita.vending-key.v1", "sgc": "123456", "krn": 1, "dkga": 2, "key": "{NEW_KEY}"}}', "conflict"),
        (f'{{"format": "mita.vending-key.v1", "sgc": "999990", "krn": 2, "dkga": 2, "key": "{NEW_KEY}"}}', "not_found"),
        ('{"format": "mita.vending-key.v1", "sgc": "123456", "krn": 2, "dkga": 2, "key": "zz"}', "format_error"),
        (
            f'{{"format": "mita.vending-key.v1", "sgc": "123456", "krn": 2, "dkga": 4, "key": "{NEW_KEY}"}}',
            "format_error",
        ),
        (
            f'{{"format": "mita.vending-key.v1", "sgc": "123456", "krn": 2, "dkga": 2, "key": "{NEW_KEY}", '
            '"issued_until": "soon"}',
            "invalid_request",
        ),
    ],
)
def test_a_bad_key_file_is_refused(db: Db, content: str, code: str) -> None:
    path = db.folder / "bad.json"
    path.write_text(content)
    db.refused(code, "keys", "import", str(path), "--delete")
    assert path.exists()  # a refused import deletes nothing
    assert [k["krn"] for k in db.json("keys", "list")] == [1]


def test_import_refusals_before_the_database(db: Db) -> None:
    db.refused("unreadable_key_file", "keys", "import", str(db.folder / "missing.json"))
    (db.folder / "binary.json").write_bytes(b"\xff\xfe\x00")
    db.refused("unreadable_key_file", "keys", "import", str(db.folder / "binary.json"))
    db.refused("usage", "keys", "import", str(db.key_file()), "--keystore", "vault")
    result = run(["keys", "import"])
    assert result.exit_code == 2 and result.stderr.startswith("error[usage]: mita keys import: ")


def test_list_and_history_of_an_unknown_group(db: Db) -> None:
    db.refused("not_found", "keys", "list", "--sgc", "999990")
    db.refused("not_found", "keys", "history", "--sgc", "999990")
    db.refused("not_found", "keys", "activate", "--sgc", SGC, "--krn", "5")


# ---------------------------------------------------------------------- one meter's key change


def test_change_and_confirm(db: Db) -> None:
    number = db.meters[0]
    change = db.json("keys", "change", number, "--ti", "2")
    assert [t["kind"] for t in change["tokens"]] == ["key_change", "key_change"]
    meter = virtual(number)
    now = dt.datetime.now()
    assert [meter.enter(t["digits"], now).result for t in change["tokens"]] == ["kct_pending", "key_changed"]
    db.refused("conflict", "keys", "change", number, "--ti", "3")
    confirmed = db.json("keys", "confirm", number)
    assert confirmed["meter"] == number and confirmed["key"]["ti"] == 2
    db.refused("no_pending_key", "keys", "confirm", number)
    db.json("keys", "change", number, "--ti", "3")
    cancelled = db.json("keys", "cancel", number)
    assert cancelled["cancelled"]["ti"] == 3
    db.refused("no_pending_key", "keys", "cancel", number)
    assert db.json("keys", "change", number, "--ti", "3")["tokens"]  # nothing pending: a new change is allowed
    stderr = db.refused("invalid_request", "keys", "change", db.meters[1], "--kt", "0")
    assert "KT 0" in stderr
    db.refused("invalid_request", "keys", "change", db.meters[1])
    db.refused("check_digit_error", "keys", "change", number[:-1] + str((int(number[-1]) + 1) % 10), "--ti", "2")
    db.refused("no_vending_key", "keys", "change", db.meters[1], "--krn", "2")


# ---------------------------------------------------------------------- campaigns


def test_campaign_plan_generate_export_mark(db: Db) -> None:
    db.run("keys", "import", str(db.key_file()), "--delete")
    db.run("keys", "activate", "--sgc", SGC, "--krn", "2")
    result = db.run(
        "keys",
        "campaign",
        "plan",
        "--name",
        "KRN 2",
        "--sgc",
        SGC,
        "--krn",
        "2",
        "--delivery",
        "csv",
        "--batch-size",
        "3",
    )
    planned = json.loads(result.stdout)
    cid = str(planned["id"])
    assert planned["planned"] == 4 and planned["batches"] == 2 and planned["status"] == "planned"
    assert planned["target"]["krn"] == 2 and planned["delivery"] == "csv"
    assert f"campaign {cid}" in result.stderr

    # one batch, then the rest: a stopped run resumes where it stopped
    result = db.run("keys", "campaign", "generate", cid, "--max-batches", "1")
    first = json.loads(result.stdout)
    assert first["meters"]["issued"] == 3 and first["meters"]["planned"] == 1
    assert "left" in result.stderr and f"campaign {cid}" in result.stderr
    result = db.run("keys", "campaign", "generate", cid)
    done = json.loads(result.stdout)
    assert done["meters"]["issued"] == 4 and done["meters"]["planned"] == 0 and done["status"] == "generated"
    assert db.json("keys", "campaign", "status", cid) == done

    exported = db.run("keys", "campaign", "export", cid).stdout
    rows = list(csv.DictReader(io.StringIO(exported)))
    assert sorted(r["meter"] for r in rows) == sorted(db.meters)
    now = dt.datetime.now()
    for row in rows:
        tokens = [row[f"token_{i}"] for i in range(1, 5) if row[f"token_{i}"]]
        assert len(tokens) == 2
        meter = virtual(row["meter"])
        assert [meter.enter(t, now).result for t in tokens] == ["kct_pending", "key_changed"]
    out = db.folder / "field.csv"
    result = db.run("keys", "campaign", "export", cid, "--out", str(out))
    assert out.read_text() == exported and result.stdout == "" and "wrote 4 meters" in result.stderr

    marked = db.json("keys", "campaign", "mark", cid, "--status", "delivered", db.meters[0], db.meters[1])
    assert marked == {"marked": 2, "not_in_campaign": 0}
    marked = db.json("keys", "campaign", "mark", cid, "--status", "confirmed", "--meters", str(out))  # the export
    assert marked == {"marked": 4, "not_in_campaign": 0}
    status = db.json("keys", "campaign", "status", cid)
    assert status["meters"] == {"planned": 0, "issued": 0, "delivered": 0, "confirmed": 4, "cancelled": 0}
    assert len(db.run("keys", "campaign", "export", cid).stdout.splitlines()) == 1


def test_campaign_selection_and_sms(db: Db) -> None:
    customer = registry.Registry(db.engine).create_customer(
        registry.SYSTEM, account="C-1", name="T", phone="+27820000001"
    )
    with db.engine.begin() as conn:
        conn.execute(update(meters).where(meters.c.drn == db.meters[1]).values(area="north"))
        conn.execute(update(meters).where(meters.c.drn == db.meters[2]).values(area="north"))
        conn.execute(update(meters).where(meters.c.drn == db.meters[1]).values(customer_id=customer["id"]))
    db.run("keys", "generate", "--sgc", SGC, "--krn", "2", "--dkga", "2")
    db.run("keys", "activate", "--sgc", SGC, "--krn", "2")
    plan = ("keys", "campaign", "plan", "--name", "North", "--sgc", SGC, "--krn", "2", "--delivery", "sms")
    north = db.json(*plan, "--select-area", "north", "--select-manufacturer", "acme", "--select-krn", "1")
    assert north["planned"] == 2 and north["selection"] == {"krn": 1, "manufacturer": "acme", "area": "north"}
    db.refused("conflict", *plan, "--select-area", "south")  # campaign names are unique
    plan = (*plan[:4], "Bolt", *plan[5:])
    assert db.json(*plan, "--select-manufacturer", "bolt")["planned"] == 1
    plan = (*plan[:4], "1993", *plan[5:])
    assert db.json(*plan, "--select-base-date", "1993")["planned"] == 0
    cid = str(north["id"])
    assert db.json("keys", "campaign", "sms", cid) == {"queued": 0}  # nothing issued yet
    db.run("keys", "campaign", "generate", cid)
    assert db.json("keys", "campaign", "sms", cid) == {"queued": 1}
    assert db.json("keys", "campaign", "sms", cid) == {"queued": 0}
    with db.engine.connect() as conn:
        (payload,) = conn.execute(select(outbox.c.payload).where(outbox.c.channel == "sms")).scalars()
    assert payload["meter"] == db.meters[1] and payload["phone"] == "+27820000001"


def test_campaign_refusals(db: Db) -> None:
    plan = ("keys", "campaign", "plan", "--name", "X", "--sgc", SGC)
    db.refused("no_vending_key", *plan, "--krn", "2")
    db.refused("not_found", "keys", "campaign", "plan", "--name", "X", "--sgc", "999990", "--krn", "2")
    db.run("keys", "generate", "--sgc", SGC, "--krn", "2", "--dkga", "2")
    db.refused("usage", *plan, "--krn", "2", "--delivery", "fax")
    db.refused("invalid_request", *plan, "--krn", "2", "--batch-size", "0")
    for command in ("status", "generate", "export", "sms"):
        db.refused("not_found", "keys", "campaign", command, "999")
    db.refused("not_found", "keys", "campaign", "mark", "999", "--status", "confirmed", db.meters[0])
    cid = str(db.json(*plan, "--krn", "2")["id"])
    mark = ("keys", "campaign", "mark", cid)
    db.refused("invalid_request", *mark, "--status", "confirmed")  # no meters
    db.refused("usage", *mark, "--status", "lost", db.meters[0])
    bad = db.meters[0][:-1] + str((int(db.meters[0][-1]) + 1) % 10)
    db.refused("check_digit_error", *mark, "--status", "delivered", db.meters[1], bad)
    db.refused("unreadable_file", *mark, "--status", "delivered", "--meters", str(db.folder / "missing.txt"))
    listed = db.folder / "meters.txt"
    listed.write_text(f"# the north side\n{db.meters[0]}\n\n{db.meters[1]}\n")
    db.refused("invalid_request", *mark, "--status", "delivered", "--meters", str(listed), db.meters[2])
    assert db.json(*mark, "--status", "delivered", "--meters", str(listed)) == {"marked": 0, "not_in_campaign": 2}
    db.refused("unwritable_file", "keys", "campaign", "export", cid, "--out", str(db.folder / "no" / "such.csv"))


def test_an_unreachable_database_is_a_clean_error(tmp_path: Path) -> None:
    result = run(["keys", "list", "--database-url", f"sqlite:///{tmp_path}/no/such/folder/mita.db"])
    assert result.exit_code == 3 and "Traceback" not in result.output
    assert result.stderr.startswith("error[database_missing]: ") and "mita db upgrade" in result.stderr
    assert not (tmp_path / "no").exists()  # nothing was made


def test_a_database_server_that_does_not_answer_is_one_line_naming_it() -> None:
    with socket.socket() as s:  # a port nothing listens on once this closes
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = run(["keys", "list", "--database-url", f"postgresql://postgres@127.0.0.1:{port}/mita"])
    assert result.exit_code == 3 and "Traceback" not in result.output
    line = result.stderr.strip()
    assert line.startswith("error[database_unavailable]: could not connect to the database") and "\n" not in line
    assert f"127.0.0.1:{port}/mita" in line


def test_a_database_that_is_not_there_or_not_migrated_is_refused_not_made(tmp_path: Path) -> None:
    missing = f"sqlite:///{tmp_path}/forgotten.db"
    result = run(["keys", "list", "--database-url", missing])
    assert result.exit_code == 3 and "error[database_missing]: " in result.stderr and "forgotten.db" in result.stderr
    assert not (tmp_path / "forgotten.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    result = run(["keys", "list", "--database-url", f"sqlite:///{empty}"])
    assert result.exit_code == 3 and "error[schema_outdated]: " in result.stderr and "empty.db" in result.stderr
    assert run(["db", "upgrade", "--database-url", missing]).exit_code == 0
    assert run(["keys", "list", "--database-url", missing]).stdout.strip() == "[]"


@pytest.mark.parametrize(
    "command", [["keys", "list"], ["db", "upgrade"], ["serve"], ["admin", "create-key", "--role", "admin"]]
)
def test_a_password_in_the_database_url_option_is_refused(command: list[str]) -> None:
    result = run([*command, "--database-url", "postgresql://mita:s3cr3t-pw@127.0.0.1:5432/mita"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.stderr.startswith("error[secret_on_command_line]: ") and "MITA_DATABASE_URL" in result.stderr
    assert "s3cr3t-pw" not in result.output
