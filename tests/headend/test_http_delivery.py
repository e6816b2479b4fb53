"""Issue 12's end-to-end test, over HTTP: a vend sold through the API for a connected meter -> its command and
outbox row -> ``mita worker``'s head-end sender -> the simulated meter's token gateway over DLMS -> the vend's
answers say the tokens were delivered, the command says what the meter answered and the credit it read back,
and the same token typed on the keypad is refused as used. Also what a vend shows when there is no remote
delivery (a keypad meter) and when it fails (an offline meter's command expires; a wrong secret is refused).

Every answer is checked against its documented response (tests/contract.py). The API serves on the utility's
wall clock (``local_now``), and so do the meter and the worker here; a worker ``ahead`` of it is a worker run
after the delivery expiry. The meter side is gurux (mita.sim), the head-end dlms-cosem: two codecs.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from keyed_utility import bearer
from sqlalchemy import Engine, func, select

import contract
from headend_pass import run_headend
from mita.api import create_app
from mita.meter import storage
from mita.vend import database, provision, registry
from mita.vend.callers import local_now
from mita.vend.sample import meter_number
from mita.vend.schema import meter_commands
from mita.vend.service import VendingService

from .online import Online, serve_meter

SGC = "123456"
VENDING_KEY = "abababababababab"
CONNECTED = meter_number("4750015041")  # served by the simulated meter, connected through the API
KEYPAD = meter_number("4750015042")  # never connected
LLS = secrets.token_hex(8)  # the management association's secret (fresh per run: the leak scans look for it)
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass
class World:
    client: TestClient
    engine: Engine
    svc: VendingService
    admin: dict[str, str]
    operator: dict[str, str]
    vendor: dict[str, str]

    def connect(self, port: int, secret: str = LLS) -> None:
        body = {"host": "127.0.0.1", "port": port, "secret": secret}
        r = self.client.put(f"/v1/meters/{CONNECTED}/connection", json=body, headers=self.admin)
        assert r.status_code == 200, r.text

    def vend(self, drn: str, amount: int = 10_000) -> dict[str, Any]:
        headers = {**self.vendor, "Idempotency-Key": str(uuid.uuid4())}
        r = self.client.post("/v1/vends", json={"meter": drn, "amount": amount}, headers=headers)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def get(self, path: str, who: dict[str, str] | None = None) -> Any:
        r = self.client.get(path, headers=who or self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def delivery(self, vend_id: str) -> Any:
        """The vend's ``delivery`` as its vendor reads it (GET /v1/vends/{id})."""
        return self.get(f"/v1/vends/{vend_id}", self.vendor)["delivery"]

    def run_worker(self, ahead: dt.timedelta = dt.timedelta(0)) -> None:
        """One ``mita worker`` pass over the head-end channel, its clock ``ahead`` of the API's."""

        def clock() -> dt.datetime:
            return local_now() + ahead

        run_headend(self.engine, self.svc, registry.SYSTEM, clock)


