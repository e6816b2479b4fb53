"""Durable vends per second through ``mita serve`` on PostgreSQL, with p50/p99 latency and CPU per vend.

    .venv/bin/python benchmarks/vend_load.py [--json] [--seconds 20] [--connections 16] [--workers 2]
        [--threads 4] [--server own | --server postgresql://postgres@127.0.0.1:5432] [--pin-wrk CPU]

What it does:

* **PostgreSQL**: by default a cluster of its own (``--server own``: ``initdb`` from PostgreSQL 15's binaries
  into a temporary folder, as the ``postgres`` user when run as root, on a free port, removed at the end), so
  that no other user of the machine's shared server (tests, soaks) takes its locks or its WAL, and so that its
  server settings are the benchmark's. They keep every committed vend: ``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` on (the script checks them), and only move checkpoints apart (``checkpoint_timeout``
  30 min, ``max_wal_size`` 8 GB: fewer full-page images), give it ``shared_buffers`` 256 MB, and create new WAL
  segments without zero-filling them (``wal_init_zero`` off: a fresh cluster has no recycled segments, and the
  zero-fill held every commit 40-80 ms every 2.5 s); the WAL is flushed once per commit group as always
  (PostgreSQL's group commit: a flush covers every commit waiting for it). ``--set NAME=VALUE`` changes another
  setting; ``--server URL`` uses an existing server instead (its settings as they are).
* **The utility**: a fresh ``mita_bench`` database, a supply group, a block tariff and ``--meters`` meters with
  customers (with debt, a third with free basic electricity), one vendor's API key.
* **The server**: ``mita serve --workers N`` with ``MITA_THREADS`` (``--threads``: each worker's database
  connections, for the event loop's vends and the thread pool's alike).
* **The load**: wrk (Debian package ``wrk``) with 2 threads and ``--connections``, each request ``POST
  /v1/vends`` for a meter picked in turn, a new amount and its own ``Idempotency-Key``; 2 s of warm-up first
  (each worker's caches: tariff version, vending key). wrk runs on the same 2 CPUs as the server and
  PostgreSQL: its CPU is counted (``cpu_ms_per_vend.wrk``), and ``--pin-wrk`` pins it to one CPU.
* **The checks**: every 201's vend id (wrk keeps them) is a completed vend in the database
  (``missing_201`` must be 0), and no meter has a TID twice (``duplicate_tids``). Keys are unique by
  construction (``run-<wrk thread>-<request>``); ``committed_in_run`` counts the run's vends in the database,
  the 201s and those still in flight when wrk stopped; a run with a non-201, a missing 201 or a repeated TID
  prints its figures and exits with an error.
* **CPU per vend** of the server's processes, of the database's backends and of wrk, over the measured run
  (``cpu_ms_per_vend``), and the machine's load average before the run (``load_before``): on a shared machine
  a figure means little without it.

Figures on this machine (2 vCPUs, AMD EPYC, shared with other sessions' test suites): defaults (own cluster, 2
workers, 4 threads, 16 connections, 20 s); every run 0 non-201, 0 missing 201s, 0 repeated TIDs, the three
durability settings on. ``benchmarks/README.md`` lists each run with the load average beside it.

| code | vends/s | p99 ms | CPU ms per vend: mita / postgres / wrk | load before |
|---|---:|---:|---|---:|
| before (b44ebaf), 15 s | 222-223 | 211-238 | 3.45 / 1.63-1.66 / 0.11 | 10.6-11.1 |
| the event loop's vend (f5d88ac) | 275-426; 389 | 107-174 | 1.32-1.74 / 1.24-1.52 / 0.07-0.09 | 0.7-10.8 |
| + no foreign-key locks on vendor and key rows (0012) | 566, 778 | 100-196 | 0.97-0.99 / 0.98-1.02 / 0.06 | 2.3-3.1 |
| + the two messages straight on libpq (14769ef) | 464-874 | 48-85 | 0.79-1.64 / 0.89-1.68 / 0.05-0.10 | 2.4-11 |
| + no WAL zero-fill, 8 backends, pipeline (d38939b) | 844-1,257 | 24-40 | 0.71-1.04 / 0.75-1.16 / 0.05-0.07 | 1.9-3.6 |
| another host (Intel Xeon), the same code (f6defec) | 898-917 | 29-42 | 0.99-1.02 / 1.03-1.04 / 0.064-0.066 | 1.0-3.5 |
| there, less work per vend (749be85) | 933-1,030 | 26-35 | 0.86-0.93 / 0.91-1.01 / 0.062-0.067 | 2.8-4.3 |
| a third host (AMD EPYC), f6da080 | 406-719 | 36-484 | 1.33-2.35 / 1.24-2.02 / 0.073-0.131 | 0.6-4.0 |
| there, a vend's small steps cheaper (3e9ce40) | 654-668 | 37-40 | 1.38-1.43 / 1.36-1.39 / 0.080-0.084 | 2.8-3.4 |
| a fourth host (Intel Xeon, fastest), 2e6f8d0 | 1,195-1,730 | 14-25 | 0.54-0.76 / 0.54-0.83 / 0.032-0.046 | 1.0-4.7 |
| there an hour later, slower (2e6f8d0, d761ecf) | 507-795 | 43-153 | 1.10-1.35 / 1.20-1.51 / 0.066-0.079 | 2.4-2.9 |
| that host, the next session (efa63ed) | 1,248-1,359 | 18-29 | 0.65-0.72 / 0.70-0.75 / 0.049-0.055 | 0.2-4.3 |

The same code's CPU per vend moves by up to 2x between runs minutes apart (the VM's speed: wrk's own CPU per
request, fixed work, moves with it, 0.05-0.10 ms), and throughput follows: at the fastest, 1.73 ms of CPU a vend
in all, two idle CPUs would carry about 1,150 vends/s; at the slowest, 3.4 ms, under 600. wrk is a lean client
(C, a few lines of Lua per request): 3% of a vend's CPU, left to the server as far as a load generator on the
same two CPUs can.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import pwd
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg

from mita.vend import database, registry, sample

DB = "mita_bench"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
#: The private cluster's settings: durability as PostgreSQL ships it, checkpoints apart, a bigger cache.
OWN_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "checkpoint_timeout": "30min",
    "max_wal_size": "8GB",
    "shared_buffers": "256MB",
    "max_connections": "200",
    # A new WAL segment is filled with 16 MB of zeros and synced while the WAL write lock is held: every commit
    # waits 40-80 ms, every 2.5 s at 1,000 vends/s. A fresh cluster makes every segment new; a server that has
    # run a checkpoint recycles old segments instead. Off: a new segment is created at its size without the zeros
    # (commits still wait for their WAL to be synced: nothing confirmed is lost).
    "wal_init_zero": "off",
}
DURABLE = ("fsync", "synchronous_commit", "full_page_writes")

LUA = r"""
local counter = 0
local meters = {}
local key = os.getenv("MITA_BENCH_KEY")
for m in string.gmatch(os.getenv("MITA_BENCH_METERS"), "%d+") do meters[#meters + 1] = m end
local threads = {}
local id = 0
function setup(thread)
  id = id + 1
  thread:set("tid", id)
  table.insert(threads, thread)
end
function init(args)
  created = 0
  other = 0
  first_other = ""
  ids = {}
end
function request()
  counter = counter + 1
  local m = meters[((counter * 7919 + tid * 104729) % #meters) + 1]
  local body = '{"meter":"' .. m .. '","amount":' .. (3000 + counter % 5000) .. '}'
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Authorization"] = "Bearer " .. key
  headers["Idempotency-Key"] = os.getenv("MITA_BENCH_RUN") .. "-" .. tid .. "-" .. counter
  return wrk.format("POST", "/v1/vends", headers, body)
end
function response(status, headers, body)
  if status == 201 then
    created = created + 1
    ids[#ids + 1] = string.match(body, '"id":"([0-9a-f-]+)"') or "?"
  else
    other = other + 1
    if first_other == "" then first_other = status .. " " .. string.sub(body, 1, 300) end
  end
end
function done(summary, latency, requests)
  local c, o = 0, 0
  local out = io.open(os.getenv("MITA_BENCH_IDS"), "w")
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
    for _, v in ipairs(t:get("ids")) do out:write(v, "\n") end
  end
  out:close()
  io.write(string.format('MITA {"created": %d, "other": %d, "p50_ms": %.2f, "p99_ms": %.2f, "seconds": %.3f}\n',
    c, o, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
  for _, t in ipairs(threads) do
    local f = t:get("first_other")
    if f ~= "" then io.write("MITA-OTHER " .. f .. "\n") end
  end
end
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def own_cluster(extra: dict[str, str] | None = None) -> Iterator[str]:
    """A PostgreSQL 15 cluster of the benchmark's own, stopped and removed at the end; yields its server URL.
    ``extra``: settings over :data:`OWN_SETTINGS` (``--set``), the durable three excepted."""
    if not (PG_BIN / "initdb").exists():
        raise SystemExit(f"no PostgreSQL 15 at {PG_BIN}: pass --server URL to use a running one")
    folder = Path(tempfile.mkdtemp(prefix="mita-bench-pg-"))
    data, port = folder / "data", _free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        os.chown(folder, pwd.getpwnam("postgres").pw_uid, -1)
        as_user = ["runuser", "-u", "postgres", "--"]
    try:
        run = {"check": True, "stdout": subprocess.DEVNULL, "stderr": subprocess.PIPE}
        subprocess.run([*as_user, str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], **run)
        with (data / "postgresql.conf").open("a") as conf:
            settings = {**OWN_SETTINGS, **(extra or {}), "port": str(port), "listen_addresses": "'127.0.0.1'"}
            settings["unix_socket_directories"] = f"'{folder}'"
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        ctl = [*as_user, str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(folder / "log"), "-w"]
        subprocess.run([*ctl, "start"], **run)
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}"
        finally:
            subprocess.run([*ctl, "-m", "fast", "stop"], check=False, stdout=subprocess.DEVNULL)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def setup_database(server: str, n_meters: int) -> tuple[str, list[str]]:
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    url = f"{server}/{DB}"
    database.upgrade(url)
    engine = database.make_engine(url)
    admin = registry.SYSTEM
    sample.create_group_and_tariff(engine, "Bench")
    drns = []
    for i in range(n_meters):
        drn = sample.meter_number(f"47{i:08d}")
        registry.Registry(engine).create_customer(admin, account=f"B{i}", name=f"Bench {i}", fbe_eligible=i % 3 == 0,
                                 debt=100_000, debt_rate="0.1")  # fmt: skip
        registry.Registry(engine).create_meter(admin, drn=drn, sgc=sample.SGC, customer=f"B{i}", tariff="domestic")
        drns.append(drn)
    vendor = registry.Registry(engine).create_vendor(admin, "bench shop")
    _, key = registry.Registry(engine).create_api_key("bench till", "vendor", int(vendor["id"]))
    engine.dispose()
    return key, drns


def wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit("mita serve exited")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mita serve did not start")


def cpu_seconds(pids: list[int]) -> float:
    """User and system CPU of these processes so far (those gone count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / tick


def server_pids(root: int) -> list[int]:
    """``mita serve`` and its workers."""
    out = subprocess.run(["pgrep", "-P", str(root)], capture_output=True, text=True).stdout
    return [root, *(int(p) for p in out.split())]


def backend_pids(url: str) -> list[int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()", (DB,)
        ).fetchall()
    return [int(r[0]) for r in rows]


def _settings(pairs: list[str]) -> dict[str, str]:
    settings = dict(pair.split("=", 1) for pair in pairs)
    if any(name in DURABLE for name in settings):
        raise SystemExit(f"--set cannot change {', '.join(DURABLE)}: the benchmark measures durable vends")
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4, help="MITA_THREADS: each worker's database connections")
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--server", default="own", help="'own' (a private cluster) or a PostgreSQL server URL")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting of the own cluster's (repeatable), e.g. commit_delay=200",
    )
    parser.add_argument("--server-log", metavar="FILE", help="keep mita serve's log (a line per request, its time)")
    parser.add_argument("--pin-wrk", type=int, default=None, metavar="CPU", help="run wrk on this CPU only")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark drives the server with wrk: apt-get install wrk")
    os.environ.setdefault("MITA_MASTER_KEY", os.urandom(32).hex())
    with contextlib.ExitStack() as stack:
        server = (
            stack.enter_context(own_cluster(_settings(args.set))) if args.server == "own" else args.server.rstrip("/")
        )
        figures = run(args, server)
    if args.json:
        print(json.dumps(figures))
    else:
        print(f"Mita vend load, {platform.machine()} {os.cpu_count()} CPUs, PostgreSQL at {figures['postgresql']}")
        for name, value in figures.items():
            print(f"  {name:<24} {value}")
    broken = [name for name in CHECKS if figures[name] != 0]
    if broken:  # a figure with a lost or repeated vend is no figure: the run fails
        raise SystemExit(f"vend_load: {', '.join(broken)} not 0: {[figures[n] for n in broken]}")


#: The figures that must be 0 for a run to count: every request answered 201, each 201 a committed vend, no TID
#: twice on a meter.
CHECKS = ("non_201", "missing_201", "duplicate_tids")


def run(args: argparse.Namespace, server: str) -> dict[str, object]:
    key, drns = setup_database(server, args.meters)
    url = f"{server}/{DB}"
    port = args.port or _free_port()
    mita = Path(sys.executable).with_name("mita")
    env = {**os.environ, "MITA_THREADS": str(args.threads)}
    log = open(args.server_log, "w") if args.server_log else subprocess.DEVNULL  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [str(mita), "serve", "--database-url", url, "--port", str(port), "--workers", str(args.workers)],
        env=env,
        stderr=log,  # the access log: a line per request
    )
    folder = Path(tempfile.mkdtemp(prefix="mita-bench-"))
    try:
        wait_ready(port, proc)
        script = folder / "vend.lua"
        script.write_text(LUA)
        ids = folder / "ids"
        env = {**os.environ, "MITA_BENCH_KEY": key, "MITA_BENCH_METERS": ",".join(drns), "MITA_BENCH_IDS": str(ids)}
        target = f"http://127.0.0.1:{port}"
        pin = ["taskset", "-c", str(args.pin_wrk)] if args.pin_wrk is not None else []
        warm = [*pin, "wrk", "-t2", f"-c{args.connections}", "-d2s", "-s", str(script), target]
        subprocess.run(warm, env={**env, "MITA_BENCH_RUN": "warm"}, capture_output=True, check=True)
        env["MITA_BENCH_RUN"] = "run"
        load_before = os.getloadavg()[0]
        servers, backends = server_pids(proc.pid), backend_pids(url)
        cpu0 = (cpu_seconds(servers), cpu_seconds(backends), _children_cpu())
        cmd = [*pin, "wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", str(script)]
        load = subprocess.Popen([*cmd, target], env=env, stdout=subprocess.PIPE, text=True)
        time.sleep(min(1.0, args.seconds / 4))
        backends = sorted(set(backends) | set(backend_pids(url)))  # connections opened under load
        out, _ = load.communicate()  # wrk reaped: the only child to end in between, so its CPU is the difference
        cpu1 = (cpu_seconds(servers), cpu_seconds(backends), _children_cpu())
        match = re.search(r"^MITA (\{.*\})$", out, re.M)
        if match is None:
            raise SystemExit(out)
        result = json.loads(match.group(1))
        answered = [line for line in ids.read_text().split() if line] if ids.exists() else []
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if log is not subprocess.DEVNULL:
            log.close()
        shutil.rmtree(folder, ignore_errors=True)
    with psycopg.connect(url) as conn:
        found = conn.execute(
            "SELECT count(*) FROM vends WHERE id = ANY(%s) AND status = 'completed'", (answered,)
        ).fetchone()
        committed = conn.execute("SELECT count(*) FROM idempotency WHERE key LIKE 'run-%%' AND status_code = 201")
        committed_run = committed.fetchone()
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT meter_id, base_date, tid FROM tokens WHERE tid IS NOT NULL "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        ).fetchone()
        settings = {s: conn.execute(f"SHOW {s}").fetchone() for s in DURABLE}
        version = conn.execute("SHOW server_version").fetchone()
    if any(v is None or v[0] != "on" for v in settings.values()):
        raise SystemExit(f"not a durable server: {settings}")
    created = result["created"]
    vends = max(created, 1)
    return {
        "vends_per_s": round(created / result["seconds"], 1),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "created": created,
        "non_201": result["other"],
        "non_201_sample": re.findall(r"^MITA-OTHER (.*)$", out, re.M)[:2],
        "missing_201": created - (found[0] if found else 0),
        "committed_in_run": committed_run[0] if committed_run else None,
        "duplicate_tids": dup[0] if dup else None,
        "cpu_ms_per_vend": {
            "mita": round(1000 * (cpu1[0] - cpu0[0]) / vends, 3),
            "postgres": round(1000 * (cpu1[1] - cpu0[1]) / vends, 3),
            "wrk": round(1000 * (cpu1[2] - cpu0[2]) / vends, 3),
        },
        "load_before": round(load_before, 2),
        "postgresql": f"{'own cluster' if args.server == 'own' else 'shared server'} {version[0] if version else ''}",
        "durable": {s: v[0] if v else None for s, v in settings.items()},
        "settings": _settings(args.set),
        "connections": args.connections,
        "workers": args.workers,
        "threads": args.threads,
        "load_generator": "wrk 4 (2 threads, Lua script: unique Idempotency-Key per request)",
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
