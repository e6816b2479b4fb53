"""Faults by a seeded schedule: which fault, and after how many operations, follow from the seed alone.

Triggers are operation counts, not times, so one seed places its faults at the same point of the load. Each
fault is recorded in the history (``type: fault``) when it strikes; the checker measures the recovery (time to the
next acknowledged operation) from there. The nemesis runs in the main thread (see :mod:`.procs`).

| fault | what it does |
|---|---|
| ``kill_api_worker`` | SIGKILL of one ``mita serve`` worker process (uvicorn's supervisor must start another) |
| ``pause_api_worker`` | SIGSTOP of one worker for 1-3 s, then SIGCONT (a VM or GC pause) |
| ``kill_outbox_worker`` | SIGKILL of ``mita worker``, started again at once (as a supervisor would) |
| ``kill_ingest_worker`` | SIGKILL of ``mita worker ingest``, started again |
| ``pg_kill_all`` | SIGKILL of every PostgreSQL process, then a start (crash recovery) |
| ``pg_restart_immediate`` | ``pg_ctl stop -m immediate`` (SIGQUIT), then a start |
| ``pg_kill_backend`` | SIGKILL of one backend: the postmaster resets them all |
| ``pg_pause`` | SIGSTOP of every PostgreSQL process for 1-2 s |
| ``mosquitto_restart`` | SIGKILL of the broker, then a start on the same port and persistence file |
| ``kannel_restart`` | SIGKILL of Kannel's bearerbox (its SMSC link down), then bearerbox, smsbox and the link again |
| ``retry_storm`` | 16 concurrent sends of one new key, and 4 of the same key with another body |
| ``net_partition`` | the fault proxy (:mod:`.faultproxy`) moves no byte for 1-4 s, then all it held |
| ``net_reset`` | every proxied connection reset, both sides, at once |
| ``net_lose_answers`` | the next 1-4 COMMITs to PostgreSQL (within 3 s) get no answer, their link cut later |
| ``net_latency`` | 20-150 ms on every chunk, both ways, for 2-5 s |
"""

from __future__ import annotations

import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from .cluster import Cluster
from .faultproxy import FaultProxy
from .history import History
from .procs import Serve, Service
from .workload import TIMEOUT, Workload


@dataclass
class Targets:
    """What the faults act on (None: that part is not in this run)."""

    serve: Serve | None = None
    cluster: Cluster | None = None
    worker: Service | None = None
    ingest: Service | None = None
    broker: Any = None  # tests/mqtt_broker.Broker
    kannel: Any = None  # mita.channels.sms.box.Box
    workload: Workload | None = None
    proxy: FaultProxy | None = None  # between Mita's processes and the servers above


