"""Who may call what: every route of the API, for every kind of caller, against one table.

:data:`ALLOWED` is the rule, written once: each operation of ``/openapi.json`` and the roles that may call it
(``PUBLIC``: anyone, with or without a key). The matrix is generated from the document and the app's route table,
so a route added later fails :func:`test_every_route_is_in_the_table` until someone decides who may call it.

For every operation and every caller (no key, a wrong key, a revoked key, admin, operator, vendor) one request is
sent, built from the document (its request example, path values of rows that exist):

* a public operation answers anyone, never 401 or 403;
* otherwise no key, a wrong key or a revoked key is 401 ``unauthorized``;
* a role in the table is let through: neither 401 nor 403, nor a server error;
* any other role is 403 ``forbidden``, before anything is read or written for it.

Providers' callbacks (``/hooks/...``, not in the document: a secret path segment instead of a key) answer a wrong
secret 404, the same as a path that does not exist. The console's pages (``/console``) send a caller without a
session to the sign-in page, refuse a form without the session's CSRF token with 403, and sign in operators only
(admin and operator roles: a vendor's till works through the API).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import update
from starlette.routing import Mount

from mita.api.routes import ROUTERS
from mita.vend import registry
from mita.vend.errors import VendError
from mita.vend.operators import Operators
from mita.vend.schema import api_keys
from mita.web.pages import ROUTERS as CONSOLE_ROUTERS

from .world import CREDENTIALS, HOOK_SECRET, PASSWORD, World, form_csrf, world

PUBLIC = frozenset({"none", "bad", "revoked", "admin", "operator", "vendor"})
ADMIN = frozenset({"admin"})
STAFF = frozenset({"admin", "operator"})
ANY_ROLE = frozenset({"admin", "operator", "vendor"})

#: (method, path) -> who may call it. One line per operation of the OpenAPI document.
ALLOWED: dict[tuple[str, str], frozenset[str]] = {
    ("GET", "/v1/health"): PUBLIC,
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,
    ("GET", "/metrics"): PUBLIC,  # MITA_METRICS_PUBLIC (the default); see test_private_metrics_need_staff
    # the utility's set-up: admins make supply groups, vendors and tariffs; staff add customers and meters
    ("POST", "/v1/supply-groups"): ADMIN,
    ("GET", "/v1/supply-groups"): STAFF,
    ("GET", "/v1/supply-groups/{sgc}"): STAFF,
    ("POST", "/v1/vendors"): ADMIN,
    ("GET", "/v1/vendors"): STAFF,
    ("GET", "/v1/vendors/{vendor_id}"): ANY_ROLE,  # a till sees its own vendor only: another's is a 404
    ("PUT", "/v1/vendors/{vendor_id}/webhook"): ADMIN,
    ("POST", "/v1/customers"): STAFF,
    ("GET", "/v1/customers"): STAFF,
    ("GET", "/v1/customers/{account}"): STAFF,
    ("POST", "/v1/tariffs"): ADMIN,
    ("GET", "/v1/tariffs"): STAFF,
    ("GET", "/v1/tariffs/{name}"): STAFF,
    ("POST", "/v1/tariffs/{name}/versions"): ADMIN,
    ("POST", "/v1/meters"): STAFF,
    ("GET", "/v1/meters"): STAFF,
    ("GET", "/v1/meters/{drn}"): STAFF,
    ("PATCH", "/v1/meters/{drn}"): STAFF,
    ("GET", "/v1/meters/{drn}/vends"): ANY_ROLE,  # a till sees its own vendor's vends only
    ("POST", "/v1/meters/{drn}/confirm-key-change"): STAFF,
    ("POST", "/v1/meters/{drn}/engineering-tokens"): STAFF,
    # the head-end: connections and commands
    ("PUT", "/v1/meters/{drn}/connection"): ADMIN,
    ("GET", "/v1/meters/{drn}/connection"): STAFF,
    ("DELETE", "/v1/meters/{drn}/connection"): ADMIN,
    ("POST", "/v1/meters/{drn}/commands"): STAFF,
    ("GET", "/v1/meters/{drn}/commands"): STAFF,
    ("GET", "/v1/commands/{command_id}"): STAFF,
    ("GET", "/v1/alarms"): STAFF,
    ("GET", "/v1/alarms/{alarm_id}"): STAFF,
    ("POST", "/v1/alarms/{alarm_id}/acknowledge"): STAFF,
    ("POST", "/v1/alarms/{alarm_id}/close"): STAFF,
    ("GET", "/v1/meters/{drn}/timeline"): STAFF,
    ("GET", "/v1/meters/{drn}/telemetry"): STAFF,
    # selling
    ("POST", "/v1/quotes"): ANY_ROLE,
    ("POST", "/v1/vends"): ANY_ROLE,
    ("GET", "/v1/vends"): ANY_ROLE,
    ("GET", "/v1/vends/{vend_id}"): ANY_ROLE,
    ("POST", "/v1/vends/{vend_id}/reprint"): ANY_ROLE,
    ("POST", "/v1/vends/{vend_id}/reversal"): STAFF,
    ("POST", "/v1/vends/{vend_id}/accepted"): STAFF,
    ("POST", "/v1/tokens/doctor"): STAFF,
    ("GET", "/v1/payments"): STAFF,
    ("GET", "/v1/payments/{payment_id}"): STAFF,
    ("POST", "/v1/payments/{payment_id}/refund"): STAFF,
    ("POST", "/v1/payments/{payment_id}/resolve"): STAFF,
    ("POST", "/v1/pos/purchases/{purchase_id}"): ANY_ROLE,
    ("POST", "/v1/pos/purchases/{purchase_id}/retry"): ANY_ROLE,
    ("POST", "/v1/pos/purchases/{purchase_id}/confirmations/{advice_id}"): ANY_ROLE,
    ("POST", "/v1/pos/purchases/{purchase_id}/reversals/{advice_id}"): ANY_ROLE,
    ("POST", "/v1/pos/trials/{request_id}"): ANY_ROLE,
    ("POST", "/v1/pos/reprints/{reprint_id}"): ANY_ROLE,
    # vending keys and key changes
    ("GET", "/v1/supply-groups/{sgc}/keys"): STAFF,
    ("POST", "/v1/supply-groups/{sgc}/keys"): ADMIN,
    ("POST", "/v1/supply-groups/{sgc}/keys/{krn}/activate"): ADMIN,
    ("POST", "/v1/supply-groups/{sgc}/keys/{krn}/retire"): ADMIN,
    ("GET", "/v1/supply-groups/{sgc}/key-history"): STAFF,
    ("POST", "/v1/meters/{drn}/key-change"): STAFF,
    ("DELETE", "/v1/meters/{drn}/key-change"): STAFF,
    ("GET", "/v1/meters/{drn}/key-changes"): STAFF,
    ("POST", "/v1/campaigns"): ADMIN,
    ("GET", "/v1/campaigns"): STAFF,
    ("GET", "/v1/campaigns/{campaign_id}"): STAFF,
    ("POST", "/v1/campaigns/{campaign_id}/generate"): ADMIN,
    ("GET", "/v1/campaigns/{campaign_id}/export.csv"): STAFF,
    ("POST", "/v1/campaigns/{campaign_id}/sms"): STAFF,
    ("POST", "/v1/campaigns/{campaign_id}/marks"): STAFF,
    # the rest of the staff's work
    ("GET", "/v1/audit"): STAFF,
    ("GET", "/v1/api-keys"): ADMIN,
    ("POST", "/v1/api-keys/{key_id}/revoke"): ADMIN,
    ("POST", "/v1/imports/customers"): STAFF,
    ("POST", "/v1/imports/meters"): STAFF,
    ("GET", "/v1/reports/sales"): ANY_ROLE,  # a till's own sales
}

#: Values for path parameters, by name: rows the world made, or ids of nothing (a refusal must come first).
MISSING_ID = 987_654


def path_values(w: World) -> dict[str, Any]:
    return {
        "sgc": "123456",
        "drn": w.ids["drn"],
        "name": w.ids["tariff"],
        "account": w.ids["account"],
        "vendor_id": w.ids["vendor_id"],
        "vend_id": w.ids["vend_id"],
        "krn": 2,
        "key_id": MISSING_ID,  # never one of the world's keys: revoking them would end the test's callers
        "campaign_id": MISSING_ID,
        "alarm_id": MISSING_ID,
        "command_id": MISSING_ID,
        "payment_id": MISSING_ID,
        "purchase_id": str(uuid.uuid4()),
        "advice_id": str(uuid.uuid4()),
        "request_id": str(uuid.uuid4()),
        "reprint_id": str(uuid.uuid4()),
    }


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    methods = ("get", "put", "post", "patch", "delete")
    return sorted((m.upper(), p) for p, ops in doc["paths"].items() for m in ops if m in methods)


def build_request(w: World, doc: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    """The keyword arguments of ``client.request`` for one operation: path filled, its body's example."""
    op = doc["paths"][path][method.lower()]
    values = path_values(w)
    url = path
    for param in op.get("parameters", []):
        if param["in"] == "path":
            assert param["name"] in values, f"{method} {path}: no value for path parameter {param['name']!r}"
            url = url.replace("{" + param["name"] + "}", str(values[param["name"]]))
        elif param["in"] == "header" and param["name"] == "Idempotency-Key":
            continue  # sent with every request below
        elif param.get("required"):
            pytest.fail(f"{method} {path}: required {param['in']} parameter {param['name']!r}: give it a value here")
    headers = {"Idempotency-Key": str(uuid.uuid4())}
    kwargs: dict[str, Any] = {"method": method, "url": url, "headers": headers}
    content = op.get("requestBody", {}).get("content", {})
    if "text/csv" in content:
        headers["Content-Type"] = "text/csv"
        kwargs["content"] = b"account,name\n"
    elif "application/json" in content:
        schema = content["application/json"]["schema"]
        ref = schema.get("$ref") or next((a["$ref"] for a in schema.get("anyOf", []) if "$ref" in a), None)
        body = w.example(ref.rsplit("/", 1)[1]) if ref else {}
        if path == "/v1/vends" or path.startswith("/v1/pos/"):
            body = {**body, "meter": w.ids["drn"]}
        kwargs["json"] = body
    return kwargs


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("authz")) as w:
        yield w


