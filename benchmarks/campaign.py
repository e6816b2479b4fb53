"""A TID rollover campaign for a whole fleet on PostgreSQL, timed phase by phase.

    .venv/bin/python benchmarks/campaign.py [--meters 1000000] [--batch-size 20000] [--dkga 2] [--json]

Sets up a fresh database (``mita_campaign_bench`` on 127.0.0.1:5432) with one
supply group on KRN 1 and base date 1993, loads ``--meters`` meters (COPY;
set-up, not part of the campaign), then times what a utility runs: add and
activate the KRN 2 key on base 2014, plan the campaign, generate and store
every meter's key change set (decoder keys through the software keystore,
tokens by the bulk engine), and export the field CSV. Finally it checks a
sample of stored sets against the single-token engine, so a fast wrong
answer cannot pass.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import secrets
import sys
import time

import psycopg

from mita import campaign, sts
from mita.vend import database, keyring, registry

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "mita_campaign_bench"
URL = f"postgresql://postgres@127.0.0.1:5432/{DB}"
SGC = "600001"


def drn(i: int) -> str:
    body = f"{10 + i // 10**8:02d}{i % 10**8:08d}"
    return body + str(sts.luhn_digit(body))


def setup(n: int, dkga: int) -> tuple[str, bytes]:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    database.upgrade(URL)
    engine = database.make_engine(URL)
    vk = secrets.token_bytes(8 if dkga == 2 else 20)
    registry.Registry(engine).create_supply_group(
        registry.SYSTEM,
        sgc=SGC,
        name="Bench",
        vending_key=vk.hex(),
        dkga=dkga,
        ea=7,
        kt=2,
        krn=1,
        base_date=1993,
    )
    engine.dispose()
    now = dt.datetime(2024, 10, 1)
    with psycopg.connect(URL) as conn, conn.cursor() as cur:
        gid = cur.execute("SELECT id FROM supply_groups WHERE sgc = %s", (SGC,)).fetchone()[0]  # type: ignore[index]
        with cur.copy(
            "COPY meters (drn, iin, manufacturer, area, supply_group_id, utility, ti, kt, krn, ea, base_date, ken, "
            "status, last_tid, created_at) FROM STDIN"
        ) as copy:
            for i in range(n):
                copy.write_row(
                    (
                        drn(i),
                        "600727",
                        f"M{i % 7}",
                        f"A{i % 50}",
                        gid,
                        "electricity",
                        1,
                        2,
                        1,
                        7,
                        1993,
                        255,
                        "active",
                        16_000_000,
                        now,
                    )
                )
        cur.execute("ANALYZE meters")
    return URL, vk


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meters", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=20_000)
    ap.add_argument("--dkga", type=int, default=2, choices=(2, 4))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("MITA_MASTER_KEY", secrets.token_hex(32))

    phases: dict[str, float] = {}
    t = time.perf_counter()
    url, old_vk = setup(args.meters, args.dkga)
    phases["setup_meters (not counted)"] = time.perf_counter() - t
    engine = database.make_engine(url)
    admin = registry.SYSTEM
    at = dt.datetime(2024, 10, 15, 9, 0)

    t = time.perf_counter()
    keyring.add_key(engine, admin, sgc=SGC, krn=2, dkga=args.dkga, at=at)
    keyring.activate_key(engine, admin, sgc=SGC, krn=2, base_date=2014, at=at)
    phases["new_key"] = time.perf_counter() - t

    t = time.perf_counter()
    plan = campaign.plan(
        engine,
        admin,
        name="TID rollover",
        sgc=SGC,
        target={"krn": 2, "base_date": 2014},
        delivery="attach",
        batch_size=args.batch_size,
        at=at,
    )
    phases["plan"] = time.perf_counter() - t

    t = time.perf_counter()
    last = [0.0]

    def progress(done: int, total: int) -> None:
        if not args.json and time.perf_counter() - last[0] > 5:
            last[0] = time.perf_counter()
            print(f"  generated {done:,} of {total:,}", file=sys.stderr)

    result = campaign.generate(engine, admin, plan["id"], at=at, progress=progress)
    phases["generate_and_store"] = time.perf_counter() - t

    t = time.perf_counter()
    lines = sum(1 for _ in campaign.export_csv(engine, plan["id"]))
    phases["export_csv"] = time.perf_counter() - t

    checked = check_sample(url, old_vk, args.dkga)
    total = sum(v for k, v in phases.items() if "not counted" not in k)
    out = {
        "meters": args.meters,
        "planned": plan["planned"],
        "issued": result["meters"]["issued"],
        "csv_lines": lines - 1,
        "sample_checked": checked,
        "phases_s": {k: round(v, 2) for k, v in phases.items()},
        "campaign_total_s": round(total, 2),
        "meters_per_s": round(args.meters / phases["generate_and_store"]),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, Python {platform.python_version()}",
    }
    if args.json:
        print(json.dumps(out))
        return
    for k, v in out.items():
        print(f"{k:>20}: {v}")


def check_sample(url: str, old_vk: bytes, dkga: int, n: int = 200) -> int:
    """Recompute a random sample of stored sets with the single-token engine."""
    engine = database.make_engine(url)
    new_vk = None
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT m.drn, k.tokens FROM key_changes k JOIN meters m ON m.id = k.meter_id ORDER BY random() LIMIT %s",
            (n,),
        ).fetchall()
        sealed = conn.execute("SELECT sealed FROM vending_keys WHERE krn = 2").fetchone()[0]  # type: ignore[index]
    from mita.keys.software import open_vending_key

    new_vk = open_vending_key(sealed, SGC, 2)
    for number, tokens in random.sample(rows, len(rows)):
        meter = sts.MeterNumber("600727", number)
        old = sts.derive_decoder_key(dkga, old_vk, meter, 2, SGC, 1, 1, sts.BaseDate(1993), sts.EA(7))
        new = sts.derive_decoder_key(dkga, new_vk, meter, 2, SGC, 1, 2, sts.BaseDate(2014), sts.EA(7))
        want = [
            sts.encode(s, sts.EA(7), old)
            for s in sts.key_change_set(new, key_bits=64, ken=255, krn=2, kt=2, ti=1, ro=1, sgc=SGC)
        ]
        if tokens != want:
            raise SystemExit(f"meter {number}: stored set differs from the single-token engine")
    engine.dispose()
    return len(rows)


if __name__ == "__main__":
    main()
