"""The Mita processes under test: ``mita serve`` (uvicorn's supervisor and its worker processes), ``mita worker``,
``mita worker ingest``, ``mita sim mqtt``; started, found, killed, paused and restarted by the nemesis.

Every process is our child and gets SIGKILL when the harness dies (``PR_SET_PDEATHSIG``). That signal follows the
*thread* that started the child, so processes are started from the main thread only (the nemesis runs there; the
clients run in threads of their own).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

MITA = str(Path(sys.executable).with_name("mita"))
READY_S = 60.0


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class Service:
    """One long-running command: ``start``, ``kill`` (a signal), ``restart``, ``stop``; its output in ``log``."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Service:
        out = self.log.open("ab")
        self.process = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=out, preexec_fn=_die_with_parent)
        out.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.alive():
            assert self.process is not None
            self.process.send_signal(sig)
            if sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(15)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL of it and whatever it started if it does not end in 15 s."""
        if self.process is None:
            return
        kids = children(self.process.pid)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def log_tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""


class Serve(Service):
    """``mita serve --workers N``: the workers are uvicorn's spawned children; its supervisor restarts dead ones."""

    def __init__(self, env: dict[str, str], log: Path, port: int, workers: int = 2) -> None:
        argv = [MITA, "serve", "--port", str(port), "--workers", str(workers)]
        super().__init__("serve", argv, env, log)
        self.port = port
        self.workers = workers
        self.base_url = f"http://127.0.0.1:{port}"

    def worker_pids(self) -> list[int]:
        if not self.alive():
            return []
        return [
            p for p in children(self.pid) if "multiprocessing" in cmdline(p) and "resource_tracker" not in cmdline(p)
        ]

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.base_url + "/readyz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def wait_ready(self, timeout: float = READY_S, workers: bool = True) -> float:
        """Seconds until ``/readyz`` answers 200 (and, with ``workers``, all N worker processes run)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"mita serve exited: {self.log_tail()}")
            if (not workers or len(self.worker_pids()) >= self.workers) and self.ready():
                return time.monotonic() - t0
            time.sleep(0.05)
        raise RuntimeError(f"mita serve not ready in {timeout} s: {self.log_tail()}")