def test_every_route_is_in_the_table(sec: World) -> None:
    """The document's operations, the app's routes and the table agree: a new route fails here until it is in."""
    documented = set(operations(sec.app.openapi()))
    missing = sorted(documented - set(ALLOWED))
    stale = sorted(set(ALLOWED) - documented)
    assert not missing, f"operations of /openapi.json missing from ALLOWED (say who may call them): {missing}"
    assert not stale, f"ALLOWED names operations the document no longer has: {stale}"
    hidden = {
        (m, r.path)
        for router in ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute) and not r.include_in_schema
        for m in r.methods
    }
    in_app = {
        (m, r.path)
        for router in ROUTERS
        for r in router.routes
        if isinstance(r, APIRoute) and r.include_in_schema
        for m in r.methods
    }
    assert in_app <= documented, f"routes of the app missing from the document: {sorted(in_app - documented)}"
    assert {p for _, p in hidden} == {p for p in HOOK_ROUTES}, "a route outside the document that is not a hook"


def test_the_matrix(sec: World) -> None:
    """Every operation x every caller: 401, 403 or through, as the table says."""
    doc = sec.app.openapi()
    wrong: list[str] = []
    count = 0
    for method, path in operations(doc):
        allowed = ALLOWED.get((method, path))
        if allowed is None:
            continue  # test_every_route_is_in_the_table says so
        for who in CREDENTIALS:
            kwargs = build_request(sec, doc, method, path)
            kwargs["headers"] = {**kwargs["headers"], **sec.headers(who)}
            r = sec.client.request(**kwargs)
            count += 1
            code = problem_code(r)
            if r.status_code >= 500:
                wrong.append(f"{method} {path} as {who}: {r.status_code} {r.text[:200]}")
            elif who in allowed:
                if r.status_code in (401, 403):
                    wrong.append(f"{method} {path} as {who}: {r.status_code} {code}, expected through")
            elif who in ("none", "bad", "revoked"):
                if (r.status_code, code) != (401, "unauthorized"):
                    wrong.append(f"{method} {path} as {who}: {r.status_code} {code}, expected 401")
            elif (r.status_code, code) != (403, "forbidden"):
                wrong.append(f"{method} {path} as {who}: {r.status_code} {code}, expected 403")
    assert count == len(ALLOWED) * len(CREDENTIALS)
    assert not wrong, "\n".join(wrong)


