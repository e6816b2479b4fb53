"""Several `mita serve` processes vend for the same meters at once.

Afterwards: no meter has a TID twice, every request got exactly one outcome
(and a retried request the very same answer), and the money and units in the
database add up to what the clients were told.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from mita import sts
from mita.vend import database, pricing, registry, service

METERS = 3
REQUESTS = 60  # distinct purchases; a third of them are also retried at once through the other server
DEBT = 50_000
# Blocks of 5 kWh, so that most purchases cross a block edge: a stale month total would show.
SPEC = {"blocks": [{"up_to": "5", "price": "1.10"}, {"up_to": None, "price": "2.50"}], "vat_rate": "0.15"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _setup(url: str) -> tuple[str, list[str]]:
    database.upgrade(url)
    engine = database.make_engine(url)
    admin = registry.SYSTEM
    registry.Registry(engine).create_supply_group(
        admin, sgc="123456", name="Conc", vending_key="abababababababab", base_date=2014
    )
    registry.Registry(engine).create_tariff(
        admin, name="t", currency="ZAR", spec=SPEC, effective_from=dt.datetime(2020, 1, 1)
    )
    drns = []
    for i in range(METERS):
        body = f"47{i:08d}"
        drn = body + str(sts.luhn_digit(body))
        registry.Registry(engine).create_customer(admin, account=f"K{i}", name="k", debt=DEBT, debt_rate="0.1")
        registry.Registry(engine).create_meter(admin, drn=drn, sgc="123456", customer=f"K{i}", tariff="t")
        drns.append(drn)
    vendor = registry.Registry(engine).create_vendor(admin, "conc shop")
    _, key = registry.Registry(engine).create_api_key("till", "vendor", int(vendor["id"]))
    engine.dispose()
    return key, drns


def _serve(url: str, port: int) -> subprocess.Popen[bytes]:
    mita = str(Path(sys.executable).with_name("mita"))
    return subprocess.Popen(
        [mita, "serve", "--database-url", url, "--port", str(port), "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(200):
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "server exited"
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise AssertionError("server did not start")


def _vend(port: int, key: str, idem: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/vends",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "Authorization": f"Bearer {key}", "Idempotency-Key": idem},
    )
    for _ in range(20):
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            answer = json.loads(e.read())
            if e.code in (409, 503) and answer.get("code") in ("in_progress", "retry", "conflict"):
                time.sleep(0.05)  # the documented client behaviour: retry with the same key
                continue
            return e.code, answer
    raise AssertionError(f"request {idem} never got a final answer")


def test_concurrent_servers_never_repeat_a_tid_and_lose_nothing(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))  # the servers inherit it
    key, drns = _setup(url)
    ports = [_free_port(), _free_port()]
    servers = [_serve(url, p) for p in ports]
    try:
        for port, proc in zip(ports, servers, strict=True):
            _wait(port, proc)
        jobs = []
        for i in range(REQUESTS):
            body = {"meter": drns[i % METERS], "amount": 1000 + 37 * i}
            jobs.append((ports[i % 2], f"req-{i}", body))
            if i % 3 == 0:  # the same request retried at once, through the other server
                jobs.append((ports[(i + 1) % 2], f"req-{i}", body))
        answers: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        lock = threading.Lock()

        def run(job: tuple[int, str, dict[str, Any]]) -> None:
            status, answer = _vend(job[0], key, job[1], job[2])
            with lock:
                answers.setdefault(job[1], []).append((status, answer))

        with ThreadPoolExecutor(12) as pool:
            list(pool.map(run, jobs))
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=30)

    assert len(answers) == REQUESTS
    created = 0
    for idem, outcomes in answers.items():
        statuses = sorted(s for s, _ in outcomes)
        assert statuses in ([201], [200, 201]), (idem, outcomes)  # exactly one vend, replays answer 200
        created += 1
        assert all(a == outcomes[0][1] for _, a in outcomes), f"{idem}: a retry got a different answer"
    vends = {a[0][1]["id"]: a[0][1] for a in answers.values()}
    assert len(vends) == REQUESTS

    engine = create_engine(database.normalise_url(url))
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM vends")).scalar_one() == created
        dup = conn.execute(
            text(
                "SELECT count(*) FROM (SELECT meter_id, base_date, tid FROM tokens WHERE tid IS NOT NULL "
                "GROUP BY meter_id, base_date, tid HAVING count(*) > 1) d"
            )
        ).scalar_one()
        assert dup == 0
        paid = conn.execute(text("SELECT sum(amount) FROM vends")).scalar_one()
        units = conn.execute(text("SELECT sum(units) FROM vends")).scalar_one()
        debit, credit = conn.execute(text("SELECT sum(debit), sum(credit) FROM ledger")).one()
        token_units = conn.execute(text("SELECT sum(units) FROM tokens")).scalar_one()
    engine.dispose()
    assert paid == sum(v["receipt"]["paid"] for v in vends.values())
    assert units == token_units == sum(v["receipt"]["units"] + v["receipt"]["fbe_units"] for v in vends.values())
    assert debit == credit
    for v in vends.values():  # TIDs strictly increase per meter in the order the database committed them
        tids = [t["tid"] for t in v["tokens"] if t["tid"] is not None]
        assert tids == sorted(tids)
    _replay_in_commit_order(vends)


def _replay_in_commit_order(vends: dict[str, dict[str, Any]]) -> None:
    """Each vend was priced on what the vends before it (in TID order) left: the month's units, the
    customer's debt and carried change. Stale reads under concurrency would show up here."""
    tariff = service.tariff_from_spec(SPEC)
    by_meter: dict[str, list[dict[str, Any]]] = {}
    for v in vends.values():
        by_meter.setdefault(v["meter"], []).append(v)
    for sold in by_meter.values():
        sold.sort(key=lambda v: v["tokens"][0]["tid"])
        units, debt, carried = 0, DEBT, 0
        for i, v in enumerate(sold):
            account = pricing.Account(
                month_units=units, first_purchase_of_month=i == 0, debt=debt, debt_rate=Decimal("0.1"), carried=carried
            )
            want = pricing.price(tariff, v["receipt"]["paid"], account, True)
            got = v["receipt"]
            assert (got["units"], got["debt_recovered"], got["carried_in"], got["leftover"]) == (
                want.units,
                want.debt_recovered,
                want.carried_in,
                want.leftover,
            ), f"vend {i} of meter {v['meter']} was priced on stale figures"
            units += want.units
            debt -= want.debt_recovered
            carried = carried - want.carried_in + want.leftover