@pytest.fixture
def world(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    app = create_app(url)
    engine: Engine = app.state.engine
    reg, system = registry.Registry(engine), registry.SYSTEM
    reg.create_supply_group(system, sgc=SGC, name="Test utility", vending_key=VENDING_KEY, base_date=2014)
    spec = {"blocks": [{"up_to": None, "price": "1.10"}], "vat_rate": "0.15"}
    reg.create_tariff(system, name="domestic", currency="ZAR", spec=spec, effective_from=dt.datetime(2020, 1, 1))
    for drn in (CONNECTED, KEYPAD):
        reg.create_meter(system, drn=drn, sgc=SGC, tariff="domestic")
    shop = reg.create_vendor(system, "Corner shop")
    keys = {
        "admin": reg.create_api_key("head office", "admin")[1],
        "operator": reg.create_api_key("control room", "operator")[1],
        "vendor": reg.create_api_key("shop till", "vendor", shop["id"])[1],
    }
    with TestClient(app) as client:
        client.event_hooks["response"] = [contract.checker(app), no_secret]
        yield World(client, engine, app.state.service, bearer(keys["admin"]), bearer(keys["operator"]),
                    {"X-API-Key": keys["vendor"]})  # fmt: skip


def no_secret(response: httpx.Response) -> None:
    response.read()
    assert LLS not in response.text.lower(), f"the LLS secret appears in the response to {response.request.url}"


@pytest.fixture
def online(world: World, tmp_path: Path) -> Iterator[Online]:
    """The connected meter in the field: the database's meter as a virtual meter, served over DLMS."""
    meter = provision.virtual_meter(world.engine, CONNECTED)
    with serve_meter(meter, tmp_path / "meter.json", bytes.fromhex(LLS), local_now) as served:
        yield served


def test_a_vend_over_http_is_delivered_to_the_meter_and_the_keypad_then_answers_used(
    world: World, online: Online
) -> None:
    world.connect(online.port)
    vend = world.vend(CONNECTED)
    queued = vend["delivery"]
    assert queued == {"command": queued["command"], "status": "queued", "finished_at": None, "error": None}
    assert world.delivery(vend["id"]) == queued

    world.run_worker()

    delivered = world.delivery(vend["id"])
    assert delivered["command"] == queued["command"] and delivered["status"] == "acknowledged", delivered
    assert delivered["error"] is None and RFC3339.match(delivered["finished_at"])
    command = world.get(f"/v1/commands/{queued['command']}", world.operator)
    assert command["status"] == "acknowledged" and command["vend_id"] == vend["id"]
    assert command["kind"] == "deliver_tokens" and command["finished_at"] == delivered["finished_at"]
    digits = [t["digits"] for t in vend["tokens"]]
    assert [t["token"] for t in command["result"]["tokens"]] == digits  # in the vend's order
    assert [t["result"] for t in command["result"]["tokens"]] == ["accept"] * len(digits)
    units = vend["receipt"]["units"]
    assert units > 0 and sum(t["units"] for t in vend["tokens"]) == units
    assert command["result"]["credit"] == units * 100  # base units of 0.1 kWh, read back in Wh
    # every answer that shows the vend says it was delivered: a reprint, the list, the meter's history
    assert world.client.post(f"/v1/vends/{vend['id']}/reprint", headers=world.vendor).json()["delivery"] == delivered
    for path in ("/v1/vends", f"/v1/meters/{CONNECTED}/vends"):
        (listed,) = [v for v in world.get(path)["items"] if v["id"] == vend["id"]]
        assert listed["delivery"] == delivered

    # the customer types the receipt's tokens in as well: the meter refuses them as used, and counts them once
    meter = storage.load(online.path)
    assert meter.registers()["electricity"] == units
    assert [str(meter.enter(d, local_now()).result) for d in digits] == ["used"] * len(digits)
    assert meter.registers()["electricity"] == units


def test_a_keypad_meters_vend_has_no_delivery(world: World) -> None:
    vend = world.vend(KEYPAD)
    assert vend["delivery"] is None
    assert world.delivery(vend["id"]) is None
    world.run_worker()  # nothing for the head-end to do
    assert world.delivery(vend["id"]) is None
    (listed,) = world.get(f"/v1/meters/{KEYPAD}/vends")["items"]
    assert listed["id"] == vend["id"] and listed["delivery"] is None
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(meter_commands)).scalar_one() == 0


def test_an_offline_meters_delivery_waits_then_expires_and_the_vend_says_so(world: World, tmp_path: Path) -> None:
    meter = provision.virtual_meter(world.engine, CONNECTED)
    with serve_meter(meter, tmp_path / "meter.json", bytes.fromhex(LLS), local_now) as gone:
        port = gone.port
    world.connect(port)  # nothing listens there any more: the meter is offline
    vend = world.vend(CONNECTED)
    command_id = vend["delivery"]["command"]

    world.run_worker()
    waiting = world.delivery(vend["id"])
    assert waiting == {"command": command_id, "status": "queued", "finished_at": None, "error": "unreachable"}

    world.run_worker(ahead=dt.timedelta(hours=25))  # past the 24 h delivery expiry
    expired = world.delivery(vend["id"])
    assert expired["command"] == command_id and expired["status"] == "expired" and expired["error"] == "expired"
    assert RFC3339.match(expired["finished_at"])
    command = world.get(f"/v1/commands/{command_id}")
    assert command["status"] == "expired" and command["error"].startswith("expired")
    (listed,) = world.get(f"/v1/meters/{CONNECTED}/vends")["items"]
    assert listed["delivery"] == expired
    # the receipt still has the tokens, for the keypad
    assert world.get(f"/v1/vends/{vend['id']}", world.vendor)["tokens"] == vend["tokens"]


def test_a_refused_association_fails_the_delivery_and_the_vend_says_so(world: World, online: Online) -> None:
    world.connect(online.port, secret=secrets.token_hex(8))  # not the meter's secret
    vend = world.vend(CONNECTED)
    world.run_worker()
    failed = world.delivery(vend["id"])
    assert failed["command"] == vend["delivery"]["command"]
    assert failed["status"] == "failed" and failed["error"] == "refused" and RFC3339.match(failed["finished_at"])
    assert storage.load(online.path).registers().get("electricity", 0) == 0  # nothing reached the meter