def test_a_till_sees_its_own_vendor_only(sec: World) -> None:
    other = sec.client.post("/v1/vendors", json={"name": "Another shop"}, headers=sec.headers("admin")).json()["id"]
    mine = sec.ids["vendor_id"]
    assert sec.client.get(f"/v1/vendors/{mine}", headers=sec.headers("vendor")).status_code == 200
    r = sec.client.get(f"/v1/vendors/{other}", headers=sec.headers("vendor"))
    assert (r.status_code, problem_code(r)) == (404, "not_found")
    assert sec.client.get(f"/v1/vendors/{other}", headers=sec.headers("operator")).status_code == 200


def problem_code(r: Any) -> str | None:
    """The ``code`` of a problem+json answer, else None."""
    if r.headers.get("content-type", "").startswith("application/problem+json"):
        code = r.json().get("code")
        return code if isinstance(code, str) else None
    return None


def test_private_metrics_need_staff(tmp_path: Path) -> None:
    """With MITA_METRICS_PUBLIC=false, /metrics is an admin's or an operator's, refused like a /v1 route."""
    with world(tmp_path, metrics_public="false") as w:
        got = {who: w.client.get("/metrics", headers=w.headers(who)).status_code for who in CREDENTIALS}
    assert got == {"none": 401, "bad": 401, "revoked": 401, "admin": 200, "operator": 200, "vendor": 403}


