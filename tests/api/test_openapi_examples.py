"""The document's examples are requests the API accepts, and its answers carry times with an offset and units.

Every request body example in the OpenAPI document is posted, as it stands, to a fresh service (SQLite) in the
order a utility would set itself up: supply group, vendor, customer, tariff, meter, quote, vend, reversal,
engineering token, a new vending key, its activation, a campaign, a key change... Each must succeed (2xx), not
merely pass validation. Every example of every body model (those of routes added later too) is also validated
against its model, with each field's own examples put in turn in its place.

The service runs in Johannesburg's zone (``TZ``, UTC+02:00, no daylight saving) for this module, so an answer's
offset is the utility's, and a time given in UTC is seen at the right wall-clock time.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from pydantic import BaseModel

import contract
from conftest import zone_kept
from mita import sts
from mita.api import create_app
from mita.api import models as m
from mita.vend import database, registry

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
ZONE, OFFSET = "Africa/Johannesburg", "+02:00"

#: (method, path, body schema): the examples' order; path parameters filled from what earlier answers gave.
SEQUENCE = (
    ("post", "/v1/supply-groups", "SupplyGroupIn"),
    ("post", "/v1/vendors", "VendorIn"),
    ("post", "/v1/customers", "CustomerIn"),
    ("post", "/v1/tariffs", "TariffIn"),
    ("post", "/v1/tariffs/{name}/versions", "TariffVersionIn"),
    ("post", "/v1/meters", "MeterIn"),
    ("post", "/v1/quotes", "QuoteIn"),
    ("post", "/v1/vends", "VendIn"),
    ("post", "/v1/tokens/doctor", "DoctorIn"),
    ("post", "/v1/vends/{vend_id}/reversal", "ReversalIn"),
    ("post", "/v1/meters/{drn}/engineering-tokens", "EngineeringIn"),
    ("post", "/v1/supply-groups/{sgc}/keys", "VendingKeyIn"),
    ("post", "/v1/supply-groups/{sgc}/keys/{krn}/activate", "ActivateKeyIn"),
    ("post", "/v1/campaigns", "CampaignIn"),
    ("post", "/v1/campaigns/{campaign_id}/marks", "MarksIn"),
    ("post", "/v1/meters/{drn}/key-change", "KeyChangeIn"),
    ("post", "/v1/supply-groups/{sgc}/keys/{krn}/retire", "RetireKeyIn"),  # the KRN 1 key, retired already
    ("patch", "/v1/meters/{drn}", "MeterStatusIn"),
)


@pytest.fixture(scope="module")
def utility_zone() -> Iterator[None]:
    """The process in the utility's zone for the module (local time is what the service stores)."""
    with zone_kept():
        os.environ["TZ"] = ZONE
        time.tzset()
        yield


@pytest.fixture(scope="module")
def served(utility_zone: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, FastAPI, str]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('examples')}/mita.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
        database.upgrade(url)
        app = create_app(url)
        _, key = registry.Registry(app.state.engine).create_api_key("examples", "admin")
        with TestClient(app) as client:
            client.event_hooks["response"] = [contract.checker(app)]
            yield client, app, key


@pytest.fixture(scope="module")
def answers(served: tuple[TestClient, FastAPI, str]) -> dict[str, httpx.Response]:
    """Every example posted in order; the answers by body schema."""
    client, app, key = served
    spec = app.openapi()
    schemas = spec["components"]["schemas"]
    params: dict[str, Any] = {}
    out: dict[str, httpx.Response] = {}
    for method, path, schema in SEQUENCE:
        body = schemas[schema]["examples"][0]
        media = spec["paths"][path][method]["requestBody"]["content"]["application/json"]
        ref = {"$ref": f"#/components/schemas/{schema}"}
        assert ref in media["schema"].get("anyOf", [media["schema"]]), (path, schema)
        assert media["example"] == body  # shown as the body's example, not only in the schema
        params.update({k: body[k] for k in ("sgc", "drn", "name", "krn") if k in body})
        if schema == "RetireKeyIn":
            params["krn"] = 1
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": str(uuid.uuid4())}
        r = client.request(method.upper(), path.format(**params), json=body, headers=headers)
        assert r.is_success, f"{method.upper()} {path} refused its own example {body}: {r.text}"
        out[schema] = r
        if schema == "VendIn":
            params["vend_id"] = r.json()["id"]
        if schema == "CampaignIn":
            params["campaign_id"] = r.json()["id"]
    return out


