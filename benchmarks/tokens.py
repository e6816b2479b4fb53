"""Token engine throughput, in tokens per second, on one core.

    .venv/bin/python benchmarks/tokens.py          # a table
    .venv/bin/python benchmarks/tokens.py --json   # one JSON object

The vend figures derive a fresh decoder key for every token (a different
meter each time) under one supply group's vending key, as a vending server
does. The bulk figures encode N credit tokens, each under its own key, from
arrays to 20-digit strings in one call.

Each figure is the best of five runs of about a second: on this project's
shared 2-vCPU virtual machines the same loop varies by up to 2x from one
second to the next, and the best run is the one least disturbed.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from collections.abc import Callable

import numpy as np

from mita import sts
from mita.sts import bulk

VK02 = bytes.fromhex("abababababababab")
VK04 = bytes.fromhex("abababababababab949494949494949401234567")


def meters(n: int) -> list[sts.MeterNumber]:
    out = []
    for i in range(n):
        body = f"47{i:08d}"
        out.append(sts.MeterNumber("600727", body + str(sts.luhn_digit(body))))
    return out


def rate(run: Callable[[], int], seconds: float = 1.0, repeat: int = 5) -> float:
    """Best of ``repeat`` runs of ``run`` (each returns how many tokens it made) over ~``seconds``."""
    best = 0.0
    for _ in range(repeat):
        done = 0
        start = time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            done += run()
        best = max(best, done / elapsed)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--bulk-n", type=int, default=1_000_000, help="tokens per bulk call")
    args = parser.parse_args()
    rng = random.Random(1)
    batch = 2000
    fleet = meters(batch)
    tokens = [sts.TransferCredit(6_000_000 + i, rng.randrange(1, 5000), rng.randrange(16)) for i in range(batch)]
    k07 = rng.getrandbits(64)
    k11 = rng.getrandbits(128)

    def encode(ea: sts.EA, key: int) -> Callable[[], int]:
        def run() -> int:
            for t in tokens:
                sts.encode(t, ea, key)
            return batch

        return run

    def vend02() -> int:
        for m, t in zip(fleet, tokens, strict=True):
            sts.encode(t, sts.EA.STA, sts.dkga02(VK02, m, 2, "123456", 1, 1))
        return batch

    def vend04() -> int:
        for m, t in zip(fleet, tokens, strict=True):
            key = sts.dkga04(VK04, m, 2, "123456", 1, 1, sts.BaseDate.Y2014, sts.EA.MISTY1)
            sts.encode(t, sts.EA.MISTY1, key)
        return batch

    def decode(ea: sts.EA, key: int) -> Callable[[], int]:
        digits = [sts.encode(t, ea, key) for t in tokens]

        def run() -> int:
            for d in digits:
                sts.decode(d, ea, key)
            return batch

        return run

    n = args.bulk_n
    np_rng = np.random.default_rng(1)
    tids = np_rng.integers(0, 1 << 24, n, dtype=np.uint64)
    amounts = np_rng.integers(1, 100_000, n, dtype=np.uint64)
    rnds = np_rng.integers(0, 16, n, dtype=np.uint64)
    keys07 = np_rng.integers(0, 1 << 63, n, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    keys11 = np_rng.integers(0, 1 << 63, (n, 2), dtype=np.uint64)

    def bulk_run(ea: sts.EA, keys: np.ndarray) -> Callable[[], int]:  # type: ignore[type-arg]
        def run() -> int:
            bulk.encode_credit(tids, amounts, rnds, keys, ea)
            return n

        return run

    figures = {
        "ea07_encode": rate(encode(sts.EA.STA, k07)),
        "ea11_encode": rate(encode(sts.EA.MISTY1, k11)),
        "dkga02_ea07_vend": rate(vend02),
        "dkga04_ea11_vend": rate(vend04),
        "ea07_decode": rate(decode(sts.EA.STA, k07)),
        "ea11_decode": rate(decode(sts.EA.MISTY1, k11)),
        "bulk_ea07": rate(bulk_run(sts.EA.STA, keys07), seconds=0.1),
        "bulk_ea11": rate(bulk_run(sts.EA.MISTY1, keys11), seconds=0.1),
    }
    if args.json:
        print(json.dumps({k: round(v) for k, v in figures.items()}))
        return
    print(f"Mita token engine, Python {platform.python_version()} on {platform.machine()}, one core")
    for name, value in figures.items():
        print(f"  {name:<18} {value:>12,.0f} tokens/s")


if __name__ == "__main__":
    main()
