"""The soak: vends, channel payments, remote deliveries and telemetry ingest together, under a seeded nemesis, for
``--minutes``; then heal, read back every unknown outcome, drain, and check the history against the database.

    .venv/bin/python benchmarks/soak.py [--json] [--minutes 45] [--seed 20261204] [--clients 6] [--meters 60]
        [--mqtt-meters 12] [--pay-rate 2] [--fault-every 10-30] [--no-network-faults] [--keep]

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

The end waits for the work in flight (:func:`settle`), not for the clock: once the outbox is empty and the only open
payments are ``vended`` ones unchanged for a minute, their delivery report is not coming. Kannel's smsbox
acknowledges a report to bearerbox before it calls Mita and keeps its retries in memory (60, 5 s apart:
``mita.channels.sms.box``), so a report is lost when smsbox dies holding it (``kannel_restart``) or its retries run
out. The delivery sweep is what closes such a payment in production (the message ``unknown`` after an hour, the
payment flagged for a person after a day); the soak runs it with no wait, and lists every payment still open before
it (``pending``: the token SMS's state, its submits, its last report, the faults struck around it) and what the
sweep closed (``swept``), rather than failing ``payments`` without a word.

The evidence is kept when an invariant fails, when the sweep had to close a payment, when the soak itself failed, or
with ``--keep``: the cluster is stopped cleanly and the run's folder (the history, every process's log, Kannel's and
Mosquitto's files, the meter files, PostgreSQL's data directory and log in ``pg/``) moves to
``soak-evidence/<UTC time>-seed<seed>/`` under the working directory, with ``soak.json`` and ``README.txt`` (how to
start that cluster again and re-run the checker). Its path is ``"evidence"`` in the JSON and on standard error.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import shutil
import stat
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
from reliability.cluster import BIN, Cluster, free_port  # noqa: E402
from reliability.faultproxy import FaultProxy  # noqa: E402
from reliability.history import History, read  # noqa: E402
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


def settle(url: str, env: dict[str, str], timeout: float, quiet_s: float = 60.0) -> dict[str, Any]:
    """Reconciliation passes until no payment is open, every command is final and the outbox is empty; or, with the
    outbox empty and every command final, until the open payments are ``vended`` ones unchanged for ``quiet_s``
    (healed, Mita answers: a report Kannel still holds comes within its retry delay, 5 s; one not in after a minute
    was lost inside Kannel)."""
    deadline = time.monotonic() + timeout
    passes = 0
    state: dict[str, Any] = {}
    seen: tuple[tuple[int, str], ...] = ()
    since = time.monotonic()
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            subprocess.run([MITA, "channels", "reconcile", "--once", "--json"], env=env, capture_output=True,
                           check=False, timeout=120)  # fmt: skip
            passes += 1
            rows = conn.execute("SELECT id, status FROM payments WHERE status = ANY(%s) ORDER BY id",
                                (list(OPEN_PAYMENTS),)).fetchall()  # fmt: skip
            pending = conn.execute("SELECT count(*) FROM outbox WHERE status <> 'sent'").fetchone()
            commands = conn.execute(
                "SELECT count(*) FROM meter_commands WHERE status NOT IN ('acknowledged', 'failed', 'expired')"
            ).fetchone()
            state = {"open_payments": len(rows), "outbox_pending": pending[0] if pending else None,
                     "commands_open": commands[0] if commands else None}  # fmt: skip
            if not any(state.values()):
                break
            now = tuple((int(r[0]), str(r[1])) for r in rows)
            if now != seen:
                seen, since = now, time.monotonic()
            waiting_reports = all(status == "vended" for _, status in now)
            quiet = time.monotonic() - since >= quiet_s
            if waiting_reports and quiet and not state["outbox_pending"] and not state["commands_open"]:
                state["waited_for_reports_s"] = round(time.monotonic() - since, 1)
                break
            time.sleep(3)
    return {**state, "reconcile_passes": passes}


def sweep(env: dict[str, str]) -> dict[str, Any]:
    """The delivery sweep with no wait: what production does an hour (the message) and a day (the payment) later."""
    done = subprocess.run([MITA, "sms", "sweep", "--report-hours", "0", "--confirm-hours", "0", "--json"], env=env,
                          capture_output=True, check=False, timeout=120, text=True)  # fmt: skip
    try:
        found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        found = {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
    return {**found, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


PENDING = """
SELECT p.id, p.status, p.updated_at, p.vend_id, s.id AS sms_id, s.status AS sms_status, s.submits, s.report,
       s.created_at AS sms_created_at, s.updated_at AS sms_updated_at