def test_every_request_body_example_is_posted(served: tuple[TestClient, FastAPI, str]) -> None:
    """The sequence covers every example-carrying request body of the routes it knows, and they carry one each."""
    _, app, _ = served
    spec = app.openapi()
    posted = {schema for _, _, schema in SEQUENCE}
    for method, path, _ in SEQUENCE:
        assert path in spec["paths"] and method in spec["paths"][path], (method, path)
    bodies = {
        arm["$ref"].rsplit("/", 1)[-1]
        for item in spec["paths"].values()
        for op in item.values()
        for media in op.get("requestBody", {}).get("content", {}).values()
        for arm in media["schema"].get("anyOf", [media["schema"]])
        if "$ref" in arm
    }
    assert posted <= bodies
    for name in bodies & set(dir(m)):  # the models of mita.api.models: each has an example
        assert spec["components"]["schemas"][name].get("examples"), f"{name} has no example"


def test_the_examples_are_accepted_in_order(answers: dict[str, httpx.Response]) -> None:
    created = {"SupplyGroupIn", "VendorIn", "CustomerIn", "TariffIn", "TariffVersionIn", "MeterIn", "VendIn"}
    created |= {"EngineeringIn", "VendingKeyIn", "CampaignIn", "KeyChangeIn"}
    assert {name: r.status_code for name, r in answers.items()} == {
        name: 201 if name in created else 200 for _, _, name in SEQUENCE
    }
    quote = answers["QuoteIn"].json()["receipt"]
    assert quote["vat"] > 0 and quote["paid"] == 5000  # VAT at 15 %, not 110 %


def body_models(app: FastAPI) -> dict[str, type[BaseModel]]:
    """Every request body model of the app's routes and the models module, with the models they nest, by name."""
    found: dict[str, type[BaseModel]] = {}

    def add(model: Any) -> None:
        if isinstance(model, type) and issubclass(model, BaseModel) and model.__name__ not in found:
            found[model.__name__] = model
            for field in model.model_fields.values():
                for arm in (field.annotation, *getattr(field.annotation, "__args__", ())):
                    add(getattr(arm, "__origin__", None) or arm)
                    for inner in getattr(arm, "__args__", ()):
                        add(inner)

    for route in app.routes:
        if isinstance(route, APIRoute) and route.body_field is not None:
            add(route.body_field.field_info.annotation)
    for value in vars(m).values():
        if isinstance(value, type) and issubclass(value, m.Body) and value is not m.Body:
            add(value)
    return found


def test_every_example_is_valid_for_its_model(served: tuple[TestClient, FastAPI, str]) -> None:
    _, app, _ = served
    schemas = app.openapi()["components"]["schemas"]
    models = body_models(app)
    assert {"TariffSpec", "Block", "CampaignTargetIn", "VendIn"} <= models.keys()
    tried = 0
    for name, model in models.items():
        examples = schemas.get(name, {}).get("examples", [])
        if issubclass(model, m.Body):
            assert examples, f"{name} has no example"
        for example in examples:
            model.model_validate(example)
            for prop, field in schemas[name].get("properties", {}).items():
                for value in field.get("examples", []):  # each field's own example, in the model's example
                    model.model_validate({**example, prop: value})
                    tried += 1
    assert tried > 10


# ---------------------------------------------------------------------- times and units in answers


def times_in(body: Any, keys: tuple[str, ...]) -> list[str]:
    """The values of ``keys`` anywhere in ``body``."""
    if isinstance(body, list):
        return [t for x in body for t in times_in(x, keys)]
    if isinstance(body, dict):
        here = [v for k, v in body.items() if k in keys and v is not None]
        return here + [t for v in body.values() for t in times_in(v, keys)]
    return []


