"""The start of an API test's world, shared: a migrated database under a throwaway master key, the app, a vendor,
an API key per role and one supply group (the head-end and alarms API tests build their meters on it)."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine

from mita.api import create_app
from mita.vend import database, registry

SGC = "123456"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass
class Utility:
    app: FastAPI
    engine: Engine
    registry: registry.Registry
    master: str  # the master key (hex): a secret that no answer may show
    keys: dict[str, str]  # role -> API key

    @property
    def admin(self) -> dict[str, str]:
        return bearer(self.keys["admin"])

    @property
    def operator(self) -> dict[str, str]:
        return bearer(self.keys["operator"])

    @property
    def vendor(self) -> dict[str, str]:
        return {"X-API-Key": self.keys["vendor"]}


@contextmanager
def keyed_utility(database_url: str, vending_key: str, sgc: str = SGC) -> Iterator[Utility]:
    with pytest.MonkeyPatch.context() as mp:
        master = secrets.token_hex(32)
        mp.setenv("MITA_MASTER_KEY", master)
        database.upgrade(database_url)
        app = create_app(database_url)
        engine: Engine = app.state.engine
        reg, system = registry.Registry(engine), registry.SYSTEM
        shop = reg.create_vendor(system, "Corner shop")
        keys = {
            "admin": reg.create_api_key("head office", "admin")[1],
            "operator": reg.create_api_key("control room", "operator")[1],
            "vendor": reg.create_api_key("shop till", "vendor", shop["id"])[1],
        }
        reg.create_supply_group(system, sgc=sgc, name="Test utility", vending_key=vending_key, base_date=2014)
        yield Utility(app, engine, reg, master, keys)
