"""``mita sim serve``: the meter file served over DLMS by the real command, in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dlms_cosem import enumerations as en

from cli_run import run
from mita import sts
from mita.meter import storage
from mita.sim import carrier

from .dlms_client import CREDIT, enter, get, session, token_status
from .sim_fixtures import KEY, T0, make_meter

SECRET_HEX = "6d676d742d37663361"


@pytest.mark.slow
def test_serve_answers_over_dlms_and_saves_the_meter_file(tmp_path: Path, master_key: None) -> None:
    path = tmp_path / "meter.json"
    storage.save(make_meter(), path)
    env = {**os.environ, "SIM_SECRET": SECRET_HEX}
    argv = [
        sys.executable,
        "-m",
        "mita.cli.main",
        "sim",
        "serve",
        str(path),
        "--port",
        "0",
        "--secret-env",
        "SIM_SECRET",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["host"] == "127.0.0.1" and info["clients"] == {"public": 16, "management": 1}
        assert info["drn"] == make_meter().state.drn and info["token"] == "bcd"
        token = sts.encode(
            sts.TransferCredit(sts.tid_from_datetime(T0), 25, 5, sts.CreditKind.ELECTRICITY), sts.EA.STA, KEY
        )
        with session(info["port"], bytes.fromhex(SECRET_HEX)) as c:
            enter(c, carrier.pack(token))
            assert token_status(c)[0] == 3
            assert int(get(c, en.CosemInterface.CREDIT, CREDIT, 2)) == 2500
    finally:
        proc.terminate()  # the process this test started, by its handle
        _, err = proc.communicate(timeout=10)
    assert SECRET_HEX not in err and "mgmt" not in err
    shown = run(["meter", "show", str(path)])
    assert json.loads(shown.stdout)["registers"]["electricity"] == 25


def test_a_secret_on_the_command_line_is_refused(tmp_path: Path) -> None:
    result = run(["sim", "serve", str(tmp_path / "m.json"), "--secret", SECRET_HEX])
    assert result.exit_code == 1
    assert result.stderr.startswith("error[secret_on_command_line]") and SECRET_HEX not in result.output


def test_a_missing_meter_file_is_a_typed_error(tmp_path: Path, master_key: None) -> None:
    result = run(["sim", "serve", str(tmp_path / "none.json"), "--port", "0"])
    assert (result.exit_code, result.stderr.split("]")[0]) == (1, "error[no_state")


def test_serve_is_listed_in_help() -> None:
    result = run(["sim", "--help"])
    assert result.exit_code == 0 and "serve" in result.stdout
