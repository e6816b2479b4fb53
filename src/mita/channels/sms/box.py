"""Kannel on loopback: its configuration for Mita, and a running gateway with Kannel's own fake SMSC (for tests,
the benchmark and the demo; a utility runs its Kannel as a service, from :func:`config`).

The layout was verified on Debian's Kannel 1.4.5 (``kannel`` and ``kannel-extras``): bearerbox and smsbox bound to
127.0.0.1, the MT queue kept in a store file (it survives a SIGKILL of bearerbox), inbound messages to Mita's hook
with ``max-messages = 0`` (the HTTP answer never becomes an SMS: no reply loops) and retried with the same ``%I``.
Kannel refuses a comment after a value, so comments stand on their own lines. The fake SMSC (``fakesmsc``) connects
to bearerbox and prints every message it receives as ``Got message N: <from to text ...>``; a line written to its
standard input is an inbound SMS.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FAKESMSC = Path("/usr/lib/kannel/test/fakesmsc")
#: smsbox's retries of a callback Mita did not answer 200 (``http-request-retry``, ``http-queue-delay``): five
#: minutes of Mita away (a database restart or failover, the API restarted). smsbox acknowledges a delivery report to
#: bearerbox before it calls Mita and keeps the retries in memory: when they run out the report is gone for good, and
#: its payment waits a day for the delivery sweep (5 retries a second apart lost every report of a 6 s outage).
CALLBACK_RETRIES = 60
CALLBACK_RETRY_DELAY_S = 5
_GOT = re.compile(r"Got message \d+: <(\S+) (\S+) (?:\S+ )?text (.*)>\s*$")


def _die_with_parent() -> None:
    """In the child, before Kannel starts: SIGTERM it when the process that started it dies (a demo killed without
    its clean-up must not leave a gateway running). Linux's prctl(PR_SET_PDEATHSIG); elsewhere nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG


def installed() -> bool:
    return shutil.which("bearerbox") is not None and FAKESMSC.exists()


