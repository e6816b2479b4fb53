"""Providers' callbacks (``/hooks/...``): no API key, a secret path segment that never reaches the log, and the
body limit held before a route reads anything."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mita.api.app import create_app
from mita.channels.hooks import HookSecret
from mita.settings import ChannelSettings
from mita.vend import database
from mita.vend.errors import VendError

SECRET = "s3cret-path-0123456789"


def test_the_secret_is_checked_in_constant_time_and_made_into_callback_urls() -> None:
    hook = HookSecret(SECRET)
    hook.check(SECRET)
    for wrong in ("", SECRET[:-1], SECRET + "x"):
        with pytest.raises(VendError) as err:
            hook.check(wrong)
        assert err.value.code == "not_found"
    assert hook.path("https://vend.example.com/", "/ke1/stk/") == f"https://vend.example.com/hooks/ke1/stk/{SECRET}"
    off = HookSecret(None)
    assert not off.enabled
    with pytest.raises(VendError):
        off.check("anything")
    with pytest.raises(VendError) as short:
        HookSecret("short")
    assert short.value.code == "channels_misconfigured"


def test_the_secret_can_come_from_a_file(tmp_path: Path) -> None:
    path = tmp_path / "hook.secret"
    path.write_text(SECRET + "\n")
    assert HookSecret.from_settings(ChannelSettings(hook_secret_file=str(path))).enabled
    with pytest.raises(VendError):
        HookSecret.from_settings(ChannelSettings(hook_secret=SECRET, hook_secret_file=str(path)))


def test_a_hook_needs_no_key_logs_no_secret_and_is_held_to_the_body_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", "11" * 32)
    url = f"sqlite:///{tmp_path}/hooks.db"
    database.upgrade(url)
    app = create_app(url)
    with TestClient(app) as client, caplog.at_level(logging.INFO, logger="mita.access"):
        r = client.post(f"/hooks/nothing/here/{SECRET}", json={})
        big = client.post(f"/hooks/nothing/here/{SECRET}", content=b"x" * (2 * 1024 * 1024))
    assert r.status_code == 404  # past the gate without a key: no route, not 401
    assert big.status_code == 413
    assert SECRET not in caplog.text and "/hooks/nothing/here/***" in caplog.text
