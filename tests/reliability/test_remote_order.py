"""Finding 2 (issue 16): a killed outbox worker must not let a busy meter's later commands overtake its earlier ones.

The soak saw it: ``mita worker`` killed while it held a meter's commands under lease, the next worker sent that
meter's later commands at once, and when the lease ended the held ones reached the meter behind more than 20 newer
tokens (the ``legacy-ea07`` TID store): refused ``old``, their credit never in the meter. Here it is made to
happen every time, in under a minute, on a throwaway cluster and a broker of the test's own:

1. two MQTT-native meters (``mita sim mqtt``), ``mita serve`` and ``mita worker`` (lease 12 s);
2. the worker is paused (SIGSTOP) while the busy meter gets :data:`HELD` vends (a backlog), then Mosquitto is
   paused and the worker resumed: it claims the backlog and hangs on the first publish; while it hangs the meter
   gets :data:`BEHIND` more vends (well past its TID store);
3. the worker is SIGKILLed holding its claim, the broker resumes, a new worker starts.

Meanwhile the other meter's vend reaches it at once (within the lease the busy meter waits out). Then every
command must end acknowledged, none refused ``old``, and each meter's own register must hold exactly
the credit sold (what is left plus what the household drew). Before the fix the same run ended with the held
commands refused ``old`` (the figures are in docs/reliability.md, finding 2).
"""

from __future__ import annotations

import datetime as dt
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import psycopg

from mita.meter import storage
from mita.meter.model import PER_BASE_UNIT
from mqtt_broker import broker

from . import rig
from .cluster import Cluster
from .procs import Service
from .scenario import start_sim

HELD = 6  # the busy meter's backlog when the worker dies holding its claim (all of it, or with the fix the first)
BEHIND = 26  # queued behind them while the worker hangs: more than the meter's 20 remembered TIDs
LEASE_S = 20  # the other meter's command must end within it, the new worker's start included
SETTLE_S = 60  # from the kill to every command final


def vend(http: httpx.Client, utility: rig.Utility, drn: str, amount: int) -> dict[str, Any]:
    key = next(iter(utility.api_keys.values()))
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": uuid.uuid4().hex}
    answer = http.post(f"{utility.url}/v1/vends", json={"meter": drn, "amount": amount}, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    body: dict[str, Any] = answer.json()
    assert body["delivery"] is not None, f"meter {drn} is not connected: {body}"
    return body


def commands(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(
            "SELECT c.id, m.drn, c.status, c.error, c.finished_at FROM meter_commands c "
            "JOIN meters m ON m.id = c.meter_id ORDER BY c.id"
        )
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def held_by_a_worker(url: str, drn: str) -> int:
    """The meter's command rows a worker has claimed and not settled (leased past now)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM outbox WHERE channel = 'headend' AND recipient = %s AND status = 'pending' "
            "AND attempts > 0 AND next_attempt_at > %s",
            (drn, dt.datetime.now()),
        ).fetchone()
    return int(row[0]) if row else 0


def lease_end(url: str, drn: str) -> dt.datetime:
    """When the first of the meter's held rows is due again (its lease's end), on the workers' clock."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT min(next_attempt_at) FROM outbox WHERE channel = 'headend' AND recipient = %s "
            "AND status = 'pending' AND attempts > 0",
            (drn,),
        ).fetchone()
    assert row is not None and row[0] is not None, f"meter {drn} has no held row"
    return row[0]  # type: ignore[no-any-return]


def wait_until(condition: Any, seconds: float, what: str) -> float:
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < seconds, f"timed out after {seconds} s waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - t0


