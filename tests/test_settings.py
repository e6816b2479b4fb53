"""One Settings, read from the environment once per process, documented in one table (the README's)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mita import sealing
from mita.settings import MasterKeySettings, Settings, table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_the_readme_table_is_the_settings_table() -> None:
    assert table() in README.read_text(encoding="utf-8")


def test_settings_come_from_mita_variables_and_hide_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_THREADS", "7")
    monkeypatch.setenv("MITA_HSM_PIN", "1234-secret")
    settings = Settings()
    assert settings.threads == 7 and settings.hsm_pin is not None
    assert "1234-secret" not in repr(settings) and "1234-secret" not in str(settings.model_dump())
    assert settings.hsm_pin.get_secret_value() == "1234-secret"
    monkeypatch.setenv("MITA_THREADS", "many")
    with pytest.raises(ValueError, match="threads"):
        Settings()


def test_a_typo_in_another_setting_cannot_stop_a_key_from_opening(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", "11" * 32)
    monkeypatch.setenv("MITA_THREADS", "many")
    assert sealing.master_key() == bytes.fromhex("11" * 32)
    assert sealing.unseal(sealing.seal(b"x", "ctx"), "ctx") == b"x"
    assert MasterKeySettings().master_key is not None
