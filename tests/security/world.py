"""The security tests' world: the app over a fresh SQLite file, a key per role (and a revoked one and a wrong one),
the callback secret set, a console operator, and the utility the OpenAPI examples speak of (supply group 123456,
tariff ``domestic``, customer ``ACC-1001``, meter 47500150231, one vend), made through the API with those examples
so that a request built from the document meets real rows.

Why real rows: a route that looked its resource up before checking the caller's role would answer 404 to a
caller it should refuse with 403; against an empty database that slip would pass unseen.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mita.api import create_app
from mita.vend import database, registry
from mita.vend.operators import Operators

HOOK_SECRET = "security-suite-hook-secret-0123456789"
VENDING_KEY = "abababababababab"  # the suite's test key: the leak scan looks for it everywhere
SGC = "123456"
PASSWORD = "a long console password"
ROLES = ("admin", "operator", "vendor")
#: who knocks: no key at all, a key nobody issued, a key that was revoked, and one key per role
CREDENTIALS = ("none", "bad", "revoked", *ROLES)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class World:
    app: FastAPI
    client: TestClient
    keys: dict[str, str]  # role (and "revoked") -> plaintext API key
    ids: dict[str, Any] = field(default_factory=dict)  # what the set-up made: vend_id, vendor_id, ...
    operator_name: str = "ops1"

    def headers(self, who: str) -> dict[str, str]:
        """The headers a caller sends: none, a wrong key, a revoked key, or a role's key."""
        if who == "none":
            return {}
        if who == "bad":
            return bearer("mita_" + secrets.token_urlsafe(32))
        return bearer(self.keys[who])

    def example(self, schema: str) -> Any:
        """The first example of a request model in the OpenAPI document."""
        entry = self.app.openapi()["components"]["schemas"][schema]
        examples = entry.get("examples") or [entry.get("example")]
        return examples[0]

    def sign_in(self, client: TestClient | None = None, name: str | None = None) -> str:
        """Sign ``client`` in to the console (the sign-in form's own CSRF included); the session's CSRF token."""
        c = client or self.client
        page = c.get("/console/login")
        assert page.status_code == 200, page.text
        csrf = form_csrf(page.text)
        form = {"name": name or self.operator_name, "password": PASSWORD, "csrf": csrf, "next": "/"}
        r = c.post("/console/login", data=form, follow_redirects=False)
        assert r.status_code == 303, r.text
        home = c.get("/console/")
        assert home.status_code == 200, home.text
        return form_csrf(home.text)


def form_csrf(html: str) -> str:
    m = re.search(r'name="csrf"\s+value="([^"]+)"', html) or re.search(r'value="([^"]+)"\s+name="csrf"', html)
    assert m, "no CSRF field in the page"
    return m.group(1)


@contextmanager
def world(tmp_path: Path, **env: str) -> Iterator[World]:
    """The app and its utility; ``env``: more ``MITA_<NAME>`` settings."""
    url = f"sqlite:///{tmp_path}/security.db"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
        mp.setenv("MITA_HOOK_SECRET", HOOK_SECRET)
        for name, value in env.items():
            mp.setenv(f"MITA_{name.upper()}", value)
        database.upgrade(url)
        app = create_app(url)
        engine = app.state.engine
        reg, system = registry.Registry(engine), registry.SYSTEM
        reg.create_supply_group(system, sgc=SGC, name="Security town", vending_key=VENDING_KEY, base_date=2014)
        shop = reg.create_vendor(system, "Corner shop")
        keys = {
            "admin": reg.create_api_key("head office", "admin")[1],
            "operator": reg.create_api_key("control room", "operator")[1],
            "vendor": reg.create_api_key("shop till", "vendor", shop["id"])[1],
        }
        revoked_id, keys["revoked"] = reg.create_api_key("old till", "vendor", shop["id"])
        reg.revoke_api_key(system, revoked_id)  # never used before: no cache holds it
        Operators(engine).create(system, "ops1", "operator", PASSWORD)
        Operators(engine).create(system, "boss", "admin", PASSWORD)
        try:
            with TestClient(app) as client:
                w = World(app, client, keys, {"vendor_id": shop["id"], "revoked_key_id": revoked_id})
                _utility(w)
                yield w
        finally:
            engine.dispose()


def _utility(w: World) -> None:
    c, admin = w.client, w.headers("admin")
    for path, schema in (
        ("/v1/customers", "CustomerIn"),
        ("/v1/tariffs", "TariffIn"),
        ("/v1/meters", "MeterIn"),
    ):
        r = c.post(path, json=w.example(schema), headers=admin)
        assert r.status_code == 201, (path, r.text)
    vend = c.post(
        "/v1/vends",
        json=w.example("VendIn"),
        headers={**w.headers("vendor"), "Idempotency-Key": str(uuid.uuid4())},
    )
    assert vend.status_code == 201, vend.text
    w.ids["vend_id"] = vend.json()["id"]
    w.ids["drn"] = w.example("MeterIn")["drn"]
    w.ids["tariff"] = w.example("TariffIn")["name"]
    w.ids["account"] = w.example("CustomerIn")["account"]
