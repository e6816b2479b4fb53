"""R-13, a full disk: the database's file system fills up under a ballast file while vends run.

A careful till must be able to act on every answer: a vend is either committed and acknowledged, or answered with
a typed 503 (retry with the same key); never a 500, never a traceback in the server's log, never an acknowledged
vend lost. PostgreSQL may PANIC when its WAL cannot grow; it is then started again once the ballast is gone, and
the checker judges the run (every unknown outcome retried to a definite answer). SQLite, Mita's default, must
keep its file sound (``PRAGMA integrity_check``). Each test prints its figures (docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import leak_scan

from . import checker, litecheck, rig, tmpfs
from .cluster import BIN, Cluster
from .history import History
from .procs import MITA, Serve
from .scenario import warm_up
from .steps import answers, tracebacks, untyped, wait_ops
from .workload import Till, Workload, final_read

#: What a till may be answered while the disk is full: a typed "disk full" (or, mid-PANIC, a lost connection's
#: "retry", or no answer at all).
ALLOWED = frozenset({"503 disk_full", "503 retry", "503 database_unavailable", "none ConnectError", "none ReadError",
                     "none RemoteProtocolError", "none ReadTimeout"})  # fmt: skip
HOLD_S = 3.0  # how long the disk stays full (at least)
HOLD_MAX_S = 30.0  # with a condition (a PANIC): a slow workload takes longer to need a new WAL segment
ROOM = 16 * 1024  # bytes left free for the answers of mita token batch


def _load(server: Serve, utility: rig.Utility, history: History, seed: int, name: str, clients: int) -> Workload:
    tills = [Till(server.base_url, key, owner) for owner, key in utility.api_keys.items()]
    workload = Workload(history, tills, utility.meters, seed, clients=clients, ops=100_000, run_id=f"{name}-{seed}")
    history.phase("load")
    workload.start()
    return workload


def _full_disk(
    disk: Path, history: History, workload: Workload, until: Callable[[], bool] | None = None
) -> tuple[float, float, int]:
    """The ballast in while the clients vend, for :data:`HOLD_S` or, with ``until``, until it holds (at most
    :data:`HOLD_MAX_S`); (strike, heal) history times, and the operations started meanwhile."""
    history.fault("disk_full", phase="strike", free_bytes=tmpfs.free_bytes(disk))
    struck, ops = history.now(), workload.done_ops
    ballast = tmpfs.fill(disk)
    time.sleep(HOLD_S)
    deadline = time.monotonic() + HOLD_MAX_S - HOLD_S
    while until is not None and not until() and time.monotonic() < deadline:
        time.sleep(0.1)
    tmpfs.relieve(ballast)
    history.fault("disk_full", phase="heal")
    return struck, history.now(), workload.done_ops - ops


def _finish(workload: Workload, history: History, server: Serve) -> int:
    workload.stop.set()
    workload.join(60)
    history.phase("heal")
    server.wait_ready(timeout=60)
    unresolved = final_read(workload, 60)
    history.phase("done")
    return unresolved


def _cluster(data: Path, wal: Path, folder: Path) -> Cluster:
    """A cluster whose data directory is on ``data`` and its WAL on ``wal``, with 1 MiB WAL segments that are never
    recycled: the WAL needs a new file every few hundred vends, and a full disk cannot give it one (a PANIC); the
    tables cannot grow by a page on theirs (an ERROR, SQLSTATE 53100)."""
    cluster = Cluster(data / "pg")
    cluster.log = folder / "postgres.log"  # off the full disks, so that a PANIC can be read
    cluster.init()
    user = pwd.getpwnam("postgres")
    subprocess.run([str(BIN / "pg_resetwal"), "--wal-segsize=1", "-D", str(cluster.data)], check=True,
                   capture_output=True, user=user.pw_uid, group=user.pw_gid, extra_groups=[])  # fmt: skip
    segments = cluster.data / "pg_wal"
    shutil.copytree(segments, wal, dirs_exist_ok=True)
    shutil.rmtree(segments)
    segments.symlink_to(wal)
    for path in (wal, *wal.rglob("*")):
        os.chown(path, user.pw_uid, user.pw_gid)
    cluster.extra = {"max_wal_size": "8MB", "min_wal_size": "2MB", "wal_recycle": "off"}
    return cluster


def _utility(
    url: str, meters: int, run_folder: Path, seed: int, plan: str
) -> tuple[rig.Utility, History, dict[str, str]]:
    """A utility of ``meters`` on ``url``, its history opened with the run's set-up, and the servers' environment."""
    master = rig.new_master_key()
    utility = rig.set_up(url, meters, master)
    history = History(run_folder / "history.jsonl")
    rig.write_setup(history, utility, seed=seed, plan=plan, faults=["disk_full"])
    return utility, history, rig.environment(url, master)


def test_postgres_on_a_full_disk_answers_typed_errors_and_loses_nothing(seed: int, run_folder: Path) -> None:
    """The throwaway cluster's tables on a 96 MiB tmpfs and its WAL on a 16 MiB one; while 4 tills vend, the
    tables' disk is filled for 3 s (each insert that needs a new page fails), then the WAL's until PostgreSQL
    PANICs (at most 10 s); PostgreSQL is started again, if it stopped, once the ballast is gone."""
    tmpfs.require_mount()
    run_folder.mkdir(parents=True, exist_ok=True)
    postgres = pwd.getpwnam("postgres").pw_uid
    with tmpfs.mounted(96, owner=postgres) as data, tmpfs.mounted(16, owner=postgres) as wal:
        cluster = _cluster(data, wal, run_folder)
        try:
            cluster.start()
            url = cluster.create_database("rel_disk")
            utility, history, env = _utility(url, 10, run_folder, seed, "disk_pg")
            server = rig.serve(env, run_folder, workers=2)
            try:
                warm_up(server, utility)
                workload = _load(server, utility, history, seed, "disk_pg", clients=4)
                wait_ops(workload, 100)
                struck, tables_healed, ops_tables = _full_disk(data, history, workload)
                wait_ops(workload, workload.done_ops + 50)
                _, healed, ops_wal = _full_disk(wal, history, workload, lambda: "PANIC:" in cluster.log.read_text())
                stopped = cluster.process is None or cluster.process.poll() is not None
                if stopped:
                    cluster.start()
                cluster.wait_ready()
                wait_ops(workload, workload.done_ops + 100)
                unresolved = _finish(workload, history, server)
            finally:
                server.stop()
                history.close()
            report = checker.check(history.path, url, rig.VENDING_KEY)
            cluster.drop_database("rel_disk")  # the key leak scan reads every table as it is dropped
        finally:
            cluster.destroy()
    during = answers(history.path, struck, healed + 1.0)
    tables = answers(history.path, struck, tables_healed + 1.0)  # the tables' disk full, the WAL's not yet
    pg_log = cluster.log.read_text(errors="replace")
    panics, extends = pg_log.count("PANIC:"), pg_log.count("could not extend file")
    figures = {"ops_while_full": [ops_tables, ops_wal], "answers_while_full": dict(during),
               "answers_while_tables_full": dict(tables), "panics": panics,
               "postmaster_stopped": stopped, "table_extend_errors": extends, "unresolved": unresolved}  # fmt: skip
    print(f"R-13 disk full (PostgreSQL) seed={seed} {report.line()} {json.dumps(figures)}")
    assert report.ok, (str(history.path), report.as_json())
    assert not untyped(answers(history.path), ALLOWED), (answers(history.path), str(history.path))
    assert tracebacks(run_folder / "serve.log") == 0, (run_folder / "serve.log").read_text()[-3000:]
    assert sum(n for k, n in during.items() if not k.startswith("20")) > 0, ("the full disk refused nothing", during)
    assert report.figures["acknowledged"] > 200
    assert panics >= 1 and extends >= 1, figures  # both ways were tried
    # a table that cannot grow is a typed disk_full (with a warning to the operator); a request caught as the disk
    # fills or empties may still end as another 503 (a write elsewhere, a connection the server dropped): CI saw 5
    # "retry" beside 130 disk_full once
    assert tables["503 disk_full"] > 0 and tables["503 disk_full"] > tables["503 retry"], figures
    assert "WARNING mita.vend the database's disk is full (DiskFull)" in (run_folder / "serve.log").read_text()


def test_sqlite_on_a_full_disk_answers_typed_errors_and_keeps_its_file_sound(seed: int, run_folder: Path) -> None:
    """``mita serve`` and ``mita worker`` on a SQLite file of a 16 MiB tmpfs (Mita's default database), filled
    while 3 tills vend; then every receipt must still go out once, and the worker must have lived through it."""
    tmpfs.require_mount()
    run_folder.mkdir(parents=True, exist_ok=True)
    with tmpfs.mounted(16) as disk:
        path = disk / "mita.db"
        url = f"sqlite:///{path}"
        utility, history, env = _utility(url, 6, run_folder, seed, "disk_sqlite")
        server = rig.serve(env, run_folder, workers=2)
        worker = rig.outbox_worker(env, run_folder)
        try:
            warm_up(server, utility)
            workload = _load(server, utility, history, seed, "disk_sqlite", clients=3)
            wait_ops(workload, 100)
            struck, healed, ops_full = _full_disk(disk, history, workload)
            wait_ops(workload, workload.done_ops + 100)
            unresolved = _finish(workload, history, server)
            drained = litecheck.drain(path, 30)
            worker_lived = worker.alive() and worker.starts == 1
        finally:
            worker.stop()
            server.stop()
            history.close()
        sound = litecheck.integrity(path)
        report = litecheck.check(history.path, path, rig.VENDING_KEY, drained=True)
        leak_scan.active().read_sqlite_files(only_dirty=False, columns=True)  # before the tmpfs goes
    during = answers(history.path, struck, healed + 1.0)
    figures = {"ops_while_full": ops_full, "answers_while_full": dict(during), "integrity": sound,
               "unresolved": unresolved, "outbox": report.figures.get("outbox")}  # fmt: skip
    print(f"R-13 disk full (SQLite) seed={seed} {report.line()} {json.dumps(figures)}")
    assert sound == "ok"
    assert report.ok, (str(history.path), report.as_json())
    assert drained and worker_lived, (drained, worker.log_tail())
    assert not untyped(answers(history.path), ALLOWED), (answers(history.path), str(history.path))
    for log in ("serve.log", "worker.log"):
        assert tracebacks(run_folder / log) == 0, (run_folder / log).read_text()[-3000:]
    assert sum(n for k, n in during.items() if not k.startswith("20")) > 0, ("the full disk refused nothing", during)
    assert during["503 disk_full"] > 0 and "503 retry" not in during, figures  # SQLITE_FULL, typed
    assert "WARNING mita.vend the database's disk is full" in (run_folder / "serve.log").read_text()


def test_token_batch_on_a_full_disk_fails_with_a_typed_error_and_no_torn_line() -> None:
    """``mita token batch > file`` on a full disk: a non-zero exit and one typed error (``disk_full``), and what
    reached the file is whole answers only (a script that reads it cannot take half an answer for a whole one)."""
    tmpfs.require_mount()
    line = json.dumps({"op": "encode", "class": 0}) + "\n"  # an error answer of 70 bytes: no divisor of a page
    with tmpfs.mounted(1) as disk:
        ballast = tmpfs.fill(disk)
        os.truncate(ballast, ballast.stat().st_size - ROOM)  # room for a few hundred answers, then no more
        out = disk / "answers.jsonl"
        with out.open("wb") as sink:
            done = subprocess.run([MITA, "token", "batch"], input=(line * 20_000).encode(), stdout=sink,
                                  stderr=subprocess.PIPE, timeout=60, check=False)  # fmt: skip
        written = out.read_bytes()
    assert done.returncode != 0, "mita token batch said it had written everything to a full disk"
    err = done.stderr.decode(errors="replace")
    assert err.startswith("error[disk_full]: ") and "Traceback" not in err, err
    lines = written.split(b"\n")
    assert lines[-1] == b"" and len(lines) > 100, written[-200:]  # whole lines only, and those that fitted
    assert all(json.loads(x)["error"]["code"] == "missing_field" for x in lines[:-1])
