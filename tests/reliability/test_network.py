"""Network faults between Mita's processes and the servers they use, through the fault proxy (:mod:`.faultproxy`).

The API's workers and ``mita worker`` reach PostgreSQL (and, in the second run, Mosquitto) only through the proxy,
which partitions, resets, slows and, for PostgreSQL, loses the answers to COMMITs that did reach the server: the
in-doubt commit a client can only resolve by retrying with the same idempotency key. The harness, the simulated
meters and the checker go straight to the servers. Each test prints its one-line figures (docs/reliability.md).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from .cluster import Cluster
from .faultproxy import FaultProxy
from .scenario import Plan, describe, run

NET = ("net_partition", "net_reset", "net_lose_answers", "net_latency")


def test_the_proxy_does_what_each_fault_says(cluster: Cluster) -> None:
    """The faults themselves, on one connection to the run's cluster: a partition holds a query until the heal,
    and a new connection times out; a reset fails the next query; a lost answer leaves a COMMIT that failed for
    the client but holds in the database; latency delays each round trip."""
    url = cluster.create_database("rel_proxy")
    with FaultProxy() as proxy:
        proxy.add("postgres", "127.0.0.1", cluster.port, postgres=True)
        via = proxy.url("postgres", url)
        with psycopg.connect(via, autocommit=True) as conn:
            conn.execute("CREATE TABLE t (x int)")
            proxy.partition()
            threading.Timer(1.0, proxy.heal).start()
            t0 = time.monotonic()
            assert conn.execute("SELECT 2").fetchone() == (2,)
            assert time.monotonic() - t0 >= 0.9
            proxy.partition()
            with pytest.raises(psycopg.OperationalError):
                psycopg.connect(via, connect_timeout=1)
            proxy.heal()
            assert proxy.reset() >= 1
            with pytest.raises(psycopg.OperationalError):
                conn.execute("SELECT 3")
        with psycopg.connect(via) as conn:
            conn.execute("INSERT INTO t VALUES (1)")
            proxy.arm(1, hold_s=0.5)
            with pytest.raises(psycopg.OperationalError):
                conn.commit()
        assert proxy.stats.in_doubt == 1
        with psycopg.connect(url) as direct:
            assert direct.execute("SELECT count(*) FROM t").fetchone() == (1,)  # committed, though never answered
        proxy.slow(0.2)
        with psycopg.connect(via, autocommit=True) as conn:
            t0 = time.monotonic()
            conn.execute("SELECT 1")
            assert time.monotonic() - t0 >= 0.35  # 0.2 s up, 0.2 s back
        proxy.heal()
    cluster.drop_database("rel_proxy")


def test_vends_and_outbox_through_partitions_resets_lost_answers_and_latency(
    cluster: Cluster, seed: int, run_folder: Path
) -> None:
    """R-07/R-09: vends and the outbox worker's deliveries while every link to PostgreSQL fails in turn; every
    in-doubt commit is resolved by the client's retry, and none is lost or doubled."""
    plan = Plan(
        "network", seed, ops=1400, clients=8, meters=20, faults=NET, n_faults=8, outbox_worker=True, drain_s=60,
        proxy=True,
    )  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    f = outcome.report.figures
    print(f"R-07/R-09 seed={seed} {describe(outcome, proxy=outcome.proxy_stats)}")
    assert outcome.report.ok, (str(outcome.history), outcome.report.as_json())
    assert f["acknowledged"] > 600
    assert sum(outcome.fault_counts.values()) == 8
    assert outcome.proxy_stats["in_doubt"] > 0, "no COMMIT's answer was lost: the in-doubt rule never fired"
    assert f["in_doubt_keys"] > 0


def test_remote_deliveries_through_a_failing_broker_link(cluster: Cluster, seed: int, run_folder: Path) -> None:
    """R-18 over a bad network: ``mita worker`` reaches Mosquitto and PostgreSQL through the proxy while it
    delivers tokens to MQTT-native meters (a lost answer to its COMMIT sends a command again); every command ends
    acknowledged, each meter's register is the credit sold: every token applied once."""
    plan = Plan(
        "netremote", seed, ops=300, clients=4, meters=8, mqtt_meters=8, only_connected=True, outbox_worker=True,
        faults=NET, n_faults=6, replay_share=0.1, drain_s=60, proxy=True,
    )  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    f = outcome.report.figures
    print(f"R-18/R-09 seed={seed} {describe(outcome, commands=f.get('commands'), proxy=outcome.proxy_stats)}")
    assert outcome.report.ok, (str(outcome.history), outcome.report.as_json())
    assert f["meters_checked_in_field"] == 8
    assert f["commands"].get("acknowledged", 0) >= f["vends_in_db"]
    assert outcome.proxy_stats["resets"] > 0
