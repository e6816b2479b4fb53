"""Connected meters over HTTP, on SQLite and PostgreSQL: a meter's endpoint (``/v1/meters/{drn}/connection``) and
the commands queued for it (``/v1/meters/{drn}/commands``, ``/v1/commands/{id}``).

One database per backend and module, set up through the registry. Every answer is checked against its documented
response (tests/contract.py) and for secrets: no body holds an API key, the vending key or a meter's LLS secret,
and neither does the audit. No worker runs here: commands stay queued (running them is tests/headend's part).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from keyed_utility import keyed_utility
from sqlalchemy import Engine, func, select

import contract
from mita.api import models as m
from mita.headend import commands
from mita.vend import registry
from mita.vend.lifecycles import CommandKind
from mita.vend.remote import CHANNEL
from mita.vend.sample import meter_number
from mita.vend.schema import audit, meter_commands, meter_endpoints, meters, outbox, vends

VENDING_KEY = "abababababababab"
SGC = "123456"
CONNECTED = meter_number("4750015031")  # connected by the fixture
KEYPAD = meter_number("4750015032")  # never connected
SPARE = meter_number("4750015033")  # connected and disconnected by the tests
EXAMPLE = meter_number("4750015034")  # takes the documented examples
UNKNOWN = meter_number("4750015039")  # no such meter
#: The LLS secret every connected meter here has (a fresh one per run: the scans look for it).
LLS = secrets.token_hex(16)
PROBLEM = "application/problem+json"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@dataclass
class World:
    client: TestClient
    engine: Engine
    admin: dict[str, str]
    operator: dict[str, str]
    vendor: dict[str, str]

    def connect(self, drn: str, **body: Any) -> httpx.Response:
        return self.client.put(f"/v1/meters/{drn}/connection", json=body, headers=self.admin)

    def command(self, drn: str, who: dict[str, str] | None = None, **body: Any) -> httpx.Response:
        return self.client.post(f"/v1/meters/{drn}/commands", json=body, headers=who or self.operator)

    def vend(self, drn: str, amount: int = 5000) -> dict[str, Any]:
        headers = {**self.vendor, "Idempotency-Key": str(uuid.uuid4())}
        r = self.client.post("/v1/vends", json={"meter": drn, "amount": amount}, headers=headers)
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        return body

    def rows(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def count(self, table: Any) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(table)).scalar_one())

    def audited(self, drn: str) -> list[tuple[str, dict[str, Any]]]:
        found = self.rows(select(audit.c.action, audit.c.detail).where(audit.c.entity_id == drn).order_by(audit.c.id))
        return [(r.action, r.detail) for r in found]


def is_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["code"] == code, body
    return body


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    with keyed_utility(database_url, VENDING_KEY, SGC) as u:
        reg, system, app, engine, master, keys = u.registry, registry.SYSTEM, u.app, u.engine, u.master, u.keys
        spec = {"blocks": [{"up_to": None, "price": "1.10"}], "vat_rate": "0.15"}
        reg.create_tariff(system, name="domestic", currency="ZAR", spec=spec, effective_from=dt.datetime(2020, 1, 1))
        for drn in (CONNECTED, KEYPAD, SPARE, EXAMPLE):
            reg.create_meter(system, drn=drn, sgc=SGC, tariff="domestic")
        hidden = [VENDING_KEY, master, LLS, *keys.values()]

        def no_secrets(response: httpx.Response) -> None:
            response.read()
            body = response.text.lower()
            for secret in hidden:
                assert secret.lower() not in body, f"a secret appears in the response to {response.request.url}"

        with TestClient(app) as client:
            client.event_hooks["response"] = [no_secrets, contract.checker(app)]
            w = World(client, engine, u.admin, u.operator, u.vendor)
            r = w.connect(CONNECTED, host="127.0.0.1", port=4059, secret=LLS)
            assert r.status_code == 200, r.text
            yield w


# ---------------------------------------------------------------------- the document


def test_the_routes_and_their_kinds_are_documented(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    assert {"get", "put", "delete"} <= paths["/v1/meters/{drn}/connection"].keys()
    assert {"get", "post"} <= paths["/v1/meters/{drn}/commands"].keys()
    assert "get" in paths["/v1/commands/{command_id}"]
    post = paths["/v1/meters/{drn}/commands"]["post"]
    assert "not_connected" in post["responses"]["409"]["x-error-codes"]
    assert "invalid_kind" in post["responses"]["422"]["x-error-codes"]
    assert "not_found" in paths["/v1/meters/{drn}/connection"]["get"]["responses"]["404"]["x-error-codes"]
    schemas = world.client.get("/openapi.json").json()["components"]["schemas"]
    kind = schemas["CommandIn"]["properties"]["kind"]
    assert tuple(kind["enum"]) == tuple(k.value for k in commands.OPERATOR_KINDS) == tuple(m.COMMAND_KINDS)
    assert len(kind["x-enum-descriptions"]) == len(kind["enum"])
    assert m.LogName.__args__ == commands.LOGS
    assert dt.timedelta(seconds=m.MAX_EXPIRY_S) == commands.MAX_EXPIRY
    assert schemas["ConnectionOut"]["properties"]["secret"]["type"] == "boolean"  # whether there is one, only
    assert schemas["ConnectionIn"]["properties"]["secret"]["anyOf"][0]["writeOnly"] is True


def test_the_documented_examples_are_accepted(world: World) -> None:
    schemas = world.client.get("/openapi.json").json()["components"]["schemas"]
    connection, command = schemas["ConnectionIn"]["examples"][0], schemas["CommandIn"]["examples"][0]
    r = world.connect(EXAMPLE, **connection)
    assert r.status_code == 200, r.text
    assert r.json()["secret"] is True and connection["secret"] == "f" * len(connection["secret"])  # a placeholder
    r = world.command(EXAMPLE, **command)
    assert r.status_code == 202, r.text
    assert r.json()["params"] == {"logs": command["logs"]}


# ---------------------------------------------------------------------- the endpoint


def test_connect_replace_read_and_disconnect(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    c, before = world.client, world.client.get(f"/v1/meters/{SPARE}", headers=world.admin).json()
    is_problem(c.get(f"/v1/meters/{SPARE}/connection", headers=world.admin), 404, "not_found")
    r = world.connect(SPARE, host="meter-7.example.net", port=4059, secret=LLS.upper(), token_encoding="ascii",
                      client=1, server=17)  # fmt: skip
    assert r.status_code == 200, r.text
    shown = r.json()
    assert {k: shown[k] for k in ("meter", "host", "port", "client", "server", "token_encoding", "secret")} == {
        "meter": SPARE, "host": "meter-7.example.net", "port": 4059, "client": 1, "server": 17,
        "token_encoding": "ascii", "secret": True,
    }  # fmt: skip
    assert RFC3339.match(shown["created_at"]) and RFC3339.match(shown["updated_at"])
    assert c.get(f"/v1/meters/{SPARE}/connection", headers=world.operator).json() == shown
    # sealed in the database: neither the hex nor the octets are there
    (row,) = world.rows(select(meter_endpoints.c.secret).join(meters).where(meters.c.drn == SPARE))
    assert bytes.fromhex(LLS) not in row.secret and LLS.encode() not in row.secret.hex().encode()
    # replaced: without a secret the meter is read over the public client
    r = world.connect(SPARE, host="10.0.0.7", port=4060)
    assert r.status_code == 200, r.text
    assert r.json()["secret"] is False and r.json()["token_encoding"] == "bcd" and r.json()["server"] == 1
    assert r.json()["created_at"] == shown["created_at"]
    # keys, TIDs and history are the meter's own, connected or not
    assert c.get(f"/v1/meters/{SPARE}", headers=world.admin).json() == before
    r = c.delete(f"/v1/meters/{SPARE}/connection", headers=world.admin)
    assert r.status_code == 204 and r.content == b""
    is_problem(c.get(f"/v1/meters/{SPARE}/connection", headers=world.admin), 404, "not_found")
    is_problem(c.delete(f"/v1/meters/{SPARE}/connection", headers=world.admin), 404, "not_found")
    is_problem(world.command(SPARE, kind="disconnect"), 409, "not_connected")
    r = world.connect(SPARE, host="broker.example.net", port=1883, transport="mqtt")  # an MQTT-native meter
    assert r.status_code == 200, r.text
    assert (r.json()["transport"], r.json()["secret"]) == ("mqtt", False) and shown["transport"] == "dlms"
    assert c.delete(f"/v1/meters/{SPARE}/connection", headers=world.admin).status_code == 204
    # audited, the secret never: only whether there was one
    entries = [(a, d) for a, d in world.audited(SPARE) if a.startswith("meter_")]
    assert [a for a, _ in entries] == [
        "meter_connected",
        "meter_endpoint_changed",
        "meter_disconnected",
        "meter_connected",
        "meter_disconnected",
    ]
    assert entries[0][1]["secret"] is True and entries[1][1]["secret"] is False
    assert entries[0][1]["host"] == "meter-7.example.net" and entries[1][1]["port"] == 4060
    listed = c.get("/v1/audit?limit=500", headers=world.admin).text.lower()
    assert LLS.lower() not in listed and "meter_connected" in listed
    assert caplog.records and LLS.lower() not in caplog.text.lower()  # nor in a log line


def test_connection_refusals(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"host": "h", "port": 0}, "invalid_request"),
        ({"host": "h", "port": 65536}, "invalid_request"),
        ({"host": "h", "port": "4059"}, "invalid_request"),
        ({"host": "two words", "port": 4059}, "invalid_request"),
        ({"host": "", "port": 4059}, "invalid_request"),
        ({"host": "h", "port": 4059, "secret": "not hex at all"}, "invalid_request"),
        ({"host": "h", "port": 4059, "secret": LLS[:-1]}, "invalid_request"),  # an odd number of digits
        ({"host": "h", "port": 4059, "secret": ""}, "invalid_request"),
        ({"host": "h", "port": 4059, "secret": LLS * 3}, "invalid_request"),  # 48 octets
        ({"host": "h", "port": 4059, "token_encoding": "ebcdic"}, "invalid_request"),
        ({"host": "h", "port": 4059, "client": 0}, "invalid_request"),
        ({"host": "h", "port": 4059, "server": 16384}, "invalid_request"),
        ({"host": "h", "port": 4059, "password": LLS}, "invalid_request"),
        ({"host": "h", "port": 4059, "transport": "lorawan"}, "invalid_request"),
        ({"host": "h", "port": 1883, "transport": "mqtt", "secret": LLS}, "invalid_request"),  # no LLS over MQTT
    ]
    for body, code in cases:
        problem = is_problem(world.connect(SPARE, **body), 422, code)
        assert LLS.lower() not in str(problem).lower() and "not hex at all" not in str(problem), problem
    is_problem(world.connect(UNKNOWN, host="h", port=1), 404, "not_found")
    is_problem(world.connect(UNKNOWN[:-1] + str((int(UNKNOWN[-1]) + 1) % 10), host="h", port=1), 422,
               "check_digit_error")  # fmt: skip
    assert world.audited(UNKNOWN) == []
    assert caplog.records and LLS.lower() not in caplog.text.lower()


def test_roles(world: World) -> None:
    c, before = world.client, world.count(audit)
    body = {"host": "h", "port": 4059}
    for who in (world.operator, world.vendor):
        is_problem(c.put(f"/v1/meters/{CONNECTED}/connection", json=body, headers=who), 403, "forbidden")
        is_problem(c.delete(f"/v1/meters/{CONNECTED}/connection", headers=who), 403, "forbidden")
    for path in (f"/v1/meters/{CONNECTED}/connection", f"/v1/meters/{CONNECTED}/commands", "/v1/commands/1"):
        is_problem(c.get(path, headers=world.vendor), 403, "forbidden")
    is_problem(world.command(CONNECTED, world.vendor, kind="disconnect"), 403, "forbidden")
    is_problem(world.command(CONNECTED, world.vendor, kind="set_power_limit", value=1000), 403, "forbidden")
    assert world.count(audit) == before
    assert c.get(f"/v1/meters/{CONNECTED}/connection", headers=world.operator).status_code == 200


# ---------------------------------------------------------------------- commands


def test_a_command_is_queued_with_its_outbox_row(world: World) -> None:
    at = dt.datetime.now().astimezone()
    r = world.command(CONNECTED, kind="disconnect", expires_in_s=600)
    assert r.status_code == 202, r.text
    made = r.json()
    assert r.headers["location"] == f"/v1/commands/{made['id']}"
    assert (made["meter"], made["kind"], made["status"], made["params"]) == (CONNECTED, "disconnect", "queued", {})
    assert (made["vend_id"], made["attempts"], made["result"], made["error"]) == (None, 0, None, None)
    assert made["actor"] == "control room" and made["sent_at"] is None and made["finished_at"] is None
    created, expires = dt.datetime.fromisoformat(made["created_at"]), dt.datetime.fromisoformat(made["expires_at"])
    assert expires - created == dt.timedelta(seconds=600) and abs(created - at) < dt.timedelta(minutes=1)
    (row,) = world.rows(select(outbox).where(outbox.c.dedupe_key == f"command:{made['id']}"))
    assert (row.channel, row.recipient, row.payload, row.status) == (CHANNEL, CONNECTED, {"command": made["id"]},
                                                                      "pending")  # fmt: skip
    assert world.client.get(f"/v1/commands/{made['id']}", headers=world.admin).json() == made
    # the default expiry is the delivery expiry (MITA_DELIVERY_EXPIRY_HOURS, 24 h here)
    r = world.command(CONNECTED, kind="read_events", logs=["token", "token", "fraud"])
    assert r.status_code == 202, r.text
    later = r.json()
    assert later["params"] == {"logs": ["token", "fraud"]}
    created, expires = dt.datetime.fromisoformat(later["created_at"]), dt.datetime.fromisoformat(later["expires_at"])
    assert expires - created == dt.timedelta(hours=24)
    listed = world.client.get(f"/v1/meters/{CONNECTED}/commands", headers=world.operator).json()
    ids = [x["id"] for x in listed]
    assert ids.index(later["id"]) < ids.index(made["id"])  # newest first
    assert all(RFC3339.match(x["created_at"]) and RFC3339.match(x["expires_at"]) for x in listed)
    one = world.client.get(f"/v1/meters/{CONNECTED}/commands", params={"limit": 1}, headers=world.admin).json()
    assert [x["id"] for x in one] == ids[:1]
    queued = world.client.get(f"/v1/meters/{CONNECTED}/commands", params={"status": "queued"}, headers=world.admin)
    assert {x["id"] for x in queued.json()} >= {made["id"], later["id"]}
    acked = world.client.get(f"/v1/meters/{CONNECTED}/commands", params={"status": "acknowledged"},
                             headers=world.admin)  # fmt: skip
    assert acked.json() == []
    assert ("command_queued", {"command": made["id"], "kind": "disconnect"}) in world.audited(CONNECTED)


def test_a_management_token_is_issued_and_delivered_once_per_key(world: World) -> None:
    key = {"Idempotency-Key": str(uuid.uuid4())}
    vends_before = world.count(vends)
    r = world.command(CONNECTED, {**world.operator, **key}, kind="set_power_limit", value=2500)
    assert r.status_code == 202, r.text
    made = r.json()
    assert made["kind"] == "set_power_limit" and made["status"] == "queued" and made["vend_id"] is not None
    vend = world.client.get(f"/v1/vends/{made['vend_id']}", headers=world.admin).json()
    assert vend["receipt"] == {"engineering": "set_power_limit", "value": 2500}
    assert vend["delivery"] == {"command": made["id"], "status": "queued", "finished_at": None, "error": None}
    assert [t["kind"] for t in vend["tokens"]] == ["engineering"]
    assert made["params"]["tokens"] == [t["digits"] for t in vend["tokens"]]
    history = world.client.get(f"/v1/meters/{CONNECTED}/vends", headers=world.admin).json()["items"]
    assert history[0]["id"] == made["vend_id"] and history[0]["kind"] == "engineering"
    # a retry with the same key answers the same command, and spends no second TID
    again = world.command(CONNECTED, {**world.operator, **key}, kind="set_power_limit", value=2500)
    assert again.status_code == 202 and again.json()["id"] == made["id"]
    assert world.count(vends) == vends_before + 1
    r = world.command(CONNECTED, kind="set_tariff_rate", value=120)
    assert r.status_code == 202 and r.json()["kind"] == "set_tariff_rate", r.text
    assert world.count(vends) == vends_before + 2
    (row,) = world.rows(select(outbox).where(outbox.c.dedupe_key == f"command:{made['id']}"))
    assert (row.channel, row.vend_id) == (CHANNEL, made["vend_id"])


def test_a_keypad_meter_takes_no_command(world: World) -> None:
    before = (world.count(vends), world.count(meter_commands), world.count(outbox))
    for body in ({"kind": "disconnect"}, {"kind": "set_power_limit", "value": 1000}):
        problem = is_problem(world.command(KEYPAD, **body), 409, "not_connected")
        assert KEYPAD in problem["detail"]
    assert (world.count(vends), world.count(meter_commands), world.count(outbox)) == before  # no TID spent
    is_problem(world.command(UNKNOWN, kind="disconnect"), 404, "not_found")
    assert world.client.get(f"/v1/meters/{KEYPAD}/commands", headers=world.admin).json() == []
    is_problem(world.client.get(f"/v1/meters/{UNKNOWN}/commands", headers=world.admin), 404, "not_found")
    is_problem(world.client.get("/v1/commands/999999999", headers=world.admin), 404, "not_found")


def test_a_vend_for_a_connected_meter_queues_its_tokens(world: World) -> None:
    key = {**world.vendor, "Idempotency-Key": str(uuid.uuid4())}
    r = world.client.post("/v1/vends", json={"meter": CONNECTED, "amount": 5000}, headers=key)
    assert r.status_code == 201, r.text
    vend = r.json()
    delivery = commands.for_vend(world.engine, vend["id"])
    assert delivery is not None
    queued = {"command": delivery["id"], "status": "queued", "finished_at": None, "error": None}
    assert vend["delivery"] == queued  # the answer knows its command, queued in the vend's transaction
    # a replay is the same answer; a read, the list and the meter's history show the delivery too
    again = world.client.post("/v1/vends", json={"meter": CONNECTED, "amount": 5000}, headers=key)
    assert again.status_code == 200 and again.json() == vend
    assert world.client.get(f"/v1/vends/{vend['id']}", headers=world.vendor).json()["delivery"] == queued
    for path in ("/v1/vends", f"/v1/meters/{CONNECTED}/vends"):
        items = world.client.get(path, headers=world.admin).json()["items"]
        assert next(v for v in items if v["id"] == vend["id"])["delivery"] == queued
    assert delivery["kind"] == CommandKind.DELIVER_TOKENS and delivery["status"] == "queued"
    assert delivery["params"] == {"tokens": [t["digits"] for t in vend["tokens"]], "purpose": "purchase"}
    assert delivery["actor"] == "shop till"
    listed = world.client.get(f"/v1/meters/{CONNECTED}/commands", headers=world.operator).json()
    shown = next(x for x in listed if x["vend_id"] == vend["id"])
    assert shown["id"] == delivery["id"] and shown["params"]["tokens"] == delivery["params"]["tokens"]
    (row,) = world.rows(select(outbox).where(outbox.c.dedupe_key == f"command:{delivery['id']}"))
    assert row.channel == CHANNEL and row.vend_id == vend["id"]
    # a keypad meter's tokens are on the receipt only
    keypad = world.vend(KEYPAD)
    assert commands.for_vend(world.engine, keypad["id"]) is None
    assert keypad["delivery"] is None
    assert world.client.get(f"/v1/vends/{keypad['id']}", headers=world.vendor).json()["delivery"] is None
    items = world.client.get(f"/v1/meters/{KEYPAD}/vends", headers=world.admin).json()["items"]
    assert [v["delivery"] for v in items] == [None] * len(items)
    assert world.rows(select(outbox.c.id).where(outbox.c.vend_id == keypad["id"], outbox.c.channel == CHANNEL)) == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"kind": "explode"}, "invalid_kind"),
        ({"kind": "deliver_tokens"}, "invalid_kind"),  # a vend's own, never an operator's
        ({"kind": "set_power_limit"}, "invalid_request"),  # no value
        ({"kind": "set_power_limit", "value": 70000}, "invalid_request"),
        ({"kind": "set_power_limit", "value": -1}, "invalid_request"),
        ({"kind": "set_power_limit", "value": "100"}, "invalid_request"),
        ({"kind": "disconnect", "value": 5}, "invalid_request"),
        ({"kind": "read_events", "logs": ["bogus"]}, "invalid_request"),
        ({"kind": "read_events", "logs": []}, "invalid_request"),
        ({"kind": "read_registers", "logs": ["token"]}, "invalid_request"),
        ({"kind": "disconnect", "expires_in_s": 0}, "invalid_request"),
        ({"kind": "disconnect", "expires_in_s": 31 * 86400}, "invalid_request"),
        ({"kind": "set_tariff_rate", "value": 1, "expires_in_s": 60}, "invalid_request"),
        ({"kind": "disconnect", "when": "now"}, "invalid_request"),
        ({}, "invalid_request"),
    ],
    ids=lambda v: str(v),
)
def test_command_refusals(world: World, body: dict[str, Any], code: str) -> None:
    before = (world.count(vends), world.count(meter_commands))
    is_problem(world.command(CONNECTED, **body), 422, code)
    assert (world.count(vends), world.count(meter_commands)) == before


def test_query_refusals(world: World) -> None:
    c = world.client
    for params in ({"status": "lost"}, {"limit": 0}, {"limit": 501}):
        is_problem(c.get(f"/v1/meters/{CONNECTED}/commands", params=params, headers=world.admin), 422,
                   "invalid_request")  # fmt: skip
    is_problem(c.get("/v1/commands/0", headers=world.admin), 422, "invalid_request")
    is_problem(c.get("/v1/commands/x", headers=world.admin), 422, "invalid_request")