def sold_and_entered(url: str, files: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Per meter: the units sold, and the units the meter's own register was ever credited with."""
    with psycopg.connect(url, autocommit=True) as conn:
        sold = dict(
            conn.execute(
                "SELECT m.drn, coalesce(sum(v.units), 0) FROM meters m JOIN vends v ON v.meter_id = m.id GROUP BY m.drn"
            ).fetchall()
        )
    out = {}
    for drn, path in files.items():
        state = storage.load(path).state
        out[drn] = (int(sold.get(drn, 0)), (int(state.registers.get(0, 0)) + int(state.consumed)) // PER_BASE_UNIT)
    return out


def test_a_killed_workers_held_commands_are_not_overtaken_by_later_ones(
    cluster: Cluster, seed: int, run_folder: Path
) -> None:
    t_start = time.monotonic()
    run_folder.mkdir(parents=True, exist_ok=True)
    name = f"rel_order_{seed}"
    url = cluster.create_database(name)
    master = rig.new_master_key()
    utility = rig.set_up(url, 2, master)
    busy, quiet = utility.meters
    services: list[Service] = []
    with broker(run_folder / "mosquitto") as mqtt:
        env = rig.environment(url, master, MITA_MQTT_URL=mqtt.url)
        meters_dir = run_folder / "meters"
        try:
            services.append(start_sim(env, run_folder, meters_dir, 2, seed, url))
            server = rig.serve(env, run_folder)
            services.append(server)
            worker = rig.outbox_worker(env, run_folder, "--lease", str(LEASE_S))
            services.append(worker)
            utility.url = server.base_url
            with httpx.Client(timeout=30) as http:
                for drn in (busy, quiet, busy):  # the path warm, every process connected
                    vend(http, utility, drn, 5_000)
                wait_until(lambda: all(c["status"] == "acknowledged" for c in commands(url)), 30, "the warm-up")

                worker.kill(signal.SIGSTOP)  # a backlog: the busy meter's commands queue up while it is paused
                for _ in range(HELD):
                    vend(http, utility, busy, 5_000)
                mqtt.process.send_signal(signal.SIGSTOP)  # the broker hangs: a publish waits for its PUBACK
                try:
                    worker.kill(signal.SIGCONT)  # it claims the backlog (all of it, or each meter's first) and hangs
                    wait_until(lambda: held_by_a_worker(url, busy) > 0, 15, "the worker's claim")
                    for _ in range(BEHIND):
                        vend(http, utility, busy, 5_000)
                    held = held_by_a_worker(url, busy)
                    assert held > 0, "the worker no longer held the busy meter's commands when it was killed"
                    worker.kill(signal.SIGKILL)
                    t_kill = time.monotonic()
                    released = lease_end(url, busy)
                finally:
                    mqtt.process.send_signal(signal.SIGCONT)
                worker.start()  # a new worker: the held rows wait for their lease, the rest are due at once
                # the other meter is not held back by the busy one: its vend reaches it before that lease ends
                quiet_id = vend(http, utility, quiet, 5_000)["delivery"]["command"]
                quiet_s = wait_until(
                    lambda: any(c["id"] == quiet_id and c["status"] == "acknowledged" for c in commands(url)),
                    SETTLE_S, "the other meter's command",
                )  # fmt: skip
                quiet_done = next(c["finished_at"] for c in commands(url) if c["id"] == quiet_id)
                assert quiet_done < released, f"the other meter's command ended {quiet_done}, the lease {released}"

                def final() -> bool:
                    return all(c["status"] in ("acknowledged", "failed", "expired") for c in commands(url))

                wait_until(final, SETTLE_S, "every command to end")
                settled_s = time.monotonic() - t_kill
        finally:
            for service in reversed(services):
                service.stop()
        files = {p.stem: p for p in meters_dir.glob("*.json")}
        ended = commands(url)
        with rig.master_key(master):  # the meter files' decoder keys are sealed under the run's key
            credit = sold_and_entered(url, files)
    cluster.drop_database(name)
    statuses = Counter(c["status"] for c in ended)
    old = [c for c in ended if c["error"] and "old" in c["error"]]
    wall = time.monotonic() - t_start
    print(
        f"finding 2 seed={seed}: {len(ended)} commands {dict(statuses)}, refused old {len(old)}, held at the kill "
        f"{held}, the other meter's vend acknowledged in {quiet_s:.1f} s, all final {settled_s:.1f} s after the "
        f"kill, credit (sold, entered) {credit}, wall {wall:.0f} s"
    )
    assert old == [], f"{len(old)} commands refused old: {old[:3]}"
    assert statuses == Counter(acknowledged=len(ended)), [c for c in ended if c["status"] != "acknowledged"][:3]
    assert len(ended) == 3 + HELD + 1 + BEHIND
    assert set(credit) == {busy, quiet}
    for drn, (sold, entered) in credit.items():
        assert entered == sold, f"meter {drn}: {entered} units entered, {sold} sold"
