"""``/metrics``: what the workers counted (requests, vends, refusals) and what the database holds (outbox, keys,
campaigns), on SQLite and PostgreSQL; a database that does not answer leaves its figures out and never fails the
scrape; ``MITA_METRICS_PUBLIC=false`` asks for an admin or operator key."""

from __future__ import annotations

import datetime as dt
import secrets
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, insert, select, update

from mita import __version__, sts
from mita.api import create_app
from mita.api.metrics import DB_TIMEOUT_S, key_ends
from mita.settings import Settings
from mita.vend import database, registry
from mita.vend.schema import campaigns, key_changes, meters, outbox, supply_groups, vending_keys

SGC = "123456"
DRN = "47500150231"
UNKNOWN_DRN = "4750015024" + str(sts.luhn_digit("4750015024"))  # valid, never registered
SPEC = {"blocks": [{"up_to": None, "price": "2.50"}], "vat_rate": "0.15"}


@dataclass
class Utility:
    client: TestClient
    engine: Engine
    url: str
    admin: dict[str, str]
    operator: dict[str, str]
    vendor: dict[str, str]

    def vend(self, meter: str = DRN, amount: int = 5000) -> int:
        headers = {**self.vendor, "Idempotency-Key": str(uuid.uuid4())}
        return self.client.post("/v1/vends", json={"meter": meter, "amount": amount}, headers=headers).status_code

    def scrape(self, headers: dict[str, str] | None = None) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        r = self.client.get("/metrics", headers=headers or {})
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        return samples(r.text)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition: (name, sorted labels) → value (the parser checks the format)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def set_up(url: str, settings: Settings | None = None) -> Utility:
    database.upgrade(url)
    app = create_app(url, settings=settings)
    engine: Engine = app.state.engine
    system = registry.SYSTEM
    reg = registry.Registry(engine)
    vendor = reg.create_vendor(system, "Corner shop")
    keys = {role: reg.create_api_key(role, role, vendor["id"] if role == "vendor" else None)[1]
            for role in ("admin", "operator", "vendor")}  # fmt: skip
    reg.create_supply_group(system, sgc=SGC, name="Town", vending_key="abababababababab", base_date=2014)
    reg.create_tariff(system, name="domestic", currency="ZAR", spec=SPEC, effective_from=dt.datetime(2020, 1, 1))
    reg.create_customer(system, account="ACC-1", name="A customer", phone="+27820000001")
    reg.create_meter(system, drn=DRN, sgc=SGC, customer="ACC-1", tariff="domestic")
    return Utility(
        TestClient(app), engine, url, *({"Authorization": f"Bearer {keys[r]}"} for r in ("admin", "operator", "vendor"))
    )


@pytest.fixture
def utility(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Utility]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    u = set_up(url)
    with u.client:
        yield u


def test_metrics_count_vends_refusals_and_requests_by_route(utility: Utility) -> None:
    assert utility.vend() == 201
    assert utility.vend(meter="47500150232") == 422  # a wrong check digit: refused before any vend
    assert utility.vend(meter=UNKNOWN_DRN) == 404  # a valid number no one registered
    assert utility.client.get(f"/v1/meters/{DRN}", headers=utility.admin).status_code == 200
    assert utility.client.get("/v1/meters", headers={"Authorization": "Bearer wrong"}).status_code == 401
    found = utility.scrape()
    assert value(found, "mita_vends_total", kind="purchase", outcome="issued") == 1
    assert value(found, "mita_vends_total", kind="purchase", outcome="refused") == 2
    assert value(found, "mita_vend_duration_seconds_count", kind="purchase", outcome="issued") == 1
    assert value(found, "mita_vend_duration_seconds_bucket", kind="purchase", outcome="issued", le="+Inf") == 1
    assert value(found, "mita_http_requests_total", method="POST", route="/v1/vends", status="201") == 1
    # the route template, never the meter number; the gate's refusal still named by its route
    assert value(found, "mita_http_requests_total", method="GET", route="/v1/meters/{drn}", status="200") == 1
    assert value(found, "mita_http_requests_total", method="GET", route="/v1/meters", status="401") == 1
    assert not [k for k in found if DRN in str(k)]
    assert value(found, "mita_refusals_total", code="unauthorized") == 1
    assert value(found, "mita_refusals_total", code="not_found") == 1
    assert sum(v for (name, _), v in found.items() if name == "mita_refusals_total") == 3
    assert value(found, "mita_build_info", version=__version__) == 1
    # the second scrape counts the first
    again = utility.scrape()
    assert value(again, "mita_http_requests_total", method="GET", route="/metrics", status="200") == 1


