"""Durable vends per second through ``mita serve`` on PostgreSQL, with p50/p99 latency.

    .venv/bin/python benchmarks/vend_load.py [--json] [--seconds 20] [--connections 32] [--workers 2]

Sets up a fresh database (``mita_bench`` on 127.0.0.1:5432), a supply group,
a block tariff and ``--meters`` meters with customers, starts ``mita serve``
with ``--workers`` processes, and drives ``POST /v1/vends`` with wrk (Debian
package ``wrk``; each request has its own Idempotency-Key), then checks the
database: every 201 is one committed vend, and no meter has a TID twice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg

from mita.vend import database, registry, sample

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "mita_bench"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"

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
  else
    other = other + 1
    if first_other == "" then first_other = status .. " " .. string.sub(body, 1, 300) end
  end
end
function done(summary, latency, requests)
  local c, o = 0, 0
  for _, t in ipairs(threads) do
    c = c + t:get("created")
    o = o + t:get("other")
  end
  io.write(string.format('MITA {"created": %d, "other": %d, "p50_ms": %.2f, "p99_ms": %.2f, "seconds": %.3f}\n',
    c, o, latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.duration / 1e6))
  for _, t in ipairs(threads) do
    local f = t:get("first_other")
    if f ~= "" then io.write("MITA-OTHER " .. f .. "\n") end
  end
end
"""


def setup_database(n_meters: int) -> tuple[str, list[str]]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    database.upgrade(URL)
    engine = database.make_engine(URL)
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
    for _ in range(100):
        if proc.poll() is not None:
            raise SystemExit("mita serve exited")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=1)
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("mita serve did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--meters", type=int, default=300)
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("this benchmark drives the server with wrk: apt-get install wrk")
    os.environ.setdefault("MITA_MASTER_KEY", os.urandom(32).hex())
    key, drns = setup_database(args.meters)
    mita = Path(sys.executable).with_name("mita")
    server = subprocess.Popen(
        [str(mita), "serve", "--database-url", URL, "--port", str(args.port), "--workers", str(args.workers)],
        env=os.environ,
    )
    try:
        wait_ready(args.port, server)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(LUA)
        env = {**os.environ, "MITA_BENCH_KEY": key, "MITA_BENCH_METERS": ",".join(drns)}
        target = f"http://127.0.0.1:{args.port}"
        warm = ["wrk", "-t1", "-c4", "-d2s", "-s", f.name, target]
        subprocess.run(warm, env={**env, "MITA_BENCH_RUN": "warm"}, capture_output=True, check=True)
        env["MITA_BENCH_RUN"] = "run"
        cmd = ["wrk", "-t2", f"-c{args.connections}", f"-d{args.seconds}s", "--latency", "-s", f.name, target]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    finally:
        server.terminate()
        server.wait(timeout=30)
    match = re.search(r"^MITA (\{.*\})$", out, re.M)
    if match is None:
        raise SystemExit(out)
    result = json.loads(match.group(1))
    result["other_sample"] = re.findall(r"^MITA-OTHER (.*)$", out, re.M)[:2]
    with psycopg.connect(URL) as conn:
        vends = conn.execute("SELECT count(*) FROM vends WHERE api_key_id IS NOT NULL").fetchone()
        dup = conn.execute(
            "SELECT count(*) FROM (SELECT meter_id, base_date, tid FROM tokens WHERE tid IS NOT NULL "
            "GROUP BY 1, 2, 3 HAVING count(*) > 1) d"
        ).fetchone()
        sync = conn.execute("SHOW synchronous_commit").fetchone()
    figures = {
        "vends_per_s": round(result["created"] / result["seconds"], 1),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "created": result["created"],
        "non_201": result["other"],
        "non_201_sample": result["other_sample"],
        "vends_in_db_incl_warmup": vends[0] if vends else None,
        "duplicate_tids": dup[0] if dup else None,
        "synchronous_commit": sync[0] if sync else None,
        "connections": args.connections,
        "workers": args.workers,
        "load_generator": "wrk 4 (2 threads, Lua script: unique Idempotency-Key per request)",
    }
    if args.json:
        print(json.dumps(figures))
        return
    print(f"Mita vend load, {platform.machine()} {os.cpu_count()} cores, PostgreSQL on 127.0.0.1")
    for name, value in figures.items():
        print(f"  {name:<24} {value}")


if __name__ == "__main__":
    main()