def test_answers_carry_rfc3339_times_with_the_utility_offset(
    served: tuple[TestClient, FastAPI, str], answers: dict[str, httpx.Response]
) -> None:
    client, _, key = served
    auth = {"Authorization": f"Bearer {key}"}
    keys = ("created_at", "at", "quoted_at", "effective_from", "issued_until", "ken_expires", "key_expiry")
    keys += ("issued_at", "delivered_at", "confirmed_at")
    vend = answers["VendIn"].json()
    reads = {
        "vend": vend,
        "quote": answers["QuoteIn"].json(),
        "vend read": client.get(f"/v1/vends/{vend['id']}", headers=auth).json(),
        "meters": client.get("/v1/meters", headers=auth).json(),
        "audit": client.get("/v1/audit?limit=500", headers=auth).json(),
        "tariff": client.get("/v1/tariffs/domestic", headers=auth).json(),
        "keys": client.get("/v1/supply-groups/123456/keys", headers=auth).json(),
        "key history": client.get("/v1/supply-groups/123456/key-history", headers=auth).json(),
        "key changes": client.get("/v1/meters/47500150231/key-changes", headers=auth).json(),
        "campaign": answers["CampaignIn"].json(),
        "cancelled": client.delete("/v1/meters/47500150231/key-change", headers=auth).json(),
    }
    for what, body in reads.items():
        # the audit's own times (its detail holds each action's parameters as they were given)
        found = [item["at"] for item in body["items"]] if what == "audit" else times_in(body, keys)
        assert found, what
        for value in found:
            assert RFC3339.match(value) and value.endswith(OFFSET), (what, value)
    assert len(reads["audit"]["items"]) > 10
    versions = reads["tariff"]["versions"]
    assert [v["effective_from"] for v in versions] == ["2024-01-01T00:00:00+02:00", "2026-07-01T00:00:00+02:00"]
    # a time sent in UTC is the wall-clock time two hours later, and goes out as such
    version = {"spec": {"blocks": [{"price": "2.00"}]}, "effective_from": "2027-01-31T22:00:00Z"}
    r = client.post("/v1/tariffs/domestic/versions", json=version, headers=auth)
    assert r.status_code == 201, r.text
    assert r.json()["versions"][-1]["effective_from"] == "2027-02-01T00:00:00+02:00"
    created = dt.datetime.fromisoformat(vend["created_at"])
    assert abs(created - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=5)  # the offset is the true one


def test_a_water_receipt_counts_cubic_metres(
    served: tuple[TestClient, FastAPI, str], answers: dict[str, httpx.Response]
) -> None:
    client, _, key = served
    auth = {"Authorization": f"Bearer {key}"}
    electricity = answers["QuoteIn"].json()["receipt"]
    assert electricity["unit"] == "kWh" and electricity["kwh"] == electricity["quantity"]
    assert all(b["unit"] == "kWh" and b["kwh"] == b["quantity"] for b in electricity["blocks"])
    water = {
        "drn": "4750015024" + str(sts.luhn_digit("4750015024")),
        "sgc": "123456",
        "tariff": "domestic",
        "utility": "water",
    }
    assert client.post("/v1/meters", json=water, headers=auth).status_code == 201
    headers = {**auth, "Idempotency-Key": str(uuid.uuid4())}
    r = client.post("/v1/vends", json={"meter": water["drn"], "amount": 5000}, headers=headers)
    assert r.status_code == 201, r.text
    for receipt in (r.json()["receipt"], client.get(f"/v1/vends/{r.json()['id']}", headers=auth).json()["receipt"]):
        assert receipt["unit"] == "m³" and "kwh" not in receipt
        assert Decimal(receipt["quantity"]) == Decimal(receipt["units"]) / 10
        assert all(b["unit"] == "m³" and "kwh" not in b for b in receipt["blocks"])
    assert r.json()["tokens"][0]["units"] == r.json()["receipt"]["units"] > 0
