"""The OpenAPI document is worth reading: every field and parameter described, every refusal a problem with its
codes, the engineering kinds and units spelled one way.

The document is read as a client reads it (``GET /openapi.json``) from an app on an empty SQLite database: no
route is called, so nothing here needs the database to be migrated.
"""

from __future__ import annotations

import typing
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from mita.api import create_app
from mita.api import models as m
from mita.api.codes import CODES
from mita.api.openapi import EVERY_ROUTE, ROUTE_CODES, gated
from mita.sts import recipes
from mita.vend.answers import UNIT

PROBLEM = "application/problem+json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi')}/mita.db"
    app = create_app(url, check=False)
    try:
        with TestClient(app) as client:
            r = client.get("/openapi.json")
    finally:
        app.state.engine.dispose()
    assert r.status_code == 200
    document: dict[str, Any] = r.json()
    return document


def operations(spec: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in spec["paths"].items():
        for method, op in item.items():
            if method in METHODS:
                yield path, method, op


# ---------------------------------------------------------------------- descriptions


def undescribed(spec: dict[str, Any]) -> list[str]:
    """Every schema property and every parameter without a description, by where it is.

    Properties are looked for everywhere a schema can hold one: the components, inline objects nested in
    properties, array items, ``anyOf``/``oneOf``/``allOf`` arms, ``additionalProperties``, and the schemas of
    parameters and request and response bodies that are not ``$ref``s.
    """
    missing: list[str] = []

    def walk(schema: Any, where: str) -> None:
        if not isinstance(schema, dict):
            return
        for name, prop in schema.get("properties", {}).items():
            if not isinstance(prop, dict) or not prop.get("description"):
                missing.append(f"{where}.{name}")
            walk(prop, f"{where}.{name}")
        for key in ("anyOf", "oneOf", "allOf", "prefixItems"):
            for i, arm in enumerate(schema.get(key, [])):
                walk(arm, f"{where}[{key}{i}]")
        for key in ("items", "additionalProperties", "not"):
            walk(schema.get(key), f"{where}[{key}]")

    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        walk(schema, name)
    for path, method, op in operations(spec):
        here = f"{method.upper()} {path}"
        for parameter in op.get("parameters", []):
            if not parameter.get("description"):
                missing.append(f"{here} {parameter['in']} parameter {parameter['name']}")
            walk(parameter.get("schema"), f"{here} {parameter['name']}")
        for media in op.get("requestBody", {}).get("content", {}).values():
            walk(media.get("schema"), f"{here} body")
        for status, answer in op.get("responses", {}).items():
            for media in answer.get("content", {}).values():
                walk(media.get("schema"), f"{here} {status}")
    return missing


def test_every_field_and_parameter_is_described(spec: dict[str, Any]) -> None:
    properties = sum(len(s.get("properties", {})) for s in spec["components"]["schemas"].values())
    assert properties > 250  # the walk has something to walk
    missing = undescribed(spec)
    assert not missing, f"{len(missing)} fields or parameters have no description:\n" + "\n".join(missing)


def test_the_walk_finds_what_is_not_described() -> None:
    """The check can fail: nested, in array items, in union arms, in parameters, in inline bodies."""
    planted = {
        "components": {
            "schemas": {
                "A": {
                    "properties": {
                        "ok": {"type": "string", "description": "fine"},
                        "bare": {"type": "string"},
                        "list": {
                            "description": "d",
                            "items": {"properties": {"inner": {"type": "integer"}}},
                        },
                        "either": {
                            "description": "d",
                            "anyOf": [{"properties": {"arm": {"type": "string"}}}, {"type": "null"}],
                        },
                    }
                }
            }
        },
        "paths": {
            "/x": {
                "get": {"parameters": [{"name": "q", "in": "query", "schema": {"type": "string"}}]},
                "post": {
                    "requestBody": {
                        "content": {"application/json": {"schema": {"properties": {"b": {"type": "string"}}}}}
                    },
                    "responses": {},
                },
            }
        },
    }
    assert undescribed(planted) == [
        "A.bare",
        "A.list[items].inner",
        "A.either[anyOf0].arm",
        "GET /x query parameter q",
        "POST /x body.b",
    ]


def test_times_are_documented_as_date_time(spec: dict[str, Any]) -> None:
    """Every time in a response model is a ``date-time`` (RFC 3339), and says so."""
    schemas = spec["components"]["schemas"]
    times = {
        (name, prop): schema
        for name, model in schemas.items()
        for prop, schema in model.get("properties", {}).items()
        if prop.endswith("_at") or prop in {"at", "effective_from", "issued_until", "ken_expires", "key_expiry"}
    }
    assert len(times) > 15
    for (name, prop), schema in times.items():
        arms = schema.get("anyOf", [schema])
        assert any(a.get("format") == "date-time" for a in arms), (name, prop, schema)
        assert "RFC 3339" in schema["description"], (name, prop)


# ---------------------------------------------------------------------- refusals


def test_every_refusal_is_a_problem_with_its_codes(spec: dict[str, Any]) -> None:
    checked = 0
    for path, method, op in operations(spec):
        for status, answer in op["responses"].items():
            if status[:1] not in ("4", "5"):
                continue
            here = f"{method.upper()} {path} {status}"
            assert answer["content"] == {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}, here
            codes = answer.get("x-error-codes")
            assert codes, f"{here} lists no error code"
            for code in codes:
                assert code in CODES, f"{here}: {code} is not in the code table"
                assert CODES[code].status == int(status), f"{here}: {code} answers {CODES[code].status}"
                assert f"`{code}`" in answer["description"], here
            checked += 1
    assert checked > 300
    assert "HTTPValidationError" not in spec["components"]["schemas"]  # FastAPI's 422 body, never sent here


def test_every_gated_route_lists_the_gate_and_validation(spec: dict[str, Any]) -> None:
    gated_ops = 0
    for path, method, op in operations(spec):
        if not gated(path):
            continue
        gated_ops += 1
        answers = op["responses"]
        want = {"401": "unauthorized", "403": "forbidden", "413": "payload_too_large", "422": "invalid_request"}
        if method in ("post", "put", "patch"):
            want["415"] = "unsupported_media_type"
        if "application/json" in op.get("requestBody", {}).get("content", {}):
            want["400"] = "invalid_json"
        for status, code in want.items():
            assert code in answers.get(status, {}).get("x-error-codes", []), f"{method.upper()} {path}: {code}"
        assert {"database_unavailable", "schema_outdated", "unsafe_database"} <= set(answers["503"]["x-error-codes"])
    assert gated_ops > 40
    assert set(EVERY_ROUTE) <= CODES.keys()


def test_route_codes_name_real_operations_and_codes(spec: dict[str, Any]) -> None:
    """A renamed route or a code dropped from the table does not leave a stale line in ROUTE_CODES."""
    known = {f"{method.upper()} {path}" for path, method, _ in operations(spec)}
    assert sorted(set(ROUTE_CODES) - known) == []
    for operation, codes in ROUTE_CODES.items():
        assert set(codes) <= CODES.keys(), operation
    vend = spec["paths"]["/v1/vends"]["post"]["responses"]
    assert vend["402"]["x-error-codes"] == ["credit_limit", "key_credit_limit"]
    assert {"key_change_required", "meter_blocked", "in_progress"} <= set(vend["409"]["x-error-codes"])
    assert "retry" in vend["503"]["x-error-codes"]


# ---------------------------------------------------------------------- one spelling


def test_engineering_kinds_are_one_list_with_descriptions(spec: dict[str, Any]) -> None:
    kind = spec["components"]["schemas"]["EngineeringIn"]["properties"]["kind"]
    names = list(recipes.ENGINEERING)
    assert kind["enum"] == names == list(m.ENGINEERING_KINDS) == list(typing.get_args(m.EngineeringKind))
    assert kind["x-enum-descriptions"] == list(m.ENGINEERING_KINDS.values())
    for name in names:
        assert f"`{name}`" in kind["description"]


def test_receipt_units_are_the_service_units(spec: dict[str, Any]) -> None:
    assert set(typing.get_args(m.Unit)) == set(UNIT.values())
    receipt = spec["components"]["schemas"]["Receipt"]
    assert set(receipt["properties"]["unit"]["enum"]) == set(UNIT.values())
    assert {"units", "quantity", "unit"} <= set(receipt["required"])
    assert "kwh" not in receipt["required"] and "absent for water" in receipt["properties"]["kwh"]["description"]


def test_rates_in_examples_are_fractions(spec: dict[str, Any]) -> None:
    """The example that read ``"1.10"`` (110 % VAT): every ``*_rate`` example is a fraction from 0 to 1."""
    seen = []
    for name, schema in spec["components"]["schemas"].items():
        for prop, field in schema.get("properties", {}).items():
            if prop.endswith("_rate"):
                seen += [(name, prop, v) for v in field.get("examples", [])]
                seen += [(name, prop, e[prop]) for e in schema.get("examples", []) if prop in e]
    assert {(n, p) for n, p, _ in seen} >= {("TariffSpec", "vat_rate"), ("CustomerIn", "debt_rate")}
    for name, prop, value in seen:
        assert 0 <= Decimal(value) <= 1, (name, prop, value)
