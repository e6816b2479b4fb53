"""MQTT telemetry into PostgreSQL: 1,000,000 readings from simulated meters through Mosquitto, taken by two
``mita worker ingest`` processes, every reading checked stored exactly once.

    .venv/bin/python benchmarks/ingest.py [--mode backlog|live] [--kill] [--readings 1000000] [--meters 10000]
                                          [--per-message 4] [--workers 2] [--publishers 2] [--batch-size 500] [--json]

Set-up (not timed): a Mosquitto of the benchmark's own (``tests/mqtt_broker.py``: a free port, no queue limit,
no persistence file: the machine's broker at 1883 drops a session's backlog past 1,000 messages); a fresh
database ``mita_ingest_bench`` on 127.0.0.1:5432, migrated, with ``--meters`` meters. Each meter publishes its
load profile: ``--per-message`` readings of 15 minutes a message (4: a meter pushing hourly), QoS 1, on
``mita/v1/<meter>/readings``; ``--publishers`` processes share the meters, publishing hour by hour across the
fleet.

Modes:

* ``backlog`` (the catch-up after an outage): the workers connect once (their persistent sessions subscribe to
  the shared subscription) and leave; everything is published into their sessions; then the workers start, and
  the drain is timed, from their start to the last batch's commit.
* ``live``: the workers run first; the publishers publish while they ingest; timed from the first publish to the
  last commit (publishers, broker, workers and PostgreSQL share the machine's CPUs).

``--kill``: once about a third of the readings are stored, worker 0 is killed with SIGKILL, and started again
under the same client id a second later: its session (its unacknowledged messages, and what the broker queued for
it meanwhile) waits for it.

``lost`` and ``duplicated`` are counted from the database against what was published: every published reading has
a known (meter, time, seq) and register value; ``lost`` is those not found, ``duplicated`` the rows beyond one per
published reading (and any row that was never published).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "mita_ingest_bench"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
MITA = str(Path(sys.executable).with_name("mita"))
INTERVAL = 900


def drn_of(i: int) -> str:
    from mita.vend import sample

    return sample.meter_number(f"6{i:09d}")


# ---------------------------------------------------------------------- set-up


def setup(meters: int) -> None:
    """A fresh database with ``meters`` meters: one made through the registry, the rest copied from it in SQL."""
    from mita.vend import database, registry, sample

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    database.upgrade(URL)
    engine = database.make_engine(URL, pool_size=2)
    sample.create_group_and_tariff(engine, "Bench town")
    registry.Registry(engine).create_meter(registry.SYSTEM, drn=drn_of(0), sgc=sample.SGC, tariff="domestic")
    engine.dispose()
    with psycopg.connect(URL) as conn:
        columns = [row[0] for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'meters' "
            "AND column_name NOT IN ('id', 'drn')")]  # fmt: skip
        names = ", ".join(f'"{c}"' for c in columns)
        conn.execute(
            f"INSERT INTO meters (drn, {names}) SELECT d, {names} FROM meters, unnest(%s::text[]) d "
            "WHERE meters.drn = %s",
            ([drn_of(i) for i in range(1, meters)], drn_of(0)),
        )


def start_time() -> int:
    """The first reading's time: two days ago, on a quarter hour (inside this month's partitions or last's)."""
    return (int(time.time()) - 2 * 86_400) // INTERVAL * INTERVAL


# ---------------------------------------------------------------------- publishers


def publish(broker: str, first: int, last: int, messages: int, per_message: int, t0: int, index: int) -> None:
    """Publish meters ``[first, last)``'s ``messages`` messages each, hour by hour across the slice; QoS 1, every
    PUBACK waited for. The payloads are encoded first; then ``ready`` is printed and publishing starts when a
    line arrives on standard input (so that a live run times the publishing, not the encoding)."""
    from mita.headend.mqttclient import Session
    from mita.telemetry import topics
    from mita.telemetry.obis import Medium
    from mita.telemetry.payload import Reading, Readings

    names = {i: topics.topic(drn_of(i), topics.Kind.READINGS) for i in range(first, last)}
    payloads = [
        (names[i], Readings(INTERVAL, tuple(
            Reading(seq, t0 + seq * INTERVAL, Medium.ELECTRICITY, 1000 + seq, 400 + i % 100, 50_000 - seq, True)
            for seq in range(m * per_message, (m + 1) * per_message)
        )).encode())
        for m in range(messages)
        for i in range(first, last)
    ]  # fmt: skip
    # the network loop in this thread (Session.pump): a publishing thread and paho's network thread would wait
    # for each other's interpreter lock at every system call
    session = Session(broker, f"bench-publisher-{index}", clean_start=True, session_expiry=0)
    session.client.max_inflight_messages_set(1000)
    session.client.max_queued_messages_set(0)
    session.open()
    session.wait_connected(10)
    print("ready", flush=True)
    sys.stdin.readline()
    infos = []
    for n, (topic, payload) in enumerate(payloads, 1):
        infos.append(session.publish(topic, payload, qos=1))
        if n % 200 == 0:
            session.pump(0.0)  # PUBACKs in, the queued PUBLISHes out as the inflight window frees
    deadline = time.monotonic() + 120
    while not all(info.is_published() for info in infos[-1000:]) and time.monotonic() < deadline:
        session.pump(0.05)
    while any(not info.is_published() for info in infos) and time.monotonic() < deadline:
        session.pump(0.05)
    session.stop()


