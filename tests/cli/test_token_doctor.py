"""``mita token doctor``: the service's answer on the command line, for a meter of the database or a key alone.

The world of the vending tests on SQLite sells a token; the command, run in-process, must give the service's
verdict (``--json``: its answer), exit as ``mita meter enter`` would for the typed token, show the digit to fix, and
never print a key. Giving the meter both ways, or neither, is a usage error; a key on the command line is refused.
"""

from __future__ import annotations

import json
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cli_run import Result, run
from mita.cli import exits
from mita.vend import database
from vend_fixtures import DRN, World, build_world, decoder_key


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("doctor-cli") / "template.db"
    database.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, template: Path) -> Iterator[tuple[World, str]]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    path = tmp_path / "mita.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    engine = database.make_engine(url)
    yield build_world(engine), url
    engine.dispose()


def doctor(*args: str, code: int) -> Result:
    result = run(["token", "doctor", *args])
    key = f"{decoder_key():016x}"
    assert key not in result.output.lower() and "Traceback" not in result.output
    assert result.exit_code == code, result
    return result


def test_a_used_token_and_a_mistyped_one_of_a_meter_of_the_database(world: tuple[World, str]) -> None:
    w, url = world
    sale = w.vend(10_000)
    token = sale["tokens"][0]["digits"]
    answer: dict[str, Any] = json.loads(doctor(token, "--meter", DRN, "--database-url", url, "--json",
                                               code=exits.TOKEN_USED).stdout)  # fmt: skip
    expected = w.svc.doctor(w.operator, token, drn=DRN)
    assert (answer["verdict"], answer["issued"], answer["token"]) == ("used", expected["issued"], expected["token"])

    typo = token[:9] + str((int(token[9]) + 1) % 10) + token[10:]
    text = doctor(typo, "--meter", DRN, "--database-url", url, code=exits.TOKEN_INVALID).stdout
    assert text.startswith("crc_error: ") and "Digit 10 was mistyped" in text
    assert "fix        digit 10 (digit)" in text and f"vend {sale['id']}" in text and "Corner shop" in text


def test_a_meter_known_by_its_key_alone(world: tuple[World, str], tmp_path: Path) -> None:
    w, _ = world
    token = w.vend(10_000)["tokens"][0]["digits"]
    key_file = tmp_path / "decoder.key"
    key_file.write_text(f"{decoder_key():016x}\n")
    text = doctor(token, "--decoder-key-file", str(key_file), "--ea", "07", code=exits.OK).stdout
    assert text.startswith("accepted: ") and "electricity credit" in text
    wrong = tmp_path / "other.key"
    wrong.write_text("0f1e2d3c4b5a6978\n")
    out = json.loads(doctor(token, "--decoder-key-file", str(wrong), "--ea", "7", "--json",
                            code=exits.TOKEN_INVALID).stdout)  # fmt: skip
    assert out["verdict"] == "crc_error" and out["meter"] is None


def test_the_meter_is_named_one_way(tmp_path: Path) -> None:
    key_file = tmp_path / "decoder.key"
    key_file.write_text(f"{decoder_key():016x}\n")
    token = "1" * 20
    both = doctor(token, "--meter", DRN, "--decoder-key-file", str(key_file), "--ea", "07", code=exits.USAGE)
    assert both.stderr.startswith("error[usage]: ")
    assert doctor(token, code=exits.USAGE).stderr.startswith("error[usage]: ")
    refused = doctor(token, "--decoder-key", f"{decoder_key():016x}", "--ea", "07", code=exits.REFUSED)
    assert refused.stderr.startswith("error[secret_on_command_line]: ")