# ---------------------------------------------------------------------- providers' callbacks

#: every callback route, with a body its provider would send (wrong secret or none, the answer must be 404)
HOOK_ROUTES: dict[str, tuple[str, dict[str, Any]]] = {
    "/hooks/ke1/c2b/validate/{secret}": ("POST", {"json": {}}),
    "/hooks/ke1/c2b/confirm/{secret}": ("POST", {"json": {}}),
    "/hooks/ke1/stk/{secret}": ("POST", {"json": {}}),
    "/hooks/ke1/result/{secret}": ("POST", {"json": {}}),
    "/hooks/ke1/timeout/{secret}": ("POST", {"json": {}}),
    "/hooks/kannel/mo/{secret}": ("GET", {"params": {"id": "k1", "from": "+254700000001", "text": "BAL"}}),
    "/hooks/kannel/dlr/{secret}": ("GET", {"params": {"d": "1", "type": "1"}}),
    "/hooks/at/ussd/{secret}": ("POST", {"data": {"sessionId": "s1", "phoneNumber": "+254700000001", "text": ""}}),
}


@pytest.mark.parametrize("path", sorted(HOOK_ROUTES))
@pytest.mark.parametrize(
    "secret", ["wrong-secret-of-the-same-shape-0123", HOOK_SECRET[:-1], HOOK_SECRET + "x", "x", HOOK_SECRET.upper()]
)
def test_a_callback_with_a_wrong_secret_is_not_found(sec: World, path: str, secret: str) -> None:
    method, kwargs = HOOK_ROUTES[path]
    for who in ("none", "admin"):  # an API key is no substitute for the secret
        r = sec.client.request(method, path.replace("{secret}", secret), headers=sec.headers(who), **kwargs)
        assert r.status_code == 404, (path, r.status_code, r.text)
        assert HOOK_SECRET not in r.text


@pytest.mark.parametrize("path", sorted(HOOK_ROUTES))
def test_a_callback_with_the_secret_reaches_its_route(sec: World, path: str) -> None:
    """The control: the same request with the right secret is not a 404 (so the 404s above are the secret's)."""
    method, kwargs = HOOK_ROUTES[path]
    r = sec.client.request(method, path.replace("{secret}", HOOK_SECRET), **kwargs)
    assert r.status_code != 404 and r.status_code < 500, (path, r.status_code, r.text)


