"""One run: set a utility up on a throwaway cluster, serve it, load it while the nemesis strikes, heal, read
back every unknown outcome, stop everything, and hand the history and the database to the checker.

The tests, the canaries and ``benchmarks/soak.py`` all run through :func:`run`; what differs is passed in (the
faults, the load, hooks that break something on purpose). Every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checker, rig
from .cluster import Cluster
from .faultproxy import FaultProxy
from .history import History
from .nemesis import Nemesis, Targets, heal
from .procs import MITA, Serve, Service
from .workload import Till, Workload, final_read


@dataclass
class Plan:
    """What a run does: the load, the faults, and the hooks a canary uses to break something."""

    name: str
    seed: int
    ops: int = 1000
    clients: int = 8
    meters: int = 20
    workers: int = 2
    faults: tuple[str, ...] = ()
    n_faults: int = 0
    replay_share: float = 0.2
    outbox_worker: bool = False
    drain_s: float = 0.0  # wait for the outbox to empty (every row sent) before checking
    final_read_s: float = 90.0
    #: after set-up, before serving (drop a constraint); after serving (change a setting on the live cluster)
    before_serve: Callable[[Cluster, str], None] | None = None
    after_serve: Callable[[Cluster, Serve], None] | None = None
    before_heal: Callable[[Cluster], None] | None = None  # undo a setting that would keep the server unready
    serve_env: dict[str, str] = field(default_factory=dict)
    serve_factory: Callable[[dict[str, str], Path, int], Serve] | None = None
    #: MQTT-native meters (``mita sim mqtt`` on a broker of the run's own): the first N meters, registered
    mqtt_meters: int = 0
    only_connected: bool = False  # the load vends to the connected meters only
    #: Mita's processes reach PostgreSQL (and the broker) through the fault proxy; the harness and the checker
    #: (and the simulated meters) go straight to them
    proxy: bool = False


@dataclass
class Outcome:
    report: checker.Report
    history: Path
    folder: Path
    utility: rig.Utility
    wall_s: float
    unresolved_at_end: int
    fault_counts: dict[str, int]
    proxy_stats: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.report.line()} | wall={self.wall_s:.0f}s history={self.history}"


def run(plan: Plan, cluster: Cluster, folder: Path) -> Outcome:
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    name = f"rel_{plan.name}_{plan.seed}"
    url = cluster.create_database(name)
    master = rig.new_master_key()
    utility = rig.set_up(url, plan.meters, master)
    history = History(folder / "history.jsonl")
    rig.write_setup(history, utility, seed=plan.seed, plan=plan.name, faults=list(plan.faults))
    env = rig.environment(url, master, **plan.serve_env)
    if plan.before_serve:
        plan.before_serve(cluster, url)
    server: Serve | None = None
    worker: Service | None = None
    sim: Service | None = None
    unresolved = 0
    nemesis = Nemesis(history, Targets(), plan.seed, list(plan.faults))
    meters_dir = folder / "meters"
    proxy: FaultProxy | None = None
    with contextlib.ExitStack() as stack:
        mqtt = None
        if plan.mqtt_meters:
            from mqtt_broker import broker  # tests/ is on the path (pytest's pythonpath; soak.py inserts it)

            mqtt = stack.enter_context(broker(folder / "mosquitto"))
            env["MITA_MQTT_URL"] = mqtt.url
        mita_env = env
        if plan.proxy:
            proxy = stack.enter_context(FaultProxy())
            mita_env = proxied(proxy, env, cluster.port, mqtt.port if mqtt is not None else None)
        try:
            if plan.mqtt_meters:
                sim = start_sim(env, folder, meters_dir, plan.mqtt_meters, plan.seed, url)
            server, worker, unresolved = _load(plan, cluster, folder, mita_env, utility, history, nemesis, mqtt,
                                               proxy)  # fmt: skip
        finally:
            for service in (sim, worker, server):
                if service is not None:
                    service.stop()
            history.close()
    files = {p.stem: p for p in meters_dir.glob("*.json")} if plan.mqtt_meters else {}
    with rig.master_key(master):
        report = checker.check(history.path, url, rig.VENDING_KEY, drained=plan.drain_s > 0, meter_files=files)
    if not os.environ.get("MITA_REL_KEEP"):  # MITA_REL_KEEP=1 keeps the database (and the cluster's folder) to look at
        cluster.drop_database(name)
    stats = dict(vars(proxy.stats)) if proxy is not None else {}
    return Outcome(report, history.path, folder, utility, time.monotonic() - t0, unresolved, nemesis.counts, stats)


def proxied(proxy: FaultProxy, env: dict[str, str], pg_port: int, mqtt_port: int | None) -> dict[str, str]:
    """``env`` with PostgreSQL (and the broker) reached through links of ``proxy``."""
    proxy.add("postgres", "127.0.0.1", pg_port, postgres=True)
    out = {**env, "MITA_DATABASE_URL": proxy.url("postgres", env["MITA_DATABASE_URL"])}
    if mqtt_port is not None:
        proxy.add("mqtt", "127.0.0.1", mqtt_port)
        out["MITA_MQTT_URL"] = proxy.url("mqtt", env["MITA_MQTT_URL"])
    return out


def start_sim(env: dict[str, str], folder: Path, meters_dir: Path, n: int, seed: int, url: str) -> Service:
    """``mita sim mqtt`` over the first ``n`` meters (files made from the database, registered on MQTT); returns
    once the head-end knows them all."""
    import psycopg

    meters_dir.mkdir(parents=True, exist_ok=True)
    argv = [MITA, "sim", "mqtt", str(meters_dir), "--from-database", "--limit", str(n), "--register",
            "--speed", "60", "--interval", "60", "--seed", str(seed), "--no-sync"]  # fmt: skip
    sim = Service("sim", argv, env, folder / "sim.log").start()
    deadline = time.monotonic() + 60
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM meter_endpoints").fetchone()
            if row and row[0] >= n:
                return sim
            if not sim.alive():
                break
            time.sleep(0.2)
    sim.stop()
    raise RuntimeError(f"mita sim mqtt did not register {n} meters: {sim.log_tail()}")


def _load(
    plan: Plan, cluster: Cluster, folder: Path, env: dict[str, str], utility: rig.Utility, history: History,
    nemesis: Nemesis, mqtt: Any, proxy: FaultProxy | None = None,
) -> tuple[Serve | None, Service | None, int]:  # fmt: skip
    server: Serve | None = None
    worker: Service | None = None
    unresolved = 0
    try:
        if plan.serve_factory is not None:
            server = plan.serve_factory(env, folder, plan.workers)
        else:
            server = rig.serve(env, folder, plan.workers)
        if plan.outbox_worker:
            worker = rig.outbox_worker(env, folder)
        warm_up(server, utility)
        if plan.after_serve:
            plan.after_serve(cluster, server)
        tills = [Till(server.base_url, key, name) for name, key in utility.api_keys.items()]
        meters = utility.meters[: plan.mqtt_meters] if plan.only_connected else utility.meters
        workload = Workload(history, tills, meters, plan.seed, clients=plan.clients, ops=plan.ops,
                            replay_share=plan.replay_share, run_id=f"{plan.name}-{plan.seed}")  # fmt: skip
        targets = Targets(serve=server, cluster=cluster, worker=worker, broker=mqtt, workload=workload, proxy=proxy)
        nemesis.targets = targets
        schedule = nemesis.schedule(plan.ops, plan.n_faults) if plan.faults else []
        history.phase("load")
        workload.start()
        nemesis.run(workload, schedule)
        workload.join(120)
        if plan.before_heal:
            plan.before_heal(cluster)
        heal(history, targets)
        unresolved = final_read(workload, plan.final_read_s)
        if plan.drain_s:
            drain(utility.url, plan.drain_s)
        history.phase("done")
    except BaseException:
        for service in (worker, server):
            if service is not None:
                service.stop()
        raise
    return server, worker, unresolved


def warm_up(server: Serve, utility: rig.Utility, requests: int = 16) -> None:
    """A few reads through the gate, so that each worker has checked its database once (the gate checks until the
    database is ready, then trusts it) before the load and before a canary changes a setting."""
    import httpx

    key = next(iter(utility.api_keys.values()))
    with httpx.Client(timeout=10) as http:
        for _ in range(requests):
            http.get(f"{server.base_url}/v1/vends", params={"limit": 1}, headers={"Authorization": f"Bearer {key}"})


def drain(url: str, seconds: float) -> bool:
    """Wait until no outbox row is pending and every meter command is final (or ``seconds`` pass)."""
    import psycopg

    deadline = time.monotonic() + seconds
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM outbox WHERE status <> 'sent') + (SELECT count(*) FROM meter_commands "
                "WHERE status NOT IN ('acknowledged', 'failed', 'expired'))"
            ).fetchone()
            if row is not None and row[0] == 0:
                return True
            time.sleep(0.2)
    return False


def describe(outcome: Outcome, **extra: Any) -> str:
    """The one-line figure of a run (docs/reliability.md's format)."""
    f = outcome.report.figures
    v = outcome.report.violations
    return (
        f"ops={f.get('ops')} ok={f.get('ok')} fail={f.get('fail')} info={f.get('info')} "
        f"acknowledged={f.get('acknowledged')} in_doubt={f.get('in_doubt_keys')} "
        f"(committed {f.get('in_doubt_committed')}) lost={v['lost']} duplicated={v['duplicated']} "
        f"phantom={v['phantom']} unresolved={v['unresolved']} tid_repeats={v['tid']} decode={v['decode']} "
        f"meter_replay={f.get('meter_replay_tokens')} tokens ok={v['meter_replay'] == 0} "
        f"ledger_balanced={f.get('ledger_balanced')} audit={v['audit'] == 0} faults={outcome.fault_counts} "
        f"recovery p50={f.get('recovery_p50_s')}s max={f.get('recovery_max_s')}s wall={outcome.wall_s:.0f}s"
        + "".join(f" {k}={val}" for k, val in extra.items())
    )
