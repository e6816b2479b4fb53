"""Payments through the channels end to end, with faults: every payment exactly one vend and one delivered token.

    .venv/bin/python benchmarks/channels.py [--json] [--payments 10000] [--meters 1000] [--stk-share 0.1]
        [--duplicate-rate 0.1] [--drop-rate 0.05] [--delay-ms 200] [--seed 20261204]

What runs, all on loopback: a fresh PostgreSQL database (``mita_bench_channels``) with ``--meters`` meters whose
customers have phones; the fake Daraja (``mita.channels.mpesa.fake``) injecting duplicated, dropped and delayed
callbacks by a seeded policy; a real Kannel with its fake SMSC (``mita.channels.sms.box``); ``mita serve`` (2
workers) taking the callbacks; ``mita worker`` vending and sending. Customers pay: most at the paybill (C2B, the
meter number as the account), the rest by sending ``BUY <meter> <amount>`` by SMS, which starts an STK push to their
phone. Then the reconciliation runs (``mita channels reconcile``'s pass) until nothing is left to repair, and the
run waits for every token SMS's delivery report.

Figures: ``payments`` (completed in the fake's ledger), ``vends`` (vends Mita made for channel payments),
``delivered`` (payments whose token SMS the phone got, by Kannel's report), ``duplicates_injected``,
``dropped_injected``, ``lost`` (paid, but no vend), ``double`` (more than one vend, or more than one token text, for
one payment), the SMS the fake SMSC received, and the time each phase took.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import insert, select

from mita.channels.hooks import HookSecret
from mita.channels.mpesa import fake
from mita.channels.mpesa.client import Credentials, Daraja
from mita.channels.sms import box as kannel
from mita.vend import database, registry, sample
from mita.vend.schema import customers, meters

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "mita_bench_channels"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
SECRET = "bench-hook-secret-" + os.urandom(8).hex()
#: Payments still on their way (the run waits until none is), and pushes that ended without money.
OPEN = ("initiated", "received", "held", "vended", "unvendable", "refund_pending")
NO_MONEY = ("cancelled", "failed", "expired")


def setup(n_meters: int) -> list[tuple[str, str]]:
    """The database: a supply group, a tariff, ``n_meters`` meters with customers and phones; (meter, phone)."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    database.upgrade(URL)
    engine = database.make_engine(URL)
    sample.create_group_and_tariff(engine, "Bench")
    at = dt.datetime.now()
    pairs = [(sample.meter_number(f"47{i:08d}"), f"2547{i:08d}") for i in range(n_meters)]
    admin = registry.SYSTEM
    registry.Registry(engine).create_customer(admin, account="B0", name="Bench 0", phone=pairs[0][1])
    registry.Registry(engine).create_meter(admin, drn=pairs[0][0], sgc=sample.SGC, customer="B0", tariff="domestic")
    with engine.begin() as conn:  # the rest as copies of the first, one statement each (one by one: minutes)
        person = dict(conn.execute(select(customers)).one()._mapping)
        meter = dict(conn.execute(select(meters)).one()._mapping)
        people = [{**person, "id": None, "account": f"B{i}", "name": f"Bench {i}", "phone": phone, "created_at": at}
                  for i, (_, phone) in enumerate(pairs) if i]  # fmt: skip
        for row in people:
            row.pop("id")
        if people:
            conn.execute(insert(customers), people)
        ids = dict(conn.execute(select(customers.c.account, customers.c.id)).all())
        rows = [
            {**meter, "drn": drn, "customer_id": ids[f"B{i}"], "created_at": at}
            for i, (drn, _) in enumerate(pairs)
            if i
        ]
        for row in rows:
            row.pop("id")
        if rows:
            conn.execute(insert(meters), rows)
    engine.dispose()
    return pairs


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit("mita serve exited")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mita serve did not start")


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute("SELECT status, count(*) FROM payments GROUP BY status").fetchall()
    return {str(s): int(n) for s, n in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--payments", type=int, default=10_000)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--stk-share", type=float, default=0.1)
    parser.add_argument("--duplicate-rate", type=float, default=0.1)
    parser.add_argument("--drop-rate", type=float, default=0.05)
    parser.add_argument("--delay-ms", type=int, default=200)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--port", type=int, default=8781)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args()
    if not kannel.installed():
        raise SystemExit("this benchmark sends SMS through Kannel: make kannel")
    started = time.monotonic()
    phases: dict[str, float] = {}
    os.environ.setdefault("MITA_MASTER_KEY", os.urandom(32).hex())
    pairs = setup(args.meters)
    phases["setup_s"] = round(time.monotonic() - started, 1)
    folder = Path(tempfile.mkdtemp(prefix="mita-bench-channels-"))
    base = f"http://127.0.0.1:{args.port}"
    hooks = HookSecret(SECRET)
    daraja = fake.serve(faults=fake.Faults(args.duplicate_rate, args.drop_rate, args.delay_ms, args.seed))
    gateway = kannel.Box(folder / "kannel", hooks.path(base, "kannel/mo")).start()
    env = {**os.environ, "MITA_DATABASE_URL": URL, "MITA_HOOK_SECRET": SECRET, "MITA_PUBLIC_URL": base,
           "MITA_MPESA_URL": daraja.url, "MITA_MPESA_CONSUMER_KEY": "bench", "MITA_MPESA_CONSUMER_SECRET": "bench",
           "MITA_MPESA_PASSKEY": fake.PASSKEY, "MITA_MPESA_SHORTCODE": fake.SHORTCODE,
           "MITA_KANNEL_URL": gateway.sendsms_url, "MITA_KANNEL_PASSWORD": gateway.password,
           "MITA_MPESA_UNVERIFIED_CAP": "10000000"}  # fmt: skip
    mita = str(Path(sys.executable).with_name("mita"))
    logs = open(folder / "mita.log", "wb")  # noqa: SIM115
    server = subprocess.Popen([mita, "serve", "--port", str(args.port), "--workers", "2"], env=env, stdout=logs,
                              stderr=logs)  # fmt: skip
    worker = subprocess.Popen([mita, "worker", "--concurrency", "4", "--batch-size", "50", "--poll-interval", "0.2"],
                              env=env, stdout=logs, stderr=logs)  # fmt: skip
    client = Daraja(daraja.url, Credentials(fake.SHORTCODE, "bench", "bench", fake.PASSKEY))
    rnd = random.Random(args.seed)
    try:
        wait_ready(args.port, server)
        client.register_urls(hooks.path(base, "ke1/c2b/confirm"), hooks.path(base, "ke1/c2b/validate"))
        plan = [(rnd.choice(pairs), rnd.randint(50, 500), rnd.random() < args.stk_share) for _ in range(args.payments)]
        t0 = time.monotonic()

        local = threading.local()

        def pay(i: int) -> None:
            (drn, phone), shillings, stk = plan[i]
            http = getattr(local, "http", None)
            if http is None:
                http = local.http = httpx.Client(timeout=60)
            if stk:  # the customer texts BUY; Kannel hands it to Mita; Mita pushes a prompt to the phone
                text = f"BUY {drn} {shillings}"
                http.get(
                    hooks.path(base, "kannel/mo"), params={"id": f"bench-{args.seed}-{i}", "from": phone, "text": text}
                )
            else:
                http.post(f"{daraja.url}/fake/c2b", json={"msisdn": phone, "amount": shillings, "bill_ref": drn})

        with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(pay, range(args.payments)))
        phases["paying_s"] = round(time.monotonic() - t0, 1)
        deadline = time.monotonic() + args.timeout
        reconcile = [mita, "channels", "reconcile", "--once", "--json"]
        passes = 0
        with psycopg.connect(URL, autocommit=True) as conn:
            while time.monotonic() < deadline:
                time.sleep(2)
                if daraja.ledger.stats["in_flight"]:
                    continue
                paid = daraja.ledger.stats["payments"]
                subprocess.run(reconcile, env=env, capture_output=True, check=False)
                passes += 1
                now = counts(conn)
                moving = sum(n for state, n in now.items() if state in OPEN)
                if not moving and sum(now.values()) - sum(now.get(s, 0) for s in NO_MONEY) >= paid:
                    break
            phases["to_all_delivered_s"] = round(time.monotonic() - t0, 1)
            now = counts(conn)
            ledger = daraja.ledger.paid
            refs = {r for row in conn.execute("SELECT provider_ref, receipt FROM payments WHERE vend_id IS NOT NULL")
                    for r in row if r}  # fmt: skip
            vends = conn.execute("SELECT count(*) FROM vends v JOIN vendors d ON d.id = v.vendor_id "
                                 "WHERE d.name LIKE 'channel:%'").fetchone()[0]  # fmt: skip
            vended = conn.execute("SELECT count(*) FROM payments WHERE vend_id IS NOT NULL").fetchone()[0]
        texts = [t for _, _, t in gateway.received if "Token:" in t]
        per_ref = Counter(t.rpartition("Ref ")[2] for t in set(texts))
        figures = {
            "payments": len(ledger),
            "vends": int(vends),
            "delivered": now.get("delivered", 0),
            "duplicates_injected": daraja.ledger.stats["duplicated"],
            "dropped_injected": daraja.ledger.stats["dropped"],
            "lost": sum(1 for p in ledger if p["trans_id"] not in refs),
            "double": int(vends) - int(vended) + sum(n - 1 for n in per_ref.values() if n > 1),
            "stk_pushes": daraja.ledger.stats["pushes"],
            "token_sms_received": len(texts),
            "payment_states": now,
            "reconcile_passes": passes,
            **phases,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        }
    finally:
        worker.terminate()
        server.terminate()
        for proc in (worker, server):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        gateway.stop()
        daraja.stop()
        client.close()
    if args.json:
        print(json.dumps(figures))
        return
    print(f"Mita channels, {figures['machine']}, PostgreSQL on 127.0.0.1")
    for name, value in figures.items():
        print(f"  {name:<22} {value}")


if __name__ == "__main__":
    main()
