"""A load in steps, for faults the nemesis does not draw (a full disk, a clock that jumps): the clients run, the
test does something between two operation counts, and every answer is counted by its status and code.

The clients and the history are :mod:`.workload`'s and :mod:`.history`'s; what the tests assert on top of the
checker's invariants is read back from the history here: no answer outside the allowed statuses, each 5xx typed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from .history import read
from .workload import Workload


def wait_ops(workload: Workload, ops: int, timeout: float = 60.0) -> int:
    """Until the clients have started ``ops`` operations in all (or ``timeout`` passes); how many they have."""
    deadline = time.monotonic() + timeout
    while workload.done_ops < ops and workload.running() and time.monotonic() < deadline:
        time.sleep(0.02)
    return workload.done_ops


def answers(history: Path, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
    """Every completed attempt between two history times, as ``"<status> <code>"`` (``"none <error>"`` when no
    answer came at all: a reset, a timeout)."""
    counts: Counter[str] = Counter()
    for r in read(history):
        if r["type"] in ("ok", "fail", "info") and since <= r["t"] <= until:
            status = r.get("status")
            what = r.get("code") or r.get("error") or ""
            counts[f"{status if status is not None else 'none'} {what}".strip()] += 1
    return counts


def untyped(counts: Counter[str], allowed: frozenset[str]) -> dict[str, int]:
    """The answers a careful till could not act on: anything but a success, a refusal with its code (a 4xx and a
    word) or one of ``allowed`` (the typed 5xx and the lost answers the fault may cause)."""
    return {k: n for k, n in counts.items() if k not in allowed and not _definite(k)}


def _definite(answer: str) -> bool:
    status, _, code = answer.partition(" ")
    return status in ("200", "201") or (status.startswith("4") and bool(code) and not code.startswith("http"))


def tracebacks(log: Path) -> int:
    return log.read_text(errors="replace").count("Traceback") if log.exists() else 0
