"""Mita's API over a channels test's world, through FastAPI's TestClient: the app with the test's callback secret,
an API key per role (the till's is the world's vendor's), every answer checked against the OpenAPI contract."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

import contract
from mita.api.app import create_app
from mita.vend import registry
from vend_fixtures import World

SECRET = "hook-secret-for-tests-0123456789"


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]  # role -> API key (plaintext)

    def auth(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[role]}"}


@contextmanager
def api(world: World, monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[Api]:
    """The app over the world's database (``MITA_<NAME>`` settings from ``env``); keys for admin, operator and a
    till of the world's vendor."""
    monkeypatch.setenv("MITA_HOOK_SECRET", SECRET)
    for name, value in env.items():
        monkeypatch.setenv(f"MITA_{name.upper()}", value)
    reg = registry.Registry(world.engine)
    keys = {
        "admin": reg.create_api_key("channels admin", "admin")[1],
        "operator": reg.create_api_key("channels operator", "operator")[1],
        "vendor": reg.create_api_key("till 1", "vendor", world.vendor.vendor_id)[1],
        "other": reg.create_api_key("till 2", "vendor", world.vendor.vendor_id)[1],
    }
    app = create_app(str(world.engine.url.render_as_string(hide_password=False)))
    try:
        with TestClient(app) as client:
            checked = contract.checker(app)

            def check(response: Any) -> None:  # providers' callbacks are not in the document
                if not response.request.url.path.startswith("/hooks/"):
                    checked(response)

            client.event_hooks["response"] = [check]
            yield Api(client, keys)
    finally:
        app.state.engine.dispose()
