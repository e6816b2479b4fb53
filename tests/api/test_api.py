"""The HTTP API (mita.api), on SQLite and on the real PostgreSQL.

Each backend gets one database per module (a SQLite file, or a fresh PostgreSQL database that is dropped
afterwards), set up through the registry: API keys for the three roles, a vendor, supply group 123456 with the
compliance-suite vending key, a block tariff with free basic electricity, a customer and meter 47500150231.
PostgreSQL is not optional: if it cannot be reached, its half of the tests fails (never skips).

Every response of the shared client is checked for secrets (the vending keys, the master key, the API keys):
a key in any body fails the test that received it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import os
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from keyed_utility import bearer
from sqlalchemy import Engine, func, select

import contract
from mita import sts
from mita.api import app as api_app
from mita.api import app_from_env, create_app
from mita.meter import Meter
from mita.vend import database, registry
from mita.vend.errors import VendError
from mita.vend.schema import audit, idempotency, ledger, meter_months, outbox, tokens, vendors, vends
from mita.vend.service import VendingService
from mita.vend.walltime import with_offset

PG_ADMIN_URL = os.environ.get("MITA_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PG_CONNINFO = PG_ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")
VENDING_KEY = "abababababababab"
OTHER_VENDING_KEY = "0123456789abcdef"
SGC = "123456"
DRN = "47500150231"
SPEC = {
    "blocks": [{"up_to": "50", "price": "1.10"}, {"up_to": None, "price": "2.50"}],
    "vat_rate": "0.15",
    "fixed_monthly": 1000,
    "fbe_kwh": "50",
}
PROBLEM = "application/problem+json"
ROW_TABLES = (vends, tokens, ledger, audit, outbox, idempotency, meter_months)


def drn(prefix: str) -> str:
    """A meter number with the right Luhn check digit."""
    return prefix + str(sts.luhn_digit(prefix))


_serial = itertools.count(1_000_000)


def new_drn() -> str:
    """A valid meter number not used before in this run (DRN 47500150231 is serial 0015023)."""
    return drn(f"475{next(_serial):07d}")


@dataclass
class World:
    client: TestClient
    engine: Engine
    url: str
    admin: dict[str, str]
    operator: dict[str, str]
    vendor: dict[str, str]
    vendor_id: int
    secrets: list[str] = field(default_factory=list)

    def vend(self, amount: Any = 5000, meter: Any = DRN, headers: dict[str, str] | None = None, **extra: Any) -> Any:
        h = {**(headers or self.vendor), "Idempotency-Key": str(uuid.uuid4())}
        return self.client.post("/v1/vends", json={"meter": meter, "amount": amount, **extra}, headers=h)

    def credit_vendor(self, limit: int = 10**9) -> tuple[int, dict[str, str]]:
        """A vendor selling on credit (its balance is kept on its row), and its key's headers."""
        vendor = registry.Registry(self.engine).create_vendor(
            registry.SYSTEM, f"On credit {uuid.uuid4().hex[:6]}", limit
        )
        _, key = registry.Registry(self.engine).create_api_key("credit till", "vendor", vendor["id"])
        self.secrets.append(key)
        return int(vendor["id"]), bearer(key)

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in ROW_TABLES}

    def add_meter(self, customer: bool = True, **extra: Any) -> str:
        number = new_drn()
        body: dict[str, Any] = {"drn": number, "sgc": SGC, "tariff": "domestic", **extra}
        if customer:
            account = f"ACC-{uuid.uuid4().hex[:8]}"
            r = self.client.post(
                "/v1/customers", json={"account": account, "name": "Test", "fbe_eligible": True}, headers=self.admin
            )
            assert r.status_code == 201, r.text
            body["customer"] = account
        r = self.client.post("/v1/meters", json=body, headers=self.operator)
        assert r.status_code == 201, r.text
        return number


