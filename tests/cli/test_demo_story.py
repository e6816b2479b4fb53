"""``make run``'s story: a purchase by (fake) M-Pesa ends in an SMS on Kannel's fake SMSC and a token the virtual
meter accepts (``mita demo --show-and-exit`` tells it, then stops)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mita.channels.sms import box
from mita.meter import storage

pytestmark = pytest.mark.slow


def test_a_purchase_by_mpesa_ends_as_credit_in_the_meter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert box.installed(), "the story sends its SMS through Kannel: make kannel"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITA_")}
    env["MITA_MASTER_KEY"] = "44" * 32
    scratch = tmp_path / "tmp"  # the demo's temporary folders (Kannel's), which it must remove when it stops
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)
    result = subprocess.run(
        [sys.executable, "-m", "mita.cli.main", "demo", "--port", str(port), "--show-and-exit"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 0, (out + result.stderr)[-3000:]
    assert "from Kannel's fake SMSC" in out and "Token: " in out
    assert out.count(": accept") >= 1 and "not accept" not in out
    assert list(scratch.iterdir()) == [], "the demo left its temporary folders behind"
    monkeypatch.setenv("MITA_MASTER_KEY", "44" * 32)  # the demo's, which sealed the meter's decoder key
    meter = storage.load(tmp_path / "demo-meters" / "47500150231.json")
    assert meter.registers()["electricity"] > 0
