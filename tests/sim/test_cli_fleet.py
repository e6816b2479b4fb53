"""``mita sim fleet``: a folder of meter files served by the real command, in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli_run import run
from mita.meter import storage

from .cosem_calls import enter, session, status_code
from .sim_fixtures import CREDIT_TOKEN as TOKEN
from .sim_fixtures import SECRET, drn_of, make_meter

SECRET_HEX = SECRET.hex()


def folder_of(tmp_path: Path, count: int) -> Path:
    folder = tmp_path / "meters"
    folder.mkdir()
    for i in range(count):
        storage.save(make_meter(drn=drn_of(i)), folder / f"{drn_of(i)}.json")
    return folder


def secrets_file(path: Path, secrets: dict[str, str], mode: int = 0o600) -> Path:
    path.write_text(json.dumps(secrets))
    path.chmod(mode)
    return path


@pytest.mark.slow
def test_fleet_serves_a_folder_saves_each_file_and_stops_on_sigterm(tmp_path: Path, master_key: None) -> None:
    folder = folder_of(tmp_path, 3)
    secrets = secrets_file(folder / "secrets.json", {drn_of(i): SECRET_HEX for i in range(3)})  # skipped as a meter
    out = tmp_path / "endpoints.json"
    argv = [sys.executable, "-m", "mita.cli.main", "sim", "fleet", str(folder), "--secrets", str(secrets),
            "--endpoints-out", str(out)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    try:
        assert proc.stdout is not None
        line = json.loads(proc.stdout.readline())
        assert line["meters"] == 3 and list(line["endpoints"]) == [drn_of(i) for i in range(3)]
        assert json.loads(out.read_text()) == line["endpoints"]
        endpoint = line["endpoints"][drn_of(1)]
        assert endpoint["host"] == "127.0.0.1"
        with session(endpoint["port"], SECRET) as c:
            enter(c, TOKEN)
            assert status_code(c) == 3
    finally:
        stopping = time.perf_counter()
        proc.send_signal(signal.SIGTERM)  # the process this test started, by its handle
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and time.perf_counter() - stopping < 30, err  # idle connections would keep it 60 s
    assert SECRET_HEX not in err and "mgmt" not in err
    credit = [storage.load(folder / f"{drn_of(i)}.json").registers() for i in range(3)]
    assert credit == [{}, {"electricity": 100.0}, {}]


def test_a_secrets_file_others_can_read_is_refused(tmp_path: Path, master_key: None) -> None:
    folder = folder_of(tmp_path, 1)
    secrets = secrets_file(tmp_path / "s.json", {drn_of(0): SECRET_HEX}, mode=0o644)
    result = run(["sim", "fleet", str(folder), "--secrets", str(secrets)])
    assert (result.exit_code, result.stderr.split("]")[0]) == (1, "error[secret_exposed")
    assert "0644" in result.stderr and SECRET_HEX not in result.output


@pytest.mark.parametrize(
    "secrets",
    [
        {drn_of(0): "xyz"},
        {drn_of(0): "abc"},
        {drn_of(0): 12},
        {drn_of(0): "ab" * 33},
        ["6d67"],
        {"abababab": drn_of(0)},  # swapped: the secret as the name
    ],
)
def test_a_secret_that_is_not_hex_octets_is_refused_by_meter_never_shown(
    tmp_path: Path, master_key: None, secrets: object
) -> None:
    folder = folder_of(tmp_path, 1)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(secrets))
    path.chmod(0o600)
    result = run(["sim", "fleet", str(folder), "--secrets", str(path)])
    assert (result.exit_code, result.stderr.split("]")[0]) == (1, "error[invalid_key")
    assert "xyz" not in result.stderr and "abab" not in result.stderr


def test_missing_folder_empty_folder_and_a_file_that_is_no_meter(tmp_path: Path, master_key: None) -> None:
    secrets = secrets_file(tmp_path / "s.json", {})
    result = run(["sim", "fleet", str(tmp_path / "none"), "--secrets", str(secrets)])
    assert result.stderr.startswith("error[no_folder]")
    (tmp_path / "empty").mkdir()
    result = run(["sim", "fleet", str(tmp_path / "empty"), "--secrets", str(secrets)])
    assert result.stderr.startswith("error[no_meters]")
    folder = folder_of(tmp_path, 1)
    (folder / "notes.json").write_text("{}")
    result = run(["sim", "fleet", str(folder), "--secrets", str(secrets)])
    assert result.stderr.startswith("error[corrupt_state]") and "notes.json" in result.stderr


def test_a_missing_secrets_file_is_a_typed_error(tmp_path: Path, master_key: None) -> None:
    result = run(["sim", "fleet", str(folder_of(tmp_path, 1)), "--secrets", str(tmp_path / "none.json")])
    assert (result.exit_code, result.stderr.split("]")[0]) == (1, "error[secret_unreadable")


def test_fleet_is_listed_in_help() -> None:
    result = run(["sim", "--help"])
    assert result.exit_code == 0 and "fleet" in result.stdout
