"""Token entries per second through one virtual meter model (one core).

    .venv/bin/python benchmarks/meter.py [--json] [--n 20000]

Each entry is a fresh EA07 credit token (a new TID), so every one runs the
whole path: parse, decrypt, CRC, expiry, TID store, register update.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import time

from mita import sts
from mita.meter import Meter

KEY = 0xE653341F9D5BF36F


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    now = dt.datetime(2026, 11, 25, 14, 0)
    base = sts.tid_from_datetime(now, sts.BaseDate.Y2014)
    figures = {}
    for profile, ea, key in (("legacy-ea07", sts.EA.STA, KEY), ("edition2-ea11", sts.EA.MISTY1, KEY << 64 | KEY)):
        sub = sts.CreditKind.ELECTRICITY
        tokens = [sts.encode(sts.TransferCredit(base + i, 1, i % 16, sub), ea, key) for i in range(args.n)]
        best = 0.0
        for _ in range(3):
            meter = Meter.create(drn="47500150231", ea=int(ea), decoder_key=key, sgc="123456", ti=1, krn=1, kt=2,
                                 profile=profile)  # fmt: skip
            start = time.perf_counter()
            for t in tokens:
                if meter.enter(t, now).result != "accept":
                    raise SystemExit("a benchmark token was rejected")
            best = max(best, args.n / (time.perf_counter() - start))
        figures[f"{profile}_ea{ea.value:02d}_entries_per_s"] = round(best)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"Mita virtual meter, Python {platform.python_version()} on {platform.machine()}, one core")
    for name, value in figures.items():
        print(f"  {name:<36} {value:>10,}")


if __name__ == "__main__":
    main()
