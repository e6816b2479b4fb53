"""Alarms over HTTP, on SQLite and PostgreSQL: ``/v1/alarms`` (list, filters, pages), one alarm, acknowledge and
close (refused moves: 409 with their codes), who may do what, a meter's ``timeline`` and ``telemetry``; and the
CLI's ``mita alarms ... --json``, which answers what the API answers.

One database per backend and module; alarms are raised as the ingest and the detection raise them
(:func:`mita.headend.alarms.raise_alarms`). Every answer is checked against its documented response
(tests/contract.py).
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from contextlib import redirect_stdout
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from keyed_utility import keyed_utility
from sqlalchemy import Engine, insert, select

import contract
from mita.api.alarm_models import AlarmCloseIn
from mita.cli.main import main as cli
from mita.headend.alarms import Raised, raise_alarms
from mita.vend import registry
from mita.vend.callers import local_now
from mita.vend.lifecycles import AlarmSeverity
from mita.vend.sample import meter_number
from mita.vend.schema import audit, meter_events, meter_state, meters

SGC = "123456"
VENDING_KEY = "abababababababab"
TAMPERED = meter_number("4750017041")
LEAKING = meter_number("4750017042")
QUIET = meter_number("4750017043")  # no alarm, no telemetry
UNKNOWN = meter_number("4750017049")
PROBLEM = "application/problem+json"


@dataclass
class World:
    client: TestClient
    engine: Engine
    url: str
    admin: dict[str, str]
    operator: dict[str, str]
    vendor: dict[str, str]

    def meter_id(self, drn: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(meters.c.id).where(meters.c.drn == drn)).scalar_one())

    def raise_(self, drn: str, rule: str, severity: AlarmSeverity, minutes_ago: float) -> None:
        at = local_now() - dt.timedelta(minutes=minutes_ago)
        raised = Raised(self.meter_id(drn), rule, severity, f"{rule} at {drn}", {"n": 1}, at)
        with self.engine.begin() as conn:  # (SQLite: one writer; nothing else reads inside)
            raise_alarms(conn, [raised], at)

    def get(self, path: str, who: dict[str, str] | None = None, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params, headers=who or self.operator)

    def alarm(self, drn: str, rule: str) -> dict[str, Any]:
        items = self.get("/v1/alarms", meter=drn, rule=rule).json()["items"]
        assert items, (drn, rule)
        found: dict[str, Any] = items[0]
        return found


def is_problem(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    assert r.json()["code"] == code, r.json()


@pytest.fixture(scope="module")
def world(database_url: str) -> Iterator[World]:
    with keyed_utility(database_url, VENDING_KEY, SGC) as u:
        reg, system, app, engine = u.registry, registry.SYSTEM, u.app, u.engine
        for drn in (TAMPERED, LEAKING, QUIET):
            reg.create_meter(system, drn=drn, sgc=SGC, utility="water" if drn == LEAKING else "electricity")
        with TestClient(app) as client:
            client.event_hooks["response"] = [contract.checker(app)]
            w = World(client, engine, database_url, u.admin, u.operator, u.vendor)
            w.raise_(TAMPERED, "cover", AlarmSeverity.MEDIUM, 30)
            w.raise_(TAMPERED, "magnetic", AlarmSeverity.HIGH, 20)
            w.raise_(LEAKING, "leak", AlarmSeverity.HIGH, 10)
            yield w


# ---------------------------------------------------------------------- the document


def test_the_routes_and_their_refusals_are_documented(world: World) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    assert "get" in paths["/v1/alarms"] and "get" in paths["/v1/alarms/{alarm_id}"]
    for move in ("acknowledge", "close"):
        conflict = paths[f"/v1/alarms/{{alarm_id}}/{move}"]["post"]["responses"]["409"]["x-error-codes"]
        assert "alarm_closed" in conflict
    ack = paths["/v1/alarms/{alarm_id}/acknowledge"]["post"]["responses"]["409"]["x-error-codes"]
    assert "already_acknowledged" in ack
    assert "get" in paths["/v1/meters/{drn}/timeline"] and "get" in paths["/v1/meters/{drn}/telemetry"]


# ---------------------------------------------------------------------- a person's moves


def test_acknowledge_then_close_with_the_documented_note_and_the_refused_moves(world: World) -> None:
    w = world
    alarm = w.alarm(TAMPERED, "magnetic")
    assert (alarm["status"], alarm["severity"], alarm["occurrences"]) == ("open", "high", 1)
    assert w.get(f"/v1/alarms/{alarm['id']}").json() == alarm

    r = w.client.post(f"/v1/alarms/{alarm['id']}/acknowledge", headers=w.operator)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "acknowledged" and r.json()["acknowledged_by"] == "control room"
    is_problem(w.client.post(f"/v1/alarms/{alarm['id']}/acknowledge", headers=w.operator), 409,
               "already_acknowledged")  # fmt: skip

    example = AlarmCloseIn.model_json_schema()["examples"][0]
    r = w.client.post(f"/v1/alarms/{alarm['id']}/close", json=example, headers=w.admin)
    assert r.status_code == 200, r.text
    closed = r.json()
    assert (closed["status"], closed["closed_by"], closed["note"]) == ("closed", "head office", example["note"])
    is_problem(w.client.post(f"/v1/alarms/{alarm['id']}/close", json=example, headers=w.admin), 409, "alarm_closed")
    is_problem(w.client.post(f"/v1/alarms/{alarm['id']}/acknowledge", headers=w.admin), 409, "alarm_closed")
    is_problem(w.client.post("/v1/alarms/999999/close", json=example, headers=w.admin), 404, "not_found")
    is_problem(w.client.post(f"/v1/alarms/{alarm['id']}/close", json={}, headers=w.admin), 422, "invalid_request")
    with w.engine.connect() as conn:
        actions = [
            a.action
            for a in conn.execute(select(audit).where(audit.c.entity == "alarm", audit.c.entity_id == str(alarm["id"])))
        ]
    assert actions == ["alarm_acknowledged", "alarm_closed"]

    # the same condition again: a new alarm, the closed one unchanged
    w.raise_(TAMPERED, "magnetic", AlarmSeverity.HIGH, 1)
    fresh = w.alarm(TAMPERED, "magnetic")
    assert fresh["id"] != alarm["id"] and fresh["status"] == "open"
    assert w.get(f"/v1/alarms/{alarm['id']}").json()["status"] == "closed"


def test_vendors_are_refused_and_operators_and_admins_allowed(world: World) -> None:
    w = world
    alarm_id = w.alarm(TAMPERED, "cover")["id"]
    for method, path, body in (
        ("GET", "/v1/alarms", None),
        ("GET", f"/v1/alarms/{alarm_id}", None),
        ("POST", f"/v1/alarms/{alarm_id}/acknowledge", None),
        ("POST", f"/v1/alarms/{alarm_id}/close", {"note": "no"}),
        ("GET", f"/v1/meters/{TAMPERED}/timeline", None),
        ("GET", f"/v1/meters/{TAMPERED}/telemetry", None),
    ):
        is_problem(w.client.request(method, path, json=body, headers=w.vendor), 403, "forbidden")
        is_problem(w.client.request(method, path, json=body), 401, "unauthorized")
    assert w.get(f"/v1/alarms/{alarm_id}").json()["status"] == "open"
    assert w.get("/v1/alarms", w.admin).status_code == 200


# ---------------------------------------------------------------------- lists


def test_filters_and_pages(world: World) -> None:
    w = world
    every = w.get("/v1/alarms", limit=500).json()["items"]
    assert [a["opened_at"] for a in every] == sorted((a["opened_at"] for a in every), reverse=True)
    assert {a["meter"] for a in w.get("/v1/alarms", meter=LEAKING).json()["items"]} == {LEAKING}
    assert {a["severity"] for a in w.get("/v1/alarms", severity="high").json()["items"]} == {"high"}
    assert w.get("/v1/alarms", meter=QUIET).json() == {"items": [], "next": None}
    assert w.get("/v1/alarms", meter=UNKNOWN).json() == {"items": [], "next": None}
    since = (local_now() - dt.timedelta(minutes=15)).astimezone().isoformat()
    assert {a["rule"] for a in w.get("/v1/alarms", since=since).json()["items"]} <= {"leak", "magnetic"}
    paged, after = [], None
    while True:
        page = w.get("/v1/alarms", limit=1, **({"after": after} if after else {})).json()
        paged += page["items"]
        after = page["next"]
        if after is None:
            break
    assert paged == every
    is_problem(w.get("/v1/alarms", after="garbage"), 422, "invalid_cursor")
    is_problem(w.get("/v1/alarms", severity="dire"), 422, "invalid_request")
    is_problem(w.get("/v1/alarms", since=since, until=since), 422, "invalid_period")
    is_problem(w.get("/v1/alarms", meter="123"), 422, "format_error")


def test_timeline_and_telemetry(world: World) -> None:
    w = world
    leak_id = w.meter_id(LEAKING)
    at = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=5)
    stored = at.replace(tzinfo=None) if w.engine.dialect.name == "sqlite" else at
    with w.engine.begin() as conn:
        conn.execute(insert(meter_events).values(meter_id=leak_id, occurred_at=stored, seq=7, event="power_down",
                                                 code=1, received_at=stored))  # fmt: skip
        conn.execute(insert(meter_state).values(
            meter_id=leak_id, medium="water", seq=7, read_at=stored, received_at=stored, register=12_345, demand=40,
            credit=900, relay_closed=True, online=True, status_at=stored, event_at=stored,
        ))  # fmt: skip
    items = w.get(f"/v1/meters/{LEAKING}/timeline").json()["items"]
    assert [(e["type"], e["id"]) for e in items][:2] == [("event", "7"), ("alarm", str(w.alarm(LEAKING, "leak")["id"]))]
    assert items[0]["detail"]["event"] == "power_down"
    shown = dt.datetime.fromisoformat(items[0]["at"])
    assert shown == at and shown.utcoffset() == at.astimezone().utcoffset()  # the utility's offset
    got = w.get(f"/v1/meters/{LEAKING}/telemetry").json()
    assert (got["register"], got["credit"], got["medium"], got["online"]) == (12_345, 900, "water", True)
    assert dt.datetime.fromisoformat(got["read_at"]) == at
    is_problem(w.get(f"/v1/meters/{QUIET}/telemetry"), 404, "not_found")
    is_problem(w.get(f"/v1/meters/{UNKNOWN}/timeline"), 404, "not_found")
    assert w.get(f"/v1/meters/{QUIET}/timeline").json() == {"items": [], "next": None}
    is_problem(w.get(f"/v1/meters/{LEAKING}/timeline", after="garbage"), 422, "invalid_cursor")


# ---------------------------------------------------------------------- the CLI answers what the API answers


def run_cli(world: World, *words: str) -> tuple[int, Any]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli([*words, "--database-url", world.url, "--json"])
    return code, json.loads(out.getvalue()) if out.getvalue().strip() else None


def test_the_cli_json_is_the_api_answer(world: World) -> None:
    w = world
    code, listed = run_cli(w, "alarms", "list", "--limit", "500")
    assert code == 0 and listed == w.get("/v1/alarms", limit=500).json()
    alarm_id = w.alarm(LEAKING, "leak")["id"]
    code, shown = run_cli(w, "alarms", "show", str(alarm_id))
    assert code == 0 and shown == w.get(f"/v1/alarms/{alarm_id}").json()
    code, acked = run_cli(w, "alarms", "ack", str(alarm_id))
    assert code == 0 and acked == w.get(f"/v1/alarms/{alarm_id}").json() and acked["status"] == "acknowledged"
    assert acked["acknowledged_by"] == "system"
    code, closed = run_cli(w, "alarms", "close", str(alarm_id), "--note", "valve replaced")
    assert code == 0 and closed["status"] == "closed" and closed["note"] == "valve replaced"
    code, _ = run_cli(w, "alarms", "close", str(alarm_id), "--note", "again")
    assert code != 0
    code, timeline = run_cli(w, "alarms", "timeline", LEAKING)
    assert code == 0 and timeline == w.get(f"/v1/meters/{LEAKING}/timeline").json()


def test_the_cli_lists_the_services_statuses_and_severities() -> None:
    from mita.cli import alarms as alarms_cli
    from mita.vend import limits
    from mita.vend.lifecycles import AlarmStatus

    assert tuple(AlarmStatus) == alarms_cli.STATUSES and tuple(AlarmSeverity) == alarms_cli.SEVERITIES
    assert alarms_cli.NOTE_MAX == limits.REASON
