"""The soak: vends, channel payments, remote deliveries and telemetry ingest together, under a seeded nemesis, for
``--minutes``; then heal, read back every unknown outcome, drain, and check the history against the database.

    .venv/bin/python benchmarks/soak.py [--json] [--minutes 45] [--seed 20261204] [--clients 6] [--meters 60]
        [--mqtt-meters 12] [--pay-rate 2] [--fault-every 10-30] [--no-network-faults]

Everything runs on loopback and is the run's own: a throwaway PostgreSQL cluster (initdb in a temporary folder,
never the shared server), a Mosquitto (tests/mqtt_broker.py), the fake Daraja (``mita.channels.mpesa.fake``,
injecting duplicated, dropped and delayed callbacks) and a Kannel with its fake SMSC; ``mita serve --workers 2``,
``mita worker``, ``mita worker ingest`` and ``mita sim mqtt`` (the MQTT-native meters, their files the "field").
Mita's processes reach PostgreSQL, Mosquitto and Kannel's sendsms through the harness's fault proxy
(``tests/reliability/faultproxy.py``: partitions, resets, lost COMMIT answers, latency); the simulated meters, the
checker and ``mita channels reconcile`` go straight to them. The harness and the checker are
``tests/reliability`` (the history is a JSONL file in the run's folder; the checker reads only it and the
database). Prints ``{"acknowledged", "lost", "duplicated", "tid_repeats",
"ledger_balanced", "faults", ...}``; exits 1 if an invariant failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import psycopg

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from mita.channels.hooks import HookSecret  # noqa: E402
from mita.channels.mpesa import fake  # noqa: E402
from mita.channels.mpesa.client import Credentials, Daraja  # noqa: E402
from mita.channels.sms import box as kannel  # noqa: E402
from mqtt_broker import broker  # noqa: E402
from reliability import checker, rig  # noqa: E402
from reliability.cluster import Cluster, free_port  # noqa: E402
from reliability.faultproxy import FaultProxy  # noqa: E402
from reliability.history import History  # noqa: E402
from reliability.nemesis import Nemesis, Targets, heal  # noqa: E402
from reliability.procs import MITA, Service  # noqa: E402
from reliability.scenario import proxied  # noqa: E402
from reliability.workload import Till, Workload, final_read  # noqa: E402

FAULTS = {
    # fault: weight (how often it is drawn)
    "kill_api_worker": 5,
    "pause_api_worker": 2,
    "kill_outbox_worker": 3,
    "kill_ingest_worker": 2,
    "pg_kill_all": 2,
    "pg_restart_immediate": 1,
    "pg_kill_backend": 1,
    "pg_pause": 1,
    "mosquitto_restart": 1,
    "kannel_restart": 1,
    "retry_storm": 2,
    "net_partition": 1,
    "net_reset": 1,
    "net_lose_answers": 2,
    "net_latency": 1,
}
NETWORK = frozenset(f for f in FAULTS if f.startswith("net_"))
OPEN_PAYMENTS = ("initiated", "received", "held", "vended", "unvendable", "refund_pending")


def pay_loop(history: History, daraja_url: str, meters: list[str], phones: dict[str, str], rate: float,
             seed: int, stop: threading.Event) -> None:  # fmt: skip
    """Customers paying at the paybill, ``rate`` a second: each payment's TransID is its key in the history."""
    rnd = random.Random(f"pay-{seed}")
    with httpx.Client(timeout=30) as http:
        while not stop.is_set():
            drn = meters[rnd.randrange(len(meters))]
            body = {"msisdn": phones[drn], "amount": rnd.randint(20, 150), "bill_ref": drn}
            op = history.invoke(2000, "pay", "", body)
            try:
                answer = http.post(f"{daraja_url}/fake/c2b", json=body).json()
                if answer.get("trans_id"):
                    history.complete(op, "ok", value={"trans_id": answer["trans_id"]})
                else:
                    history.complete(op, "fail", code="refused")
            except (httpx.HTTPError, ValueError) as exc:
                history.complete(op, "info", error=type(exc).__name__)
            stop.wait(rnd.expovariate(rate))


