"""Clients that vend as a careful till does: a key per purchase, kept before sending, retried with the same key.

Each client thread draws its purchases from its own seeded random source; every attempt is an ``invoke`` and its
outcome (``ok``, ``fail`` or ``info``) in the history. A share of operations replays a key already answered (the
answer must be the same vend). An unknown outcome is retried with full jitter (Brooker's "exponential backoff and
jitter"), a few times during the load; :func:`final_read` retries every key still unknown once the faults are healed.

Outcomes, conservatively (as Jepsen's clients): 2xx is ``ok``; a 4xx other than 409 ``in_progress`` and 429 is a
definite ``fail``; anything else (a timeout, a reset, a refused connection, 5xx, 429, ``in_progress``) is ``info``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .history import History

UNKNOWN_CODES = frozenset({"in_progress"})
TIMEOUT = httpx.Timeout(10.0, connect=3.0)


@dataclass
class Outcome:
    kind: str  # ok, fail, info
    status: int | None
    value: dict[str, Any] | None = None
    code: str | None = None
    error: str | None = None


def classify(answer: httpx.Response | None, error: Exception | None) -> Outcome:
    if answer is None:
        return Outcome("info", None, error=type(error).__name__ if error else "unknown")
    status = answer.status_code
    try:
        body = answer.json()
    except ValueError:
        body = {}
    if 200 <= status < 300:
        tokens = [{"digits": t["digits"], "tid": t["tid"], "units": t["units"]} for t in body.get("tokens", [])]
        value = {"vend_id": body.get("id"), "meter": body.get("meter"), "tokens": tokens,
                 "units": sum(t["units"] for t in tokens), "replayed": status == 200}  # fmt: skip
        return Outcome("ok", status, value=value)
    code = body.get("code") if isinstance(body, dict) else None
    if 400 <= status < 500 and status != 429 and code not in UNKNOWN_CODES:
        return Outcome("fail", status, code=code)
    return Outcome("info", status, code=code, error=code or f"http {status}")


def backoff(attempt: int, rnd: random.Random, base: float = 0.05, cap: float = 1.0) -> float:
    """Full jitter: a random wait in [0, min(cap, base * 2^attempt)]."""
    return rnd.uniform(0, min(cap, base * 2**attempt))


@dataclass
class Till:
    """What one kind of request looks like: its path, headers and the caller's key."""

    base_url: str
    api_key: str
    key_owner: str  # the API key's name in the setup record (idempotency keys are per API key)

    def vend(self, http: httpx.Client, key: str, body: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.api_key}", "Idempotency-Key": key}
        return http.post(f"{self.base_url}/v1/vends", json=body, headers=headers)


@dataclass
class Workload:
    """``clients`` threads sending ``ops`` vend operations in all over ``meters``; ``replay_share`` of them repeat
    an answered key; ``attempts`` tries per key during the load."""

    history: History
    tills: list[Till]
    meters: list[str]
    seed: int
    clients: int = 8
    ops: int = 1000
    replay_share: float = 0.2
    attempts: int = 4
    amounts: tuple[int, int] = (500, 15_000)
    run_id: str = "r"
    stop: threading.Event = field(default_factory=threading.Event)
    done_ops: int = 0
    answered: list[tuple[Till, str, dict[str, Any]]] = field(default_factory=list)
    unknown: dict[tuple[str, str, str], tuple[Till, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for proc in range(self.clients):
            thread = threading.Thread(target=self._client, args=(proc,), name=f"client-{proc}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))

    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def _next(self) -> int | None:
        with self._lock:
            if self.done_ops >= self.ops or self.stop.is_set():
                return None
            self.done_ops += 1
            return self.done_ops

    def _client(self, proc: int) -> None:
        rnd = random.Random(f"{self.seed}-{proc}")
        with httpx.Client(timeout=TIMEOUT) as http:
            n = 0
            while self._next() is not None:
                n += 1
                with self._lock:
                    replay = self.answered[rnd.randrange(len(self.answered))] if self.answered else None
                if replay is not None and rnd.random() < self.replay_share:
                    till, key, body = replay
                else:
                    till = self.tills[rnd.randrange(len(self.tills))]
                    key = f"{self.run_id}-{proc}-{n}"
                    body = {"meter": self.meters[rnd.randrange(len(self.meters))], "amount": rnd.randint(*self.amounts)}
                self.attempt(http, proc, till, key, body, rnd, self.attempts)

    def attempt(
        self, http: httpx.Client, proc: int, till: Till, key: str, body: dict[str, Any], rnd: random.Random, tries: int
    ) -> Outcome:
        """Up to ``tries`` attempts of one key until a definite answer; the last outcome."""
        outcome = Outcome("info", None)
        for i in range(tries):
            op = self.history.invoke(proc, "vend", key, {**body, "api_key": till.key_owner})
            answer, error = None, None
            try:
                answer = till.vend(http, key, body)
            except httpx.HTTPError as exc:
                error = exc
            outcome = classify(answer, error)
            self.history.complete(op, outcome.kind, status=outcome.status, value=outcome.value, code=outcome.code,
                                  error=outcome.error)  # fmt: skip
            ident = (till.key_owner, key, json.dumps(body, sort_keys=True))  # a key sent with two bodies: two
            with self._lock:
                if outcome.kind == "info":
                    self.unknown[ident] = (till, body)
                else:
                    self.unknown.pop(ident, None)
                    if outcome.kind == "ok" and outcome.value and not outcome.value["replayed"]:
                        self.answered.append((till, key, body))
            if outcome.kind != "info" or self.stop.is_set():
                return outcome
            time.sleep(backoff(i, rnd))
        return outcome


def final_read(workload: Workload, deadline_s: float = 90.0, on_progress: Callable[[int], None] | None = None) -> int:
    """After the heal: every key whose last outcome is unknown, retried with the same body until definite.

    Returns how many keys are still unknown at the deadline (the checker fails them as ``unresolved``)."""
    workload.history.phase("final_read")
    rnd = random.Random(f"{workload.seed}-final")
    deadline = time.monotonic() + deadline_s
    with httpx.Client(timeout=TIMEOUT) as http:
        while workload.unknown and time.monotonic() < deadline:
            with workload._lock:
                pending = list(workload.unknown.items())
            for (_, key, _), (till, body) in pending:
                if time.monotonic() >= deadline:
                    break
                workload.attempt(http, -1, till, key, body, rnd, 3)
            if on_progress:
                on_progress(len(workload.unknown))
    return len(workload.unknown)
