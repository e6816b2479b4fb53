"""API keys (mita.vend.apikeys): listing without secrets, revocation audited, and how long a revoked key works.

Each engine has its own cache (one per server process): a revocation clears the revoking engine's entry at
once; another engine notices when its entry expires, AUTH_TTL (at most 5 s) after it last read the key's row.
"""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, select
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita.vend import apikeys, database, registry
from mita.vend.callers import Caller
from mita.vend.schema import api_keys, audit
from vend_fixtures import World, build_world, refused


@pytest.fixture
def w(engine: Engine) -> World:  # noqa: F811 - the imported fixture
    return build_world(engine)


def test_the_list_shows_no_key_and_no_hash(w: World) -> None:
    key_id, plaintext = w.svc.registry.create_api_key("new till", "vendor", w.vendor.vendor_id)
    page = apikeys.list_api_keys(w.engine, w.admin, limit=2)
    rest = apikeys.list_api_keys(w.engine, w.admin, limit=2, after=page["next"])
    items = page["items"] + rest["items"]
    assert [k["id"] for k in items] == sorted(k["id"] for k in items) and rest["next"] is None
    mine = next(k for k in items if k["id"] == key_id)
    assert mine == mine | {"name": "new till", "role": "vendor", "vendor_id": w.vendor.vendor_id, "revoked_at": None}
    assert mine["last4"] == plaintext[-4:]
    shown = repr(items)
    assert plaintext not in shown and apikeys.hash_key(plaintext) not in shown
    assert set(mine) == {"id", "name", "role", "vendor_id", "created_at", "revoked_at", "last4"}
    refused("forbidden", apikeys.list_api_keys, w.engine, w.operator)
    refused("forbidden", apikeys.list_api_keys, w.engine, w.vendor)


def test_revocation_is_audited_and_stops_the_key_at_once_on_its_engine(w: World) -> None:
    key_id, plaintext = w.svc.registry.create_api_key("till 9", "vendor", w.vendor.vendor_id)
    assert registry.authenticate(w.engine, plaintext).api_key_id == key_id
    assert registry.cached_caller(w.engine, plaintext) is not None  # remembered
    out = w.svc.registry.revoke_api_key(w.admin, key_id)
    assert out["revoked_at"] is not None and not out["revoked_self"] and not out["already_revoked"]
    assert registry.cached_caller(w.engine, plaintext) is None
    refused("unauthorized", registry.authenticate, w.engine, plaintext)
    again = w.svc.registry.revoke_api_key(w.admin, key_id)
    assert again["already_revoked"] and again["revoked_at"] == out["revoked_at"]
    with w.engine.connect() as conn:
        entries = conn.execute(select(audit).where(audit.c.action == "revoke_api_key")).all()
    assert len(entries) == 1 and entries[0].entity_id == str(key_id) and entries[0].actor == w.admin.name
    assert entries[0].detail == {"name": "till 9", "role": "vendor", "vendor_id": w.vendor.vendor_id,
                                 "revoked_self": False}  # fmt: skip
    refused("not_found", w.svc.registry.revoke_api_key, w.admin, 10**9)
    refused("forbidden", w.svc.registry.revoke_api_key, w.operator, w.vendor.api_key_id)


def test_a_key_may_revoke_itself(w: World) -> None:
    key_id, plaintext = w.svc.registry.create_api_key("leaving admin", "admin")
    me = registry.authenticate(w.engine, plaintext)
    assert w.svc.registry.revoke_api_key(me, key_id)["revoked_self"] is True
    refused("unauthorized", registry.authenticate, w.engine, plaintext)


def test_another_engine_stops_the_key_within_the_ttl(w: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert apikeys.AUTH_TTL <= 5.0  # the promise: a revoked key works nowhere 5 s after its revocation
    monkeypatch.setattr(apikeys, "AUTH_TTL", 3.0)  # room for a slow revocation (CI: over 0.5 s once)
    key_id, plaintext = w.svc.registry.create_api_key("till 7", "vendor", w.vendor.vendor_id)
    other = database.make_engine(w.engine.url.render_as_string(hide_password=False))  # another server process
    try:
        registry.authenticate(other, plaintext)
        w.svc.registry.revoke_api_key(w.admin, key_id)
        assert registry.authenticate(other, plaintext).api_key_id == key_id  # cached there: still works...
        time.sleep(3.1)
        assert registry.cached_caller(other, plaintext) is None
        refused("unauthorized", registry.authenticate, other, plaintext)  # ...until its entry expires
    finally:
        other.dispose()


def test_an_authentication_that_read_before_a_revocation_does_not_store_it() -> None:
    cache = apikeys.AuthCache()
    someone = Caller(1, "till", "vendor", 1)
    epoch = cache.epoch  # an authentication starts, reads the row (not revoked yet)...
    cache.forget("digest")  # ...the revocation commits and clears the entry...
    cache.put("digest", time.monotonic() + 5, someone, epoch)  # ...and its late answer is not kept
    assert cache.get("digest", time.monotonic()) is None
    cache.put("digest", time.monotonic() + 5, someone, cache.epoch)
    assert cache.get("digest", time.monotonic()) == someone


def test_keys_made_before_0006_show_no_last_characters(w: World) -> None:
    with w.engine.begin() as conn:
        conn.execute(api_keys.update().where(api_keys.c.id == w.vendor.api_key_id).values(key_last4=None))
    listed = {k["id"]: k for k in apikeys.list_api_keys(w.engine, w.admin)["items"]}
    assert listed[w.vendor.api_key_id]["last4"] is None
