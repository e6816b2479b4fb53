"""The append-only history: every request, its idempotency key, its answer or its unknown outcome; every fault.

One JSON object per line, written by the harness process (which the nemesis never kills) and flushed line by
line, so that a crash of anything under test cannot touch it. Record types:

| ``type`` | fields | meaning |
|---|---|---|
| ``setup`` | ``api_keys``, ``meters``, ``customers``, ``seed``, ... | what the run set up (never key material) |
| ``invoke`` | ``op``, ``proc``, ``f``, ``key``, ``body`` | a client is about to send a request |
| ``ok`` | ``op``, ``status``, ``value`` | a definite success (2xx): the vend as answered |
| ``fail`` | ``op``, ``status``, ``code`` | a definite refusal with no effect (4xx, not ``in_progress``) |
| ``info`` | ``op``, ``status``, ``error`` | unknown outcome: timeout, reset, 5xx, 429, 409 ``in_progress`` |
| ``fault`` | ``fault``, ``detail`` | the nemesis did something (``t`` is when) |
| ``phase`` | ``name`` | ``load``, ``heal``, ``final_read``, ``done`` |

``t`` is seconds since the history was opened (monotonic clock). The vocabulary follows Jepsen's
(invoke / ok / fail / info): an ``info`` may or may not have taken effect.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class History:
    """A JSONL file opened for appending; thread-safe; ``op`` numbers handed out here."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("a", encoding="utf-8")
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        self._op = 0

    def now(self) -> float:
        return time.monotonic() - self._t0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps({"t": round(self.now(), 4), **record}, separators=(",", ":"), default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def invoke(self, proc: int, f: str, key: str, body: dict[str, Any] | None = None) -> int:
        with self._lock:
            self._op += 1
            op = self._op
        self.write({"type": "invoke", "op": op, "proc": proc, "f": f, "key": key, "body": body})
        return op

    def complete(self, op: int, kind: str, **fields: Any) -> None:
        assert kind in ("ok", "fail", "info")
        self.write({"type": kind, "op": op, **fields})

    def fault(self, fault: str, **detail: Any) -> None:
        self.write({"type": "fault", "fault": fault, "detail": detail})

    def phase(self, name: str) -> None:
        self.write({"type": "phase", "name": name})

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The records in order (a torn last line, from a harness killed mid-write, is skipped)."""
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