def test_metrics_read_outbox_keys_and_campaigns_from_the_database(utility: Utility) -> None:
    assert utility.vend() == 201
    engine = utility.engine
    with engine.begin() as conn:
        group_id = conn.execute(select(supply_groups.c.id)).scalar_one()
        meter_id = conn.execute(select(meters.c.id)).scalar_one()
        now = dt.datetime.now().replace(microsecond=0)
        conn.execute(update(vending_keys).values(issued_until=now + dt.timedelta(days=10)))
        for status, n in (("pending", 2), ("dead", 1), ("sent", 4)):
            for i in range(n):
                conn.execute(insert(outbox).values(
                    channel="sms", recipient="x", dedupe_key=f"t:{status}:{i}", payload={}, status=status,
                    next_attempt_at=now, created_at=now,
                ))  # fmt: skip
        for name, status in (("spring", "generated"), ("old", "closed")):
            cid = conn.execute(insert(campaigns).values(
                name=name, supply_group_id=group_id, selection={}, target={}, delivery="csv", batch_size=10,
                planned=2, status=status, created_at=now,
            )).inserted_primary_key[0]  # fmt: skip
            for kc_status in ("confirmed", "issued"):
                conn.execute(insert(key_changes).values(
                    meter_id=meter_id, campaign_id=cid, via="campaign", status=kc_status, created_at=now
                ))  # fmt: skip
        pending_before = conn.execute(select(outbox.c.id).where(outbox.c.status == "pending")).all()
    found = utility.scrape()
    assert value(found, "mita_metrics_database_up") == 1
    assert value(found, "mita_outbox_messages", status="pending") == len(pending_before)  # the vend's own too
    assert value(found, "mita_outbox_messages", status="dead") == 1
    assert value(found, "mita_outbox_messages", status="sent") is None  # done: not a depth
    assert value(found, "mita_vending_keys", status="active") == 1
    assert value(found, "mita_vending_keys", status="retired") == 0
    days = value(found, "mita_vending_key_days_left")
    assert days is not None and 9.9 < days <= 10
    assert value(found, "mita_campaigns", status="generated") == 1
    assert value(found, "mita_campaigns", status="closed") == 1
    assert value(found, "mita_campaign_meters", campaign="spring", status="confirmed") == 1
    assert value(found, "mita_campaign_meters", campaign="spring", status="issued") == 1
    assert value(found, "mita_campaign_meters", campaign="spring", status="planned") == 0
    assert not [k for k in found if ("campaign", "old") in k[1]]  # a closed campaign has no progress to watch


def test_key_ends_are_the_issued_until_date_the_ken_and_the_base_date() -> None:
    base_end = sts.BaseDate(2014).start + dt.timedelta(minutes=sts.tid.TID_MAX + 1)
    assert key_ends(None, 255, 2014, 2) == [base_end]
    until = dt.datetime(2030, 1, 1)
    assert min(key_ends(until, 255, 2014, 2)) == until
    assert len(key_ends(None, 3, 2014, 2)) == 2  # a KEN below 255 ends too
    assert len(key_ends(None, 3, 2014, 0)) == 1  # but not for key type 0


def test_a_database_that_does_not_answer_leaves_its_figures_out(utility: Utility) -> None:
    assert utility.vend() == 201
    app_metrics = utility.client.app.state.metrics  # type: ignore[attr-defined]
    app_metrics.database.engine = database.make_engine("postgresql://nobody@127.0.0.1:1/none")
    found = utility.scrape()
    assert value(found, "mita_metrics_database_up") == 0
    assert not [k for k in found if k[0].startswith(("mita_outbox", "mita_vending_key", "mita_campaign"))]
    assert value(found, "mita_vends_total", kind="purchase", outcome="issued") == 1  # the counts are still there


def test_a_locked_database_holds_the_scrape_only_briefly(utility: Utility) -> None:
    """A scrape waits at most DB_TIMEOUT_S for the database (a lock held elsewhere), then answers without it."""
    release = threading.Event()
    locked = threading.Event()

    def hold_lock() -> None:
        if utility.url.startswith("sqlite"):
            other = database.make_engine(utility.url)
            with other.begin() as conn:  # BEGIN IMMEDIATE: the write lock a scrape's transaction waits for
                conn.exec_driver_sql("SELECT 1")
                locked.set()
                release.wait(30)
            other.dispose()
            return
        with psycopg.connect(utility.url.replace("+psycopg", "")) as conn:
            conn.execute("LOCK TABLE vending_keys IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(30)

    holder = threading.Thread(target=hold_lock)
    holder.start()
    try:
        assert locked.wait(10)
        started = time.monotonic()
        found = utility.scrape()
        took = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert value(found, "mita_metrics_database_up") == 0
    assert took < DB_TIMEOUT_S + 3, took
    assert value(utility.scrape(), "mita_metrics_database_up") == 1  # and reads again once the lock is gone


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_private_metrics_need_an_admin_or_operator_key(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    monkeypatch.setenv("MITA_METRICS_PUBLIC", "false")
    u = set_up(url, Settings())
    with u.client:
        r = u.client.get("/metrics")
        assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        r = u.client.get("/metrics", headers=u.vendor)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
        assert u.client.get("/metrics", headers=u.admin).status_code == 200
        assert u.client.get("/metrics", headers=u.operator).status_code == 200
        assert u.client.get("/healthz").status_code == 200  # the probes stay open


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_metrics_are_public_by_default(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    monkeypatch.delenv("MITA_METRICS_PUBLIC", raising=False)
    assert Settings().metrics_public is True
    u = set_up(url, Settings())
    with u.client:
        assert u.client.get("/metrics").status_code == 200