def is_problem(r: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail", "code"} <= body.keys()
    assert body["status"] == status
    assert body["type"].endswith(body["code"])
    assert "Traceback" not in r.text
    if code is not None:
        assert body["code"] == code, body
    return body


def virtual_meter(number: str = DRN) -> Meter:
    key = sts.dkga02(bytes.fromhex(VENDING_KEY), sts.MeterNumber.parse(number), 2, SGC, 1, 1)
    return Meter.create(drn=number, ea=7, decoder_key=key, sgc=SGC, ti=1, krn=1, kt=2, profile="legacy-ea07")


def credit(meter: Meter) -> float:
    return meter.registers().get("electricity", 0)


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def master_key() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        key = secrets.token_hex(32)
        mp.setenv("MITA_MASTER_KEY", key)
        yield key


@pytest.fixture(scope="module")
def world(database_url: str, master_key: str) -> Iterator[World]:
    database.upgrade(database_url)
    app = create_app(database_url)
    engine: Engine = app.state.engine
    system = registry.SYSTEM
    vendor = registry.Registry(engine).create_vendor(system, "Corner shop")
    _, admin_key = registry.Registry(engine).create_api_key("head office", "admin")
    _, operator_key = registry.Registry(engine).create_api_key("control room", "operator")
    _, vendor_key = registry.Registry(engine).create_api_key("shop till", "vendor", vendor["id"])
    registry.Registry(engine).create_supply_group(
        system, sgc=SGC, name="Test utility", vending_key=VENDING_KEY, base_date=2014
    )
    registry.Registry(engine).create_tariff(
        system, name="domestic", currency="ZAR", spec=SPEC, effective_from=dt.datetime(2020, 1, 1)
    )
    registry.Registry(engine).create_customer(system, account="ACC-1", name="Thandi Nkosi", fbe_eligible=True)
    registry.Registry(engine).create_meter(system, drn=DRN, sgc=SGC, customer="ACC-1", tariff="domestic")
    hidden = [VENDING_KEY, OTHER_VENDING_KEY, master_key, admin_key, operator_key, vendor_key]

    def no_secrets(response: httpx.Response) -> None:
        response.read()
        body = response.text.lower()
        for secret in hidden:
            assert secret.lower() not in body, f"a key appears in the response to {response.request.url}"

    with TestClient(app) as client:
        client.event_hooks["response"] = [no_secrets, contract.checker(app)]
        yield World(
            client,
            engine,
            database_url,
            bearer(admin_key),
            bearer(operator_key),
            {"X-API-Key": vendor_key},
            vendor["id"],
            hidden,
        )


# ---------------------------------------------------------------------- health, OpenAPI, errors in general


def test_health_needs_no_key(world: World) -> None:
    r = world.client.get("/v1/health")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_openapi_lists_the_routes(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/health": {"get"},
        "/v1/supply-groups": {"get", "post"},
        "/v1/supply-groups/{sgc}": {"get"},
        "/v1/vendors": {"get", "post"},
        "/v1/vendors/{vendor_id}": {"get"},
        "/v1/customers": {"get", "post"},
        "/v1/customers/{account}": {"get"},
        "/v1/tariffs": {"get", "post"},
        "/v1/tariffs/{name}": {"get"},
        "/v1/tariffs/{name}/versions": {"post"},
        "/v1/meters": {"get", "post"},
        "/v1/meters/{drn}": {"get", "patch"},
        "/v1/meters/{drn}/confirm-key-change": {"post"},
        "/v1/meters/{drn}/engineering-tokens": {"post"},
        "/v1/quotes": {"post"},
        "/v1/vends": {"post"},
        "/v1/vends/{vend_id}": {"get"},
        "/v1/vends/{vend_id}/reprint": {"post"},
        "/v1/vends/{vend_id}/reversal": {"post"},
        "/v1/audit": {"get"},
    }
    for path, methods in expected.items():
        assert methods <= paths[path].keys(), path
    schemes = spec["components"]["securitySchemes"]
    assert {s["type"] for s in schemes.values()} == {"http", "apiKey"}
    for path, ops in paths.items():
        for method, op in ops.items():
            assert bool(op.get("security")) == (path.startswith("/v1/") and path != "/v1/health"), (method, path)
    vend = paths["/v1/vends"]["post"]
    assert {"200", "201", "401", "403", "404", "409", "422"} <= vend["responses"].keys()
    assert vend["responses"]["201"]["content"]["application/json"]["schema"]["$ref"].endswith("/VendOut")
    for status in ("401", "403", "409", "422"):
        assert vend["responses"][status]["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    assert any(p["name"] == "Idempotency-Key" and p["required"] for p in vend["parameters"])
    body = spec["components"]["schemas"]["VendIn"]
    assert body["additionalProperties"] is False
    assert body["properties"]["amount"]["type"] == "integer"
    assert spec["components"]["schemas"]["SupplyGroupIn"]["properties"]["vending_key"]["writeOnly"] is True
    assert "vending_key" not in spec["components"]["schemas"]["SupplyGroupOut"]["properties"]


def test_engineering_kinds_match_the_service(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    assert tuple(spec["components"]["schemas"]["EngineeringIn"]["properties"]["kind"]["enum"]) == (
        VendingService.ENGINEERING
    )


def test_unknown_route_and_method_are_problems(world: World) -> None:
    is_problem(world.client.get("/v1/nothing", headers=world.admin), 404, "not_found")
    is_problem(world.client.delete("/v1/vends", headers=world.admin), 405, "method_not_allowed")


def test_unexpected_error_is_a_problem_without_traceback(world: World, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(world.url)

    @app.get("/v1/boom")
    def boom() -> None:
        raise RuntimeError(f"internal detail {VENDING_KEY}")

    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.INFO):
        r = client.get("/v1/boom", headers=world.admin)
    body = is_problem(r, 500, "internal_error")
    assert VENDING_KEY not in r.text and "internal detail" not in body["detail"]
    assert VENDING_KEY not in caplog.text


# ---------------------------------------------------------------------- authentication and roles


@pytest.mark.parametrize(
    "method,path",
    [("get", "/v1/meters"), ("post", "/v1/vends"), ("get", "/v1/audit"), ("get", f"/v1/meters/{DRN}")],
)
def test_a_key_is_required(world: World, method: str, path: str) -> None:
    r = world.client.request(method, path, json={"meter": DRN, "amount": 100}, headers={"Idempotency-Key": "k"})
    body = is_problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert "Authorization" in body["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer mita_not-a-key"},
        {"X-API-Key": "mita_not-a-key"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
    ],
)
def test_a_wrong_key_is_refused(world: World, headers: dict[str, str]) -> None:
    is_problem(world.client.get("/v1/meters", headers=headers), 401, "unauthorized")


def test_both_key_headers_work(world: World) -> None:
    key = world.admin["Authorization"].removeprefix("Bearer ")
    assert world.client.get("/v1/meters", headers={"X-API-Key": key}).status_code == 200
    assert world.client.get("/v1/meters", headers={"Authorization": f"bearer {key}"}).status_code == 200


def test_unauthenticated_invalid_body_is_still_401(world: World) -> None:
    r = world.client.post("/v1/vends", json={"amount": "lots"})
    is_problem(r, 401, "unauthorized")


FORBIDDEN = [
    ("vendor", "post", "/v1/vends/{vend}/reversal", {"reason": "mistake"}),
    ("vendor", "get", "/v1/audit", None),
    ("vendor", "get", "/v1/meters", None),
    ("vendor", "get", f"/v1/meters/{DRN}", None),
    ("vendor", "patch", f"/v1/meters/{DRN}", {"status": "blocked"}),
    ("vendor", "post", f"/v1/meters/{DRN}/engineering-tokens", {"kind": "clear_tamper"}),
    ("vendor", "post", f"/v1/meters/{DRN}/confirm-key-change", None),
    ("vendor", "get", "/v1/customers", None),
    ("vendor", "get", "/v1/customers/ACC-1", None),
    ("vendor", "post", "/v1/customers", {"account": "X", "name": "X"}),
    ("vendor", "get", "/v1/vendors", None),
    ("vendor", "get", "/v1/supply-groups", None),
    ("vendor", "get", "/v1/tariffs", None),
    ("operator", "post", "/v1/supply-groups", {"sgc": "111111", "name": "X", "vending_key": OTHER_VENDING_KEY}),
    ("operator", "post", "/v1/vendors", {"name": "X"}),
    ("operator", "post", "/v1/tariffs", {"name": "X", "currency": "ZAR", "spec": SPEC}),
    ("operator", "post", "/v1/tariffs/domestic/versions", {"spec": SPEC, "effective_from": "2030-01-01T00:00:00"}),
]


@pytest.mark.parametrize("role,method,path,body", FORBIDDEN, ids=[f"{r}-{m}-{p}" for r, m, p, _ in FORBIDDEN])
def test_wrong_role_is_forbidden(world: World, role: str, method: str, path: str, body: Any) -> None:
    if "{vend}" in path:
        vend = world.vend()
        assert vend.status_code == 201, vend.text
        path = path.format(vend=vend.json()["id"])
    before = world.counts()
    r = world.client.request(method, path, json=body, headers=getattr(world, role))
    is_problem(r, 403, "forbidden")
    after = world.counts()
    assert after["audit"] == before["audit"]


# ---------------------------------------------------------------------- set-up resources


def test_supply_groups(world: World, caplog: pytest.LogCaptureFixture) -> None:
    c = world.client
    body = {"sgc": "654321", "name": "North", "vending_key": OTHER_VENDING_KEY, "base_date": 2014}
    with caplog.at_level(logging.DEBUG):
        r = c.post("/v1/supply-groups", json=body, headers=world.admin)
        assert r.status_code == 201, r.text
        group = r.json()
        assert group["sgc"] == "654321" and group["krn"] == 1 and group["dkga"] == 2
        assert [k["krn"] for k in group["vending_keys"]] == [1] and len(group["vending_keys"][0]["kcv"]) == 6
        assert "vending_key" not in group and "sealed" not in r.text
        is_problem(c.post("/v1/supply-groups", json=body, headers=world.admin), 409, "conflict")
        bad = {**body, "sgc": "222222", "vending_key": "zz" * 8}
        is_problem(c.post("/v1/supply-groups", json=bad, headers=world.admin), 422, "format_error")
        short = {**body, "sgc": "333333", "vending_key": OTHER_VENDING_KEY[:14]}
        is_problem(c.post("/v1/supply-groups", json=short, headers=world.admin), 422, "format_error")
        wrong_type = {**body, "sgc": "444444", "vending_key": 1234}
        is_problem(c.post("/v1/supply-groups", json=wrong_type, headers=world.admin), 422, "invalid_request")
        extra = {**body, "sgc": "555555", "decoder_key": OTHER_VENDING_KEY}
        is_problem(c.post("/v1/supply-groups", json=extra, headers=world.admin), 422, "invalid_request")
    for secret in world.secrets:
        assert secret not in caplog.text
    page = c.get("/v1/supply-groups", headers=world.operator).json()
    assert {g["sgc"] for g in page["items"]} >= {SGC, "654321"}
    assert all("vending_keys" not in g and "vending_key_id" not in g for g in page["items"])
    got = c.get("/v1/supply-groups/654321", headers=world.admin)
    assert got.status_code == 200 and got.json()["vending_keys"] == group["vending_keys"]
    is_problem(c.get("/v1/supply-groups/999999", headers=world.admin), 404, "not_found")


def test_vendors(world: World) -> None:
    c = world.client
    name = f"Spaza {uuid.uuid4().hex[:6]}"
    r = c.post("/v1/vendors", json={"name": name, "credit_limit": 100000}, headers=world.admin)
    assert r.status_code == 201, r.text
    vendor = r.json()
    assert vendor["name"] == name and vendor["balance"] == 0 and vendor["credit_limit"] == 100000
    is_problem(c.post("/v1/vendors", json={"name": name}, headers=world.admin), 409, "conflict")
    is_problem(c.post("/v1/vendors", json={"name": "X", "credit_limit": -1}, headers=world.admin), 422)
    listed = c.get("/v1/vendors", headers=world.operator).json()["items"]
    assert name in {v["name"] for v in listed}
    assert c.get(f"/v1/vendors/{vendor['id']}", headers=world.admin).json() == vendor
    own = c.get(f"/v1/vendors/{world.vendor_id}", headers=world.vendor)
    assert own.status_code == 200 and own.json()["name"] == "Corner shop"
    is_problem(c.get(f"/v1/vendors/{vendor['id']}", headers=world.vendor), 404, "not_found")
    is_problem(c.get("/v1/vendors/999999", headers=world.admin), 404, "not_found")
    is_problem(c.get(f"/v1/vendors/{2**70}", headers=world.admin), 422, "invalid_request")


def test_customers(world: World) -> None:
    c = world.client
    account = f"ACC-{uuid.uuid4().hex[:8]}"
    body = {"account": account, "name": "Sipho", "phone": "+27 82 000 0000", "debt": 5000, "debt_rate": "0.25"}
    r = c.post("/v1/customers", json=body, headers=world.operator)
    assert r.status_code == 201, r.text
    assert r.json()["debt"] == 5000 and r.json()["debt_rate"] == "0.25"
    is_problem(c.post("/v1/customers", json=body, headers=world.admin), 409, "conflict")
    bad = {**body, "account": "other", "debt_rate": "2"}
    is_problem(c.post("/v1/customers", json=bad, headers=world.admin), 422, "invalid_debt_rate")
    long = {**body, "account": "x" * 41}
    is_problem(c.post("/v1/customers", json=long, headers=world.admin), 422, "invalid_request")
    got = c.get(f"/v1/customers/{account}", headers=world.operator)
    assert got.status_code == 200 and got.json()["name"] == "Sipho"
    assert account in {x["account"] for x in c.get("/v1/customers?limit=500", headers=world.admin).json()["items"]}
    is_problem(c.get("/v1/customers/nobody", headers=world.admin), 404, "not_found")


def test_tariffs(world: World) -> None:
    c = world.client
    name = f"business-{uuid.uuid4().hex[:6]}"
    body = {"name": name, "currency": "zar", "spec": SPEC, "effective_from": "2021-01-01T00:00:00"}
    r = c.post("/v1/tariffs", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    tariff = r.json()
    assert tariff["currency"] == "ZAR" and len(tariff["versions"]) == 1
    assert tariff["versions"][0]["spec"]["blocks"] == SPEC["blocks"]
    is_problem(c.post("/v1/tariffs", json=body, headers=world.admin), 409, "conflict")
    for spec in ({**SPEC, "blocks": []}, {**SPEC, "vat_rate": 0.15}, {**SPEC, "extra": 1}):
        is_problem(c.post("/v1/tariffs", json={**body, "name": "y", "spec": spec}, headers=world.admin), 422)
    # a time with an offset is moved to the utility's wall clock; answers carry the wall clock's offset
    aware = {**body, "name": f"z-{name}", "effective_from": "2021-01-01T00:00:00Z"}
    r = c.post("/v1/tariffs", json=aware, headers=world.admin)
    assert r.status_code == 201, r.text
    utc = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    assert dt.datetime.fromisoformat(r.json()["versions"][0]["effective_from"]) == utc
    version = {"spec": {**SPEC, "vat_rate": "0.16"}, "effective_from": "2030-01-01T00:00:00"}
    r = c.post(f"/v1/tariffs/{name}/versions", json=version, headers=world.admin)
    assert r.status_code == 201, r.text
    assert [v["effective_from"] for v in r.json()["versions"]] == [
        with_offset(dt.datetime(2021, 1, 1)),
        with_offset(dt.datetime(2030, 1, 1)),
    ]
    is_problem(c.post(f"/v1/tariffs/{name}/versions", json=version, headers=world.admin), 409, "conflict")
    is_problem(c.post("/v1/tariffs/nope/versions", json=version, headers=world.admin), 404, "not_found")
    got = c.get(f"/v1/tariffs/{name}", headers=world.operator).json()
    assert len(got["versions"]) == 2
    listed = c.get("/v1/tariffs", headers=world.operator).json()["items"]
    assert {"domestic", name} <= {t["name"] for t in listed}
    is_problem(c.get("/v1/tariffs/nope", headers=world.admin), 404, "not_found")


def test_meters(world: World) -> None:
    c = world.client
    number = world.add_meter()
    got = c.get(f"/v1/meters/{number}", headers=world.operator)
    assert got.status_code == 200 and got.json()["status"] == "active" and got.json()["krn"] == 1
    assert got.json()["pending_key"] is None
    is_problem(c.post("/v1/meters", json={"drn": number, "sgc": SGC}, headers=world.admin), 409, "conflict")
    is_problem(c.post("/v1/meters", json={"drn": new_drn(), "sgc": "999999"}, headers=world.admin), 404)
    is_problem(c.post("/v1/meters", json={"drn": "47500150232", "sgc": SGC}, headers=world.admin), 422)
    is_problem(c.get("/v1/meters/47500150232", headers=world.admin), 422, "check_digit_error")
    is_problem(c.get("/v1/meters/123", headers=world.admin), 422, "format_error")
    is_problem(c.get(f"/v1/meters/{new_drn()}", headers=world.admin), 404, "not_found")

    r = c.patch(f"/v1/meters/{number}", json={"status": "blocked"}, headers=world.operator)
    assert r.status_code == 200 and r.json()["status"] == "blocked"
    is_problem(world.vend(meter=number), 409, "meter_blocked")
    is_problem(c.patch(f"/v1/meters/{number}", json={"status": "gone"}, headers=world.admin), 422, "invalid_request")
    r = c.patch(f"/v1/meters/{number}", json={"status": "active"}, headers=world.admin)
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert world.vend(meter=number).status_code == 201


def test_control_characters_are_refused_not_a_database_error(world: World) -> None:
    c = world.client
    body = {"account": "a\x00b", "name": "x"}
    is_problem(c.post("/v1/customers", json=body, headers=world.admin), 422, "invalid_request")
    is_problem(c.post("/v1/vendors", json={"name": "shop\x00"}, headers=world.admin), 422, "invalid_request")
    for path in ("/v1/customers/a%00b", "/v1/tariffs/a%00b", "/v1/supply-groups/a%00b", "/v1/vends/a%00b"):
        is_problem(c.get(path, headers=world.admin), 422, "invalid_request")
    meter = {"drn": new_drn(), "sgc": SGC, "customer": "a\x00b"}
    is_problem(c.post("/v1/meters", json=meter, headers=world.admin), 422, "invalid_request")


def test_pagination_cursor(world: World) -> None:
    c = world.client
    for _ in range(3):
        world.add_meter(customer=False)
    seen: list[int] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"after": after} if after is not None else {})
        page = c.get("/v1/meters", params=params, headers=world.admin).json()
        assert len(page["items"]) <= 2
        seen += [m["id"] for m in page["items"]]
        after = page["next"]
        if after is None:
            break
        assert after == page["items"][-1]["id"]
    everything = c.get("/v1/meters", params={"limit": 500}, headers=world.admin).json()
    assert seen == [m["id"] for m in everything["items"]] and len(seen) >= 4 and everything["next"] is None
    for bad in ({"limit": 0}, {"limit": 501}, {"limit": "x"}, {"after": "x"}, {"after": -1}, {"after": 2**70}):
        is_problem(c.get("/v1/meters", params=bad, headers=world.admin), 422, "invalid_request")


# ---------------------------------------------------------------------- quotes and vends


def test_quote_changes_nothing(world: World) -> None:
    before = world.counts()
    r = world.client.post("/v1/quotes", json={"meter": DRN, "amount": 5000}, headers=world.vendor)
    assert r.status_code == 200, r.text
    q = r.json()
    assert q["meter"] == DRN and q["receipt"]["paid"] == 5000 and q["receipt"]["units"] > 0
    assert world.counts() == before
    is_problem(world.client.post("/v1/quotes", json={"meter": "47500150232", "amount": 1}, headers=world.vendor), 422)
    is_problem(world.client.post("/v1/quotes", json={"meter": DRN, "amount": 0}, headers=world.vendor), 422)


def test_vend_then_replay(world: World) -> None:
    c = world.client
    key = str(uuid.uuid4())
    body = {"meter": DRN, "amount": 5000}
    headers = {**world.vendor, "Idempotency-Key": key}
    first = c.post("/v1/vends", json=body, headers=headers)
    assert first.status_code == 201, first.text
    assert first.headers["location"] == f"/v1/vends/{first.json()['id']}"
    assert first.headers["cache-control"] == "no-store"
    vend = first.json()
    assert vend["meter"] == DRN and vend["receipt"]["paid"] == 5000
    credit_tokens = [t for t in vend["tokens"] if t["kind"] == "credit"]
    assert len(credit_tokens) == 1 and len(credit_tokens[0]["digits"]) == 20
    assert credit_tokens[0]["units"] == vend["receipt"]["units"]
    assert vend["delivery"] is None  # a keypad meter: the receipt is the delivery

    before = world.counts()
    replay = c.post("/v1/vends", json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.content == first.content
    assert replay.headers["content-type"] == "application/json"
    assert world.counts() == before

    # the same key with another body is refused, and changes nothing
    other = c.post("/v1/vends", json={**body, "amount": 5001}, headers=headers)
    is_problem(other, 422, "idempotency_conflict")
    assert world.counts() == before
    # an explicit default is the same request
    same = c.post("/v1/vends", json={**body, "include_key_change": False}, headers=headers)
    assert same.status_code == 200 and same.content == first.content
    # keys are per API key: the same key from another client is another vend
    mine = c.post("/v1/vends", json=body, headers={**world.operator, "Idempotency-Key": key})
    assert mine.status_code == 201 and mine.json()["id"] != vend["id"]


def test_concurrent_identical_vends_make_one(world: World) -> None:
    headers = {**world.vendor, "Idempotency-Key": str(uuid.uuid4())}
    before = world.counts()["vends"]
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        r = world.client.post("/v1/vends", json={"meter": DRN, "amount": 1500}, headers=headers)
        with lock:
            results.append(r)

    threads = [threading.Thread(target=post) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert codes == [200, 200, 200, 201], [r.text for r in results]
    assert len({r.content for r in results}) == 1
    assert world.counts()["vends"] == before + 1


def test_idempotency_key_is_required(world: World) -> None:
    c = world.client
    before = world.counts()
    body = is_problem(c.post("/v1/vends", json={"meter": DRN, "amount": 100}, headers=world.vendor), 422)
    assert body["code"] == "invalid_idempotency_key"
    too_long = {**world.vendor, "Idempotency-Key": "k" * 201}
    is_problem(
        c.post("/v1/vends", json={"meter": DRN, "amount": 100}, headers=too_long), 422, "invalid_idempotency_key"
    )
    # with the body also wrong, both are reported
    body = is_problem(c.post("/v1/vends", json={"meter": DRN}, headers=world.vendor), 422, "invalid_request")
    assert len(body["errors"]) == 2
    assert world.counts() == before


def test_unknown_meter_and_wrong_check_digit(world: World) -> None:
    before = world.counts()
    is_problem(world.vend(meter=new_drn()), 404, "not_found")
    body = is_problem(world.vend(meter="47500150232"), 422, "check_digit_error")
    assert "check digit" in body["detail"]
    is_problem(world.vend(meter="4750015023"), 422, "format_error")
    assert world.counts() == before


@pytest.mark.parametrize("amount", [-1, 0, 10**11 + 1, 10**30, 12.5, 100.0, "100", True, None, [100], {"v": 1}])
def test_bad_amounts(world: World, amount: Any) -> None:
    before = world.counts()
    body = is_problem(world.vend(amount=amount), 422, "invalid_request")
    assert body["errors"][0]["loc"] == ["body", "amount"]
    assert "input" not in body["errors"][0]
    quote = world.client.post("/v1/quotes", json={"meter": DRN, "amount": amount}, headers=world.vendor)
    is_problem(quote, 422, "invalid_request")
    assert world.counts() == before


def test_malformed_bodies(world: World) -> None:
    c = world.client
    h = {**world.vendor, "Idempotency-Key": str(uuid.uuid4()), "Content-Type": "application/json"}
    body = is_problem(c.post("/v1/vends", content=b'{"meter": "47500150231", "amount": ', headers=h), 400)
    assert body["code"] == "invalid_json"
    is_problem(c.post("/v1/vends", content=b"\xff\xfe{", headers=h), 400, "invalid_json")
    is_problem(c.post("/v1/vends", content=b"[1, 2]", headers=h), 422, "invalid_request")
    is_problem(c.post("/v1/vends", content=b"", headers=h), 422, "invalid_request")
    plain = {**h, "Content-Type": "text/plain"}
    is_problem(c.post("/v1/vends", content=b'{"meter": "47500150231", "amount": 1}', headers=plain), 415)
    extra = world.vend(bonus=True)
    is_problem(extra, 422, "invalid_request")
    is_problem(world.vend(meter=47500150231), 422, "invalid_request")


def test_vendor_credit_limit(world: World) -> None:
    vendor_id, till = world.credit_vendor(limit=1000)
    before = world.counts()
    is_problem(world.vend(amount=5000, headers=till), 402, "credit_limit")
    assert world.counts() == before
    assert world.client.get(f"/v1/vendors/{vendor_id}", headers=till).json()["balance"] == 0


def test_get_vend_and_reprint(world: World) -> None:
    c = world.client
    vend = world.vend().json()
    got = c.get(f"/v1/vends/{vend['id']}", headers=world.vendor)
    assert got.status_code == 200
    assert got.json() == {**{k: v for k, v in vend.items() if k != "warnings"}, "status": "completed"}
    r = c.post(f"/v1/vends/{vend['id']}/reprint", headers=world.vendor)
    assert r.status_code == 200
    reprint = r.json()
    assert reprint["reprint"] is True and reprint["status"] == "completed"
    assert [t["digits"] for t in reprint["tokens"]] == [t["digits"] for t in vend["tokens"]]
    assert reprint["receipt"] == vend["receipt"]
    assert c.get(f"/v1/vends/{vend['id']}", headers=world.operator).status_code == 200
    # another vendor does not see it
    other = registry.Registry(world.engine).create_vendor(registry.SYSTEM, f"Other {uuid.uuid4().hex[:6]}")
    _, key = registry.Registry(world.engine).create_api_key("other till", "vendor", other["id"])
    world.secrets.append(key)
    is_problem(c.get(f"/v1/vends/{vend['id']}", headers=bearer(key)), 404, "not_found")
    is_problem(c.post(f"/v1/vends/{vend['id']}/reprint", headers=bearer(key)), 404, "not_found")
    is_problem(c.get(f"/v1/vends/{uuid.uuid4()}", headers=world.admin), 404, "not_found")
    is_problem(c.get(f"/v1/vends/{'x' * 37}", headers=world.admin), 422, "invalid_request")


def test_reversal(world: World) -> None:
    c = world.client
    vendor_id, till = world.credit_vendor()
    vend = world.vend(amount=2500, headers=till).json()
    assert c.get(f"/v1/vendors/{vendor_id}", headers=till).json()["balance"] == 2500
    is_problem(c.post(f"/v1/vends/{vend['id']}/reversal", json={}, headers=world.operator), 422, "invalid_request")
    r = c.post(f"/v1/vends/{vend['id']}/reversal", json={"reason": "wrong meter"}, headers=world.operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "reversed" and r.json()["id"] == vend["id"]
    assert c.get(f"/v1/vendors/{vendor_id}", headers=till).json()["balance"] == 0
    assert c.get(f"/v1/vends/{vend['id']}", headers=till).json()["status"] == "reversed"
    again = c.post(f"/v1/vends/{vend['id']}/reversal", json={"reason": "again"}, headers=world.admin)
    is_problem(again, 409, "already_reversed")
    missing = c.post(f"/v1/vends/{uuid.uuid4()}/reversal", json={"reason": "x"}, headers=world.admin)
    is_problem(missing, 404, "not_found")
    with world.engine.connect() as conn:
        lines = conn.execute(select(ledger).where(ledger.c.vend_id == vend["id"])).all()
    assert sum(x.debit for x in lines) == sum(x.credit for x in lines)
    assert sum(x.debit for x in lines if x.account.startswith("vendor:")) == 2500


def test_reversal_after_the_carried_leftover_was_spent(world: World) -> None:
    """A purchase leaves change that is carried into the next one; reversing the first must not be a 500.

    Regression: VendingService.reverse took the first vend's leftover back out of ``customers.carried`` after the
    next purchase had spent it, so ``carried`` went negative, the CHECK constraint refused, and the IntegrityError
    came out as a 500. A clean answer is expected: reversed (the shortfall owed), or a 409 problem.
    """
    c = world.client
    number = world.add_meter()

    def leftover(amount: int) -> int:
        r = c.post("/v1/quotes", json={"meter": number, "amount": amount}, headers=world.vendor)
        assert r.status_code == 200, r.text
        return int(r.json()["receipt"]["leftover"])

    first_amount = next(a for a in range(5000, 5100) if leftover(a) > 0)
    first = world.vend(meter=number, amount=first_amount).json()
    change = first["receipt"]["leftover"]
    second_amount = next(a for a in range(2000, 2300) if leftover(a) < change)
    second = world.vend(meter=number, amount=second_amount).json()
    assert second["receipt"]["carried_in"] == change
    r = c.post(f"/v1/vends/{first['id']}/reversal", json={"reason": "wrong meter"}, headers=world.operator)
    assert r.status_code in (200, 409), r.text
    if r.status_code == 409:
        is_problem(r, 409)


def test_engineering_tokens(world: World) -> None:
    c = world.client
    number = world.add_meter(customer=False)
    meter = virtual_meter(number)
    r = c.post(f"/v1/meters/{number}/engineering-tokens", json={"kind": "clear_tamper"}, headers=world.operator)
    assert r.status_code == 201, r.text
    (token,) = r.json()["tokens"]
    assert token["kind"] == "engineering" and token["class"] == 2 and token["tid"] is not None
    assert r.json()["delivery"] is None  # keypad only: typed in by a technician
    assert meter.enter(token["digits"], dt.datetime.now()).result == "accept"
    r = c.post(f"/v1/meters/{number}/engineering-tokens", json={"kind": "test", "value": 1}, headers=world.admin)
    assert r.status_code == 201 and r.json()["tokens"][0]["class"] == 1
    bad = c.post(f"/v1/meters/{number}/engineering-tokens", json={"kind": "unlock"}, headers=world.admin)
    is_problem(bad, 422, "invalid_request")
    bad = c.post(f"/v1/meters/{number}/engineering-tokens", json={"kind": "test", "value": -1}, headers=world.admin)
    is_problem(bad, 422, "invalid_request")
    is_problem(c.post(f"/v1/meters/{new_drn()}/engineering-tokens", json={"kind": "test"}, headers=world.admin), 404)
    audited = c.get("/v1/audit?limit=500", headers=world.admin).json()
    while audited["next"] is not None:
        audited = c.get(f"/v1/audit?limit=500&after={audited['next']}", headers=world.admin).json()
    actions = [(a["action"], a["entity_id"], a["detail"].get("kind")) for a in audited["items"]]
    assert ("engineering_token", number, "test") in actions


def test_key_change_then_confirm(world: World) -> None:
    c = world.client
    sgc, key = "654399", "13579bdf2468ace0"  # a group of its own: this test rotates its key
    body = {"sgc": sgc, "name": "Roll-over town", "vending_key": key}
    r = c.post("/v1/supply-groups", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    number = world.add_meter(customer=False, sgc=sgc, base_date=1993)
    is_problem(world.vend(meter=number), 409, "key_change_required")
    is_problem(c.post(f"/v1/meters/{number}/confirm-key-change", headers=world.admin), 409, "no_pending_key")
    # a roll-over (RO = 1) under the same key could be entered again and again: it needs a new KRN
    is_problem(world.vend(meter=number, include_key_change=True), 422, "invalid_key_change")
    assert c.post(f"/v1/supply-groups/{sgc}/keys", json={"krn": 2, "dkga": 2}, headers=world.admin).status_code == 201
    assert c.post(f"/v1/supply-groups/{sgc}/keys/2/activate", headers=world.admin).status_code == 200
    r = world.vend(meter=number, include_key_change=True)
    assert r.status_code == 201, r.text
    vend = r.json()
    kinds = [t["kind"] for t in vend["tokens"]]
    assert kinds[:2] == ["key_change", "key_change"] and kinds[2] == "credit"
    assert c.get(f"/v1/meters/{number}", headers=world.admin).json()["pending_key"]["base_date"] == 2014
    # the virtual meter takes the key change set, then the credit
    old = sts.dkga02(bytes.fromhex(key), sts.MeterNumber.parse(number), 2, sgc, 1, 1)
    meter = Meter.create(drn=number, ea=7, decoder_key=old, sgc=sgc, ti=1, krn=1, kt=2, profile="legacy-ea07")
    now = dt.datetime.now()
    results = [meter.enter(t["digits"], now).result for t in vend["tokens"]]
    assert results == ["kct_pending", "key_changed", "accept"], results
    assert meter.state.krn == 2
    assert credit(meter) == vend["receipt"]["units"] + vend["receipt"]["fbe_units"]
    r = c.post(f"/v1/meters/{number}/confirm-key-change", headers=world.operator)
    assert r.status_code == 200, r.text
    assert r.json()["meter"] == number and r.json()["key"]["base_date"] == 2014
    after = c.get(f"/v1/meters/{number}", headers=world.admin).json()
    assert after["pending_key"] is None and after["base_date"] == 2014 and after["krn"] == 2
    assert [t["kind"] for t in world.vend(meter=number).json()["tokens"]] == ["credit"]


def test_audit_log(world: World) -> None:
    c = world.client
    vend = world.vend().json()
    page = c.get("/v1/audit", params={"limit": 3}, headers=world.operator).json()
    assert len(page["items"]) == 3 and page["next"] == page["items"][-1]["id"]
    assert page["items"][0]["action"] in {"create_vendor", "create_api_key"}
    entries: list[dict[str, Any]] = []
    after = None
    while True:
        params = {"limit": 100} | ({"after": after} if after is not None else {})
        page = c.get("/v1/audit", params=params, headers=world.admin).json()
        entries += page["items"]
        after = page["next"]
        if after is None:
            break
    ids = [e["id"] for e in entries]
    assert ids == sorted(set(ids))
    actions = {e["action"] for e in entries}
    assert {"create_api_key", "create_supply_group", "create_tariff", "create_meter", "vend"} <= actions
    mine = [e for e in entries if e["action"] == "vend" and e["entity_id"] == vend["id"]]
    assert len(mine) == 1 and mine[0]["actor"] == "shop till" and mine[0]["detail"]["amount"] == 5000
    group = next(e for e in entries if e["action"] == "create_supply_group")
    assert set(group["detail"]) == {"krn", "kt", "ea", "dkga", "kcv", "keystore"}


# ---------------------------------------------------------------------- end to end


def _sell_and_enter(world: World, number: str, amount: int) -> None:
    meter = virtual_meter(number)
    before = credit(meter)
    r = world.vend(meter=number, amount=amount)
    assert r.status_code == 201, r.text
    vend = r.json()
    now = dt.datetime.now()
    for token in vend["tokens"]:
        result = meter.enter(token["digits"], now)
        assert result.result == "accept", (token, result)
    receipt = vend["receipt"]
    assert credit(meter) - before == receipt["units"] + receipt["fbe_units"]
    assert sum(t["units"] for t in vend["tokens"]) == receipt["units"] + receipt["fbe_units"]
    # a reprint is the same tokens: the meter says they were used
    reprint = world.client.post(f"/v1/vends/{vend['id']}/reprint", headers=world.vendor).json()
    for token in reprint["tokens"]:
        assert meter.enter(token["digits"], now).result == "used"


def test_end_to_end_virtual_meter(world: World) -> None:
    _sell_and_enter(world, DRN, 5000)


def test_end_to_end_with_free_basic_electricity(world: World) -> None:
    number = world.add_meter()  # a new FBE customer: the first purchase of the month carries the FBE token
    _sell_and_enter(world, number, 20000)
    with world.engine.connect() as conn:
        fbe = conn.execute(select(func.count()).where(tokens.c.kind == "fbe", tokens.c.meter_id.isnot(None))).scalar()
    assert fbe


# ---------------------------------------------------------------------- the factory


def test_create_app_refuses_an_unsafe_database(
    world: World, master_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    if world.url.startswith("postgresql"):
        unsafe = world.url + "?options=-c%20synchronous_commit%3Doff"
    else:

        def refuse(_: Engine) -> None:
            raise VendError("unsafe_database", "SQLite must run with WAL and synchronous=FULL (got delete, 0)")

        monkeypatch.setattr(api_app, "check_durability", refuse)
        unsafe = world.url
    with pytest.raises(VendError) as err:
        create_app(unsafe)
    assert err.value.code == "unsafe_database"
    app = create_app(unsafe, check=False)
    assert isinstance(app.state.service, VendingService)
    app.state.engine.dispose()


def test_app_from_env(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("MITA_DATABASE_URL", world.url)
    app = app_from_env()
    assert app.state.engine.url.database == world.engine.url.database
    app.state.engine.dispose()
    monkeypatch.delenv("MITA_DATABASE_URL")
    monkeypatch.chdir(tmp_path)
    app = app_from_env()
    assert str(app.state.engine.url) == "sqlite:///mita.db"
    app.state.engine.dispose()


def test_vendor_balance_is_not_touched_by_refusals(world: World) -> None:
    vendor_id, till = world.credit_vendor()
    assert world.vend(amount=3000, headers=till).status_code == 201
    is_problem(world.vend(meter="47500150232", headers=till), 422)
    is_problem(world.vend(amount=0, headers=till), 422)
    is_problem(world.vend(meter=new_drn(), headers=till), 404)
    with world.engine.connect() as conn:
        balance = conn.execute(select(vendors.c.balance).where(vendors.c.id == vendor_id)).scalar_one()
    assert balance == 3000
