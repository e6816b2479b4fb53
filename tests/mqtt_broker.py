"""A Mosquitto of a test's own: the real broker (Debian's), on a free loopback port, with the settings the
telemetry needs (no queue limit for a persistent session, so a killed worker's share waits for it).

The machine's Mosquitto at 127.0.0.1:1883 is shared and keeps sessions on disk between runs; a test that kills
clients, restarts the broker or counts messages starts its own with :func:`broker` (or the ``mqtt_broker``
fixture) instead, and stops it with the test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Broker:
    host: str
    port: int
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(10)

    def restart(self, sig: int = signal.SIGKILL) -> None:
        """Stopped with ``sig`` (SIGKILL: a crash) and started again on the same port and persistence file."""
        self.stop(sig)
        self.process = _spawn(self.folder, self.port)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(folder: Path, port: int) -> subprocess.Popen[bytes]:
    log = (folder / "mosquitto.log").open("ab")
    process = subprocess.Popen([MOSQUITTO, "-c", str(folder / "mosquitto.conf")], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {process.returncode}: {(folder / 'mosquitto.log').read_text()}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return process
        time.sleep(0.02)
    process.kill()
    raise RuntimeError("mosquitto did not listen within 10 s")


@contextlib.contextmanager
def broker(folder: Path, *, persistence: bool = True) -> Iterator[Broker]:
    """A Mosquitto on a free port, its files in ``folder``; killed (and its children with it) on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        *(["user root"] if os.geteuid() == 0 else []),  # as root it would drop to `mosquitto`, who cannot write here
        "max_queued_messages 0",  # no limit: a persistent session's share is kept while its worker restarts
        "max_inflight_messages 0",
        f"persistence {'true' if persistence else 'false'}",
        f"persistence_location {folder}/",
        "autosave_interval 1",
        "log_type error",
        "log_type warning",
    ]
    (folder / "mosquitto.conf").write_text("\n".join(lines) + "\n")
    os.chmod(folder, 0o755)
    started = Broker("127.0.0.1", port, folder, _spawn(folder, port))
    try:
        yield started
    finally:
        started.stop(signal.SIGKILL)