@dataclass
class Nemesis:
    history: History
    targets: Targets
    seed: int
    faults: list[str]
    counts: dict[str, int] = field(default_factory=dict)
    _rnd: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rnd = random.Random(f"nemesis-{self.seed}")

    def schedule(self, ops: int, n: int) -> list[tuple[int, str]]:
        """``n`` faults drawn from ``faults``, spread over ``ops`` operations (the last 15% left fault-free)."""
        span = int(ops * 0.85)
        points = sorted(self._rnd.randint(max(1, span // (n + 1) // 2), span) for _ in range(n))
        order = list(self.faults)
        self._rnd.shuffle(order)  # every fault named strikes (n >= len(faults)), in a seeded order
        return [(p, order[i % len(order)]) for i, p in enumerate(points)]

    def run(self, workload: Workload, plan: list[tuple[int, str]], poll: float = 0.02) -> None:
        """Strike each planned fault once the load has done its operations; returns when the load is over."""
        pending = list(plan)
        while workload.running():
            if pending and workload.done_ops >= pending[0][0]:
                _, fault = pending.pop(0)
                self.strike(fault)
                continue
            time.sleep(poll)
        for _, fault in pending:  # the load ended first (a slow machine): strike what is left, for the record
            self.strike(fault)

    def strike(self, fault: str) -> None:
        action: Callable[[], dict[str, Any]] = getattr(self, fault)
        t0 = time.monotonic()
        self.history.fault(fault, phase="strike")
        detail = action()
        self.counts[fault] = self.counts.get(fault, 0) + 1
        self.history.fault(fault, phase="healed", took_s=round(time.monotonic() - t0, 3), **detail)

    # ------------------------------------------------------------ the API's workers

    def _api_victim(self) -> int | None:
        """One of ``mita serve``'s worker processes, drawn from the seed; None when it has none right now."""
        serve = self.targets.serve
        assert serve is not None
        pids = serve.worker_pids()
        return self._rnd.choice(sorted(pids)) if pids else None

    def kill_api_worker(self) -> dict[str, Any]:
        serve = self.targets.serve
        assert serve is not None
        victim = self._api_victim()
        if victim is None:
            return {"skipped": "no worker"}
        _signal(victim, signal.SIGKILL)
        t0 = time.monotonic()
        back = serve.wait_ready(timeout=60)
        return {"pid": victim, "restart_s": round(back, 3), "since_kill_s": round(time.monotonic() - t0, 3)}

    def pause_api_worker(self) -> dict[str, Any]:
        victim = self._api_victim()
        if victim is None:
            return {"skipped": "no worker"}
        seconds = self._rnd.uniform(1.0, 3.0)
        _signal(victim, signal.SIGSTOP)
        time.sleep(seconds)
        _signal(victim, signal.SIGCONT)
        return {"pid": victim, "paused_s": round(seconds, 2)}

    # ------------------------------------------------------------ workers

    def kill_outbox_worker(self) -> dict[str, Any]:
        worker = self.targets.worker
        assert worker is not None
        worker.restart()
        return {"starts": worker.starts}

    def kill_ingest_worker(self) -> dict[str, Any]:
        ingest = self.targets.ingest
        assert ingest is not None
        ingest.restart()
        return {"starts": ingest.starts}

    # ------------------------------------------------------------ PostgreSQL (a throwaway cluster only)

    def pg_kill_all(self) -> dict[str, Any]:
        cluster = self.targets.cluster
        assert cluster is not None
        cluster.kill_all()
        time.sleep(self._rnd.uniform(0.0, 0.5))  # down for a moment: requests meet a refused connection
        return {"restart_s": round(cluster.start(), 3)}

    def pg_restart_immediate(self) -> dict[str, Any]:
        cluster = self.targets.cluster
        assert cluster is not None
        return {"restart_s": round(cluster.restart_immediate(), 3)}

    def pg_kill_backend(self) -> dict[str, Any]:
        cluster = self.targets.cluster
        assert cluster is not None
        killed = cluster.kill_backend()
        time.sleep(0.2)
        cluster.wait_ready()
        return {"killed": killed}

    def pg_pause(self) -> dict[str, Any]:
        cluster = self.targets.cluster
        assert cluster is not None
        seconds = self._rnd.uniform(1.0, 2.0)
        cluster.pause(seconds)
        return {"paused_s": round(seconds, 2)}

    # ------------------------------------------------------------ the broker

    def mosquitto_restart(self) -> dict[str, Any]:
        broker = self.targets.broker
        assert broker is not None
        t0 = time.monotonic()
        broker.restart(signal.SIGKILL)
        return {"restart_s": round(time.monotonic() - t0, 3)}

    def kannel_restart(self) -> dict[str, Any]:
        """The SMS gateway crashes (SIGKILL of bearerbox, its link down meanwhile) and comes back on its store."""
        box = self.targets.kannel
        assert box is not None
        t0 = time.monotonic()
        box.stop_smsc()
        box.kill_bearerbox()
        box.start_bearerbox()
        box.restart_smsbox()
        box.start_smsc()
        return {"restart_s": round(time.monotonic() - t0, 3)}

    # ------------------------------------------------------------ clients misbehaving

    def retry_storm(self) -> dict[str, Any]:
        """One new key sent 16 times at once (and 4 times with another amount): one vend, or none, must result."""
        workload = self.targets.workload
        assert workload is not None
        till = workload.tills[0]
        key = f"{workload.run_id}-storm-{self.counts.get('retry_storm', 0)}"
        meter = workload.meters[self._rnd.randrange(len(workload.meters))]
        body = {"meter": meter, "amount": 2_000}
        other = {"meter": meter, "amount": 2_001}
        rnd = random.Random(f"{self.seed}-{key}")

        def send(n: int) -> None:
            with httpx.Client(timeout=TIMEOUT) as http:
                workload.attempt(http, 1000 + n, till, key, other if n >= 16 else body, rnd, 1)

        threads = [threading.Thread(target=send, args=(n,)) for n in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        return {"key": key, "sends": len(threads)}

    # ------------------------------------------------------------ the network (the fault proxy)

    def _proxy(self) -> FaultProxy:
        proxy = self.targets.proxy
        assert proxy is not None, "a network fault needs the run's fault proxy"
        return proxy

    def net_partition(self) -> dict[str, Any]:
        proxy = self._proxy()
        seconds = self._rnd.uniform(1.0, 4.0)
        held, connects = proxy.stats.held, proxy.stats.connects_held
        proxy.partition()
        time.sleep(seconds)
        open_ = proxy.connections()
        proxy.heal()
        return {"partitioned_s": round(seconds, 2), "connections": open_, "chunks_held": proxy.stats.held - held,
                "connects_held": proxy.stats.connects_held - connects}  # fmt: skip

    def net_reset(self) -> dict[str, Any]:
        return {"reset": self._proxy().reset()}

    def net_lose_answers(self) -> dict[str, Any]:
        """Turn about, the cut comes within 2 s (Mita answers 503 ``retry``) or after 10-14 s (the client has given
        up first: it never hears from Mita at all). Either way only the client's retry of the key can tell."""
        commits = self._rnd.randint(1, 4)
        late = self.counts.get("net_lose_answers", 0) % 2 == 1
        hold = self._rnd.uniform(10.0, 14.0) if late else self._rnd.uniform(0.5, 2.0)
        t0 = time.monotonic()
        lost = self._proxy().lose_answers(commits, window_s=3.0, hold_s=hold)
        if late:  # no other fault (a reset) may cut the muted links before the clients' timeout
            time.sleep(max(0.0, hold - (time.monotonic() - t0)))
        return {"armed": commits, "in_doubt_commits": lost, "cut_after_s": round(hold, 2)}

    def net_latency(self) -> dict[str, Any]:
        proxy = self._proxy()
        delay = self._rnd.uniform(0.02, 0.15)
        seconds = self._rnd.uniform(2.0, 5.0)
        proxy.slow(delay)
        time.sleep(seconds)
        proxy.heal()
        return {"delay_ms": round(delay * 1000), "for_s": round(seconds, 2)}


def _signal(pid: int, sig: int) -> None:
    import contextlib
    import os

    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def heal(history: History, targets: Targets) -> float:
    """Every fault undone: PostgreSQL up, the server's workers all back and ready, the workers running."""
    t0 = time.monotonic()
    history.phase("heal")
    if targets.proxy is not None:
        targets.proxy.heal()
    if targets.cluster is not None:
        if targets.cluster.process is None or targets.cluster.process.poll() is not None:
            targets.cluster.start()
        targets.cluster.wait_ready()
    if targets.serve is not None:
        targets.serve.wait_ready(timeout=60)
    for service in (targets.worker, targets.ingest):
        if service is not None and not service.alive():
            service.start()
    return time.monotonic() - t0
