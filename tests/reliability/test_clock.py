"""R-14, clock jumps: the wall clock of ``mita serve``'s workers jumps back hours and forward days while tills vend.

A meter keeps the TIDs (issue minutes) of the tokens it took and refuses one that is not newer: a TID that repeats
or goes back after the host's clock was stepped back (NTP, a VM restored from a snapshot) is credit the customer
paid for and cannot load. Mita takes a TID from the clock but never at or below the meter's last one, so after a
jump back it counts on from the last, ahead of the clock, until the clock catches up. A jump forward must not refuse
vends without a typed answer; a key whose issue date the jump passes is refused as ``key_expired`` (409).

A clock more than ``MITA_MAX_CLOCK_SKEW`` off PostgreSQL's stops the server selling (every write 503
``clock_skew``, :mod:`mita.vend.clockcheck`) and its outbox worker claiming: the second test holds a 3-day jump to
that. The first allows a skew beyond its jumps, to test the TID rules beneath the check (a jump within the allowed
skew, or one in the seconds before a check sees it).

The clock is moved with :mod:`.clock_app` (the composition root's clock plus an offset the test writes): the host's
clock is shared by every process on the machine, and libfaketime is not installed. The checker then judges the
run: (meter, TID) unique and increasing, every token decodes, a virtual meter fed each meter's tokens in TID order
accepts every one and holds the credit sold.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from mita import sts
from mita.vend import clockcheck

from . import checker, clock_app, rig
from .cluster import Cluster, free_port
from .history import History, read
from .procs import Serve
from .scenario import drain, warm_up
from .steps import answers, tracebacks, untyped
from .workload import Till, Workload, final_read

TESTS = str(Path(__file__).resolve().parent.parent)
HOUR, DAY = 3600, 86400
BASE_DATE = 2014  # the sample supply group's
#: (name, clock offset in seconds, operations): as it is, back 6 hours, forward 3 days, corrected back to true
STEPS = (("true", 0, 80), ("back_6h", -6 * HOUR, 80), ("forward_3d", 3 * DAY, 80), ("corrected", 0, 80))
KEY_LIFE = dt.timedelta(days=10)  # the vending key's issue date: a jump of 30 days passes it
EXPIRED_STEP = ("forward_30d", 30 * DAY, 40)
DRAIN_S = 5.0  # a worker polling every 0.2 s sends a few dozen receipts in well under this
SEEN_S = 15.0  # each server process's clock check compares every 5 s: a jump (or its correction) is seen within
#: The first test's servers allow a skew past its jumps: it tests the TID rules beneath the clock check (what a
#: jump inside MITA_MAX_CLOCK_SKEW, or one in the seconds before a check sees it, does to the TIDs)
BEYOND_THE_JUMPS = str(40 * DAY)


def serve_on_moved_clock(env: dict[str, str], folder: Path, clock_file: Path) -> Serve:
    path = os.pathsep.join(p for p in (TESTS, env.get("PYTHONPATH", "")) if p)
    server = Serve({**env, "PYTHONPATH": path, clock_app.ENV: str(clock_file)}, folder / "serve.log", free_port(), 2)
    server.argv = [sys.executable, "-m", "reliability.clock_app", *server.argv[1:]]
    server.start()
    server.wait_ready()
    return server


def expire_key_in(url: str, life: dt.timedelta) -> dt.datetime:
    """The run's vending key issues no credit after ``life`` from now (set before serving: workers cache keys)."""
    until = (dt.datetime.now() + life).replace(microsecond=0)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE vending_keys SET issued_until = %s", (until,))
    return until


def step(history: History, tills: list[Till], utility: rig.Utility, seed: int, name: str, ops: int) -> Workload:
    workload = Workload(history, tills, utility.meters, seed, clients=4, ops=ops, run_id=f"clock-{name}-{seed}")
    workload.start()
    workload.join(120)
    final_read(workload, 30)
    return workload


def leads(history: Path) -> dict[str, tuple[float, float]]:
    """Per step, the least and the most an issued TID was ahead of the true clock when it was answered (minutes):
    how far the TIDs ran ahead of a clock set back, or with a clock set forward."""
    out: dict[str, list[float]] = {}
    name = "setup"
    for r in read(history):
        if r["type"] == "phase":
            name = r["name"]
        elif r["type"] == "ok" and r.get("value") and not r["value"]["replayed"]:
            true = sts.tid_from_datetime(dt.datetime.fromisoformat(r["wall"]), BASE_DATE) if "wall" in r else None
            for t in r["value"]["tokens"]:
                if true is not None:
                    out.setdefault(name, []).append(float(t["tid"] - true))
    return {k: (min(v), max(v)) for k, v in out.items()}


class WallHistory(History):
    """The history with each answer's true wall-clock time beside it (to measure how far TIDs lead the clock)."""

    def complete(self, op: int, kind: str, **fields: object) -> None:
        super().complete(op, kind, wall=dt.datetime.now().replace(microsecond=0).isoformat(), **fields)


