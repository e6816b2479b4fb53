"""Defaults a person can trust: the version, today's base date, and a demo that never touches a real database."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli_run import run
from mita import __version__, sts


def test_version() -> None:
    result = run(["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"mita {__version__}"


@pytest.mark.parametrize(
    "issued,base",
    [
        (dt.datetime(2020, 1, 1), 1993),
        (dt.datetime(2024, 11, 24, 20, 15), 1993),  # 1993's last minute
        (dt.datetime(2024, 11, 24, 20, 16), 2014),  # its roll-over
        (dt.datetime(2026, 12, 3), 2014),
        (dt.datetime(2045, 11, 24, 20, 16), 2035),
    ],
)
def test_the_base_date_in_use_follows_the_rollovers(issued: dt.datetime, base: int) -> None:
    assert sts.tid.base_date_in_use(issued) == base
    before = sts.BaseDate(base).rollover - dt.timedelta(minutes=1)
    assert sts.tid.base_date_in_use(before) == base


@pytest.mark.parametrize("at,base", [("2026-11-25T14:00", 2014), ("2020-03-01T08:00", 1993)])
def test_token_commands_default_to_the_base_date_in_use_then(at: str, base: int) -> None:
    default = run(["token", "tid", "--at", at])
    explicit = run(["token", "tid", "--at", at, "--base-date", str(base)])
    assert default.exit_code == 0 and default.stdout == explicit.stdout
    issued = dt.datetime.fromisoformat(at)
    assert int(default.stdout) == sts.tid_from_datetime(issued, base)


def test_the_demo_keeps_to_its_own_database(tmp_path: Path) -> None:
    env = {**os.environ, "MITA_DATABASE_URL": f"sqlite:///{tmp_path}/real.db", "MITA_MASTER_KEY": "33" * 32}
    result = subprocess.run(
        [sys.executable, "-m", "mita.cli.main", "demo", "--no-serve"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "mita-demo.db").exists() and not (tmp_path / "real.db").exists()
    assert "MITA_DATABASE_URL is not used" in result.stdout
