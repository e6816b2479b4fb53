"""Canaries: the system broken on purpose, three ways; the checker must fail each run, naming the right invariant.

A checker that passes everything proves nothing. Each canary is the ordinary scenario with one defect:

- (a) the vend is answered before its commit (``canary_app``: a test-only patch of the server's processes, nothing
  in ``src/``); SIGKILL of API workers exposes it; the checker must name ``lost``.
- (b) the idempotency key's unique constraint dropped (in the run's throwaway database); retry storms and replays
  expose it; the checker must name ``duplicated``.
- (c) ``synchronous_commit = off`` and a 10 s WAL writer delay, set on the live throwaway cluster, with a server
  that does not read the setting with each vend (``canary_app`` with ``MITA_CANARY=c``: the product refuses such
  vends since finding 3 was closed, which the last test here shows); SIGKILL of every PostgreSQL process exposes
  it; the checker must name ``lost``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg

from . import rig
from .cluster import Cluster
from .procs import Serve
from .scenario import Plan, describe, run

TESTS = str(Path(__file__).resolve().parent.parent)


def canary_server(canary: str, env: dict[str, str], folder: Path, workers: int) -> Serve:
    from .cluster import free_port

    path = os.pathsep.join(p for p in (TESTS, env.get("PYTHONPATH", "")) if p)
    server = Serve({**env, "PYTHONPATH": path, "MITA_CANARY": canary}, folder / "serve.log", free_port(), workers)
    server.argv = [sys.executable, "-m", "reliability.canary_app", *server.argv[1:]]
    server.start()
    server.wait_ready()
    return server


def answering_before_commit(env: dict[str, str], folder: Path, workers: int) -> Serve:
    return canary_server("a", env, folder, workers)


def trusting_durability(env: dict[str, str], folder: Path, workers: int) -> Serve:
    return canary_server("c", env, folder, workers)


def test_canary_a_answer_before_commit_is_caught_as_lost(cluster: Cluster, seed: int, run_folder: Path) -> None:
    plan = Plan("canary_a", seed, ops=300, clients=8, meters=20, faults=("kill_api_worker",), n_faults=3,
                serve_factory=answering_before_commit)  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    print(f"C-3 canary (a) seed={seed} {describe(outcome)}")
    assert "lost" in outcome.report.failed, (str(outcome.history), outcome.report.as_json())
    assert outcome.report.violations["lost"] >= 1


def drop_idempotency_key(cluster: Cluster, url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ALTER TABLE idempotency DROP CONSTRAINT pk_idempotency")


def test_canary_b_missing_unique_constraint_is_caught_as_duplicated(
    cluster: Cluster, seed: int, run_folder: Path
) -> None:
    plan = Plan("canary_b", seed, ops=200, clients=6, meters=10, faults=("retry_storm",), n_faults=3,
                replay_share=0.3, before_serve=drop_idempotency_key)  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    print(f"C-4 canary (b) seed={seed} {describe(outcome)}")
    assert "duplicated" in outcome.report.failed, (str(outcome.history), outcome.report.as_json())


def asynchronous_commit(cluster: Cluster, server: Serve) -> None:
    """Set once the server is up (it refuses to start on ``synchronous_commit = off``): its pooled connections
    take the reloaded setting, and so does every connection after a crash. (``/readyz`` sees it and answers 503:
    the setting is undone before the heal, which waits for a ready server.)"""
    cluster.set(synchronous_commit="off", wal_writer_delay="10s", wal_writer_flush_after="1GB")


def test_canary_c_asynchronous_commit_and_a_postgres_crash_is_caught_as_lost(
    cluster: Cluster, seed: int, run_folder: Path
) -> None:
    plan = Plan("canary_c", seed, ops=450, clients=8, meters=20, faults=("pg_kill_all",), n_faults=6,
                after_serve=asynchronous_commit, before_heal=Cluster.reset,
                serve_factory=trusting_durability)  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    print(f"C-1 canary (c) seed={seed} {describe(outcome)}")
    assert "lost" in outcome.report.failed, (str(outcome.history), outcome.report.as_json())


def test_synchronous_commit_set_off_live_refuses_vends(cluster: Cluster, run_folder: Path) -> None:
    """Finding 3 closed: the product's server, ready and vending, then ``synchronous_commit = off`` set live (ALTER
    SYSTEM and a reload, as canary (c) sets it): every vend after it is refused, 503 ``unsafe_database``, and none
    of them is in the database; the setting undone, vends go on."""
    import httpx

    run_folder.mkdir(parents=True, exist_ok=True)
    url = cluster.create_database("rel_finding_3")
    master = rig.new_master_key()
    utility = rig.set_up(url, 4, master)
    server = rig.serve(rig.environment(url, master), run_folder)
    key = next(iter(utility.api_keys.values()))

    def vend(http: httpx.Client, n: int) -> httpx.Response:
        headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": f"f3-{n}"}
        body = {"meter": utility.meters[n % len(utility.meters)], "amount": 3000 + n}
        return http.post(f"{server.base_url}/v1/vends", json=body, headers=headers)

    try:
        with httpx.Client(timeout=30) as http:
            before = [vend(http, n).status_code for n in range(8)]
            cluster.set(synchronous_commit="off")
            cluster.shows("synchronous_commit", "off")
            refused = [vend(http, n) for n in range(8, 16)]
            cluster.reset()
            cluster.shows("synchronous_commit", "on")
            after = [vend(http, n).status_code for n in range(16, 20)]
        with psycopg.connect(url) as conn:
            stored = conn.execute("SELECT count(*) FROM idempotency WHERE key LIKE 'f3-%'").fetchone()
    finally:
        server.stop()
        cluster.drop_database("rel_finding_3")
    assert before == [201] * 8
    assert [(r.status_code, r.json()["code"]) for r in refused] == [(503, "unsafe_database")] * 8
    assert after == [201] * 4
    assert stored == (12,)  # the refused vends' claims were rolled back with them