def settle(url: str, env: dict[str, str], timeout: float) -> dict[str, Any]:
    """Reconciliation passes until no payment is open, every command is final and the outbox is empty."""
    deadline = time.monotonic() + timeout
    passes = 0
    state: dict[str, Any] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            subprocess.run([MITA, "channels", "reconcile", "--once", "--json"], env=env, capture_output=True,
                           check=False, timeout=120)  # fmt: skip
            passes += 1
            open_payments = conn.execute("SELECT count(*) FROM payments WHERE status = ANY(%s)",
                                         (list(OPEN_PAYMENTS),)).fetchone()  # fmt: skip
            pending = conn.execute("SELECT count(*) FROM outbox WHERE status <> 'sent'").fetchone()
            commands = conn.execute(
                "SELECT count(*) FROM meter_commands WHERE status NOT IN ('acknowledged', 'failed', 'expired')"
            ).fetchone()
            state = {"open_payments": open_payments[0] if open_payments else None,
                     "outbox_pending": pending[0] if pending else None,
                     "commands_open": commands[0] if commands else None}  # fmt: skip
            if not any(state.values()):
                break
            time.sleep(3)
    return {**state, "reconcile_passes": passes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--minutes", type=float, default=45)
    parser.add_argument("--seed", type=int, default=20261204)
    parser.add_argument("--clients", type=int, default=6)
    parser.add_argument("--meters", type=int, default=60)
    parser.add_argument("--mqtt-meters", type=int, default=12)
    parser.add_argument("--pay-rate", type=float, default=2.0, help="C2B payments a second")
    parser.add_argument("--fault-every", default="10-30", help="seconds between faults, LOW-HIGH")
    parser.add_argument("--folder", type=Path, help="where the run's files go (default: a new temporary folder)")
    parser.add_argument("--no-network-faults", action="store_true", help="no fault proxy: as before the net_ faults")
    args = parser.parse_args()
    if not kannel.installed():
        raise SystemExit("the soak sends SMS through Kannel: make kannel")
    low, high = (float(x) for x in args.fault_every.split("-"))
    folder = args.folder or Path(tempfile.mkdtemp(prefix="mita-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    cluster = Cluster(folder / "pg").init()
    cluster.start()
    history = History(folder / "history.jsonl")
    services: list[Service] = []
    daraja = gateway = client = None
    proxy = None if args.no_network_faults else FaultProxy().start()
    stop = threading.Event()
    try:
        with broker(folder / "mosquitto") as mqtt:
            url = cluster.create_database("soak")
            master = rig.new_master_key()
            utility = rig.set_up(url, args.meters, master, phones=True)
            rig.write_setup(history, utility, seed=args.seed, plan="soak", minutes=args.minutes)
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            secret = "soak-hook-secret-" + os.urandom(8).hex()
            hooks = HookSecret(secret)
            daraja = fake.serve(faults=fake.Faults(0.05, 0.02, 200, args.seed))
            gateway = kannel.Box(folder / "kannel", hooks.path(base, "kannel/mo")).start()
            env = rig.environment(
                url, master, MITA_MQTT_URL=mqtt.url, MITA_HOOK_SECRET=secret, MITA_PUBLIC_URL=base,
                MITA_MPESA_URL=daraja.url, MITA_MPESA_CONSUMER_KEY="soak", MITA_MPESA_CONSUMER_SECRET="soak",
                MITA_MPESA_PASSKEY=fake.PASSKEY, MITA_MPESA_SHORTCODE=fake.SHORTCODE,
                MITA_KANNEL_URL=gateway.sendsms_url, MITA_KANNEL_PASSWORD=gateway.password,
                MITA_MPESA_UNVERIFIED_CAP="10000000",
            )  # fmt: skip
            mita_env = env  # what Mita's processes get: the servers through the fault proxy's links
            if proxy is not None:
                mita_env = proxied(proxy, env, cluster.port, mqtt.port)
                proxy.add("kannel", "127.0.0.1", gateway.ports["sendsms"])
                mita_env["MITA_KANNEL_URL"] = proxy.url("kannel", gateway.sendsms_url)
            server = rig.serve(mita_env, folder, workers=2, port=port)
            services.append(server)
            meters_dir = folder / "meters"
            meters_dir.mkdir()
            sim = Service("sim", [MITA, "sim", "mqtt", str(meters_dir), "--from-database", "--limit",
                                  str(args.mqtt_meters), "--register", "--speed", "60", "--interval", "60",
                                  "--seed", str(args.seed), "--no-sync"], env, folder / "sim.log").start()  # fmt: skip
            services.append(sim)
            deadline = time.monotonic() + 60
            with psycopg.connect(url, autocommit=True) as conn:
                while time.monotonic() < deadline:
                    row = conn.execute("SELECT count(*) FROM meter_endpoints").fetchone()
                    if row and row[0] >= args.mqtt_meters:
                        break
                    time.sleep(0.5)
            worker = rig.outbox_worker(mita_env, folder, "--concurrency", "2")
            ingest = Service("ingest", [MITA, "worker", "ingest"], mita_env, folder / "ingest.log").start()
            services += [worker, ingest]
            client = Daraja(daraja.url, Credentials(fake.SHORTCODE, "soak", "soak", fake.PASSKEY))
            client.register_urls(hooks.path(base, "ke1/c2b/confirm"), hooks.path(base, "ke1/c2b/validate"))

            tills = [Till(server.base_url, key, name) for name, key in utility.api_keys.items()]
            workload = Workload(history, tills, utility.meters, args.seed, clients=args.clients, ops=10**9,
                                run_id=f"soak-{args.seed}", stop=stop)  # fmt: skip
            targets = Targets(serve=server, cluster=cluster, worker=worker, ingest=ingest, broker=mqtt,
                              kannel=gateway, workload=workload, proxy=proxy)  # fmt: skip
            names = [f for f in FAULTS if proxy is not None or f not in NETWORK]
            nemesis = Nemesis(history, targets, args.seed, names)
            rnd = random.Random(f"soak-{args.seed}")
            payer = threading.Thread(target=pay_loop, args=(history, daraja.url, utility.meters, utility.phones,
                                                            args.pay_rate, args.seed, stop), daemon=True)  # fmt: skip
            history.phase("load")
            workload.start()
            payer.start()
            t_load = time.monotonic()
            end = t_load + args.minutes * 60
            next_fault = t_load + rnd.uniform(low, high)
            while time.monotonic() < end:
                if time.monotonic() >= next_fault:
                    nemesis.strike(rnd.choices(names, weights=[FAULTS[n] for n in names])[0])
                    next_fault = time.monotonic() + rnd.uniform(low, high)
                time.sleep(0.1)
            stop.set()
            workload.join(60)
            payer.join(60)
            load_s = time.monotonic() - t_load
            heal(history, targets)
            unresolved = final_read(workload, 300)
            settled = settle(url, env, 600)
            history.phase("done")
            sim.stop()
            for service in reversed(services):
                service.stop()
            meter_files = {p.stem: p for p in meters_dir.glob("*.json")}
            history.close()
            with rig.master_key(master):
                report = checker.check(history.path, url, rig.VENDING_KEY, drained=True, meter_files=meter_files,
                                       recovery_limit_s=60)  # fmt: skip
            with psycopg.connect(url) as conn:
                readings = conn.execute("SELECT count(*) FROM readings").fetchone()
                sync = conn.execute("SHOW synchronous_commit").fetchone()
    finally:
        stop.set()
        for service in reversed(services):
            service.stop()
        if gateway is not None:
            gateway.stop()
        if daraja is not None:
            daraja.stop()
        if client is not None:
            client.close()
        if proxy is not None:
            proxy.stop()
        cluster.destroy()
    f, v = report.figures, report.violations
    figures = {
        "acknowledged": f.get("acknowledged"),
        "lost": v["lost"],
        "duplicated": v["duplicated"],
        "tid_repeats": v["tid"],
        "ledger_balanced": f.get("ledger_balanced"),
        "faults": nemesis.counts,
        "ok": report.ok,
        "failed": report.failed,
        "violations": v,
        "examples": dict(report.examples),
        "unresolved_after_final_read": unresolved,
        "in_doubt_keys": f.get("in_doubt_keys"),
        "in_doubt_committed": f.get("in_doubt_committed"),
        "vends_in_db": f.get("vends_in_db"),
        "tokens_replayed": f.get("meter_replay_tokens"),
        "paid_transactions": f.get("paid_transactions"),
        "payments": f.get("payments"),
        "commands": f.get("commands"),
        "meters_checked_in_field": f.get("meters_checked_in_field"),
        "readings_ingested": readings[0] if readings else None,
        "recovery_p50_s": f.get("recovery_p50_s"),
        "recovery_max_s": f.get("recovery_max_s"),
        "settled": settled,
        "proxy": vars(proxy.stats) if proxy is not None else None,
        "load_minutes": round(load_s / 60, 1),
        "wall_minutes": round((time.monotonic() - t_start) / 60, 1),
        "seed": args.seed,
        "synchronous_commit": sync[0] if sync else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "history": str(history.path),
    }
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        for name, value in figures.items():
            print(f"  {name:<28} {value}")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