def test_tids_stay_unique_and_increasing_across_clock_jumps(cluster: Cluster, seed: int, run_folder: Path) -> None:
    run_folder.mkdir(parents=True, exist_ok=True)
    name = f"rel_clock_{seed}"
    url = cluster.create_database(name)
    master = rig.new_master_key()
    utility = rig.set_up(url, 8, master)
    expire_key_in(url, KEY_LIFE)
    history = WallHistory(run_folder / "history.jsonl")
    rig.write_setup(history, utility, seed=seed, plan="clock", faults=["clock_jump"])
    clock_file = run_folder / "clock_offset"
    clock_app.jump(clock_file, 0)
    env = rig.environment(url, master, MITA_MAX_CLOCK_SKEW=BEYOND_THE_JUMPS)
    server = serve_on_moved_clock(env, run_folder, clock_file)
    expired_from = 0.0
    try:
        warm_up(server, utility)
        tills = [Till(server.base_url, key, owner) for owner, key in utility.api_keys.items()]
        for step_name, offset, ops in (*STEPS, EXPIRED_STEP):
            if step_name == EXPIRED_STEP[0]:
                expired_from = history.now()
            clock_app.jump(clock_file, offset)
            history.fault("clock_jump", phase="strike", seconds=offset)
            history.phase(step_name)
            step(history, tills, utility, seed, step_name, ops)
        clock_app.jump(clock_file, 0)
        history.phase("done")
    finally:
        server.stop()
        history.close()
    with rig.master_key(master):
        report = checker.check(history.path, url, rig.VENDING_KEY)
    if not os.environ.get("MITA_REL_KEEP"):
        cluster.drop_database(name)
    expired = answers(history.path, since=expired_from)
    per_step = leads(history.path)
    figures = {"tid_lead_minutes": per_step, "answers_after_key_expiry": dict(expired)}
    print(f"R-14 clock jumps seed={seed} {report.line()} {json.dumps(figures)}")
    assert report.ok, (str(history.path), report.as_json())
    assert report.figures["acknowledged"] >= 200
    assert not untyped(answers(history.path), frozenset()), answers(history.path)
    assert tracebacks(run_folder / "serve.log") == 0, (run_folder / "serve.log").read_text()[-3000:]
    # back 6 hours: the TIDs ran on from the last ones, ahead of the clock (never back to the clock's minute)
    assert per_step["back_6h"][0] > -5, per_step
    # forward 3 days: issued on the clock's minute (about 4,320 ahead); corrected: still above those, never back
    assert per_step["forward_3d"][0] >= 3 * 24 * 60 - 5, per_step
    assert per_step["corrected"][0] > per_step["forward_3d"][0], per_step
    # the key's issue date passed: every new purchase refused with its code, nothing sold
    assert expired["409 key_expired"] > 0 and not any(k.startswith("201") for k in expired), expired


def probe(till: Till) -> str:
    """A write the gate answers before any route runs, and that writes nothing (an empty vend body: 422 on a true
    clock): ``"<status> <code>"``."""
    headers = {"Authorization": f"Bearer {till.api_key}", "Idempotency-Key": f"probe-{uuid.uuid4()}"}
    try:
        answer = httpx.post(f"{till.base_url}/v1/vends", json={}, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        return f"none {type(exc).__name__}"
    body = answer.json() if answer.headers.get("content-type", "").endswith("json") else {}
    return f"{answer.status_code} {body.get('code', '')}"


def seen_by_both(server: Serve, text: str, since: int) -> None:
    """Wait until both server processes logged ``text`` past ``since`` (the log's size before): each process's
    clock check saw the jump, which a sleep of one interval does not prove on a loaded machine."""
    deadline = time.monotonic() + SEEN_S + clockcheck.INTERVAL
    while server.log.read_bytes()[since:].decode(errors="replace").count(text) < 2:
        assert time.monotonic() < deadline, f"not both processes logged {text!r}: {server.log_tail()}"
        time.sleep(0.2)


def until_probe(till: Till, wanted: Callable[[str], bool], seconds: float) -> tuple[float, str]:
    """Probe until ``wanted`` holds (or ``seconds`` pass): the seconds it took (inf: never) and the last answer."""
    started = time.monotonic()
    last = probe(till)
    while not wanted(last):
        if time.monotonic() - started > seconds:
            return float("inf"), last
        time.sleep(0.2)
        last = probe(till)
    return time.monotonic() - started, last


def ahead_of_now(url: str, lead: dt.timedelta, tid_lead: dt.timedelta) -> dict[str, int]:
    """Rows written more than ``lead`` ahead of the true clock (vends and outbox rows made or due), and TIDs more
    than ``tid_lead`` ahead (a meter's TIDs count on a minute a vend from its last one: a busy meter's run ahead)."""
    later = dt.datetime.now() + lead
    tid = sts.tid_from_datetime(dt.datetime.now() + tid_lead, BASE_DATE)
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM vends WHERE created_at > %(t)s),"
            " (SELECT count(*) FROM outbox"
            "  WHERE created_at > %(t)s OR (status = 'pending' AND next_attempt_at > %(t)s)),"
            " (SELECT count(*) FROM tokens WHERE base_date = %(b)s AND tid > %(tid)s)",
            {"t": later, "b": BASE_DATE, "tid": tid},
        ).fetchone()
    assert row is not None
    return dict(zip(("vends", "outbox", "tids"), (int(n) for n in row), strict=True))


