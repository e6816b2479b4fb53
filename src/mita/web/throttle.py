"""How often one client may try something that costs us or guesses at a secret: a token bucket per client
address, in this process.

A bucket holds ``burst`` tries and refills at ``per_minute``; a client whose bucket is empty is told how long to
wait (HTTP 429 with ``Retry-After``). The buckets are this process's own: with N server processes a client gets
N times the allowance at most, which is enough against guessing (the console's lock after wrong passwords is in
the database, for every process); a utility that needs one limit over many servers sets it in its reverse proxy.
Memory is bounded: past ``max_clients`` the fullest buckets (clients that have been quiet) are forgotten.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    def __init__(
        self, per_minute: float, burst: int, *, clock: Callable[[], float] = time.monotonic, max_clients: int = 10_000
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self.max_clients = max_clients
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when counted)
        self._lock = threading.Lock()

    def wait(self, client: str) -> float:
        """0 when ``client`` may go on (a try is counted), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, then = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return (1.0 - tokens) / self.rate
            self._buckets[client] = (tokens - 1.0, now)
            if len(self._buckets) > self.max_clients:
                self._forget(now)
            return 0.0

    def _forget(self, now: float) -> None:
        """Drop the clients whose buckets are full again (nothing is lost: a full bucket is a new client's)."""
        full = [c for c, (t, then) in self._buckets.items() if t + (now - then) * self.rate >= self.burst]
        for client in full or list(self._buckets)[: len(self._buckets) // 2]:
            del self._buckets[client]
