"""Remote vending end to end on PostgreSQL: 1,000 simulated smart meters, each receiving one vend's tokens.

    .venv/bin/python benchmarks/headend.py [--meters 1000] [--concurrency 32] [--vend-threads 4] [--json]

Set-up (not timed): a fresh database (``mita_headend_bench`` on 127.0.0.1:5432) with the sample utility and
``--meters`` meters, each connected (an endpoint with its own LLS secret); the same meters as virtual meter files
(their decoder keys derived by the vending system), served by one ``mita sim fleet`` process on loopback ports;
one ``mita worker --channels headend`` process with ``--concurrency`` dispatchers. Then, timed: every meter gets
one vend (``--vend-threads`` threads through the vending service, as the API's workers would call it); each vend
commits its tokens and their *deliver tokens* command in one transaction, and the worker delivers them through the
token gateway (DLMS/COSEM: associate, enter each token, read its status, read the credit back, release).

A delivery's latency runs from its vend's commit to the moment the worker had the meter's answer (the command's
``finished_at``; the same machine's clock). ``deliveries_per_s`` counts acknowledged deliveries over the window
from the first vend's start to the last delivery's end. Every command must end acknowledged with every token
accepted and the credit read back equal to the vend's units, or the script fails.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import select

from mita import sts
from mita.meter import storage
from mita.vend import database, provision, registry, sample
from mita.vend.callers import Caller
from mita.vend.schema import meter_commands, meters
from mita.vend.service import VendingService

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "mita_headend_bench"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
MITA = str(Path(sys.executable).with_name("mita"))


def setup(n: int, folder: Path, env: dict[str, str]) -> tuple[list[str], Path]:
    """The database, its meters and their files; the meter numbers and the secrets file."""
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    database.upgrade(URL)
    engine = database.make_engine(URL, pool_size=4)
    sample.create_group_and_tariff(engine, "Bench town")
    reg = registry.Registry(engine)
    drns = [sample.meter_number(f"5{i:09d}") for i in range(n)]
    for drn in drns:
        reg.create_meter(registry.SYSTEM, drn=drn, sgc=sample.SGC, tariff="domestic")
    (folder / "meters").mkdir()
    keys: dict[str, str] = {}
    for drn in drns:
        storage.save(provision.virtual_meter(engine, drn), folder / "meters" / f"{drn}.json")
        keys[drn] = secrets.token_hex(8)
    secrets_file = folder / "secrets.json"
    secrets_file.touch(mode=0o600)
    secrets_file.write_text(json.dumps(keys))
    engine.dispose()
    return drns, secrets_file


def register(drns: list[str], endpoints: dict[str, Any], secrets_file: Path) -> None:
    from mita.headend import registry as devices

    keys = json.loads(secrets_file.read_text())
    engine = database.make_engine(URL, pool_size=2)
    at = dt.datetime.now()
    for drn in drns:
        where = endpoints[drn]
        devices.register(engine, registry.SYSTEM, drn, host=where["host"], port=int(where["port"]),
                         secret=bytes.fromhex(keys[drn]), at=at)  # fmt: skip
    engine.dispose()


def start_fleet(folder: Path, secrets_file: Path, env: dict[str, str]) -> tuple[subprocess.Popen[str], dict[str, Any]]:
    fleet = subprocess.Popen(
        [MITA, "sim", "fleet", str(folder / "meters"), "--secrets", str(secrets_file), "--port-base", "0"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert fleet.stdout is not None
    line = fleet.stdout.readline()
    if not line:
        raise SystemExit(f"mita sim fleet did not start: {fleet.stderr.read() if fleet.stderr else ''}")
    return fleet, json.loads(line)["endpoints"]


def vend_all(drns: list[str], threads: int) -> dict[str, tuple[str, float, int]]:
    """One vend per meter; meter -> (vend id, commit time as epoch seconds, units)."""
    engine = database.make_engine(URL, pool_size=threads)
    svc = VendingService(engine)
    vendor = registry.Registry(engine).create_vendor(registry.SYSTEM, "Bench shop")
    caller = Caller(api_key_id=None, name="bench", role="vendor", vendor_id=int(vendor["id"]))
    done: dict[str, tuple[str, float, int]] = {}
    lock = threading.Lock()
    chunks = [drns[i::threads] for i in range(threads)]

    def work(chunk: list[str]) -> None:
        for drn in chunk:
            body = svc.vend(caller, f"bench-{drn}", {"meter": drn, "amount": 5000}).body
            committed = time.time()
            with lock:
                done[drn] = (body["id"], committed, sum(t["units"] for t in body["tokens"]))

    workers = [threading.Thread(target=work, args=(c,)) for c in chunks]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    engine.dispose()
    return done


def wait_delivered(n: int, timeout: float) -> list[Any]:
    engine = database.make_engine(URL, pool_size=1)
    deadline = time.monotonic() + timeout
    final = ("acknowledged", "failed", "expired")
    query = select(meter_commands, meters.c.drn).join(meters, meters.c.id == meter_commands.c.meter_id)
    try:
        while True:
            with engine.connect() as conn:
                rows = conn.execute(query.where(meter_commands.c.status.in_(final))).all()
            if len(rows) >= n or time.monotonic() > deadline:
                return rows
            time.sleep(0.05)
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="the worker's dispatchers")
    parser.add_argument("--vend-threads", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="print only the figures, as one JSON line")
    args = parser.parse_args()
    env = {**os.environ, "MITA_DATABASE_URL": URL, "MITA_MASTER_KEY": os.environ.get("MITA_MASTER_KEY") or
           secrets.token_hex(32)}  # fmt: skip
    os.environ["MITA_MASTER_KEY"] = env["MITA_MASTER_KEY"]
    with tempfile.TemporaryDirectory(prefix="mita-bench-headend-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        drns, secrets_file = setup(args.meters, folder, env)
        fleet, endpoints = start_fleet(folder, secrets_file, env)
        worker = None
        try:
            register(drns, endpoints, secrets_file)
            set_up_s = time.perf_counter() - started
            worker = subprocess.Popen(
                [MITA, "worker", "--channels", "headend", "--concurrency", str(args.concurrency), "--batch-size", "4",
                 "--poll-interval", "0.02", "--backoff-base", "0.5", "--max-attempts", "1000"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
            time.sleep(1.0)  # the worker's start-up is not the delivery's
            first = time.time()
            vends = vend_all(drns, args.vend_threads)
            vended = time.time()
            rows = wait_delivered(len(drns), timeout=120 + len(drns) / 10)
        finally:
            for proc in (worker, fleet):
                if proc is not None:
                    proc.send_signal(signal.SIGTERM)
            for proc in (worker, fleet):
                if proc is not None:
                    try:
                        proc.wait(10)
                    except subprocess.TimeoutExpired:
                        proc.kill()
    by_drn = {r.drn: r for r in rows}
    bad = [d for d in drns if d not in by_drn or by_drn[d].status != "acknowledged"]
    if bad:
        sample_row = by_drn.get(bad[0])
        raise SystemExit(f"{len(bad)} deliveries not acknowledged, e.g. {bad[0]}: "
                         f"{None if sample_row is None else (sample_row.status, sample_row.error)}")  # fmt: skip
    latencies = []
    for drn, (vend_id, committed, units) in vends.items():
        row = by_drn[drn]
        assert row.vend_id == vend_id
        answers = row.result["tokens"]
        assert all(t["result"] == "accept" for t in answers), (drn, answers)
        assert row.result["credit"] == units * 100, (drn, row.result["credit"], units)
        latencies.append(row.finished_at.timestamp() - committed)
    last = max(r.finished_at.timestamp() for r in rows)
    figures = {
        "meters": len(drns),
        "deliveries": len(rows),
        "deliveries_per_s": round(len(rows) / (last - first), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
        "vends_per_s": round(len(vends) / (vended - first), 1),
        "set_up_s": round(set_up_s, 1),
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
          f"PostgreSQL at 127.0.0.1; meters served by one `mita sim fleet` process; one `mita worker` with "
          f"{args.concurrency} dispatchers")  # fmt: skip
    for name, value in figures.items():
        print(f"  {name:18} {value}")


if __name__ == "__main__":
    sts.MeterNumber.parse("01234567890")  # the engine imports before the clock starts (set-up is not timed)
    main()
