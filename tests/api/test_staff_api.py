"""The staff's routes over HTTP, on SQLite and PostgreSQL: listing vends and campaigns, API keys and their
revocation, CSV imports, the sales report, and the bounds on tariffs.

One database per backend and module, set up through the registry; every answer is checked against its documented
response (tests/contract.py) and for keys (none may appear in any body).
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from keyed_utility import bearer, keyed_utility
from sqlalchemy import Engine, func, select

import contract
from mita.api import create_app
from mita.vend import apikeys, keyring, registry
from mita.vend.sample import meter_number
from mita.vend.schema import customers, meters

VENDING_KEY = "abababababababab"
SECOND_KEY = "cdcdcdcdcdcdcdcd"
SGC = "123456"
CAMPAIGN_SGC = "654321"
DRN = "47500150231"
SECOND_DRN = meter_number("4750015027")
SPEC = {"blocks": [{"up_to": "50", "price": "1.10"}, {"up_to": None, "price": "2.50"}], "vat_rate": "0.15"}
PROBLEM = "application/problem+json"
CSV = {"Content-Type": "text/csv"}


@dataclass
class Staff:
    client: TestClient
    engine: Engine
    url: str
    admin: dict[str, str]
    operator: dict[str, str]
    vendor: dict[str, str]
    other: dict[str, str]
    vendor_id: int
    other_id: int
    hidden: list[str]

    def vend(self, who: dict[str, str], amount: int = 5000, meter: str = DRN) -> dict[str, Any]:
        r = self.client.post(
            "/v1/vends", json={"meter": meter, "amount": amount}, headers={**who, "Idempotency-Key": str(uuid.uuid4())}
        )
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def key(self, role: str = "vendor", vendor_id: int | None = None) -> tuple[int, dict[str, str]]:
        key_id, plaintext = registry.Registry(self.engine).create_api_key(f"key {uuid.uuid4().hex[:6]}", role,
                                                                          vendor_id)  # fmt: skip
        self.hidden.append(plaintext)
        return key_id, bearer(plaintext)

    def count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def is_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


@pytest.fixture(scope="module")
def staff(database_url: str) -> Iterator[Staff]:
    with keyed_utility(database_url, VENDING_KEY, SGC) as u:
        app, engine, reg, master, keys = u.app, u.engine, u.registry, u.master, u.keys
        system = registry.SYSTEM
        shop = {"id": registry.authenticate(engine, keys["vendor"]).vendor_id}  # keyed_utility's Corner shop
        other = reg.create_vendor(system, "Other shop")
        keys["other"] = reg.create_api_key("other till", "vendor", other["id"])[1]
        reg.create_tariff(system, name="domestic", currency="ZAR", spec=SPEC, effective_from=dt.datetime(2020, 1, 1))
        reg.create_customer(system, account="ACC-1", name="Thandi Nkosi")
        reg.create_customer(system, account="ACC-2", name="Sipho Ndlovu")
        reg.create_meter(system, drn=DRN, sgc=SGC, customer="ACC-1", tariff="domestic")
        reg.create_meter(system, drn=SECOND_DRN, sgc=SGC, customer="ACC-2", tariff="domestic")
        hidden = [VENDING_KEY, SECOND_KEY, master, *keys.values()]

        def no_secrets(response: httpx.Response) -> None:
            response.read()
            body = response.text.lower()
            for secret in hidden:
                assert secret.lower() not in body, f"a key appears in the response to {response.request.url}"
                assert apikeys.hash_key(secret) not in body, f"a key's hash appears in {response.request.url}"

        with TestClient(app) as client:
            client.event_hooks["response"] = [no_secrets, contract.checker(app)]
            yield Staff(
                client, engine, database_url, bearer(keys["admin"]), bearer(keys["operator"]),
                {"X-API-Key": keys["vendor"]}, bearer(keys["other"]), shop["id"], other["id"], hidden,
            )  # fmt: skip


def walk(staff: Staff, path: str, headers: dict[str, str], limit: int = 2, **params: Any) -> list[dict[str, Any]]:
    """Every page of a list, followed through its cursors."""
    items: list[dict[str, Any]] = []
    after = None
    while True:
        query = {**params, "limit": limit, **({"after": after} if after is not None else {})}
        r = staff.client.get(path, params=query, headers=headers)
        assert r.status_code == 200, r.text
        items += r.json()["items"]
        after = r.json()["next"]
        if after is None:
            return items


# ---------------------------------------------------------------------- the routes are there


def test_openapi_lists_the_staff_routes(staff: Staff) -> None:
    paths = staff.client.get("/openapi.json").json()["paths"]
    for path, method in (
        ("/v1/vends", "get"), ("/v1/meters/{drn}/vends", "get"), ("/v1/campaigns", "get"),
        ("/v1/api-keys", "get"), ("/v1/api-keys/{key_id}/revoke", "post"), ("/v1/imports/customers", "post"),
        ("/v1/imports/meters", "post"), ("/v1/reports/sales", "get"),
    ):  # fmt: skip
        assert method in paths[path], path
    assert "text/csv" in paths["/v1/imports/meters"]["post"]["requestBody"]["content"]
    assert "text/csv" in paths["/v1/reports/sales"]["get"]["responses"]["200"]["content"]


# ---------------------------------------------------------------------- vends


def test_vends_are_listed_filtered_and_paged_newest_first(staff: Staff) -> None:
    since = dt.datetime.now().astimezone().replace(microsecond=0)
    made = [staff.vend(staff.vendor, 5000), staff.vend(staff.other, 3000, SECOND_DRN), staff.vend(staff.admin, 2000)]
    until = dt.datetime.now().astimezone() + dt.timedelta(seconds=1)
    window = {"since": since.isoformat(), "until": until.isoformat()}
    listed = walk(staff, "/v1/vends", staff.operator, limit=1, **window)
    assert {v["id"] for v in listed} == {v["id"] for v in made}
    assert [v["created_at"] for v in listed] == sorted((v["created_at"] for v in listed), reverse=True)
    by_id = {v["id"]: v for v in listed}
    assert by_id[made[0]["id"]]["tokens"][0]["digits"] == made[0]["tokens"][0]["digits"]
    assert by_id[made[1]["id"]]["customer"] == "ACC-2" and by_id[made[1]["id"]]["vendor_id"] == staff.other_id
    assert [v["id"] for v in walk(staff, "/v1/vends", staff.admin, meter=SECOND_DRN, **window)] == [made[1]["id"]]
    assert [v["id"] for v in walk(staff, "/v1/vends", staff.admin, customer="ACC-2", **window)] == [made[1]["id"]]
    assert [v["id"] for v in walk(staff, "/v1/vends", staff.admin, vendor_id=staff.vendor_id, **window)] == [
        made[0]["id"]
    ]
    # a vendor's key sees its own vendor's vends, whatever it asks for
    assert [v["id"] for v in walk(staff, "/v1/vends", staff.vendor, **window)] == [made[0]["id"]]
    assert walk(staff, "/v1/vends", staff.vendor, vendor_id=staff.other_id, **window) == []
    r = staff.client.post(f"/v1/vends/{made[0]['id']}/reversal", json={"reason": "test"}, headers=staff.operator)
    assert r.status_code == 200, r.text
    reversed_ = walk(staff, "/v1/vends", staff.admin, status="reversed", **window)
    assert [v["id"] for v in reversed_] == [made[0]["id"]] and reversed_[0]["reversed_at"] is not None
    assert walk(staff, "/v1/vends", staff.admin, kind="engineering", **window) == []


def test_a_meters_history(staff: Staff) -> None:
    time.sleep(1.05)  # times are kept to the second: vends of one second come in id order
    sold = staff.vend(staff.vendor, 4000, SECOND_DRN)
    time.sleep(1.05)
    r = staff.client.post(f"/v1/meters/{SECOND_DRN}/engineering-tokens", json={"kind": "clear_tamper"},
                          headers=staff.operator)  # fmt: skip
    assert r.status_code == 201, r.text
    history = staff.client.get(f"/v1/meters/{SECOND_DRN}/vends", params={"limit": 2}, headers=staff.operator).json()
    assert [v["id"] for v in history["items"]] == [r.json()["id"], sold["id"]]
    assert [v["kind"] for v in history["items"]] == ["engineering", "purchase"]
    is_problem(staff.client.get(f"/v1/meters/{meter_number('4750015099')}/vends", headers=staff.admin), 404,
               "not_found")  # fmt: skip
    is_problem(staff.client.get(f"/v1/meters/{DRN[:-1]}0/vends", headers=staff.admin), 422, "check_digit_error")


def test_list_refusals(staff: Staff) -> None:
    get = staff.client.get
    is_problem(get("/v1/vends", params={"since": "2026-03-10T00:00:00"}, headers=staff.admin), 422, "invalid_request")
    is_problem(get("/v1/vends", params={"after": "garbage"}, headers=staff.admin), 422, "invalid_cursor")
    is_problem(get("/v1/vends", params={"kind": "gift"}, headers=staff.admin), 422, "invalid_request")
    t = "2026-03-10T00:00:00+00:00"
    is_problem(get("/v1/vends", params={"since": t, "until": t}, headers=staff.admin), 422, "invalid_period")
    is_problem(get("/v1/vends"), 401, "unauthorized")


# ---------------------------------------------------------------------- campaigns


def test_campaigns_are_listed(staff: Staff) -> None:
    # a group of its own, rotating to KRN 2 (the other tests' group keeps selling on KRN 1)
    admin, now = registry.SYSTEM, dt.datetime.now()
    reg = registry.Registry(staff.engine)
    reg.create_supply_group(admin, sgc=CAMPAIGN_SGC, name="Rotating town", vending_key=VENDING_KEY, base_date=2014)
    for serial in ("4750018001", "4750018002"):
        reg.create_meter(admin, drn=meter_number(serial), sgc=CAMPAIGN_SGC)
    keyring.add_key(staff.engine, admin, sgc=CAMPAIGN_SGC, krn=2, dkga=2, key_hex=SECOND_KEY, at=now)
    keyring.activate_key(staff.engine, admin, sgc=CAMPAIGN_SGC, krn=2, at=now)
    ids = []
    for i in range(3):
        body = {"name": f"rotate {i}", "sgc": CAMPAIGN_SGC, "target": {"krn": 2}, "batch_size": 1}
        r = staff.client.post("/v1/campaigns", json=body, headers=staff.admin)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    assert [c["id"] for c in walk(staff, "/v1/campaigns", staff.operator)] == ids
    planned = walk(staff, "/v1/campaigns", staff.admin, status="planned", sgc=CAMPAIGN_SGC)
    assert [c["id"] for c in planned] == ids and planned[0]["meters"]["planned"] == planned[0]["planned"] == 2
    assert planned[0] == staff.client.get(f"/v1/campaigns/{ids[0]}", headers=staff.admin).json()
    assert walk(staff, "/v1/campaigns", staff.admin, status="closed") == []
    assert walk(staff, "/v1/campaigns", staff.admin, sgc=SGC) == []
    is_problem(staff.client.get("/v1/campaigns", headers=staff.vendor), 403, "forbidden")
    is_problem(staff.client.get("/v1/campaigns", params={"status": "lost"}, headers=staff.admin), 422,
               "invalid_request")  # fmt: skip


# ---------------------------------------------------------------------- API keys


def test_api_keys_are_listed_for_admins_only(staff: Staff) -> None:
    keys = walk(staff, "/v1/api-keys", staff.admin)
    assert {"head office", "control room", "shop till", "other till"} <= {k["name"] for k in keys}
    till = next(k for k in keys if k["name"] == "shop till")
    assert till["role"] == "vendor" and till["vendor_id"] == staff.vendor_id and till["revoked_at"] is None
    assert till["last4"] == staff.vendor["X-API-Key"][-4:]
    is_problem(staff.client.get("/v1/api-keys", headers=staff.operator), 403, "forbidden")
    is_problem(staff.client.get("/v1/api-keys", headers=staff.vendor), 403, "forbidden")


def test_a_revoked_key_stops_at_once_here_and_within_the_ttl_on_another_process(
    staff: Staff, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apikeys, "AUTH_TTL", 1.0)  # the real one is 5 s (checked below); the same code path
    key_id, till = staff.key("vendor", staff.vendor_id)
    other_app = create_app(staff.url)  # a second server process: its own engine, its own cache
    with TestClient(other_app) as elsewhere:
        assert staff.client.get("/v1/vends", headers=till).status_code == 200  # both have the key cached
        assert elsewhere.get("/v1/vends", headers=till).status_code == 200
        r = staff.client.post(f"/v1/api-keys/{key_id}/revoke", headers=staff.admin)
        assert r.status_code == 200, r.text
        assert r.json()["revoked_at"] is not None and r.json()["revoked_self"] is False
        is_problem(staff.client.get("/v1/vends", headers=till), 401, "unauthorized")  # at once, here
        assert elsewhere.get("/v1/vends", headers=till).status_code == 200  # still cached there...
        time.sleep(1.1)
        assert elsewhere.get("/v1/vends", headers=till).status_code == 401  # ...until its entry expires
    assert apikeys.AUTH_TTL == 1.0 and apikeys.__dict__  # the patched value was used
    monkeypatch.undo()
    assert apikeys.AUTH_TTL <= 5.0
    again = staff.client.post(f"/v1/api-keys/{key_id}/revoke", headers=staff.admin).json()
    assert again["already_revoked"] is True and again["revoked_at"] == r.json()["revoked_at"]
    listed = {k["id"]: k for k in walk(staff, "/v1/api-keys", staff.admin, limit=50)}
    assert listed[key_id]["revoked_at"] == r.json()["revoked_at"]
    audit = staff.client.get("/v1/audit", params={"limit": 500}, headers=staff.admin).json()["items"]
    assert [a["entity_id"] for a in audit if a["action"] == "revoke_api_key"] == [str(key_id)]


def test_an_admin_key_may_revoke_itself_and_is_told(staff: Staff) -> None:
    key_id, me = staff.key("admin")
    r = staff.client.post(f"/v1/api-keys/{key_id}/revoke", headers=me)
    assert r.status_code == 200 and r.json()["revoked_self"] is True
    is_problem(staff.client.get("/v1/api-keys", headers=me), 401, "unauthorized")
    is_problem(staff.client.post("/v1/api-keys/999999/revoke", headers=staff.admin), 404, "not_found")
    is_problem(staff.client.post(f"/v1/api-keys/{key_id}/revoke", headers=staff.operator), 403, "forbidden")


# ---------------------------------------------------------------------- imports


def test_imports_create_every_row(staff: Staff) -> None:
    tag = uuid.uuid4().hex[:6].upper()
    text = f'account,name,fbe_eligible,debt\r\nI-{tag}-1,One,true,100\r\nI-{tag}-2,"Two, Second",,\r\n'
    r = staff.client.post("/v1/imports/customers", content=text.encode(), headers={**staff.operator, **CSV})
    assert r.status_code == 201, r.text
    assert r.json() == {"imported": 2, "entity": "customers"}
    got = staff.client.get(f"/v1/customers/I-{tag}-2", headers=staff.admin).json()
    assert got["name"] == "Two, Second" and got["debt"] == 0
    drn = meter_number("4750017001")
    r = staff.client.post("/v1/imports/meters", content=f"drn,sgc,customer,tariff\n{drn},{SGC},I-{tag}-1,domestic\n",
                          headers={**staff.admin, "Content-Type": "text/csv; charset=utf-8"})  # fmt: skip
    assert r.status_code == 201 and r.json()["imported"] == 1
    assert staff.client.get(f"/v1/meters/{drn}", headers=staff.admin).json()["area"] == ""


def test_an_import_with_bad_rows_imports_nothing_and_lists_every_row(staff: Staff) -> None:
    before = staff.count(customers), staff.count(meters)
    text = "account,name,debt\nGOOD-1,Good,0\nACC-1,Taken,0\nBAD-2,,x\nGOOD-1,Twice,0\n"
    body = is_problem(
        staff.client.post("/v1/imports/customers", content=text, headers={**staff.admin, **CSV}), 422, "import_refused"
    )
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["body", 3, "account"], "conflict"),
        (["body", 4, "name"], "invalid_request"),
        (["body", 4, "debt"], "invalid_amount"),
        (["body", 5, "account"], "conflict"),
    ]
    assert all(e["msg"] for e in body["errors"]) and "nothing was imported" in body["detail"]
    bad = f"drn,sgc\n{DRN[:-1]}0,{SGC}\n{meter_number('4750017002')},999999\n"
    body = is_problem(staff.client.post("/v1/imports/meters", content=bad, headers={**staff.admin, **CSV}), 422,
                      "import_refused")  # fmt: skip
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [
        (["body", 2, "drn"], "check_digit_error"),
        (["body", 3, "sgc"], "not_found"),
    ]
    assert (staff.count(customers), staff.count(meters)) == before


def test_an_import_must_be_csv_within_the_size_limit(staff: Staff) -> None:
    post = staff.client.post
    is_problem(post("/v1/imports/customers", json={"account": "X"}, headers=staff.admin), 415,
               "unsupported_media_type")  # fmt: skip
    is_problem(post("/v1/imports/customers", content=b"account,name\n\xff\xfe,x\n", headers={**staff.admin, **CSV}),
               400, "invalid_csv")  # fmt: skip
    is_problem(post("/v1/imports/customers", content='account,name\n"A,B\n', headers={**staff.admin, **CSV}), 400,
               "invalid_csv")  # fmt: skip
    big = "account,name\n" + "A" * (1024 * 1024)
    is_problem(post("/v1/imports/customers", content=big, headers={**staff.admin, **CSV}), 413, "payload_too_large")
    is_problem(post("/v1/imports/meters", content="drn,sgc\n", headers={**staff.vendor, **CSV}), 403, "forbidden")
    is_problem(post("/v1/customers", content="account,name\n", headers={**staff.admin, **CSV}), 415,
               "unsupported_media_type")  # CSV only where an import is  # fmt: skip


# ---------------------------------------------------------------------- the sales report


def test_the_sales_report_adds_up_the_vends_and_nets_reversals(staff: Staff) -> None:
    since = dt.datetime.now().astimezone().replace(microsecond=0)
    sold = [staff.vend(staff.vendor, 6000), staff.vend(staff.vendor, 4000), staff.vend(staff.other, 3000)]
    r = staff.client.post(f"/v1/vends/{sold[1]['id']}/reversal", json={"reason": "test"}, headers=staff.admin)
    assert r.status_code == 200
    window = {
        "since": since.isoformat(),
        "until": (dt.datetime.now().astimezone() + dt.timedelta(seconds=1)).isoformat(),
    }
    report = staff.client.get("/v1/reports/sales", params=window, headers=staff.operator).json()
    rows = {row["vendor"]: row for row in report["rows"]}
    assert set(rows) == {"Corner shop", "Other shop"}
    shop = rows["Corner shop"]
    assert (shop["vends"], shop["reversals"], shop["sales_amount"], shop["reversed_amount"]) == (2, 1, 10000, 4000)
    assert shop["amount"] == 6000 and shop["vat"] == sold[0]["receipt"]["vat"]
    assert shop["units"] == sold[0]["receipt"]["units"] + sold[0]["receipt"]["fbe_units"]
    assert rows["Other shop"]["amount"] == 3000 and rows["Other shop"]["tariff"] == "domestic"
    assert report["totals"] == [{"currency": "ZAR", "vends": 3, "reversals": 1, "amount": 9000,
                                 "vat": shop["vat"] + rows["Other shop"]["vat"],
                                 "units": shop["units"] + rows["Other shop"]["units"],
                                 "fbe_units": shop["fbe_units"] + rows["Other shop"]["fbe_units"]}]  # fmt: skip
    mine = staff.client.get("/v1/reports/sales", params=window, headers=staff.vendor).json()
    assert [row["vendor"] for row in mine["rows"]] == ["Corner shop"]
    today = staff.client.get("/v1/reports/sales", headers=staff.admin).json()
    assert today["since"][:10] == dt.date.today().isoformat() and today["totals"][0]["vends"] >= 3


def test_the_sales_report_as_csv(staff: Staff) -> None:
    for how in ({"headers": {**staff.admin, "Accept": "text/csv"}},
                {"headers": staff.admin, "params": {"format": "csv"}}):  # fmt: skip
        r = staff.client.get("/v1/reports/sales", **how)  # type: ignore[arg-type]
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == f'attachment; filename="sales-{dt.date.today().isoformat()}.csv"'
        lines = r.text.splitlines()
        assert lines[0].startswith("vendor_id,vendor,tariff,currency,vends,reversals,amount,vat")
    as_json = staff.client.get(
        "/v1/reports/sales", headers={**staff.admin, "Accept": "text/csv;q=0.5, application/json"}
    )
    assert as_json.headers["content-type"] == "application/json"
    r = staff.client.get("/v1/reports/sales", params={"date": "2026-03-01", "since": "2026-03-01T00:00:00+00:00"},
                         headers=staff.admin)  # fmt: skip
    is_problem(r, 422, "invalid_period")
    r = staff.client.get("/v1/reports/sales", params={"date": "2020-01-01", "format": "csv"}, headers=staff.admin)
    assert r.text.splitlines()[1:] == []  # a day without sales: the header only


# ---------------------------------------------------------------------- bounds


def test_a_tariff_with_110_percent_vat_is_refused(staff: Staff) -> None:
    body = {"name": "too taxed", "currency": "ZAR", "spec": {**SPEC, "vat_rate": "1.10"}}
    is_problem(staff.client.post("/v1/tariffs", json=body, headers=staff.admin), 422, "invalid_vat_rate")
    body = {"name": "fully taxed", "currency": "ZAR", "spec": {**SPEC, "vat_rate": "1"}}
    assert staff.client.post("/v1/tariffs", json=body, headers=staff.admin).status_code == 201
