"""The gate on a clock that strays from the database's (:mod:`mita.vend.clockcheck`): what closes and what stays.

Sales (any write) stop, and the console closes altogether, its pages read too: it times operators' sessions and
the sign-in lock on this clock, so a jump back of six hours would otherwise keep an idle session six hours
longer. API reads and providers' callbacks go on. The verdict is set by hand: the thread that measures it runs on
PostgreSQL only, and its measuring is tested in ``tests/vend/test_clockcheck.py``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mita.api import create_app
from mita.vend import database, registry
from mita.vend.clockcheck import Verdict


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, str]]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    url = f"sqlite:///{tmp_path}/clock.db"
    database.upgrade(url)
    app = create_app(url)
    _, key = registry.Registry(app.state.engine).create_api_key("control room", "operator")
    with TestClient(app, follow_redirects=False) as client:
        yield client, key


def stray(client: TestClient, seconds: float) -> None:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    runtime.clockcheck.verdict = Verdict(seconds, time.monotonic())


def test_a_straying_clock_closes_the_console_and_sales_not_api_reads(served: tuple[TestClient, str]) -> None:
    client, key = served
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/console/login").status_code == 200
    assert client.get("/v1/meters", headers=auth).status_code == 200

    stray(client, -6 * 3600)  # the server's clock went back six hours
    for page in ("/console/login", "/console", "/console/meters"):
        answer = client.get(page)
        assert answer.status_code == 503, page
        assert answer.json()["code"] == "clock_skew"
        assert "the console is closed until it is put right" in answer.json()["detail"]
    signing_in = client.post("/console/login", data={"name": "x", "password": "y" * 12})
    assert (signing_in.status_code, signing_in.json()["code"]) == (503, "clock_skew")
    vend = client.post("/v1/vends", headers={**auth, "Idempotency-Key": "k1"}, json={"meter": "1", "amount": 1})
    assert (vend.status_code, vend.json()["code"]) == (503, "clock_skew")
    assert "no vend until it is put right" in vend.json()["detail"]
    assert client.get("/v1/meters", headers=auth).status_code == 200  # reads time nothing on this clock

    stray(client, 3.0)  # put right (within MITA_MAX_CLOCK_SKEW)
    assert client.get("/console/login").status_code == 200
