"""``mita`` starts fast: the commands a person types load nothing heavy (issue 11: under 0.2 s and 4x ``python``).

Each check runs the command in a fresh interpreter and reads ``sys.modules`` at the end: ``mita --help`` loads
neither the engine nor any library; ``mita token credit`` and ``mita meter enter`` load no database, web, terminal
or settings library (and the credit, on EA07, not even the cipher library). ``benchmarks/cli.py`` measures the time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mita import sealing
from mita.settings import MasterKeySettings

HEAVY = ("sqlalchemy", "rich", "pydantic", "pydantic_settings", "typer", "click", "fastapi", "numpy", "alembic")
#: Standard modules that cost a typed command milliseconds each and that neither command needs: dataclasses (with
#: inspect, ~10 ms: the engine's and the meter's values are mita.sts.values), tempfile and pathlib (the state file
#: is saved with os), secrets and hashlib (os.urandom is their source).
SLOW_STDLIB = {"dataclasses", "inspect", "tempfile", "pathlib", "secrets", "hashlib", "getpass"}
KEY = "e653341f9d5bf36f"
PROBE = """
import io, json, sys
from contextlib import redirect_stdout, redirect_stderr
from mita.cli.main import main
with redirect_stdout(io.StringIO()) as out, redirect_stderr(io.StringIO()):
    code = main(sys.argv[1:])
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def loaded(argv: list[str], cwd: Path) -> tuple[int, str, set[str]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MITA_", "_ARGCOMPLETE"))}
    env["MITA_MASTER_KEY"] = "33" * 32
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=60, check=True)  # fmt: skip
    answer = json.loads(done.stdout)
    return answer["code"], answer["out"], set(answer["modules"])


def tops(modules: set[str]) -> set[str]:
    return {m.split(".")[0] for m in modules}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "k.hex").write_text(KEY)
    return tmp_path


def test_help_loads_neither_the_engine_nor_a_library(folder: Path) -> None:
    code, out, modules = loaded(["--help"], folder)
    assert code == 0 and "usage: mita" in out
    assert not tops(modules) & {*HEAVY, "cryptography", "argcomplete", "typing"}
    assert not {m for m in modules if m.startswith(("mita.sts", "mita.meter", "mita.vend", "mita.cli.token"))}


def test_token_credit_loads_nothing_heavy(folder: Path) -> None:
    code, out, modules = loaded(["token", "credit", "--ea", "07", "--amount", "10", "--key-file", "k.hex"], folder)
    assert code == 0 and len(out.strip()) == 20
    assert not tops(modules) & {*HEAVY, "cryptography", "argcomplete"}
    assert "mita.cli.keys" not in modules and "mita.cli.meter" not in modules  # only its own group is defined
    assert not modules & {*SLOW_STDLIB, "typing"}
    assert not modules & {"mita.sts.dkga", "mita.sts.keychange", "mita.sts.identity"}  # mita.sts loads what is used


def test_meter_enter_loads_nothing_heavy(folder: Path) -> None:
    meter = ["meter", "new", "m.json", "--drn", "00000000000", "--iin", "600727", "--sgc", "123456", "--ea", "07",
             "--profile", "legacy-ea07", "--decoder-key-file", "k.hex"]  # fmt: skip
    assert loaded(meter, folder)[0] == 0
    _, token, _ = loaded(["token", "credit", "--ea", "07", "--amount", "10", "--key-file", "k.hex"], folder)
    code, out, modules = loaded(["meter", "enter", "m.json", token.strip()], folder)
    assert code == 0 and json.loads(out)["result"] == "accept"
    assert not tops(modules) & set(HEAVY)  # cryptography is needed: the state file's key is sealed (AES-GCM)
    assert not modules & SLOW_STDLIB  # (typing is loaded, by cryptography)
    # neither MISTY1 (an EA07 meter) nor cryptography's cipher package (the AES-GCM class is taken where it lives)
    assert not modules & {"mita.sts.misty1", "cryptography.hazmat.primitives.ciphers"}


def test_sealing_uses_cryptographys_own_aesgcm() -> None:
    """mita.sealing takes AESGCM from cryptography's Rust binding (start-up time): it must be the public class."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    assert sealing.AESGCM is AESGCM


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"MITA_MASTER_KEY": "44" * 32},
        {"MITA_MASTER_KEY": ""},
        {"MITA_MASTER_KEY_FILE": "/tmp/elsewhere.key"},
        {"mita_master_key": "55" * 32, "Mita_Master_Key_File": "/tmp/x.key"},
    ],
)
def test_sealing_reads_the_master_key_settings_as_the_settings_do(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    """``mita.sealing`` reads its two settings without pydantic (for start-up time): the same values."""
    for name in list(os.environ):
        if name.upper().startswith("MITA_MASTER_KEY"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = MasterKeySettings()
    expected = settings.master_key.get_secret_value() if settings.master_key is not None else None
    assert sealing.environment() == (expected, settings.master_key_file)
    assert MasterKeySettings.model_fields["master_key_file"].default == sealing.DEFAULT_FILE