FROM payments p LEFT JOIN sms_messages s ON s.payment_id = p.id AND s.kind = 'token'
WHERE p.status = ANY(%s) ORDER BY p.id, s.id
"""


def pending(url: str, history: Path, wall0: dt.datetime, window: tuple[float, float] = (-20.0, 40.0)) -> list[Any]:
    """The payments still open: each with its token SMS (its state, how often it was submitted, its last report)
    and the faults struck from 20 s before to 40 s after the SMS last moved (what could have lost its report)."""
    faults = [(wall0 + dt.timedelta(seconds=r["t"]), r["fault"]) for r in read(history)
              if r.get("type") == "fault" and (r.get("detail") or {}).get("phase") == "strike"]  # fmt: skip
    out = []
    with psycopg.connect(url, autocommit=True) as conn:
        for row in conn.execute(PENDING, (list(OPEN_PAYMENTS),)).fetchall():
            pid, status, updated, vend_id, sms_id, sms_status, submits, report, sms_created, sms_updated = row
            item: dict[str, Any] = {"payment": pid, "status": status, "payment_updated": _iso(updated),
                                    "vend": vend_id, "sms": sms_id, "sms_status": sms_status, "submits": submits,
                                    "report": report, "sms_created": _iso(sms_created),
                                    "sms_updated": _iso(sms_updated)}  # fmt: skip
            if sms_updated is not None:
                item["faults_near"] = [
                    f"{name} {(at - sms_updated).total_seconds():+.1f}s"
                    for at, name in faults
                    if window[0] <= (at - sms_updated).total_seconds() <= window[1]
                ]
            out.append(item)
    return out


def _iso(value: Any) -> str | None:
    return value.isoformat(timespec="seconds") if isinstance(value, dt.datetime) else None


def keep_evidence(cluster: Cluster, folder: Path, seed: int, why: str) -> Path:
    """Stop the cluster cleanly and move the run's whole folder (``pg/`` holds the data directory and the server's
    log) under ``soak-evidence/``; named pipes and sockets are left behind (nothing to read, and a copy to another
    file system would fail on them)."""
    cluster.stop("fast")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = Path.cwd() / "soak-evidence" / f"{stamp}-seed{seed}"
    target.parent.mkdir(parents=True, exist_ok=True)
    for path in folder.rglob("*"):
        with contextlib.suppress(OSError):
            if stat.S_ISFIFO(path.lstat().st_mode) or stat.S_ISSOCK(path.lstat().st_mode):
                path.unlink()
    shutil.move(str(folder), str(target))
    url = "postgresql://postgres@127.0.0.1:54329/soak"
    (target / "README.txt").write_text(README.format(why=why, dir=target, bin=BIN, url=url))
    print(f"soak: evidence kept in {target} ({why})", file=sys.stderr)
    return target


README = """Evidence of a soak ({why}).

history.jsonl  the history (the checker reads it and the database only)
soak.json      what the soak printed
pg/data        the cluster's data directory, shut down cleanly; pg/postgres.log its log
serve.log, worker.log, ingest.log, sim.log, kannel/ (bearerbox.log, smsbox.log, the store), mosquitto/, meters/

Look at it (as root: the data directory belongs to postgres; after a copy to another file system, chown it back):
  chown -R postgres {dir}/pg
  su postgres -s /bin/sh -c "{bin}/postgres -D {dir}/pg/data -c port=54329 -c unix_socket_directories={dir}/pg"
  psql {url}
  cd tests && ../.venv/bin/python -m reliability.checker {dir}/history.jsonl {url} --drained
"""


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
    parser.add_argument("--keep", action="store_true",
                        help="keep the evidence (soak-evidence/...) even if every invariant holds")  # fmt: skip
    args = parser.parse_args()
    if not kannel.installed():
        raise SystemExit("the soak sends SMS through Kannel: make kannel")
    low, high = (float(x) for x in args.fault_every.split("-"))
    folder = args.folder or Path(tempfile.mkdtemp(prefix="mita-soak-"))
    folder.mkdir(parents=True, exist_ok=True)
    if args.folder is None:  # mkdtemp's 0700: the cluster's user (postgres, under root) must pass through to pg/
        folder.chmod(0o711)
    t_start = time.monotonic()
    cluster = Cluster(folder / "pg").init()
    cluster.start()
    history = History(folder / "history.jsonl")
    wall0 = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=history.now())  # the history's t=0
    services: list[Service] = []
    report: checker.Report | None = None
    swept: dict[str, Any] | None = None
    open_at_end: list[Any] = []
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
            open_at_end = pending(url, history.path, wall0)
            if open_at_end and settled.get("waited_for_reports_s") is not None:
                swept = sweep(env)
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
        why = _keep_why(report, swept, args.keep)
        evidence = keep_evidence(cluster, folder, args.seed, why) if why else None
        if evidence is None:
            cluster.destroy()
    assert report is not None
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
        "pending": open_at_end,
        "swept": swept,
        "evidence": str(evidence) if evidence else None,
        "proxy": vars(proxy.stats) if proxy is not None else None,
        "load_minutes": round(load_s / 60, 1),
        "wall_minutes": round((time.monotonic() - t_start) / 60, 1),
        "seed": args.seed,
        "synchronous_commit": sync[0] if sync else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "history": str(evidence / history.path.name if evidence else history.path),
    }
    if evidence is not None:
        (evidence / "soak.json").write_text(json.dumps(figures, default=str, indent=1) + "\n")
    if args.json:
        print(json.dumps(figures, default=str))
    else:
        for name, value in figures.items():
            print(f"  {name:<28} {value}")
    return 0 if report.ok else 1


def _keep_why(report: checker.Report | None, swept: dict[str, Any] | None, keep: bool) -> str | None:
    """Why the evidence is kept (None: it is not)."""
    if report is None:
        return "the soak stopped before its check"
    if not report.ok:
        return "failed: " + ", ".join(report.failed)
    if swept and (swept.get("flagged") or swept.get("error")):
        return f"the delivery sweep closed {swept.get('flagged', '?')} payments whose report never came"
    return "--keep" if keep else None


if __name__ == "__main__":
    sys.exit(main())
