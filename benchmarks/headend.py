"""Remote vending end to end on PostgreSQL: 1,000 simulated smart meters, each receiving one vend's tokens.

    .venv/bin/python benchmarks/headend.py [--meters 1000] [--concurrency 8] [--batch-size 16] [--json]

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
from sqlalchemy import func, select

from mita import sts
from mita.meter import storage
from mita.vend import database, provision, registry, sample
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
        [MITA, "sim", "fleet", str(folder / "meters"), "--secrets", str(secrets_file), "--port-base", "0", "--no-sync"],
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
    desk = registry.Registry(engine)
    vendor = desk.create_vendor(registry.SYSTEM, "Bench shop")
    _, plaintext = desk.create_api_key("bench till", "vendor", int(vendor["id"]))
    caller = registry.authenticate(engine, plaintext)
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
    """Every command once all have ended (or the time is up): counted while waiting, read once at the end."""
    engine = database.make_engine(URL, pool_size=1)
    deadline = time.monotonic() + timeout
    final = meter_commands.c.status.in_(("acknowledged", "failed", "expired"))
    try:
        while True:
            with engine.connect() as conn:
                done = conn.execute(select(func.count()).select_from(meter_commands).where(final)).scalar_one()
            if done >= n or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        query = select(meter_commands, meters.c.drn).join(meters, meters.c.id == meter_commands.c.meter_id)
        with engine.connect() as conn:
            return list(conn.execute(query.where(final)).all())
    finally:
        engine.dispose()


def wait_started(timeout: float = 30.0) -> None:
    """Until the worker sent its first command (its start-up is not the deliveries')."""
    engine = database.make_engine(URL, pool_size=1)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.execute(
                    select(meter_commands.c.id).where(meter_commands.c.status != "queued").limit(1)
                ).first():
                    return
            time.sleep(0.01)
    finally:
        engine.dispose()


def cpu_seconds(pid: int) -> float:
    """A process's CPU time so far (user + system), from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """Seconds of CPU the whole machine has spent busy (every CPU, every process), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def start_worker(env: dict[str, str], concurrency: int, batch: int, log: Any) -> subprocess.Popen[str]:
    worker = subprocess.Popen(
        [MITA, "worker", "--channels", "headend", "--concurrency", str(concurrency), "--batch-size", str(batch),
         "--poll-interval", "0.05", "--backoff-base", "0.5", "--max-attempts", "1000"],
        env=env, stdout=subprocess.DEVNULL, stderr=log, text=True,
    )  # fmt: skip
    return worker


def cpu_now(worker: subprocess.Popen[str] | None, fleet: subprocess.Popen[str]) -> dict[str, float]:
    return {
        "worker": cpu_seconds(worker.pid) if worker else 0.0,
        "fleet": cpu_seconds(fleet.pid),
        "vends": time.process_time(),
        "machine": machine_busy(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--meters", type=int, default=1000)
    # 8 x 16 the quickest of 2-16 dispatchers x 4-32 rows measured on this 2-CPU machine (issue 12): fewer
    # threads contend less for the GIL, larger batches claim and settle less often per delivery
    parser.add_argument("--concurrency", type=int, default=8, help="the worker's dispatchers")
    parser.add_argument("--batch-size", type=int, default=16, help="the outbox rows each dispatcher claims at once")
    parser.add_argument("--vend-threads", type=int, default=4)
    parser.add_argument(
        "--mode",
        choices=("burst", "live"),
        default="burst",
        help="burst: every vend committed first, then the worker drains the queue; live: the worker runs while "
        "the vends are made",
    )
    parser.add_argument("--json", action="store_true", help="print only the figures, as one JSON line")
    args = parser.parse_args()
    env = {**os.environ, "MITA_DATABASE_URL": URL, "MITA_MASTER_KEY": os.environ.get("MITA_MASTER_KEY") or
           secrets.token_hex(32)}  # fmt: skip
    os.environ["MITA_MASTER_KEY"] = env["MITA_MASTER_KEY"]
    errors: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mita-bench-headend-") as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        drns, secrets_file = setup(args.meters, folder, env)
        fleet, endpoints = start_fleet(folder, secrets_file, env)
        worker = None
        worker_log = (folder / "worker.log").open("w+")
        try:
            register(drns, endpoints, secrets_file)
            set_up_s = time.perf_counter() - started
            if args.mode == "live":
                worker = start_worker(env, args.concurrency, args.batch_size, worker_log)
                time.sleep(1.5)  # the worker's start-up is not the delivery's
            before = cpu_now(worker, fleet)
            first = time.time()
            vends = vend_all(drns, args.vend_threads)
            vended = time.time()
            if worker is None:
                worker = start_worker(env, args.concurrency, args.batch_size, worker_log)
                wait_started()
                vend_cpu = cpu_now(worker, fleet)
            rows = wait_delivered(len(drns), timeout=120 + len(drns) / 10)
            after = cpu_now(worker, fleet)
            if args.mode == "burst":  # the vends' CPU and the worker's start-up are not the deliveries'
                before = {**vend_cpu, "vends": after["vends"]}
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
            worker_log.seek(0)
            errors = [line for line in worker_log.read().splitlines() if "ERROR" in line or "Traceback" in line]
    if errors:
        print(f"the worker logged {len(errors)} errors, e.g. {errors[:3]}", file=sys.stderr)
    by_drn = {r.drn: r for r in rows}
    bad = [d for d in drns if d not in by_drn or by_drn[d].status != "acknowledged"]
    if bad:
        sample_row = by_drn.get(bad[0])
        raise SystemExit(f"{len(bad)} deliveries not acknowledged, e.g. {bad[0]}: "
                         f"{None if sample_row is None else (sample_row.status, sample_row.error)}")  # fmt: skip
    latencies, service = [], []
    for drn, (vend_id, committed, units) in vends.items():
        row = by_drn[drn]
        assert row.vend_id == vend_id
        answers = row.result["tokens"]
        assert all(t["result"] == "accept" for t in answers), (drn, answers)
        assert row.result["credit"] == units * 100, (drn, row.result["credit"], units)
        latencies.append(row.finished_at.timestamp() - committed)
        service.append((row.finished_at - row.sent_at).total_seconds())
    last = max(r.finished_at.timestamp() for r in rows)
    opened = first if args.mode == "live" else min(r.sent_at.timestamp() for r in rows)
    figures = {
        "mode": args.mode,
        "meters": len(drns),
        "deliveries": len(rows),
        "deliveries_per_s": round(len(rows) / (last - opened), 1),
        "p50_ms": round(statistics.median(latencies) * 1000, 1),
        "p99_ms": round(statistics.quantiles(latencies, n=100)[98] * 1000, 1),
        "service_p50_ms": round(statistics.median(service) * 1000, 1),
        "service_p99_ms": round(statistics.quantiles(service, n=100)[98] * 1000, 1),
        "vends_per_s": round(len(vends) / (vended - first), 1),
        "set_up_s": round(set_up_s, 1),
        **{f"cpu_ms_{k}": round((after[k] - before[k]) / len(drns) * 1000, 2) for k in after},
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
    sts.MeterNumber.parse("47500150231")  # the engine imports before the clock starts (set-up is not timed)
    main()