def start_publishers(args: argparse.Namespace, broker: str, messages: int, t0: int) -> list[subprocess.Popen[str]]:
    """The publisher processes, each with its payloads encoded and connected: :func:`go` starts them."""
    share = -(-args.meters // args.publishers)
    procs = []
    for p in range(args.publishers):
        first, last = p * share, min(args.meters, (p + 1) * share)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--publish", broker, str(first), str(last), str(messages),
             str(args.per_message), str(t0), str(p)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        ))  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return procs


def go(publishers: list[subprocess.Popen[str]]) -> None:
    for proc in publishers:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()


# ---------------------------------------------------------------------- workers


def start_worker(args: argparse.Namespace, broker: str, index: int, idle: float, log: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "MITA_DATABASE_URL": URL, "MITA_MQTT_URL": broker}
    command = [MITA, "worker", "ingest", "--client-id", f"bench-ingest-{index}", "--batch-size", str(args.batch_size),
               "--max-delay", str(args.max_delay), "--idle-exit", str(idle), "--group", "bench"]  # fmt: skip
    if args.receive_maximum:
        command += ["--receive-maximum", str(args.receive_maximum)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=log, text=True)


def finish(worker: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = worker.communicate(timeout=1800)
    if worker.returncode != 0:
        return {"exit": worker.returncode}
    return dict(json.loads(out.strip().splitlines()[-1]))


def stored() -> int:
    with psycopg.connect(URL) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
        return int(row[0]) if row else 0


# ---------------------------------------------------------------------- checks and machine


def check(meters: int, per_meter: int, t0: int) -> dict[str, int]:
    """What the database holds against what was published: every meter's readings ``seq`` 0 .. per_meter-1 at
    ``t0 + seq * 900`` with register ``1000 + seq``."""
    sql = """
        WITH p AS (SELECT m.id AS meter_id FROM meters m)
        SELECT count(*),
               count(DISTINCT (r.meter_id, r.read_at, r.seq)),
               count(DISTINCT (r.meter_id, r.seq)) FILTER (
                   WHERE r.seq BETWEEN 0 AND %(last)s
                     AND r.read_at = to_timestamp(%(t0)s + r.seq * 900)
                     AND r.register = 1000 + r.seq)
        FROM readings r JOIN p ON p.meter_id = r.meter_id
    """
    with psycopg.connect(URL) as conn:
        row = conn.execute(sql, {"last": per_meter - 1, "t0": t0}).fetchone()
        total = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None and total is not None
    rows, keys, matching = int(row[0]), int(row[1]), int(row[2])
    published = meters * per_meter
    # the primary key holds one row per (meter, time, seq): a duplicate would be a row never published
    assert rows == keys
    return {
        "published": published,
        "rows": int(total[0]),
        "lost": published - matching,
        "duplicated": int(total[0]) - matching,
    }


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler:
    """CPU seconds of this run's PostgreSQL backends (those of ``mita_ingest_bench``) and of the publishers, read
    every 0.2 s while they live (a process's CPU is gone from /proc when it ends, and PostgreSQL's ended
    backends are summed over every database of the server, other sessions' included)."""

    def __init__(self) -> None:
        self.last: dict[int, tuple[str, float]] = {}
        self.publishers: set[int] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.wait(0.2):
            self.sample()

    def sample(self) -> None:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                if pid in self.publishers:
                    kind = "publishers"
                elif DB.encode() in (entry / "cmdline").read_bytes():
                    kind = "postgres"
                else:
                    continue
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            self.last[pid] = (kind, (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))

    def total(self, kind: str) -> float:
        return sum(cpu for k, cpu in self.last.values() if k == kind)


def machine_busy() -> float:
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------- the run


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--publish":
        broker, first, last, messages, per, t0, index = sys.argv[2:9]
        publish(broker, int(first), int(last), int(messages), int(per), int(t0), int(index))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--mode", choices=("backlog", "live"), default="backlog")
    parser.add_argument("--kill", action="store_true", help="SIGKILL worker 0 mid-stream and start it again")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--meters", type=int, default=10_000)
    parser.add_argument("--per-message", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--publishers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--max-delay", type=float, default=0.1)
    parser.add_argument("--receive-maximum", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from mqtt_broker import broker as own_broker

    per_meter = args.readings // args.meters
    if per_meter % args.per_message:
        parser.error("--readings / --meters must be a multiple of --per-message")
    messages = per_meter // args.per_message
    folder = Path(tempfile.mkdtemp(prefix="mita-ingest-bench-"))
    log = (folder / "workers.log").open("a")
    setup(args.meters)
    t0 = start_time()
    with own_broker(folder / "mosquitto", persistence=False) as mosquitto:
        url = mosquitto.url
        # the sessions and their subscriptions, before anything is published
        for w in [start_worker(args, url, i, 0.5, log) for i in range(args.workers)]:
            finish(w)
        load0 = os.getloadavg()
        sampler = Sampler()
        sampler.thread.start()
        publishing = 0.0
        if args.mode == "backlog":
            publishers = start_publishers(args, url, messages, t0)
            sampler.publishers = {p.pid for p in publishers}
            began = time.time()
            go(publishers)
            for p in publishers:
                p.wait()
            publishing = time.time() - began
            sampler.sample()
            busy0, pg0, pub0 = machine_busy(), sampler.total("postgres"), sampler.total("publishers")
            mq0 = cpu_seconds(mosquitto.process.pid)
            started = time.time()
            workers = [start_worker(args, url, i, 3.0, log) for i in range(args.workers)]
        else:
            publishers = start_publishers(args, url, messages, t0)
            sampler.publishers = {p.pid for p in publishers}
            workers = [start_worker(args, url, i, 5.0, log) for i in range(args.workers)]
            time.sleep(1.5)  # connected and subscribed
            sampler.sample()
            busy0, pg0, pub0 = machine_busy(), sampler.total("postgres"), sampler.total("publishers")
            mq0 = cpu_seconds(mosquitto.process.pid)
            started = time.time()
            go(publishers)
        results: list[dict[str, Any]] = []
        killed = False
        if args.kill:
            while stored() < args.readings // 3:
                time.sleep(0.2)
            workers[0].send_signal(signal.SIGKILL)
            workers[0].wait()
            killed = True
            time.sleep(1.0)
            workers[0] = start_worker(args, url, 0, 3.0 if args.mode == "backlog" else 5.0, log)
        if args.mode == "live":
            for p in publishers:
                p.wait()
            publishing = time.time() - started
        for w in workers:
            results.append(finish(w))
        busy = machine_busy() - busy0
        mosquitto_cpu = cpu_seconds(mosquitto.process.pid) - mq0
        sampler.stop.set()
        sampler.thread.join()
        pg, publishers_cpu = sampler.total("postgres") - pg0, sampler.total("publishers") - pub0
    ended = max(r.get("last_commit_at") or 0 for r in results)
    span = ended - started
    first_batch = min(r.get("first_batch_at") or ended for r in results)
    worker_cpu = sum(r.get("cpu_seconds", 0) for r in results)
    checked = check(args.meters, per_meter, t0)
    readings = checked["published"]
    out = {
        "readings_per_s": round(readings / span),
        "messages_per_s": round(readings / args.per_message / span),
        "readings_per_message": args.per_message,
        "workers": args.workers,
        "lost": checked["lost"],
        "duplicated": checked["duplicated"],
        "readings": readings,
        "killed": killed,
        "mode": args.mode,
        "seconds": round(span, 2),  # from the timed start (workers started, or publishing began) to the last commit
        "first_batch_to_last_commit_s": round(ended - first_batch, 2),  # without the workers' start-up
        "publishing_seconds": round(publishing, 2),
        "batch_size": args.batch_size,
        "worker_cpu_s": round(worker_cpu, 1),
        "worker_results": results,
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load0],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            # CPU seconds from the timed start until the workers exited (their idle exit included)
            "busy_cpu_s": round(busy, 1),
            "mosquitto_cpu_s": round(mosquitto_cpu, 1),
            "postgres_cpu_s": round(pg, 1),  # this run's backends
            "publishers_cpu_s": round(publishers_cpu, 1),
            # what else ran on the machine meanwhile (other sessions' tests and benchmarks): the run shares with it
            "other_cpu_s": round(busy - worker_cpu - mosquitto_cpu - pg - publishers_cpu, 1),
            "python": platform.python_version(),
        },
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(json.dumps(out, indent=2))
    if checked["lost"] or checked["duplicated"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
