"""Vends under fire, through ``mita serve`` on a throwaway PostgreSQL: the checker finds every invariant holding.

Each test prints its one-line figures (docs/reliability.md) and the path of its history; ``MITA_REL_SEED`` replays
another seed.
"""

from __future__ import annotations

from pathlib import Path

from .cluster import Cluster
from .scenario import Plan, describe, run


def test_kill_and_pause_api_workers_and_crash_postgres(cluster: Cluster, seed: int, run_folder: Path) -> None:
    plan = Plan(
        "processes", seed, ops=1500, clients=8, meters=20,
        faults=("kill_api_worker", "pause_api_worker", "pg_kill_all", "pg_restart_immediate", "pg_kill_backend",
                "pg_pause", "retry_storm"),
        n_faults=14,
    )  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    print(f"R-05/R-06 seed={seed} {describe(outcome)}")
    assert outcome.report.ok, (str(outcome.history), outcome.report.as_json())
    assert outcome.report.figures["acknowledged"] > 800
    assert sum(outcome.fault_counts.values()) == 14


def test_remote_deliveries_survive_outbox_worker_kills_and_broker_crashes(
    cluster: Cluster, seed: int, run_folder: Path
) -> None:
    """R-18: vends for MQTT-native meters; ``mita worker`` SIGKILLed and Mosquitto SIGKILLed while the commands
    go out. Every command ends acknowledged, and each meter's own register holds exactly the credit sold."""
    plan = Plan(
        "remote", seed, ops=400, clients=4, meters=8, mqtt_meters=8, only_connected=True, outbox_worker=True,
        faults=("kill_outbox_worker", "mosquitto_restart"), n_faults=6, replay_share=0.1, drain_s=60,
    )  # fmt: skip
    outcome = run(plan, cluster, run_folder)
    print(f"R-18 seed={seed} {describe(outcome, commands=outcome.report.figures.get('commands'))}")
    assert outcome.report.ok, (str(outcome.history), outcome.report.as_json())
    assert outcome.report.figures["meters_checked_in_field"] == 8
    assert outcome.report.figures["commands"].get("acknowledged", 0) >= outcome.report.figures["vends_in_db"]
