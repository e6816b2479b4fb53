"""Outbox dispatch on PostgreSQL: ``mita worker`` processes drain a queue of due rows through a no-op sender.

    .venv/bin/python benchmarks/outbox.py [--rows 100000] [--workers 2] [--batch-size 500] [--json]

Sets up a fresh database (``mita_outbox_bench`` on 127.0.0.1:5432), loads ``--rows`` due rows on channel
``bench`` (COPY; set-up, not timed), then starts ``--workers`` real ``mita worker --once`` processes with that
channel mapped to the ``null`` sender (``MITA_OUTBOX_SENDERS=bench=null``) and waits until they exit, which
they do once nothing is due. It checks that every row ended sent and none was claimed or marked twice, then
prints the rate two ways: over the dispatch window the database saw (the first claim to the last row marked
sent; ``dispatch_per_s``) and over the processes' whole lives, start-up included (``wall_per_s``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from mita.vend import database

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "mita_outbox_bench"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
LEASE = 300.0  # no lease runs out during the run: a row claimed twice would be a fault


def setup(n: int) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB}")
    database.upgrade(URL)
    due = dt.datetime.now() - dt.timedelta(minutes=1)
    with psycopg.connect(URL) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY outbox (channel, recipient, dedupe_key, payload, status, attempts, next_attempt_at, created_at) "
            "FROM STDIN"
        ) as copy:
            for i in range(n):
                payload = json.dumps({"meter": f"{i:011d}", "tokens": ["1234 5678 9012 3456 7890"]})
                copy.write_row(("bench", f"{i:011d}", f"bench:{i}", payload, "pending", 0, due, due))
        conn.commit()
    with psycopg.connect(URL, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE outbox")


def run(workers: int, batch_size: int) -> tuple[float, list[dict[str, int]]]:
    mita = str(Path(sys.executable).with_name("mita"))
    env = {**os.environ, "MITA_OUTBOX_SENDERS": "bench=null", "MITA_DATABASE_URL": URL}
    command = [mita, "worker", "--once", "--channels", "bench", "--batch-size", str(batch_size), "--lease", str(LEASE)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(workers)
    ]
    outs = [p.communicate()[0] for p in procs]
    wall = time.perf_counter() - started
    for p in procs:
        if p.returncode != 0:
            raise SystemExit(f"a worker failed with exit status {p.returncode}")
    return wall, [json.loads(out.strip().splitlines()[-1]) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    t0 = time.perf_counter()
    setup(args.rows)
    fill = time.perf_counter() - t0
    wall, totals = run(args.workers, args.batch_size)
    with psycopg.connect(URL) as conn:
        counts = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
        first, last, twice = conn.execute(
            "SELECT min(next_attempt_at) - make_interval(secs => %s), max(sent_at), "
            "count(*) FILTER (WHERE attempts <> 1) FROM outbox",
            (LEASE,),
        ).fetchone()  # type: ignore[misc]
    claimed = sum(t["claimed"] for t in totals)
    marked = sum(t["sent"] for t in totals)
    ok = counts == {"sent": args.rows} and claimed == marked == args.rows and twice == 0
    window = (last - first).total_seconds()
    out = {
        "rows": args.rows,
        "workers": args.workers,
        "batch_size": args.batch_size,
        "dispatch_s": round(window, 3),
        "dispatch_per_s": round(args.rows / window),
        "wall_s": round(wall, 3),
        "wall_per_s": round(args.rows / wall),
        "per_worker": [t["claimed"] for t in totals],
        "fill_s": round(fill, 2),
        "verified": ok,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.rows} rows, {args.workers} workers, batches of {args.batch_size} (fill {fill:.1f} s)")
        print(f"  dispatch: {window:.2f} s, {out['dispatch_per_s']:,} rows/s (first claim to last row marked sent)")
        print(f"  wall:     {wall:.2f} s, {out['wall_per_s']:,} rows/s (process start to exit)")
        print(f"  per worker: {out['per_worker']}; every row sent once, none claimed twice: {ok}")
    if not ok:
        raise SystemExit(f"verification failed: {counts}, claimed {claimed}, marked {marked}, claimed twice {twice}")


if __name__ == "__main__":
    main()