def test_callbacks_are_off_without_a_secret(tmp_path: Path) -> None:
    with world(tmp_path, hook_secret="") as w:
        for path, (method, kwargs) in HOOK_ROUTES.items():
            r = w.client.request(method, path.replace("{secret}", HOOK_SECRET), **kwargs)
            assert r.status_code == 404, (path, r.status_code)


# ---------------------------------------------------------------------- the console


def console_routes(sec: World) -> list[tuple[str, str]]:
    """(method, path under /console) of every page of the console, from its route table."""
    assert any(isinstance(r, Mount) and r.path == "/console" for r in sec.app.routes)
    out = []
    for router in CONSOLE_ROUTERS:
        for route in router.routes:
            if isinstance(route, APIRoute):
                out += [(m, route.path) for m in sorted(route.methods) if m != "HEAD"]
    assert len(out) > 15
    return out


OPEN_PAGES = {("GET", "/login"), ("POST", "/login")}


def _fill(path: str, sec: World) -> str:
    values = {**path_values(sec), "vend_id": sec.ids["vend_id"], "drn": sec.ids["drn"]}
    for name, value in values.items():
        path = path.replace("{" + name + "}", str(value))
    assert "{" not in path, f"a console path parameter without a value here: {path}"
    return path


def test_console_pages_without_a_session_go_to_sign_in(sec: World) -> None:
    with TestClient(sec.app) as anonymous:
        for method, path in console_routes(sec):
            if (method, path) in OPEN_PAGES:
                continue
            url = "/console" + _fill(path, sec)
            r = anonymous.request(method, url, data={"csrf": "x"}, follow_redirects=False)
            assert r.status_code == 303, (method, url, r.status_code)
            assert r.headers["location"].startswith("/console/login"), (method, url, r.headers["location"])


def test_console_forms_without_the_csrf_token_are_refused(sec: World) -> None:
    with TestClient(sec.app) as browser:
        sec.sign_in(browser)
        before = _audit_count(sec)
        for method, path in console_routes(sec):
            if method != "POST" or (method, path) in OPEN_PAGES:
                continue
            url = "/console" + _fill(path, sec)
            for form in ({}, {"csrf": "not-the-session-token"}):
                r = browser.post(url, data=form, follow_redirects=False)
                assert r.status_code == 403, (url, form, r.status_code)
        assert _audit_count(sec) == before  # nothing was done
        assert browser.get("/console/").status_code == 200  # and the session is still good


def test_the_sign_in_form_needs_its_own_csrf(sec: World) -> None:
    with TestClient(sec.app) as browser:
        page = browser.get("/console/login")
        token = form_csrf(page.text)
        browser.cookies.clear()  # another site's form: no cookie of ours
        r = browser.post("/console/login", data={"name": "ops1", "password": PASSWORD, "csrf": token})
        assert r.status_code == 403
        assert "mita_console" not in r.cookies


def test_only_admins_and_operators_sign_in(sec: World) -> None:
    ops = Operators(sec.app.state.engine)
    with pytest.raises(VendError) as refused:
        ops.create(registry.SYSTEM, "till", "vendor", PASSWORD)
    assert refused.value.code == "invalid_role"
    ops.create(registry.SYSTEM, "later-a-till", "operator", PASSWORD)
    with TestClient(sec.app) as browser:
        sec.sign_in(browser, "later-a-till")  # signs in as an operator ...
        with sec.app.state.engine.begin() as conn:  # ... until the key behind the name is made a vendor's
            conn.execute(update(api_keys).where(api_keys.c.name == "console:later-a-till").values(role="vendor"))
        r = browser.get("/console/", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        with pytest.raises(VendError) as failed:
            ops.login("later-a-till", PASSWORD)
        assert failed.value.code == "login_failed"
    with TestClient(sec.app) as admin:
        sec.sign_in(admin, "boss")
        assert admin.get("/console/keys").status_code == 200


def _audit_count(sec: World) -> int:
    from sqlalchemy import func, select

    from mita.vend.schema import audit

    with sec.app.state.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit)).scalar_one())
