"""The HTTP API of key management (mita.api): vending keys, key changes and key change campaigns.

Runs on SQLite and on the real PostgreSQL with the fixtures of ``test_api`` (one database per backend, API keys
for the three roles, supply group 123456). Every response of the shared client is checked for secrets: the keys
these tests import are added to that check, so a vending key in any body fails the test that received it.
Key lifecycle and campaign tests each make their own supply group, so they do not depend on each other's order.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import uuid
from typing import Any

import pytest
import test_api
from sqlalchemy import func, select, update
from test_api import DRN, OTHER_VENDING_KEY, SGC, World, is_problem, new_drn, virtual_meter

from mita import campaign, outbox, sts
from mita.keys.software import key_check_value
from mita.meter import Meter
from mita.vend import keyring
from mita.vend.schema import audit, meters
from mita.vend.walltime import with_offset

# test_api's fixtures: one database per backend (SQLite, PostgreSQL), the utility and the client that checks secrets
master_key = test_api.master_key
world = test_api.world

NEW_KEY = "fedcba9876543210"  # DKGA02, 64 bits: the KRN 2 keys the tests import
NEW_KEY_KCV = key_check_value(2, bytes.fromhex(NEW_KEY))
WIDE_KEY = "c0ffee" * 6 + "abcd"  # DKGA04, 160 bits
LETTERS = (NEW_KEY, WIDE_KEY)

_sgcs = itertools.count(600_001)


@pytest.fixture(autouse=True)
def _hide_test_keys(world: World) -> None:
    """The shared client fails any response holding one of these keys."""
    for key in LETTERS:
        if key not in world.secrets:
            world.secrets.append(key)


def new_group(world: World, meter_count: int = 0, key: str = OTHER_VENDING_KEY, **extra: Any) -> tuple[str, list[str]]:
    """A supply group of its own (KRN 1, DKGA02, EA07, base date 2014) with ``meter_count`` meters on it."""
    sgc = str(next(_sgcs))
    body = {"sgc": sgc, "name": f"Group {sgc}", "vending_key": key, "base_date": 2014, **extra}
    r = world.client.post("/v1/supply-groups", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    return sgc, [world.add_meter(customer=False, sgc=sgc) for _ in range(meter_count)]


def add_key(world: World, sgc: str, krn: int = 2, key: str | None = NEW_KEY, **extra: Any) -> Any:
    body = {"krn": krn, **({"key": key} if key is not None else {}), **extra}
    return world.client.post(f"/v1/supply-groups/{sgc}/keys", json=body, headers=world.admin)


def keys_of(world: World, sgc: str) -> dict[int, dict[str, Any]]:
    r = world.client.get(f"/v1/supply-groups/{sgc}/keys", headers=world.operator)
    assert r.status_code == 200, r.text
    return {k["krn"]: k for k in r.json()}


def group_meter(number: str, sgc: str, key: str = OTHER_VENDING_KEY, krn: int = 1) -> Meter:
    """A virtual meter holding the decoder key of ``key`` (KRN ``krn``) in supply group ``sgc``."""
    decoder = sts.dkga02(bytes.fromhex(key), sts.MeterNumber.parse(number), 2, sgc, 1, krn)
    return Meter.create(drn=number, ea=7, decoder_key=decoder, sgc=sgc, ti=1, krn=krn, kt=2, profile="legacy-ea07")


def run_jobs(world: World) -> dict[str, int]:
    """What ``mita worker --once`` does: run the queued jobs (campaign generation) and send what is due."""
    jobs = {outbox.CAMPAIGN_GENERATE: outbox.CampaignGenerator(world.engine, campaign.generate)}
    return outbox.Worker(world.engine, jobs).run(once=True).as_dict()


def wait_generated(world: World, cid: int) -> dict[str, Any]:
    run_jobs(world)
    body: dict[str, Any] = world.client.get(f"/v1/campaigns/{cid}", headers=world.operator).json()
    assert body["status"] == "generated", body
    return body


def audit_count(world: World, action: str) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(audit.c.action == action)).scalar_one())


# ---------------------------------------------------------------------- OpenAPI


def test_openapi_lists_the_key_routes(world: World) -> None:
    spec = world.client.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        "/v1/supply-groups/{sgc}/keys": {"get", "post"},
        "/v1/supply-groups/{sgc}/keys/{krn}/activate": {"post"},
        "/v1/supply-groups/{sgc}/keys/{krn}/retire": {"post"},
        "/v1/supply-groups/{sgc}/key-history": {"get"},
        "/v1/meters/{drn}/key-change": {"post", "delete"},
        "/v1/meters/{drn}/key-changes": {"get"},
        "/v1/vends/{vend_id}/accepted": {"post"},
        "/v1/campaigns": {"post"},
        "/v1/campaigns/{campaign_id}": {"get"},
        "/v1/campaigns/{campaign_id}/generate": {"post"},
        "/v1/campaigns/{campaign_id}/export.csv": {"get"},
        "/v1/campaigns/{campaign_id}/sms": {"post"},
        "/v1/campaigns/{campaign_id}/marks": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= paths[path].keys(), path
        for method in methods:
            assert paths[path][method].get("security"), (method, path)
    schemas = spec["components"]["schemas"]
    assert schemas["VendingKeyIn"]["properties"]["key"]["anyOf"][0]["writeOnly"] is True
    for out in ("VendingKeyCreated", "KeyStatusOut", "KeyHistoryOut"):
        assert not {"key", "sealed", "handle"} & schemas[out]["properties"].keys(), out
    assert "text/csv" in paths["/v1/campaigns/{campaign_id}/export.csv"]["get"]["responses"]["200"]["content"]
    assert "area" in schemas["MeterOut"]["properties"]


# ---------------------------------------------------------------------- roles

CID = 999_999  # no such campaign: the role is refused before anything is looked up
FORBIDDEN = [
    ("vendor", "get", f"/v1/supply-groups/{SGC}/keys", None),
    ("vendor", "post", f"/v1/supply-groups/{SGC}/keys", {"krn": 3, "key": NEW_KEY}),
    ("vendor", "post", f"/v1/supply-groups/{SGC}/keys/1/activate", None),
    ("vendor", "post", f"/v1/supply-groups/{SGC}/keys/1/retire", {"destroy": True}),
    ("vendor", "get", f"/v1/supply-groups/{SGC}/key-history", None),
    ("vendor", "post", f"/v1/meters/{DRN}/key-change", {"ti": 2}),
    ("vendor", "get", f"/v1/meters/{DRN}/key-changes", None),
    ("vendor", "post", f"/v1/vends/{uuid.uuid4()}/accepted", None),
    ("vendor", "post", "/v1/campaigns", {"name": "X", "sgc": SGC, "target": {"krn": 1}}),
    ("vendor", "get", f"/v1/campaigns/{CID}", None),
    ("vendor", "post", f"/v1/campaigns/{CID}/generate", None),
    ("vendor", "get", f"/v1/campaigns/{CID}/export.csv", None),
    ("vendor", "post", f"/v1/campaigns/{CID}/sms", None),
    ("vendor", "post", f"/v1/campaigns/{CID}/marks", {"meters": [DRN], "status": "confirmed"}),
    ("operator", "post", f"/v1/supply-groups/{SGC}/keys", {"krn": 3, "key": NEW_KEY}),
    ("operator", "post", f"/v1/supply-groups/{SGC}/keys", {"krn": 3}),
    ("operator", "post", f"/v1/supply-groups/{SGC}/keys/1/activate", {"base_date": 2014}),
    ("operator", "post", f"/v1/supply-groups/{SGC}/keys/1/retire", {"destroy": True}),
    ("operator", "post", "/v1/campaigns", {"name": "X", "sgc": SGC, "target": {"krn": 1}}),
    ("operator", "post", f"/v1/campaigns/{CID}/generate", None),
]


@pytest.mark.parametrize("role,method,path,body", FORBIDDEN, ids=[f"{r}-{m}-{p}" for r, m, p, _ in FORBIDDEN])
def test_wrong_role_is_forbidden(world: World, role: str, method: str, path: str, body: Any) -> None:
    before = world.counts()
    r = world.client.request(method, path, json=body, headers=getattr(world, role))
    is_problem(r, 403, "forbidden")
    assert world.counts()["audit"] == before["audit"]


def test_a_key_is_required(world: World) -> None:
    for method, path in [("get", f"/v1/supply-groups/{SGC}/keys"), ("post", "/v1/campaigns")]:
        is_problem(world.client.request(method, path, json={}), 401, "unauthorized")


# ---------------------------------------------------------------------- vending keys


def test_list_keys(world: World) -> None:
    listed = keys_of(world, SGC)
    first = listed[1]
    assert first["status"] == "active" and first["current"] is True and first["dkga"] == 2
    assert first["kcv"] == key_check_value(2, bytes.fromhex("abababababababab"))
    assert set(first) == {
        "sgc", "krn", "dkga", "kcv", "keystore", "status", "current", "ken", "issued_until", "ken_expires",
        "credit_limit", "credit_issued", "warnings",
    }  # fmt: skip
    assert world.client.get(f"/v1/supply-groups/{SGC}/keys", headers=world.admin).status_code == 200
    is_problem(world.client.get("/v1/supply-groups/999990/keys", headers=world.admin), 404, "not_found")
    is_problem(world.client.get("/v1/supply-groups/999990/key-history", headers=world.admin), 404, "not_found")


def test_import_activate_retire(world: World) -> None:
    c = world.client
    sgc, _ = new_group(world)
    r = add_key(world, sgc, kcv=NEW_KEY_KCV.upper(), ken=200, issued_until="2099-01-01T00:00:00", credit_limit=10**9)
    assert r.status_code == 201, r.text
    created = r.json()
    assert set(created) == {"id", "sgc", "krn", "dkga", "kcv", "keystore"}
    assert created["sgc"] == sgc and created["krn"] == 2 and created["dkga"] == 2
    assert created["kcv"] == NEW_KEY_KCV and created["keystore"] == "software"
    listed = keys_of(world, sgc)
    assert listed[2]["status"] == "pending" and not listed[2]["current"] and listed[1]["current"]
    assert listed[2]["ken"] == 200 and listed[2]["credit_limit"] == 10**9
    assert listed[2]["issued_until"] == with_offset(dt.datetime(2099, 1, 1)) and listed[2]["ken_expires"] is not None

    r = c.post(f"/v1/supply-groups/{sgc}/keys/2/activate", headers=world.admin)
    assert r.status_code == 200, r.text
    assert r.json()["krn"] == 2 and r.json()["status"] == "active" and r.json()["current"] is True
    listed = keys_of(world, sgc)
    assert listed[1]["status"] == "retired" and not listed[1]["current"]
    assert c.get(f"/v1/supply-groups/{sgc}", headers=world.admin).json()["krn"] == 2

    # the current key cannot simply be retired; an older one can, and destroyed
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/2/retire", headers=world.admin), 409, "conflict")
    r = c.post(f"/v1/supply-groups/{sgc}/keys/1/retire", json={"destroy": False}, headers=world.admin)
    assert r.status_code == 200 and r.json()["status"] == "retired", r.text
    r = c.post(f"/v1/supply-groups/{sgc}/keys/1/retire", json={"destroy": True}, headers=world.admin)
    assert r.status_code == 200 and r.json()["status"] == "destroyed", r.text
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/1/activate", headers=world.admin), 409, "conflict")

    r = c.get(f"/v1/supply-groups/{sgc}/key-history", headers=world.operator)
    assert r.status_code == 200, r.text
    history = r.json()
    assert [h["action"] for h in history] == [
        "add_vending_key", "activate_vending_key", "retire_vending_key", "destroy_vending_key",
    ]  # fmt: skip
    assert history[0]["kcv"] == NEW_KEY_KCV and history[0]["generated"] is False
    assert history[0]["actor"] == "head office"
    assert history[1]["previous_krn"] == 1 and history[1]["krn"] == 2
    assert all("key" not in h and "sealed" not in h for h in history)


def test_activate_with_a_new_base_date_ea_and_generated_key(world: World) -> None:
    c = world.client
    sgc, _ = new_group(world)
    r = add_key(world, sgc, krn=3, key=None, dkga=4)
    assert r.status_code == 201, r.text
    assert r.json()["dkga"] == 4 and len(r.json()["kcv"]) == 6
    r = c.post(f"/v1/supply-groups/{sgc}/keys/3/activate", json={"ea": 11, "base_date": 2035}, headers=world.admin)
    assert r.status_code == 200, r.text
    assert r.json()["krn"] == 3 and r.json()["current"]
    group = c.get(f"/v1/supply-groups/{sgc}", headers=world.admin).json()
    assert (group["krn"], group["ea"], group["dkga"], group["base_date"]) == (3, 11, 4, 2035)
    history = c.get(f"/v1/supply-groups/{sgc}/key-history", headers=world.admin).json()
    assert history[0]["generated"] is True and history[1]["ea"] == 11 and history[1]["base_date"] == 2035


def test_add_key_refusals(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    sgc, _ = new_group(world)
    is_problem(add_key(world, "999990"), 404, "not_found")
    is_problem(add_key(world, sgc, krn=10), 422, "range_error")
    is_problem(add_key(world, sgc, krn=0), 422, "range_error")
    is_problem(add_key(world, sgc, krn=1), 409, "conflict")
    is_problem(add_key(world, sgc, key="zz" + NEW_KEY[2:]), 422, "format_error")
    is_problem(add_key(world, sgc, key=NEW_KEY[:-2]), 422, "format_error")
    is_problem(add_key(world, sgc, key=NEW_KEY, dkga=4), 422, "format_error")
    is_problem(add_key(world, sgc, key=NEW_KEY, dkga=3), 422, "invalid_dkga")
    is_problem(add_key(world, sgc, kcv="000000" if NEW_KEY_KCV != "000000" else "111111"), 422, "kcv_mismatch")
    is_problem(add_key(world, sgc, kcv="xyz"), 422, "invalid_request")
    is_problem(add_key(world, sgc, ken=256), 422, "range_error")
    is_problem(add_key(world, sgc, keystore="vault"), 422, "invalid_request")
    is_problem(add_key(world, sgc, credit_limit=-1), 422, "invalid_request")
    is_problem(add_key(world, sgc, krn="2"), 422, "invalid_request")
    body = is_problem(add_key(world, sgc, key=NEW_KEY + "00" * 30), 422, "invalid_request")  # too long: not echoed
    assert body["errors"][0]["loc"] == ["body", "key"]
    is_problem(add_key(world, sgc, colour="red"), 422, "invalid_request")
    # no HSM configured on this server: the pkcs11 keystore is unavailable, not a server error
    monkeypatch.delenv("MITA_HSM_TOKEN", raising=False)
    monkeypatch.setattr(keyring, "_stores", {})
    r = add_key(world, sgc, key=None, dkga=4, keystore="pkcs11")
    is_problem(r, 503, "hsm_not_configured")
    assert not {k["krn"] for k in keys_of(world, sgc).values()} - {1}  # none of these left a key behind


def test_activate_and_retire_refusals(world: World) -> None:
    c = world.client
    sgc, _ = new_group(world)
    assert add_key(world, sgc).status_code == 201
    for krn in ("0", "10", "x"):
        is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/{krn}/activate", headers=world.admin), 422, "invalid_request")
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/5/activate", headers=world.admin), 404, "not_found")
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/5/retire", headers=world.admin), 404, "not_found")
    is_problem(c.post("/v1/supply-groups/999990/keys/2/activate", headers=world.admin), 404, "not_found")
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/2/activate", json={"ea": 11}, headers=world.admin), 422)
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/2/activate", json={"kt": 7}, headers=world.admin), 422)
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/2/activate", json={"base_date": 2000}, headers=world.admin), 422)
    is_problem(c.post(f"/v1/supply-groups/{sgc}/keys/2/retire", json={"destroy": "yes"}, headers=world.admin), 422)
    assert keys_of(world, sgc)[2]["status"] == "pending"  # nothing above changed it


# ---------------------------------------------------------------------- one meter's key change


def test_key_change_accepted_by_the_meter(world: World) -> None:
    c = world.client
    number = world.add_meter(customer=False)
    r = c.post(f"/v1/meters/{number}/key-change", json={"ti": 2}, headers=world.operator)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/v1/vends/{r.json()['id']}" and r.headers["cache-control"] == "no-store"
    change = r.json()
    assert [t["kind"] for t in change["tokens"]] == ["key_change", "key_change"]
    assert change["receipt"]["key_change"]["to"]["ti"] == 2
    meter = virtual_meter(number)
    now = dt.datetime.now()
    assert [meter.enter(t["digits"], now).result for t in change["tokens"]] == ["kct_pending", "key_changed"]
    assert c.get(f"/v1/meters/{number}", headers=world.admin).json()["pending_key"]["ti"] == 2
    is_problem(c.post(f"/v1/meters/{number}/key-change", json={"ti": 3}, headers=world.admin), 409, "conflict")

    r = c.get(f"/v1/meters/{number}/key-changes", headers=world.operator)
    assert r.status_code == 200, r.text
    (entry,) = r.json()
    assert entry["via"] == "operator" and entry["status"] == "issued" and entry["vend"] == change["id"]
    assert entry["from"]["ti"] == 1 and entry["to"]["ti"] == 2 and entry["campaign"] is None
    assert entry["tokens"] == [t["digits"] for t in change["tokens"]] and entry["confirmed_at"] is None

    r = c.post(f"/v1/vends/{change['id']}/accepted", headers=world.operator)
    assert r.status_code == 200, r.text
    assert r.json()["meter"] == number and r.json()["key"]["ti"] == 2 and "already_confirmed" not in r.json()
    again = c.post(f"/v1/vends/{change['id']}/accepted", headers=world.admin)
    assert again.json() == {"meter": number, "already_confirmed": True}
    assert c.get(f"/v1/meters/{number}/key-changes", headers=world.admin).json()[0]["status"] == "confirmed"
    after = c.get(f"/v1/meters/{number}", headers=world.admin).json()
    assert after["ti"] == 2 and after["pending_key"] is None

    # a change whose tokens never reached the meter can be cancelled; the meter stays on its key
    c.post(f"/v1/meters/{number}/key-change", json={"ti": 3}, headers=world.operator).raise_for_status()
    is_problem(c.delete(f"/v1/meters/{number}/key-change", headers=world.vendor), 403, "forbidden")
    r = c.delete(f"/v1/meters/{number}/key-change", headers=world.operator)
    assert r.status_code == 200 and r.json()["cancelled"]["ti"] == 3, r.text
    is_problem(c.delete(f"/v1/meters/{number}/key-change", headers=world.operator), 409, "no_pending_key")
    history = c.get(f"/v1/meters/{number}/key-changes", headers=world.admin).json()
    assert [e["status"] for e in history] == ["confirmed", "cancelled"]
    assert c.get(f"/v1/meters/{number}", headers=world.admin).json()["ti"] == 2


def test_key_change_refusals(world: World) -> None:
    c = world.client
    number = world.add_meter(customer=False)
    url = f"/v1/meters/{number}/key-change"
    body = is_problem(c.post(url, json={"kt": 0}, headers=world.admin), 422, "invalid_request")
    assert "KT 0" in body["detail"]
    is_problem(c.post(url, json={}, headers=world.admin), 422, "invalid_request")
    is_problem(c.post(url, json={"ti": 1}, headers=world.admin), 422, "invalid_request")  # already so
    is_problem(c.post(url, json={"krn": 7}, headers=world.admin), 422, "no_vending_key")
    is_problem(c.post(url, json={"krn": 10}, headers=world.admin), 422, "range_error")
    is_problem(c.post(url, json={"base_date": 2000}, headers=world.admin), 422)
    is_problem(c.post(url, json={"sgc": "12"}, headers=world.admin), 422, "invalid_request")
    is_problem(c.post(url, json={"key": NEW_KEY}, headers=world.admin), 422, "invalid_request")
    is_problem(c.post(f"/v1/meters/{new_drn()}/key-change", json={"ti": 2}, headers=world.admin), 404, "not_found")
    bad = number[:-1] + str((int(number[-1]) + 1) % 10)
    is_problem(c.post(f"/v1/meters/{bad}/key-change", json={"ti": 2}, headers=world.admin), 422, "check_digit_error")
    is_problem(c.get(f"/v1/meters/{new_drn()}/key-changes", headers=world.admin), 404, "not_found")
    assert c.get(f"/v1/meters/{number}/key-changes", headers=world.admin).json() == []
    assert c.get(f"/v1/meters/{number}", headers=world.admin).json()["pending_key"] is None
    vend = world.vend(meter=number)
    assert vend.status_code == 201, vend.text
    is_problem(c.post(f"/v1/vends/{vend.json()['id']}/accepted", headers=world.admin), 409, "no_pending_key")
    is_problem(c.post(f"/v1/vends/{uuid.uuid4()}/accepted", headers=world.admin), 404, "not_found")
    is_problem(c.post("/v1/vends/not-a-uuid!/accepted", headers=world.admin), 422, "invalid_request")


# ---------------------------------------------------------------------- campaigns


def test_campaign_end_to_end(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    c = world.client
    sgc, numbers = new_group(world, meter_count=5)
    for n, number in enumerate(numbers[:2]):  # two customers with phones, for the SMS queue
        account = f"SMS-{uuid.uuid4().hex[:8]}"
        r = c.post("/v1/customers", json={"account": account, "name": "T", "phone": f"+2782000000{n}"},
                   headers=world.admin)  # fmt: skip
        assert r.status_code == 201, r.text
        with world.engine.begin() as conn:
            conn.execute(update(meters).where(meters.c.drn == number).values(customer_id=r.json()["id"]))
    assert add_key(world, sgc).status_code == 201
    assert c.post(f"/v1/supply-groups/{sgc}/keys/2/activate", headers=world.admin).status_code == 200
    is_problem(world.vend(meter=numbers[0]), 409, "key_change_required")

    body = {"name": f"KRN 2 rollout of {sgc}", "sgc": sgc, "target": {"krn": 2}, "delivery": "csv", "batch_size": 2}
    r = c.post("/v1/campaigns", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    planned = r.json()
    cid = planned["id"]
    assert r.headers["location"] == f"/v1/campaigns/{cid}"
    assert planned["planned"] == 5 and planned["batches"] == 3 and planned["status"] == "planned"
    assert planned["sgc"] == sgc and planned["target"]["krn"] == 2 and planned["delivery"] == "csv"
    assert planned["meters"] == {"planned": 5, "issued": 0, "delivered": 0, "confirmed": 0, "cancelled": 0}
    assert c.get(f"/v1/campaigns/{cid}", headers=world.operator).json() == planned
    export = c.get(f"/v1/campaigns/{cid}/export.csv", headers=world.operator)
    assert export.status_code == 200 and len(export.text.splitlines()) == 1  # nothing issued yet

    # generation is a job the worker runs; asking again while one is queued queues no second one
    runs: list[int] = []
    real = campaign.generate

    def counted(*args: Any, **kwargs: Any) -> Any:
        runs.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr(campaign, "generate", counted)
    r = c.post(f"/v1/campaigns/{cid}/generate", headers=world.admin)
    assert r.status_code == 202, r.text
    assert r.json()["id"] == cid and r.headers["location"] == f"/v1/campaigns/{cid}"
    again = c.post(f"/v1/campaigns/{cid}/generate", headers=world.admin)
    assert again.status_code == 202, again.text
    done = wait_generated(world, cid)
    assert runs == [cid]
    assert done["meters"]["issued"] == 5 and done["meters"]["planned"] == 0
    assert audit_count(world, "generate_campaign") >= 1

    # the field teams' list: one row per meter, its tokens, which the meters accept
    export = c.get(f"/v1/campaigns/{cid}/export.csv", headers=world.operator)
    assert export.status_code == 200, export.text
    assert export.headers["content-type"].startswith("text/csv")
    assert f"campaign-{cid}.csv" in export.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert sorted(row["meter"] for row in rows) == sorted(numbers)
    now = dt.datetime.now()
    for row in rows:
        assert (row["from_krn"], row["to_krn"], row["to_base_date"]) == ("1", "2", "2014")
        tokens = [row[f"token_{i}"] for i in range(1, 5) if row[f"token_{i}"]]
        assert len(tokens) == 2 and all(len(t) == 20 and t.isdigit() for t in tokens)
        meter = group_meter(row["meter"], sgc)
        assert [meter.enter(t, now).result for t in tokens] == ["kct_pending", "key_changed"]
        if row["meter"] == numbers[0]:
            first_meter = meter

    r = c.post(f"/v1/campaigns/{cid}/sms", headers=world.operator)
    assert r.status_code == 200 and r.json() == {"queued": 2}, r.text
    assert c.post(f"/v1/campaigns/{cid}/sms", headers=world.admin).json() == {"queued": 0}

    marks = f"/v1/campaigns/{cid}/marks"
    r = c.post(marks, json={"meters": numbers[:2], "status": "delivered"}, headers=world.operator)
    assert r.status_code == 200 and r.json() == {"marked": 2, "not_in_campaign": 0}, r.text
    counts = c.get(f"/v1/campaigns/{cid}", headers=world.admin).json()["meters"]
    assert (counts["issued"], counts["delivered"]) == (3, 2)
    r = c.post(marks, json={"meters": [*numbers, new_drn()], "status": "confirmed"}, headers=world.admin)
    assert r.status_code == 200 and r.json() == {"marked": 5, "not_in_campaign": 1}, r.text
    final = c.get(f"/v1/campaigns/{cid}", headers=world.operator).json()
    assert final["meters"] == {"planned": 0, "issued": 0, "delivered": 0, "confirmed": 5, "cancelled": 0}
    assert len(c.get(f"/v1/campaigns/{cid}/export.csv", headers=world.admin).text.splitlines()) == 1
    (entry,) = c.get(f"/v1/meters/{numbers[0]}/key-changes", headers=world.admin).json()
    assert entry["campaign"] == cid and entry["via"] == "campaign" and entry["status"] == "confirmed"

    # the meter now takes credit under the new key
    vend = world.vend(meter=numbers[0])
    assert vend.status_code == 201, vend.text
    assert [first_meter.enter(t["digits"], now).result for t in vend.json()["tokens"]] == ["accept"]


def test_campaign_selection_by_area(world: World) -> None:
    c = world.client
    sgc, numbers = new_group(world, meter_count=3)
    with world.engine.begin() as conn:
        conn.execute(update(meters).where(meters.c.drn == numbers[1]).values(area="north"))
    assert c.get(f"/v1/meters/{numbers[1]}", headers=world.admin).json()["area"] == "north"
    assert c.get(f"/v1/meters/{numbers[0]}", headers=world.admin).json()["area"] == ""
    assert add_key(world, sgc).status_code == 201
    body = {"name": f"North of {sgc}", "sgc": sgc, "target": {"krn": 2}, "selection": {"area": "north"}}
    r = c.post("/v1/campaigns", json=body, headers=world.admin)
    assert r.status_code == 201, r.text
    assert r.json()["planned"] == 1 and r.json()["selection"] == {"area": "north"} and r.json()["delivery"] == "attach"
    is_problem(c.post("/v1/campaigns", json=body, headers=world.admin), 409, "conflict")  # names are unique
    # a meter with a key change under way is not planned twice
    r = c.post("/v1/campaigns", json={**body, "selection": None, "name": f"All of {sgc}"}, headers=world.admin)
    assert r.status_code == 201 and r.json()["planned"] == 2, r.text


def test_campaign_refusals(world: World) -> None:
    c = world.client
    sgc, numbers = new_group(world, meter_count=1)
    plan = {"name": f"Campaign of {sgc}", "sgc": sgc, "target": {"krn": 2}}
    is_problem(c.post("/v1/campaigns", json={**plan, "sgc": "999990"}, headers=world.admin), 404, "not_found")
    is_problem(c.post("/v1/campaigns", json=plan, headers=world.admin), 422, "no_vending_key")  # no KRN 2 yet
    assert add_key(world, sgc).status_code == 201
    for bad in (
        {**plan, "selection": {"colour": "red"}},
        {**plan, "target": {"krn": 2, "key": NEW_KEY}},
        {**plan, "target": {}},
        {**plan, "delivery": "fax"},
        {**plan, "batch_size": 0},
        {**plan, "name": ""},
        {**plan, "sgc": "12"},
    ):
        is_problem(c.post("/v1/campaigns", json=bad, headers=world.admin), 422, "invalid_request")
    is_problem(c.post("/v1/campaigns", json={**plan, "target": {"krn": 2, "kt": 7}}, headers=world.admin), 422)
    is_problem(c.post("/v1/campaigns", json={**plan, "target": {"krn": 2, "ea": 11}}, headers=world.admin), 422)
    for method, path in [
        ("get", f"/v1/campaigns/{CID}"),
        ("post", f"/v1/campaigns/{CID}/generate"),
        ("get", f"/v1/campaigns/{CID}/export.csv"),
        ("post", f"/v1/campaigns/{CID}/sms"),
    ]:
        is_problem(c.request(method, path, headers=world.admin), 404, "not_found")
    is_problem(c.get("/v1/campaigns/0", headers=world.admin), 422, "invalid_request")
    marks = {"meters": [numbers[0]], "status": "confirmed"}
    is_problem(c.post(f"/v1/campaigns/{CID}/marks", json=marks, headers=world.admin), 404, "not_found")

    r = c.post("/v1/campaigns", json=plan, headers=world.admin)
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    url = f"/v1/campaigns/{cid}/marks"
    bad_digit = numbers[0][:-1] + str((int(numbers[0][-1]) + 1) % 10)
    is_problem(c.post(url, json={"meters": [], "status": "confirmed"}, headers=world.admin), 422, "invalid_request")
    is_problem(c.post(url, json={"meters": numbers, "status": "lost"}, headers=world.admin), 422, "invalid_request")
    r = c.post(url, json={"meters": [*numbers, bad_digit], "status": "delivered"}, headers=world.admin)
    is_problem(r, 422, "check_digit_error")
    # planned, not issued: nothing to mark yet
    r = c.post(url, json={"meters": numbers, "status": "delivered"}, headers=world.admin)
    assert r.json() == {"marked": 0, "not_in_campaign": 1}, r.text