def test_a_forward_jump_refuses_writes_until_corrected_and_writes_nothing_in_the_future(
    cluster: Cluster, seed: int, run_folder: Path
) -> None:
    """The API's host clock jumps 3 days forward and is corrected; ``mita worker`` runs on a clock that did not
    jump (another host, or the same one after the correction). Within a clock check's interval the API refuses
    every write with 503 ``clock_skew``; the tills' vends refused meanwhile go through once the clock is put right
    (retried with their keys); no vend, outbox row or TID is ever written in the future, and every receipt goes
    out within seconds of the correction."""
    run_folder.mkdir(parents=True, exist_ok=True)
    name = f"rel_clock_outbox_{seed}"
    url = cluster.create_database(name)
    master = rig.new_master_key()
    utility = rig.set_up(url, 4, master)
    history = History(run_folder / "history.jsonl")
    rig.write_setup(history, utility, seed=seed, plan="clock_outbox", faults=["clock_jump"])
    clock_file = run_folder / "clock_offset"
    clock_app.jump(clock_file, 0)
    env = rig.environment(url, master)
    server = serve_on_moved_clock(env, run_folder, clock_file)
    worker = rig.outbox_worker(env, run_folder)
    refused_after = restored_after = float("inf")
    try:
        tills = [Till(server.base_url, key, owner) for owner, key in utility.api_keys.items()]
        step(history, tills, utility, seed, "true", 10)
        if not drain(url, 30):  # the control: on a true clock, the worker sends every receipt
            raise RuntimeError(f"the worker did not send the receipts of a true clock: {worker.log_tail()}")
        since = server.log.stat().st_size
        clock_app.jump(clock_file, 3 * DAY)
        history.fault("clock_jump", phase="strike", seconds=3 * DAY)
        refused_after, first = until_probe(tills[0], lambda a: a == "503 clock_skew", SEEN_S)
        assert first == "503 clock_skew", f"a write {SEEN_S:.0f} s after a 3-day jump was answered {first}"
        seen_by_both(server, "this server's clock is", since)  # one process saw it: the other's within an interval
        history.phase("forward_3d")
        skewed_from = history.now()
        skewed = Workload(history, tills, utility.meters, seed, clients=4, ops=20, run_id=f"clock-skewed-{seed}")
        skewed.start()
        skewed.join(120)
        skewed_until = history.now()
        since = server.log.stat().st_size
        clock_app.jump(clock_file, 0)
        history.fault("clock_jump", phase="strike", seconds=0)
        restored_after, first = until_probe(tills[0], lambda a: a != "503 clock_skew", SEEN_S)
        assert first == "422 invalid_request", f"a write {SEEN_S:.0f} s after the correction was answered {first}"
        seen_by_both(server, "agrees with the database's again", since)
        history.phase("corrected")
        unresolved = final_read(skewed, 60)  # the refused vends, retried with their keys on the true clock
        step(history, tills, utility, seed, "after", 10)
        drained = drain(url, DRAIN_S)
        history.phase("done")
    finally:
        worker.stop()
        server.stop()
        history.close()
    with rig.master_key(master):
        report = checker.check(history.path, url, rig.VENDING_KEY)
    future = ahead_of_now(url, dt.timedelta(minutes=2), dt.timedelta(hours=1))  # 3 days ahead, were they issued
    with psycopg.connect(url) as conn:
        states: dict[str, int] = dict(conn.execute("SELECT status, count(*) FROM outbox GROUP BY status").fetchall())
    if not os.environ.get("MITA_REL_KEEP"):
        cluster.drop_database(name)
    during = answers(history.path, skewed_from, skewed_until)
    figures = {"refused_after_s": round(refused_after, 1), "served_again_after_s": round(restored_after, 1),
               "answers_while_skewed": dict(during), "unresolved": unresolved, "written_ahead": future,
               "drained": drained, "outbox": states}  # fmt: skip
    print(f"R-14 forward jump, writes refused seed={seed} {report.line()} {json.dumps(figures)}")
    assert set(during) == {"503 clock_skew"}, during  # every vend refused, with its code; none sold in the future
    assert unresolved == 0 and report.ok, (str(history.path), report.as_json())
    assert future == {"vends": 0, "outbox": 0, "tids": 0}, future
    assert states.get("pending", 0) == 0 and drained, f"after {DRAIN_S:.0f} s: {states}"