def config(*, mo_url: str, folder: Path, admin: int, smsbox: int, sendsms: int, smsc: int, password: str) -> str:
    """A Kannel configuration: bearerbox and smsbox on loopback, a store file, ``smsc = fake`` on port ``smsc``
    (replace that group with the operator's SMPP link in production), inbound SMS to ``mo_url``."""
    return f"""# Kannel for Mita (mita sms kannel-config). Kannel 1.4.5 refuses comments after a value.
group = core
admin-port = {admin}
admin-password = {password}
status-password = {password}
admin-interface = 127.0.0.1
admin-allow-ip = "127.0.0.1"
smsbox-port = {smsbox}
smsbox-interface = 127.0.0.1
box-deny-ip = "*.*.*.*"
box-allow-ip = "127.0.0.1"
log-file = "{folder}/bearerbox.log"
log-level = 1
dlr-storage = internal
# the MT queue survives a crash of bearerbox
store-type = file
store-location = "{folder}/kannel.store"

# Kannel's fake SMSC (tests, demos): replace with the operator's link (smsc = smpp, host, port, system-type, ...)
group = smsc
smsc = fake
smsc-id = fake
port = {smsc}
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
sendsms-port = {sendsms}
sendsms-interface = 127.0.0.1
log-file = "{folder}/smsbox.log"
log-level = 1
# callbacks to Mita (inbound SMS, with the same %I; delivery reports) retried while Mita is down, for 5 minutes
http-request-retry = {CALLBACK_RETRIES}
http-queue-delay = {CALLBACK_RETRY_DELAY_S}

group = sendsms-user
username = mita
password = {password}

# inbound SMS -> Mita; max-messages = 0: the HTTP answer never becomes an SMS
group = sms-service
keyword = default
catch-all = true
max-messages = 0
get-url = "{mo_url}?id=%I&from=%p&to=%P&text=%a&ts=%t"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Box:
    """Kannel and its fake SMSC, running: ``sendsms_url`` for Mita's sender; :attr:`received` what the "phones" got."""

    folder: Path
    mo_url: str
    password: str = "kannel-test-pw"
    ports: dict[str, int] = field(default_factory=dict)
    received: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, text)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _fifo_fd: int | None = None

    @property
    def sendsms_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['sendsms']}/cgi-bin/sendsms"

    def start(self) -> Box:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.ports = {name: _free_port() for name in ("admin", "smsbox", "sendsms", "smsc")}
        conf = config(mo_url=self.mo_url, folder=self.folder, password=self.password, **self.ports)
        (self.folder / "kannel.conf").write_text(conf)
        self.start_bearerbox()
        self.procs["smsbox"] = self._spawn(["smsbox", "-v", "1", str(self.folder / "kannel.conf")], "smsbox")
        self._wait_port(self.ports["sendsms"])
        fifo = self.folder / "mo.fifo"
        if not fifo.exists():
            os.mkfifo(fifo)
        self._fifo_fd = os.open(fifo, os.O_RDWR)  # held open: fakesmsc never sees the end of its input
        self.start_smsc()
        return self

    def start_smsc(self) -> None:
        """The operator's side (Kannel's fake SMSC) connects to bearerbox."""
        fsc = subprocess.Popen(
            # what it got is in its log, on standard error; line-buffered, read as it comes
            ["stdbuf", "-oL", str(FAKESMSC), "-H", "127.0.0.1", "-r", str(self.ports["smsc"]), "-i", "0"],
            stdin=self._fifo_fd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
        self.procs["fakesmsc"] = fsc
        threading.Thread(target=self._read, args=(fsc,), name="fakesmsc", daemon=True).start()

    def stop_smsc(self) -> None:
        """The operator's link goes down: Kannel keeps what it is given in its store."""
        proc = self.procs.pop("fakesmsc")
        proc.terminate()
        proc.wait(10)

    def restart_smsbox(self) -> None:
        old = self.procs.pop("smsbox", None)
        if old is not None and old.poll() is None:
            old.kill()  # one that lost its bearerbox does not always stop when asked
            old.wait(10)
        self.procs["smsbox"] = self._spawn(["smsbox", "-v", "1", str(self.folder / "kannel.conf")], "smsbox")
        self._wait_port(self.ports["sendsms"])

    def start_bearerbox(self) -> None:
        """bearerbox, until it listens for smsbox (after reading its store back)."""
        self.procs["bearerbox"] = self._spawn(["bearerbox", "-v", "1", str(self.folder / "kannel.conf")], "bearerbox")
        self._wait_port(self.ports["smsbox"])

    def _spawn(self, argv: list[str], name: str) -> subprocess.Popen[bytes]:
        out = open(self.folder / f"{name}.out", "ab")  # noqa: SIM115 (lives as long as the process)
        return subprocess.Popen(argv, stdout=out, stderr=out, start_new_session=True, preexec_fn=_die_with_parent)

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            m = _GOT.search(raw.decode("utf-8", "replace"))
            if m:
                with self._lock:
                    self.received.append((m.group(1), m.group(2), m.group(3)))

    def _wait_port(self, port: int, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"Kannel did not open port {port} (see {self.folder})")

    def send_mo(self, sender: str, text: str, to: str = "40404") -> None:
        """An SMS from a phone to Mita's short code, through the fake SMSC."""
        assert self._fifo_fd is not None, "the box is not started"
        os.write(self._fifo_fd, f"{sender} {to} text {text}\n".encode())
        time.sleep(0.3)  # fakesmsc reads its input a line at a time: lines written together can be lost

    def messages_to(self, phone: str) -> list[str]:
        with self._lock:
            return [text for _, to, text in self.received if to.lstrip("+") == phone.lstrip("+")]

    def kill_bearerbox(self) -> None:
        """SIGKILL: no goodbye, whatever is in its memory is gone (what is in its store is not)."""
        proc = self.procs.pop("bearerbox")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop(self) -> None:
        for name in ("fakesmsc", "smsbox", "bearerbox"):
            proc = self.procs.pop(name, None)
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
        if self._fifo_fd is not None:
            os.close(self._fifo_fd)
            self._fifo_fd = None
