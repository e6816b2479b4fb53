"""The console's server for the browser tests, and signing in: what the fixtures (conftest.py) and tests share.

:func:`start` runs what an installation runs: the seeded database (:mod:`.seed`), the console's operators made with
``mita console user add NAME --role ROLE --password-stdin``, ``mita serve`` on a free loopback port and
``mita worker`` beside it (campaigns are generated as outbox jobs), as processes, their logs kept in
``tests/web/artifacts/_server/``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mita.vend import database

from .browser import ARTIFACTS, Watched
from .seed import Seeded, secrets_of, seed

MITA = Path(sys.executable).with_name("mita")
READY_TIMEOUT_S = 60


@dataclass(frozen=True)
class Operator:
    name: str
    password: str
    role: str


@dataclass
class Console:
    """The running console: where it is, its database, who may sign in, what was seeded, its processes' logs."""

    base_url: str
    database_url: str
    admin: Operator
    operator: Operator
    seeded: Seeded
    logs: dict[str, Path]
    processes: dict[str, subprocess.Popen[bytes]]
    secrets: dict[str, str]  # what no page may show (keys, the master key, passwords), by label

    def url(self, path: str = "/console/") -> str:
        return self.base_url + path

    def log_sizes(self) -> dict[str, int]:
        return {name: path.stat().st_size if path.exists() else 0 for name, path in self.logs.items()}

    def tracebacks_since(self, sizes: dict[str, int]) -> list[str]:
        """What the server and worker logged after ``sizes`` that holds a traceback (or an ERROR line)."""
        found = []
        for name, path in self.logs.items():
            with path.open("rb") as f:
                f.seek(sizes.get(name, 0))
                new = f.read().decode("utf-8", "replace")
            if "Traceback" in new or " ERROR " in new:
                found.append(f"--- {name} ({path}):\n{new[-4000:]}")
        return found

    @contextmanager
    def worker_paused(self) -> Iterator[None]:
        """``mita worker`` stopped (SIGSTOP) while the block runs, so that a test sees a job queued before it runs.

        A worker stopped inside a write transaction would hold SQLite's write lock until it is continued: the
        pause is taken only when a write transaction of our own can start (and is let go at once)."""
        worker = self.processes["worker"]
        path = self.database_url.removeprefix("sqlite:///")
        for _ in range(50):
            worker.send_signal(signal.SIGSTOP)
            probe = sqlite3.connect(path, timeout=0.2, isolation_level=None)
            try:
                probe.execute("BEGIN IMMEDIATE")
                probe.execute("ROLLBACK")
                break
            except sqlite3.OperationalError:
                worker.send_signal(signal.SIGCONT)
                time.sleep(0.05)
            finally:
                probe.close()
        else:
            raise AssertionError("the worker held the database's write lock at every try")
        try:
            yield
        finally:
            worker.send_signal(signal.SIGCONT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(base: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mita serve exited with {process.returncode}:\n{log.read_text(errors='replace')[-4000:]}")
        try:
            with urllib.request.urlopen(base + "/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    pytest.fail(f"mita serve did not become ready at {base} in {READY_TIMEOUT_S} s:\n{log.read_text()[-4000:]}")


def _add_operator(env: dict[str, str], name: str, role: str) -> Operator:
    password = "pw-" + secrets.token_urlsafe(12)
    done = subprocess.run(
        [str(MITA), "console", "user", "add", name, "--role", role, "--password-stdin"],
        input=password + "\n", capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (
        f"`mita console user add {name} --role {role} --password-stdin` failed ({done.returncode}):\n"
        f"{done.stdout}{done.stderr}"
    )
    assert password not in done.stdout + done.stderr, "the password was echoed"
    return Operator(name, password, role)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextmanager
def start(folder: Path) -> Iterator[Console]:
    """Seed a SQLite database in ``folder``, make the operators, run the server and the worker; stop them after."""
    url = f"sqlite:///{folder}/console.db"
    logs_dir = ARTIFACTS / "_server"
    shutil.rmtree(logs_dir, ignore_errors=True)
    logs_dir.mkdir(parents=True)
    master_key = secrets.token_hex(32)
    # every test signs in from 127.0.0.1: the per-address sign-in limit is for people, not for this suite
    env = {
        **os.environ,
        "MITA_MASTER_KEY": master_key,
        "MITA_DATABASE_URL": url,
        "MITA_CONSOLE_SIGNINS_PER_MINUTE": "10000",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", master_key)  # the seed seals its vending keys under it, in this process
        database.upgrade(url)
        engine = database.make_engine(url)
        try:
            seeded = seed(engine)
        finally:
            engine.dispose()  # one connection at a time on SQLite: the seed's are closed before the server starts
    admin = _add_operator(env, "alice", "admin")
    operator = _add_operator(env, "oscar", "operator")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    logs = {"serve": logs_dir / "serve.log", "worker": logs_dir / "worker.log"}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        with logs["serve"].open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [str(MITA), "serve", "--port", str(port)], cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            )
        _wait_ready(base, processes[0], logs["serve"])
        with logs["worker"].open("wb") as out:
            processes.append(
                subprocess.Popen(
                    [str(MITA), "worker", "--poll-interval", "0.2"],
                    cwd=folder,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            )
        hidden = secrets_of(seeded) | {"the master key": master_key}
        hidden |= {f"{who.name}'s password": who.password for who in (admin, operator)}
        running = dict(zip(("serve", "worker"), processes, strict=True))
        yield Console(base, url, admin, operator, seeded, logs, running, hidden)
    finally:
        for process in reversed(processes):
            _stop(process)


def sign_in(page: Watched, who: Operator) -> None:
    """Sign in on the login form, as a person would, and land on the dashboard."""
    page.goto("/console/login")
    page.page.get_by_label("Name").fill(who.name)
    page.page.get_by_label("Password").fill(who.password)
    page.page.get_by_role("button", name="Sign in").click()
    page.page.wait_for_url(page.base_url + "/console/")
    page.shot("signed-in")
