"""The per-address limit on sign-in tries (mita.web.throttle), on a clock the test moves; and the console answering
429 with Retry-After once a client has used its tries (no browser: FastAPI's test client)."""

from __future__ import annotations

import re
import secrets
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from mita.api.app import create_app
from mita.settings import Settings
from mita.vend import database
from mita.web.throttle import Throttle


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_lets_a_burst_through_then_one_try_per_interval() -> None:
    clock = Clock()
    tries = Throttle(per_minute=6, burst=3, clock=clock)  # 3 at once, then one every 10 s
    assert [tries.wait("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert tries.wait("a") == pytest.approx(10.0)
    assert tries.wait("b") == 0.0  # another address has its own bucket
    clock.now += 5
    assert tries.wait("a") == pytest.approx(5.0)  # a refused try costs nothing
    clock.now += 5
    assert tries.wait("a") == 0.0 and tries.wait("a") == pytest.approx(10.0)
    clock.now += 3600
    assert [tries.wait("a") for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # refilled to the burst, never above


def test_memory_stays_bounded_and_forgets_quiet_clients_first() -> None:
    clock = Clock()
    tries = Throttle(per_minute=60, burst=2, clock=clock, max_clients=100)
    for i in range(1000):
        tries.wait(f"10.0.{i // 256}.{i % 256}")
        clock.now += 0.001
    assert len(tries._buckets) <= 101
    tries.wait("busy")
    tries.wait("busy")
    assert tries.wait("busy") > 0  # a client still being limited is remembered


def test_the_console_answers_429_with_retry_after_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    url = f"sqlite:///{tmp_path}/m.db"
    database.upgrade(url)
    app = create_app(url, settings=Settings(console_signins_per_minute=3))
    with TestClient(app, follow_redirects=False) as client:
        codes = []
        for _ in range(4):
            page = client.get("/console/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
            answer = client.post("/console/login", data={"csrf": token, "name": "nobody", "password": "wrong one"})
            codes.append(answer.status_code)
    assert codes == [401, 401, 401, 429]
    assert int(answer.headers["Retry-After"]) >= 1 and "Too many sign-in attempts" in answer.text
