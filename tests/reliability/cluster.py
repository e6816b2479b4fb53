"""A PostgreSQL cluster of the test's own: initdb into a temporary folder, its own port, started as our child.

Tests that crash PostgreSQL never touch the shared server at 127.0.0.1:5432. The postmaster is our child
process (so a SIGKILLed one is reaped at once and its lock file names a dead PID), it runs as ``postgres``
(PostgreSQL refuses root), and it gets SIGKILL if the process that started it dies (``PR_SET_PDEATHSIG``): a test
killed half-way leaves no cluster behind.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

BIN = Path("/usr/lib/postgresql/15/bin")
READY_S = 30.0

#: Durable settings (what Mita requires) plus a small footprint for a 2-CPU machine.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "max_connections": "60",
    "shared_buffers": "32MB",
    "log_min_messages": "warning",
    "logging_collector": "off",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres() -> None:
    """In the child, after the switch to the postgres user: die with the parent."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _children(pid: int) -> list[int]:
    """PIDs whose parent is ``pid`` (the postmaster's backends and auxiliary processes)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


class Cluster:
    """One throwaway cluster: ``start``, ``kill_all`` (SIGKILL of every process), ``restart_immediate``."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.data = folder / "data"
        self.sockets = folder / "sockets"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "postgres.log"
        self.extra: dict[str, str] = {}
        user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self._uid = user.pw_uid if user else None
        self._gid = user.pw_gid if user else None

    # ------------------------------------------------------------ set-up

    def init(self) -> Cluster:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.sockets.mkdir(exist_ok=True)
        for path in (self.folder, self.sockets):
            if self._uid is not None:
                os.chown(path, self._uid, self._gid or 0)
        argv = [str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"]
        done = subprocess.run(argv, capture_output=True, check=False, **self._user())  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.decode(errors='replace')[-2000:]}")
        # in postgresql.conf, not on the command line: a command-line setting would outrank ALTER SYSTEM (a canary)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("".join(f"{name} = '{value}'\n" for name, value in SETTINGS.items()))
        return self

    def _user(self) -> dict[str, object]:
        if self._uid is None:
            return {}
        return {"user": self._uid, "group": self._gid, "extra_groups": [], "cwd": str(self.folder)}

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Dropped (the key leak scan reads a database as it is dropped: every table is scanned for keys)."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    # ------------------------------------------------------------ life

    def start(self) -> float:
        """Start the postmaster and wait until it takes connections; the seconds that took."""
        t0 = time.monotonic()
        self._clear_stale_lock()
        settings = {**self.extra, "port": str(self.port), "unix_socket_directories": str(self.sockets)}
        argv = [str(BIN / "postgres"), "-D", str(self.data)]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        out = self.log.open("ab")
        self.process = subprocess.Popen(argv, stdout=out, stderr=out, preexec_fn=_as_postgres, **self._user())  # type: ignore[call-overload]
        out.close()
        self.wait_ready()
        return time.monotonic() - t0

    def wait_ready(self, timeout: float = READY_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            try:
                with psycopg.connect(self.admin_url, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise RuntimeError(f"postgres not ready in {timeout} s: {self.log_tail()}")

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""

    def _clear_stale_lock(self) -> None:
        """A lock file whose postmaster is gone (we reaped it) is stale; PostgreSQL checks too, this is belt only."""
        lock = self.data / "postmaster.pid"
        if lock.exists():
            with contextlib.suppress(ValueError, OSError):
                pid = int(lock.read_text().split()[0])
                if self.process is None or self.process.pid != pid or self.process.poll() is not None:
                    os.kill(pid, 0)  # raises if gone
                    return
            with contextlib.suppress(OSError):
                lock.unlink()

    def pids(self) -> list[int]:
        if self.process is None or self.process.poll() is not None:
            return []
        return [self.process.pid, *_children(self.process.pid)]

    def kill_all(self) -> None:
        """SIGKILL of every PostgreSQL process at once: a crash of the whole server.

        The postmaster is stopped first, so that no backend is forked after the list is made: one forked just
        then outlived the crash, an orphan holding the old shared memory until its authentication timed out
        (60 s), and the new postmaster would not start beside it (seen once in six runs, when the API reconnected
        at once)."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGSTOP)
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)
        deadline = time.monotonic() + 5
        while any(_alive(p) for p in pids[1:]) and time.monotonic() < deadline:
            time.sleep(0.01)

    def kill_backend(self) -> bool:
        """SIGKILL of one client backend: the postmaster resets every backend (crash recovery, same PID)."""
        if self.process is None:
            return False
        backends = [p for p in _children(self.process.pid) if "postgres: postgres" in _cmdline(p)]
        if not backends:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(backends[-1], signal.SIGKILL)
        return True

    def stop(self, mode: str = "fast") -> None:
        """``fast`` (SIGINT), ``immediate`` (SIGQUIT: no checkpoint, WAL replay at the next start)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT if mode == "immediate" else signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill_all()

    def restart_immediate(self) -> float:
        self.stop("immediate")
        return self.start()

    def pause(self, seconds: float) -> None:
        """SIGSTOP of the postmaster and every backend for ``seconds``, then SIGCONT."""
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        time.sleep(seconds)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def set(self, **settings: str) -> None:
        """ALTER SYSTEM and reload: sessions already open take a reloadable setting too."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name, value in settings.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            conn.execute("SELECT pg_reload_conf()")

    def shows(self, name: str, value: str, timeout: float = 15.0) -> None:
        """Wait until a new session shows ``name`` at ``value``: the postmaster has reloaded and signalled every
        session, which takes the setting before its next command (no sleep that a loaded machine outlasts)."""
        deadline = time.monotonic() + timeout
        while True:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                row = conn.execute(f"SHOW {name}").fetchone()
            if row is not None and row[0] == value:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} still {row[0] if row else None!r}, not {value!r}, after {timeout:g} s")
            time.sleep(0.05)

    def reset(self) -> None:
        """Every ALTER SYSTEM undone, and reloaded."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute("ALTER SYSTEM RESET ALL")
            conn.execute("SELECT pg_reload_conf()")

    def destroy(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill_all()
        if not os.environ.get("MITA_REL_KEEP"):
            shutil.rmtree(self.folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def throwaway(prefix: str = "mita-rel-pg-") -> Iterator[Cluster]:
    """A started cluster in a new temporary folder; killed and removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    cluster = Cluster(folder).init()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.destroy()
