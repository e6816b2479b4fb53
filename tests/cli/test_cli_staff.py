"""The staff's commands: ``mita vends list|history``, ``mita import customers|meters``, ``mita report sales`` and
``mita admin list-keys|revoke-key``, on SQLite and PostgreSQL.

Each test sets a utility up through the registry and sells through the HTTP API (a TestClient on the same
database), then runs ``mita`` in-process: every ``--json`` answer must equal the API's answer to the same question,
every refusal is one line ``error[<code>]: <message>`` with its exit code, and no output holds an API key, its hash
or the vending key.
"""

from __future__ import annotations

import csv
import io
import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, func, select

from cli_run import Result, run
from mita.api import create_app
from mita.cli import vends as vends_cli
from mita.vend import apikeys, database, registry, sample
from mita.vend.lifecycles import VendKind, VendStatus
from mita.vend.schema import customers, meters

DRN = sample.meter_number("4750015023")
SECOND_DRN = sample.meter_number("4750015024")
NEW_DRN = sample.meter_number("4750015026")
UNREGISTERED = sample.meter_number("4750015029")


@dataclass
class Utility:
    url: str
    engine: Engine
    client: TestClient
    admin: dict[str, str]
    vendor: dict[str, str]
    vendor_id: int
    secrets: list[str]

    def mita(self, *args: str, code: int = 0, input: str | bytes | None = None) -> Result:
        result = run([*args, "--database-url", self.url], input=input)
        for secret in self.secrets:  # never a key, nor an API key's hash
            assert secret.lower() not in result.output.lower()
            assert apikeys.hash_key(secret) not in result.output
        assert "Traceback" not in result.output and "internal_error" not in result.output
        assert result.exit_code == code, result
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.mita(*args, "--json").stdout)

    def refused(self, code: str, exit_code: int, *args: str, input: str | None = None) -> str:
        result = self.mita(*args, code=exit_code, input=input)
        last = result.stderr.splitlines()[-1]
        assert last.startswith(f"error[{code}]: "), result.stderr
        return result.stderr

    def api(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params, headers=self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def vend(self, headers: dict[str, str], amount: int, meter: str = DRN) -> dict[str, Any]:
        r = self.client.post("/v1/vends", json={"meter": meter, "amount": amount},
                             headers={**headers, "Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def utility(url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Utility]:
    master = secrets.token_hex(32)
    monkeypatch.setenv("MITA_MASTER_KEY", master)
    monkeypatch.delenv("MITA_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    database.upgrade(url)
    app = create_app(url)
    engine: Engine = app.state.engine
    reg, system = registry.Registry(engine), registry.SYSTEM
    sample.create_group_and_tariff(engine, "Test town")
    shop = reg.create_vendor(system, "Corner shop")
    admin = reg.create_api_key("head office", "admin")[1]
    till = reg.create_api_key("shop till", "vendor", shop["id"])[1]
    reg.create_customer(system, account="ACC-1", name="Thandi Nkosi")
    reg.create_meter(system, drn=DRN, sgc=sample.SGC, customer="ACC-1", tariff="domestic")
    reg.create_meter(system, drn=SECOND_DRN, sgc=sample.SGC, tariff="domestic")
    with TestClient(app) as client:
        yield Utility(url, engine, client, {"Authorization": f"Bearer {admin}"}, {"X-API-Key": till}, shop["id"],
                      [sample.TEST_VENDING_KEY, master, admin, till])  # fmt: skip
    engine.dispose()


# ---------------------------------------------------------------------- vends


def test_the_choices_are_the_services() -> None:
    assert tuple(VendKind) == vends_cli.KINDS and tuple(VendStatus) == vends_cli.STATUSES
    shown = run(["vends", "list", "--help"], env={"COLUMNS": "200"}).stdout
    assert "{purchase,engineering,key_change}" in shown and "{completed,reversed}" in shown


def test_vends_list_and_history_answer_as_the_api_does(utility: Utility) -> None:
    made = [utility.vend(utility.vendor, 5000), utility.vend(utility.vendor, 3000, SECOND_DRN),
            utility.vend(utility.admin, 2000)]  # fmt: skip
    r = utility.client.post(f"/v1/vends/{made[0]['id']}/reversal", json={"reason": "test"}, headers=utility.admin)
    assert r.status_code == 200, r.text

    listed = utility.json("vends", "list")
    assert listed == utility.api("/v1/vends") and len(listed["items"]) == 3 and listed["next"] is None
    assert {v["id"] for v in listed["items"]} == {v["id"] for v in made}  # the order: the API's (same second: by id)
    for options, params in (
        (["--vendor-id", str(utility.vendor_id)], {"vendor_id": utility.vendor_id}),
        (["--status", "reversed"], {"status": "reversed"}),
        (["--kind", "purchase", "--customer", "ACC-1"], {"kind": "purchase", "customer": "ACC-1"}),
        (["--meter", SECOND_DRN], {"meter": SECOND_DRN}),
        (["--since", listed["items"][1]["created_at"]], {"since": listed["items"][1]["created_at"]}),
        (["--kind", "engineering"], {"kind": "engineering"}),
    ):
        assert utility.json("vends", "list", *options) == utility.api("/v1/vends", **params), options
    assert [v["id"] for v in utility.json("vends", "list", "--status", "reversed")["items"]] == [made[0]["id"]]

    first = utility.json("vends", "list", "--limit", "1")  # pages, as the API's
    assert first == utility.api("/v1/vends", limit=1) and first["next"] is not None
    second = utility.json("vends", "list", "--limit", "2", "--after", first["next"])
    assert second == utility.api("/v1/vends", limit=2, after=first["next"])
    assert [v["id"] for v in first["items"] + second["items"]] == [v["id"] for v in listed["items"]]
    paged = utility.mita("vends", "list", "--limit", "1")
    assert f"--after {first['next']}" in paged.stderr

    history = utility.json("vends", "history", DRN)
    assert history == utility.api(f"/v1/meters/{DRN}/vends", limit=500)
    assert {v["id"] for v in history["items"]} == {made[2]["id"], made[0]["id"]}

    table = utility.mita("vends", "list").stdout.splitlines()  # for people: a header, one vend a line
    assert table[0].split() == list(vends_cli.COLUMNS) and len(table) == 4
    line = next(line for line in table if made[0]["id"] in line)
    assert "reversed" in line and made[0]["tokens"][0]["digits"] in line and "Corner" not in line
    assert [line.split()[-1] for line in table[1:]] == [v["id"] for v in listed["items"]]
    assert len(utility.mita("vends", "history", DRN).stdout.splitlines()) == 3
    assert utility.mita("vends", "history", SECOND_DRN, "--database-url", utility.url).exit_code == 0
    assert utility.mita("vends", "list", "--kind", "key_change").stdout == "no vends\n"


def test_vends_refusals(utility: Utility) -> None:
    assert "choose from purchase, engineering, key_change" in utility.refused("usage", 2, "vends", "list", "--kind",
                                                                              "sale")  # fmt: skip
    utility.refused("usage", 2, "vends", "list", "--since", "yesterday")
    utility.refused("usage", 2, "vends", "list", "--limit", "501")
    utility.refused("invalid_cursor", 1, "vends", "list", "--after", "not-a-cursor")
    utility.refused("invalid_period", 1, "vends", "list", "--since", "2026-03-11", "--until", "2026-03-10")
    assert UNREGISTERED in utility.refused("not_found", 1, "vends", "history", UNREGISTERED)
    utility.refused("check_digit_error", 1, "vends", "history", DRN[:-1] + str((int(DRN[-1]) + 1) % 10))
    missing = run(["vends", "list", "--json", "--database-url", "sqlite:///forgotten.db"])
    assert missing.exit_code == 3 and missing.stderr.startswith("error[database_missing]: ")
    assert json.loads(missing.stdout)["error"]["code"] == "database_missing" and not Path("forgotten.db").exists()


# ---------------------------------------------------------------------- imports


CUSTOMERS = "account,name,phone,fbe_eligible,debt\r\nACC-2,Naledi Dlamini,+27821234567,true,0\r\nACC-3,Sipho,,,100\r\n"


def test_import_customers_and_meters_as_the_api_does(utility: Utility) -> None:
    Path("customers.csv").write_text(CUSTOMERS, encoding="utf-8")
    answer = utility.json("import", "customers", "customers.csv")
    r = utility.client.post("/v1/imports/customers", content=CUSTOMERS.replace("ACC-", "API-"),
                            headers={**utility.admin, "Content-Type": "text/csv"})  # fmt: skip
    assert r.status_code == 201 and answer == r.json() == {"imported": 2, "entity": "customers"}
    assert utility.count(customers) == 5

    rows = f"drn,sgc,customer,tariff,area\n{NEW_DRN},{sample.SGC},ACC-2,domestic,Soweto\n"
    done = utility.mita("import", "meters", "-", input=rows)  # from standard input
    assert done.stdout == "imported 1 meters\n" and utility.count(meters) == 3
    assert utility.api(f"/v1/meters/{NEW_DRN}")["area"] == "Soweto"


def test_a_refused_import_lists_every_bad_row_and_imports_nothing(utility: Utility) -> None:
    bad = "account,name,debt\nACC-1,Taken,0\nACC-4,Fine,0\nACC-5,,lots\nACC-4,Again,0\n"
    Path("bad.csv").write_text(bad, encoding="utf-8")
    stderr = utility.refused("import_refused", 1, "import", "customers", "bad.csv")
    lines = stderr.splitlines()
    assert lines[0] == "row 2, account: customer ACC-1 already exists [conflict]", stderr
    assert any(line.startswith("row 4, name: ") for line in lines) and any("row 4, debt" in x for x in lines)
    assert any(line.startswith("row 5, account: ") for line in lines) and len(lines) == 5
    assert utility.count(customers) == 1

    answer = utility.mita("import", "customers", "bad.csv", "--json", code=1)
    error = json.loads(answer.stdout)["error"]
    r = utility.client.post("/v1/imports/customers", content=bad, headers={**utility.admin, "Content-Type": "text/csv"})
    problem = r.json()
    assert r.status_code == 422 and error["code"] == problem["code"] == "import_refused"
    assert error["total"] == len(error["errors"]) == 4
    assert [(e["row"], e["column"], e["code"], e["message"]) for e in error["errors"]] == [
        (e["loc"][1], e["loc"][2] if len(e["loc"]) > 2 else None, e["type"], e["msg"]) for e in problem["errors"]
    ]  # the same problems as the API's, row by row

    utility.refused("unreadable_file", 1, "import", "meters", "nowhere.csv")
    Path("latin1.csv").write_bytes("account,name\nACC-9,Zo\xeb\n".encode("latin-1"))
    utility.refused("invalid_csv", 1, "import", "customers", "latin1.csv")
    meters_bad = f"drn,sgc\n{NEW_DRN},999999\n"
    assert "row 2, sgc: no supply group 999999 [not_found]" in utility.refused(
        "import_refused", 1, "import", "meters", "-", input=meters_bad
    )
    assert utility.count(meters) == 2


# ---------------------------------------------------------------------- the sales report


def test_report_sales_answers_as_the_api_does(utility: Utility) -> None:
    sold = utility.vend(utility.vendor, 5000)
    utility.vend(utility.admin, 4000, SECOND_DRN)
    r = utility.client.post(f"/v1/vends/{sold['id']}/reversal", json={"reason": "test"}, headers=utility.admin)
    assert r.status_code == 200, r.text
    report = utility.json("report", "sales")
    assert report == utility.api("/v1/reports/sales")
    assert {row["vendor"] for row in report["rows"]} == {None, "Corner shop"}
    day = report["since"][:10]
    assert utility.json("report", "sales", "--date", day) == report
    period = {"since": report["since"], "until": report["until"]}
    assert utility.json("report", "sales", "--since", period["since"], "--until", period["until"]) == report
    assert utility.json("report", "sales", "--date", "2020-01-01")["rows"] == []

    as_csv = utility.mita("report", "sales", "--csv").stdout
    assert as_csv == utility.client.get("/v1/reports/sales", params={"format": "csv"}, headers=utility.admin).text
    assert len(list(csv.reader(io.StringIO(as_csv)))) == 3

    table = utility.mita("report", "sales").stdout.splitlines()
    assert table[0].startswith(f"sales from {report['since']} until {report['until']}")
    assert table[1].split() == ["vendor", "tariff", "currency", "vends", "reversals", "amount", "vat", "units",
                                "fbe_units"]  # fmt: skip
    shop = next(line for line in table if line.startswith("Corner shop"))
    assert shop.split()[-6:] == ["1", "1", "0", "0", "0", "0"]  # one sold, one reversed: nothing net
    assert "totals" in table


def test_report_refusals(utility: Utility) -> None:
    utility.refused("invalid_period", 1, "report", "sales", "--since", "2026-03-10")
    utility.refused("invalid_period", 1, "report", "sales", "--date", "2026-03-10", "--since", "2026-03-10",
                    "--until", "2026-03-11")  # fmt: skip
    utility.refused("invalid_period", 1, "report", "sales", "--since", "2025-01-01", "--until", "2026-03-10")
    utility.refused("usage", 2, "report", "sales", "--csv", "--json")
    utility.refused("usage", 2, "report", "sales", "--date", "10/03/2026")


# ---------------------------------------------------------------------- API keys


def test_list_and_revoke_keys_as_the_api_does(utility: Utility) -> None:
    key_id, spare = registry.Registry(utility.engine).create_api_key("spare till", "vendor", utility.vendor_id)
    utility.secrets.append(spare)
    listed = utility.json("admin", "list-keys")
    assert listed == utility.api("/v1/api-keys", limit=500) and len(listed["items"]) == 3
    assert listed["items"][-1]["last4"] == spare[-4:]
    table = utility.mita("admin", "list-keys").stdout.splitlines()
    assert table[0].split() == ["id", "role", "vendor_id", "name", "last4", "created_at", "revoked_at"]
    assert "spare till" in table[3] and spare[-4:] in table[3] and len(table) == 4

    revoked = utility.json("admin", "revoke-key", str(key_id))
    assert revoked["id"] == key_id and revoked["revoked_at"] is not None and not revoked["already_revoked"]
    assert utility.client.get("/v1/vends", headers={"X-API-Key": spare}).status_code == 401
    r = utility.client.post(f"/v1/api-keys/{key_id}/revoke", headers=utility.admin)
    assert r.status_code == 200 and r.json() == {**revoked, "already_revoked": True}  # the API's shape
    again = utility.mita("admin", "revoke-key", str(key_id)).stdout
    assert again.startswith(f"API key {key_id} (spare till, vendor) was already revoked")
    assert utility.json("admin", "list-keys")["items"][-1]["revoked_at"] == revoked["revoked_at"]

    assert "no API key 999" in utility.refused("not_found", 1, "admin", "revoke-key", "999")
    utility.refused("usage", 2, "admin", "revoke-key", "first")
