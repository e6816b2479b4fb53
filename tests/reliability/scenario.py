"""One run: set a utility up on a throwaway cluster, serve it, load it while the nemesis strikes, heal, read
back every unknown outcome, stop everything, and hand the history and the database to the checker.

The tests, the canaries and ``benchmarks/soak.py`` all run through :func:`run`; what differs is passed in (the
faults, the load, hooks that break something on purpose). Every process started here is stopped in ``finally``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import checker, rig
from .cluster import Cluster
from .history import History
from .nemesis import Nemesis, Targets, heal
from .procs import Serve, Service
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
    serve_env: dict[str, str] = field(default_factory=dict)
    serve_factory: Callable[[dict[str, str], Path, int], Serve] | None = None


@dataclass
class Outcome:
    report: checker.Report
    history: Path
    folder: Path
    utility: rig.Utility
    wall_s: float
    unresolved_at_end: int
    fault_counts: dict[str, int]

    def line(self) -> str:
        return f"{self.report.line()} | wall={self.wall_s:.0f}s history={self.history}"


def run(plan: Plan, cluster: Cluster, folder: Path) -> Outcome:
    t0 = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    url = cluster.create_database(f"rel_{plan.name}_{plan.seed}")
    master = rig.new_master_key()
    utility = rig.set_up(url, plan.meters, master)
    history = History(folder / "history.jsonl")
    rig.write_setup(history, utility, seed=plan.seed, plan=plan.name, faults=list(plan.faults))
    env = rig.environment(url, master, **plan.serve_env)
    if plan.before_serve:
        plan.before_serve(cluster, url)
    server: Serve | None = None
    worker: Service | None = None
    unresolved = 0
    nemesis = Nemesis(history, Targets(), plan.seed, list(plan.faults))
    try:
        if plan.serve_factory is not None:
            server = plan.serve_factory(env, folder, plan.workers)
        else:
            server = rig.serve(env, folder, plan.workers)
        if plan.outbox_worker:
            worker = rig.outbox_worker(env, folder)
        if plan.after_serve:
            plan.after_serve(cluster, server)
        tills = [Till(server.base_url, key, name) for name, key in utility.api_keys.items()]
        workload = Workload(history, tills, utility.meters, plan.seed, clients=plan.clients, ops=plan.ops,
                            replay_share=plan.replay_share, run_id=f"{plan.name}-{plan.seed}")  # fmt: skip
        targets = Targets(serve=server, cluster=cluster, worker=worker, workload=workload)
        nemesis.targets = targets
        schedule = nemesis.schedule(plan.ops, plan.n_faults) if plan.faults else []
        history.phase("load")
        workload.start()
        nemesis.run(workload, schedule)
        workload.join(120)
        heal(history, targets)
        unresolved = final_read(workload, plan.final_read_s)
        if plan.drain_s:
            drain(url, plan.drain_s)
        history.phase("done")
    finally:
        for service in (worker, server):
            if service is not None:
                service.stop()
        history.close()
    report = checker.check(history.path, url, rig.VENDING_KEY, drained=plan.drain_s > 0)
    return Outcome(report, history.path, folder, utility, time.monotonic() - t0, unresolved, nemesis.counts)


def drain(url: str, seconds: float) -> bool:
    """Wait until no outbox row is pending (or ``seconds`` pass)."""
    import psycopg

    deadline = time.monotonic() + seconds
    with psycopg.connect(url, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute("SELECT count(*) FROM outbox WHERE status <> 'sent'").fetchone()
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
