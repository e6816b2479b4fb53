"""Fixtures of the simulated meter's tests (see sim_fixtures.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .sim_fixtures import Sim, start


@pytest.fixture
def master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MITA_MASTER_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MITA_MASTER_KEY_FILE", str(tmp_path / "secrets" / "master.key"))


@pytest.fixture
def sim(tmp_path: Path, master_key: None) -> Iterator[Sim]:
    yield from start(tmp_path)


@pytest.fixture
def water_sim(tmp_path: Path, master_key: None) -> Iterator[Sim]:
    yield from start(tmp_path, "water-valve")
